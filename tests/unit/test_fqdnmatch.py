"""Cilium's DNS name matching (pkg/fqdn/matchpattern and the docs' examples), for toFQDNs and DNS rules."""

from __future__ import annotations

import itertools

import pytest

from meshctl.fqdnmatch import FqdnSelector, name_error, overlaps, pattern_error, selector_sets
from meshctl.nodestate import fqdn_set_key

# (selector, name, matches): the docs' examples first (docs.cilium.io "DNS Policy and IP Discovery")
CASES = [
    ("*.cilium.io", "sub.cilium.io", True),
    ("*.cilium.io", "cilium.io", False),
    ("*.cilium.io", "a.sub.cilium.io", False),  # `*` stays within one label
    ("part*ial.com", "partial.com", True),
    ("part*ial.com", "part-extra-ial.com", True),
    ("special*service.api.cilium.io", "special-region1-service.api.cilium.io", True),
    ("special*service.api.cilium.io", "region1-service.api.cilium.io", False),
    ("**.cilium.io", "app.cilium.io", True),  # Cilium 1.19: a leading `**.` is one or more labels
    ("**.cilium.io", "test.app.cilium.io", True),
    ("**.cilium.io", "cilium.io", False),
    ("**.cilium.io", "app.cilium.io.evil.com", False),
    ("*", "api.stripe.com", True),
    ("*", "localhost", True),
    ("*", ".", True),  # the root NS query (cilium/cilium#11633)
    ("*.amazonaws.com", "s3.amazonaws.com", True),
    ("*.amazonaws.com", "s3.eu-west-1.amazonaws.com", False),
    ("*.amazonaws.com", "amazonaws.com.evil.net", False),
    ("*.amazonaws.com", "s3xamazonaws.com", False),  # the dot is literal
    ("api.stripe.com", "API.Stripe.COM.", True),  # case and the root dot do not matter
    ("api.stripe.com", "api.stripe.com.evil.net", False),
    ("api.stripe.com", "xapi.stripe.com", False),
    ("*.*.svc.cluster.local", "api.demo.svc.cluster.local", True),
    ("*.*.svc.cluster.local", "api.svc.cluster.local", False),
    ("a*", "a_b", True),  # `_` is a name character for Cilium
    ("a*", "a.b", False),
]


@pytest.mark.parametrize(("pattern", "name", "matches"), CASES)
def test_patterns_match_as_cilium_does(pattern: str, name: str, matches: bool) -> None:
    assert FqdnSelector.of(match_pattern=pattern).matches(name) is matches


def test_a_name_matches_itself_only_and_a_pattern_without_a_star_is_that_name() -> None:
    name = FqdnSelector.of(match_name="Api.Stripe.com.")
    assert name == FqdnSelector.of(match_pattern="api.stripe.com")  # one identity for both spellings
    assert name.label == "fqdn:api.stripe.com" and str(name) == "matchName: api.stripe.com"
    assert name.matches("api.stripe.com") and not name.matches("stripe.com")
    wild = FqdnSelector.of(match_pattern="*.Stripe.com")
    assert wild.label == "fqdn:*.stripe.com" and wild.selects_everything is False
    assert FqdnSelector.of(match_pattern="*").selects_everything


@pytest.mark.parametrize("pattern", ["a.**.b", "***.b", "**", "**b.com", "a**.com"])
def test_double_star_is_refused_except_as_a_leading_label_prefix(pattern: str) -> None:
    error = pattern_error(pattern)
    assert error is not None and "leading '**.'" in error


@pytest.mark.parametrize("pattern", ["a[b].com", "a+.com", "a b.com", "", "a..b"])
def test_characters_outside_dns_names_are_refused(pattern: str) -> None:
    assert pattern_error(pattern) is not None


def test_valid_patterns_and_names_pass() -> None:
    assert all(pattern_error(p) is None for p, _, _ in CASES)
    assert name_error("api.stripe.com.") is None
    assert name_error("*.stripe.com") is not None and name_error("a/b") is not None


def _sel(text: str) -> FqdnSelector:
    return FqdnSelector.of(match_pattern=text)


@pytest.mark.parametrize(("a", "b", "joint"), [
    ("api.stripe.com", "*.stripe.com", True), ("stripe.com", "*.stripe.com", False),
    ("a.b.stripe.com", "*.stripe.com", False), ("a.b.stripe.com", "**.stripe.com", True),
    ("*.stripe.com", "**.stripe.com", True), ("stripe.com", "**.stripe.com", False),
    ("api.*.com", "*.stripe.com", True), ("a*.x.com", "*b.x.com", True), ("ab*.x.com", "ac*.x.com", False),
    ("**.a.com", "**.b.com", False), ("**.x.a.com", "**.a.com", True), ("*", "x.y", True),
    ("api.stripe.com", "api.paypal.com", False), ("s*3.x", "s3.x", True), ("s*4.x", "s3.x", False),
])
def test_two_selectors_overlap_when_some_name_matches_both(a: str, b: str, joint: bool) -> None:
    assert overlaps(_sel(a), _sel(b)) is joint and overlaps(_sel(b), _sel(a)) is joint


def test_overlap_agrees_with_the_matcher_on_every_short_name() -> None:
    """Every name of up to three labels over a small alphabet: a pair with a common name overlaps,
    a pair without one does not (these patterns need no longer names to meet)."""
    patterns = ["*.a.com", "a*.a.com", "*b.a.com", "**.a.com", "x.a.com", "ab.a.com", "*.*.com", "a.*.com",
                "**.com", "*", "b*", "*a*.a.com"]
    words = ["a", "b", "x", "ab", "ba", "com", "xab"]
    names = [".".join(p) for n in (1, 2, 3, 4) for p in itertools.product(words, repeat=n)]
    for p, q in itertools.product(patterns, repeat=2):
        sp, sq = _sel(p), _sel(q)
        common = any(sp.matches(n) and sq.matches(n) for n in names)
        assert overlaps(sp, sq) is common, (p, q)


def test_selector_sets_are_the_cliques_of_overlapping_selectors() -> None:
    sets = {fqdn_set_key(m.text for m in s) for s in selector_sets(map(_sel, [
        "api.stripe.com", "*.stripe.com", "**.stripe.com", "api.paypal.com", "s3.amazonaws.com"]))}
    assert sets == {"**.stripe.com,*.stripe.com", "*.stripe.com,api.stripe.com",  # sorted: "**" before "*."
                    "**.stripe.com,api.stripe.com", "**.stripe.com,*.stripe.com,api.stripe.com"}
    assert len(selector_sets(map(_sel, ["*", *(f"h{i}.x" for i in range(40))]), limit=16)) == 16
