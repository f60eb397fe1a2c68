"""The DNS proxy's judgement: the rules file reconcile writes, read back as the proxy reads it."""

from __future__ import annotations

import json
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from meshctl.dataplane.dnsproxy import DnsFiles, learned_ipcache, read_rules, write_rules
from meshctl.nodestate import CIDR_IDENTITY_MIN, DnsPolicy, FrozenMap, IpcacheEntry
from meshctl.proxy.dns import Learned, Rules

CLIENT, OTHER, DNS, ELSEWHERE = "10.0.1.2", "10.0.1.3", "10.0.2.2", "10.0.3.3"
KUBE_DNS = 300
POLICIES = frozenset({
    DnsPolicy(IPv4Address(CLIENT), 53, 53, KUBE_DNS, 7, ("*.stripe.com", "api.paypal.com")),
    DnsPolicy(IPv4Address(OTHER), 53, 53, 0, 8, ("*",)),
})
FQDN = FrozenMap({"api.stripe.com": 262, "*.stripe.com": 270, "*.amazonaws.com": 260,
                  "*.stripe.com,api.stripe.com": 271,  # the set identity of two overlapping selectors
                  "*.amazonaws.com@52.216.0.0/15": 16777300,  # learned inside a CIDR prefix of the node
                  "*.amazonaws.com@52.216.8.0/24": 16777301})
IPCACHE = {IPv4Network(f"{DNS}/32"): IpcacheEntry(KUBE_DNS),
           IPv4Network(f"{ELSEWHERE}/32"): IpcacheEntry(400)}


def _identity(rules: Rules, names: set[str]) -> int | None:
    """The identity the proxy gives the IPs answered for `names`."""
    chosen = rules.selection(names)
    return chosen[1] if chosen else None


def _rules(tmp_path: Path) -> Rules:
    files = DnsFiles(tmp_path)
    version = write_rules(files, POLICIES, FQDN, IPCACHE)
    rules = Rules.read(files.rules)
    assert rules.version == version
    assert read_rules(files) == (POLICIES, FQDN)  # observe reads back what reconcile wrote
    return rules


def test_a_query_passes_when_a_rule_of_its_endpoint_peer_and_port_names_it(tmp_path: Path) -> None:
    rules = _rules(tmp_path)
    assert rules.judge(CLIENT, DNS, 53, "api.stripe.com") == (True, 7)
    assert rules.judge(CLIENT, DNS, 53, "api.paypal.com") == (True, 7)
    assert rules.judge(CLIENT, DNS, 53, "www.paypal.com") == (False, 7)  # the rule applies, the name does not
    assert rules.judge(CLIENT, ELSEWHERE, 53, "api.stripe.com") == (False, None)  # another peer
    assert rules.judge(CLIENT, DNS, 5353, "api.stripe.com") == (False, None)  # another port
    assert rules.judge(OTHER, ELSEWHERE, 53, "anything.example") == (True, 8)  # identity 0: any peer


def test_an_answer_takes_the_identity_of_the_selector_that_selects_it(tmp_path: Path) -> None:
    rules = _rules(tmp_path)
    assert _identity(rules, {"s3.amazonaws.com"}) == 260
    assert _identity(rules, {"www.example.org", "cdn.amazonaws.com"}) == 260  # a CNAME target
    assert _identity(rules, {"www.example.org"}) is None
    assert _identity(rules, {"api.stripe.com"}) == 271  # two selectors: the identity of the pair
    assert _identity(rules, {"www.stripe.com"}) == 270
    # a set the compiler did not foresee (a CNAME into another selector's names): its largest
    # known part, so the rules of at least those selectors hold
    assert _identity(rules, {"api.stripe.com", "s3.amazonaws.com"}) == 271
    aws = rules.selection({"s3.amazonaws.com"})
    assert aws == ("*.amazonaws.com", 260)
    assert rules.identity_of("52.217.1.1", aws) == 16777300  # inside the /15
    assert rules.identity_of("52.216.8.9", aws) == 16777301  # the longest prefix wins, as in the ipcache
    assert rules.identity_of("3.5.0.1", aws) == 260


def test_learned_ips_persist_with_their_expiry_and_leave_after_ttl_and_grace(tmp_path: Path) -> None:
    files = DnsFiles(tmp_path)
    learned = Learned(files.learned, min_ttl=2)
    learned.add({"203.0.113.10": (262, "api.stripe.com", 0)})
    again = Learned(files.learned, min_ttl=2)  # a restarted proxy
    assert again.ips["203.0.113.10"]["identity"] == 262
    assert again.ips["203.0.113.10"]["expires"] >= time.time() + 1.5  # the minimum TTL holds
    assert learned_ipcache(files) == {IPv4Network("203.0.113.10/32"): 262}
    assert again.expired(grace=0) == []
    again.ips["203.0.113.10"]["expires"] = time.time() - 1
    assert again.expired(grace=5) == [] and again.expired(grace=0) == ["203.0.113.10"]
    again.drop(["203.0.113.10"])
    assert json.loads(files.learned.read_text()) == {"ips": {}}


def test_dns_rule_and_selector_changes_diff_patch_and_survive_the_canonical_form() -> None:
    from meshctl.catalog import Catalog
    from meshctl.nodestate import NodeState
    from meshctl.plan.change import ChangeKind
    from meshctl.plan.diff import diff_node
    from meshctl.plan.patch import apply_changes

    first = min(POLICIES)
    moved = DnsPolicy(first.endpoint, 53, 53, KUBE_DNS, 7, ("*.stripe.com",))
    before = NodeState("n", dns=POLICIES, fqdn=FQDN)
    after = NodeState("n", dns=frozenset({moved}), fqdn=FrozenMap({"api.stripe.com": 262}))
    changes = diff_node(before, after, Catalog())
    assert {(c.kind, c.action.name) for c in changes} == {
        (ChangeKind.DNS_RULE, "UPDATE"), (ChangeKind.DNS_RULE, "DELETE"), (ChangeKind.FQDN, "UPDATE")}
    assert apply_changes(before, changes) == after
    assert NodeState.from_canonical(json.loads(json.dumps(after.canonical()))) == after
    assert before.fingerprint() != after.fingerprint()


def test_only_a_new_ip_or_identity_is_saved_before_the_answer_a_longer_expiry_waits_for_flush(
        tmp_path: Path) -> None:
    files = DnsFiles(tmp_path)
    learned = Learned(files.learned, min_ttl=0)
    first = {"203.0.113.10": (262, "api.stripe.com", 30)}
    assert learned.fresh(first) == ["203.0.113.10"]
    learned.add(first)
    saved = json.loads(files.learned.read_text())["ips"]["203.0.113.10"]["expires"]
    longer = {"203.0.113.10": (262, "api.stripe.com", 300)}
    assert learned.fresh(longer) == []  # known: no ipcache write
    learned.add(longer)
    assert learned.dirty and json.loads(files.learned.read_text())["ips"]["203.0.113.10"]["expires"] == saved
    learned.flush()
    assert json.loads(files.learned.read_text())["ips"]["203.0.113.10"]["expires"] > saved + 200
    moved = {"203.0.113.10": (270, "www.stripe.com", 30)}
    assert learned.fresh(moved) == ["203.0.113.10"]  # a new identity
    learned.add(moved)
    assert Learned(files.learned, 0).ips["203.0.113.10"]["names"] == ["api.stripe.com", "www.stripe.com"]


def test_an_address_the_node_holds_as_a_pod_node_or_cidr_32_is_never_learned_over(tmp_path: Path) -> None:
    files = DnsFiles(tmp_path)
    ipcache = {**IPCACHE, IPv4Network("198.51.100.7/32"): IpcacheEntry(CIDR_IDENTITY_MIN + 5),
               IPv4Network("52.216.0.0/15"): IpcacheEntry(CIDR_IDENTITY_MIN + 9)}
    write_rules(files, POLICIES, FQDN, ipcache)
    rules = Rules.read(files.rules)
    # the entries an address's longest-prefix lookup finds
    assert rules.taken(DNS, IpcacheEntry(KUBE_DNS))  # a pod's own /32
    assert rules.taken("198.51.100.7", IpcacheEntry(CIDR_IDENTITY_MIN + 5))  # a toCIDR /32
    assert not rules.taken("52.216.3.3", IpcacheEntry(CIDR_IDENTITY_MIN + 9))  # inside a prefix: learnable
    assert not rules.taken("203.0.113.10", IpcacheEntry(262))  # learned before (a selector's identity)
    assert not rules.taken("203.0.113.11", None)
