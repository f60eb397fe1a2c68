"""Identity-relevant labels in Cilium's form (`k8s:key=value`), filtered like pkg/labelsfilter.

Only labels that pass Cilium's default filter make a pod's identity, so pods that differ in
pod-template-hash or statefulset pod-name still share one identity.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache

NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
CLUSTER_LABEL = "io.cilium.k8s.policy.cluster"
SOURCES = ("k8s", "reserved", "cidr", "any", "container", "unspec")

# Cilium's defaultLabelPrefixCfg: (ignore?, regex matched at the start of the key).
_FILTER: tuple[tuple[bool, re.Pattern[str]], ...] = tuple(
    (pat.startswith("!"), re.compile(pat.lstrip("!")))
    for pat in (
        re.escape(NAMESPACE_LABEL),
        re.escape(NAMESPACE_LABELS_PREFIX.rstrip(".")),
        re.escape("app.kubernetes.io"),
        re.escape(CLUSTER_LABEL),
        r"!io\.kubernetes",
        r"!kubernetes\.io",
        "!" + re.escape("statefulset.kubernetes.io/pod-name"),
        "!" + re.escape("apps.kubernetes.io/pod-index"),
        "!" + re.escape("batch.kubernetes.io/job-completion-index"),
        r"!.*beta\.kubernetes\.io",
        r"!k8s\.io",
        r"!pod-template-generation",
        r"!pod-template-hash",
        r"!controller-revision-hash",
        r"!annotation.*",
        r"!etcd_node",
        # not in Cilium's list but never identity-relevant either (Job controller labels)
        r"!controller-uid",
        r"!job-name",
        r"!batch\.kubernetes\.io/controller-uid",
        r"!batch\.kubernetes\.io/job-name",
    )
)


@lru_cache(maxsize=65536)
def is_identity_relevant(key: str) -> bool:
    """Cilium's rule: kept unless an ignore matches, or an include matches a longer section."""
    included = ignored = 0
    for ignore, expr in _FILTER:
        m = expr.match(key)
        if not m:
            continue
        length = m.end()
        if ignore:
            if ignored == 0 or length < ignored:
                ignored = length
        elif length > included:
            included = length
    return ignored == 0 or included > ignored


def pod_identity_labels(
    namespace: str, pod_labels: Mapping[str, str], ns_labels: Mapping[str, str], cluster: str
) -> tuple[str, ...]:
    """The sorted label set that names a pod's identity."""
    out = {f"k8s:{k}={v}" for k, v in pod_labels.items() if is_identity_relevant(k)}
    out.add(f"k8s:{NAMESPACE_LABEL}={namespace}")
    for k, v in ns_labels.items():
        out.add(f"k8s:{NAMESPACE_LABELS_PREFIX}{k}={v}")
    if cluster:
        out.add(f"k8s:{CLUSTER_LABEL}={cluster}")
    return tuple(sorted(out))


def identity_label_sets(pods: Iterable[tuple[str, Mapping[str, str]]],
                        namespace_labels: Callable[[str], Mapping[str, str]],
                        cluster: str) -> list[tuple[str, ...]]:
    """Each (namespace, labels) pod's identity label set, in order. Pods of one workload share
    theirs, so each distinct (namespace, identity-relevant labels) is made once."""
    made: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, ...]] = {}
    out = []
    for namespace, labels in pods:
        relevant = tuple(sorted(kv for kv in labels.items() if is_identity_relevant(kv[0])))
        label_set = made.get((namespace, relevant))
        if label_set is None:
            label_set = made[(namespace, relevant)] = pod_identity_labels(
                namespace, dict(relevant), namespace_labels(namespace), cluster)
        out.append(label_set)
    return out


def split_label(label: str) -> tuple[str, str, str]:
    """`source:key=value` -> (source, key, value)."""
    source, _, rest = label.partition(":")
    key, _, value = rest.partition("=")
    return source, key, value


def split_selector_key(key: str) -> tuple[str, str]:
    """A selector key `k8s:app` / `app` -> (source, key); no known source prefix means any."""
    source, sep, rest = key.partition(":")
    if sep and source in SOURCES:
        return source, rest
    return "any", key
