"""Kubernetes label keys and values, and Cilium's `source:` key prefixes.

Kubernetes keys are qualified names (`prefix/name`); Cilium selectors may also prefix a key with
its label source (`k8s:app`, `any:app`, `reserved:host`). Keys are kept as written; compile
decides what a source means.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

# Label sources a Cilium selector key may name (pkg/labels: LabelSource*).
CILIUM_LABEL_SOURCES = ("k8s", "any", "reserved")
# Names valid after `reserved:` (Cilium's reserved identities, labels.IDName*).
RESERVED_LABELS = ("host", "world", "unmanaged", "health", "init", "remote-node", "kube-apiserver", "ingress")


def check_label_key(key: str) -> str:
    """A Kubernetes qualified name: optional DNS-subdomain prefix, '/', and a 63-char name."""
    prefix, slash, name = key.rpartition("/")
    problem = ""
    if slash and (not prefix or len(prefix) > 253 or not _PREFIX.match(prefix)):
        problem = "the prefix before '/' must be a DNS subdomain (lowercase, digits, '-', '.')"
    elif not name or len(name) > 63 or not _NAME.match(name):
        problem = "the name must be 1-63 letters, digits, '-', '_' or '.', starting and ending alphanumeric"
    if problem:
        raise ValueError(f"{key!r} is not a valid label key: {problem}")
    return key


def split_source(key: str) -> tuple[str, str]:
    """`k8s:app` -> ("k8s", "app"); `app` -> ("", "app")."""
    source, colon, rest = key.partition(":")
    return (source, rest) if colon else ("", key)


def check_cilium_label_key(key: str) -> str:
    """A label key with an optional Cilium source prefix (`k8s:`, `any:`, `reserved:`)."""
    source, name = split_source(key)
    if source:
        if source not in CILIUM_LABEL_SOURCES:
            raise ValueError(
                f"{key!r}: unknown label source {source!r}; use one of {', '.join(CILIUM_LABEL_SOURCES)}"
            )
        if source == "reserved":
            if name not in RESERVED_LABELS:
                raise ValueError(f"{key!r}: reserved labels are {', '.join(RESERVED_LABELS)}")
            return key
    check_label_key(name)
    return key


def check_label_value(value: str) -> str:
    """A label value: empty, or 1-63 letters, digits, '-', '_' or '.', alphanumeric at both ends."""
    if value and (len(value) > 63 or not _NAME.match(value)):
        raise ValueError(
            f"{value!r} is not a valid label value: at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending alphanumeric"
        )
    return value


LabelKey = Annotated[str, AfterValidator(check_label_key)]
CiliumLabelKey = Annotated[str, AfterValidator(check_cilium_label_key)]
LabelValue = Annotated[str, AfterValidator(check_label_value)]
