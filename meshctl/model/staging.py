"""Staged (audit-mode) policies: compiled and loaded, but they change no verdict.

A policy is staged by the annotation `policy.meshctl.io/mode: audit` on the policy, or because
its namespace is listed in meshctl.toml's `[policy] auditNamespaces`. The datapath judges a new
connection with and without the staged policies, forwards by the enforced verdict and reports an
AUDIT flow whenever the two differ (Calico's staged policies, per policy; Cilium's audit mode is
per daemon or endpoint).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from typing import Any, Literal

MODE_ANNOTATION = "policy.meshctl.io/mode"
PolicyMode = Literal["enforce", "audit"]
MODES: tuple[PolicyMode, ...] = ("enforce", "audit")
# A duration as the settings write it: "90s", "30m", "24h", "7d".
DURATION_PATTERN = r"^\d+(\.\d+)?(s|m|h|d)$"


def check_mode_annotation(annotations: dict[str, str]) -> dict[str, str]:
    """The annotation takes `audit` or `enforce`; anything else is a typo that would enforce."""
    value = annotations.get(MODE_ANNOTATION)
    if value is not None and value not in MODES:
        raise ValueError(f"annotation {MODE_ANNOTATION}: {value!r} is not one of {', '.join(MODES)}")
    return annotations


def mode_of(
    annotations: Mapping[str, str], namespace: str | None, audit_namespaces: Collection[str] = ()
) -> PolicyMode:
    """audit when the annotation says so or the namespace is staged as a whole.

    The annotation wins when it says `enforce`: one policy of an audited namespace can be
    enforced ahead of the rest. A clusterwide policy has no namespace; only its annotation counts.
    """
    value = annotations.get(MODE_ANNOTATION)
    if value in MODES:
        return value  # type: ignore[return-value]
    return "audit" if namespace and namespace in audit_namespaces else "enforce"


def policy_digest(body: Mapping[str, Any]) -> str:
    """A policy's content without its mode: enforcing a staged policy keeps its digest, editing
    it does not (the audit window starts again for the new version)."""
    doc = json.loads(json.dumps(body, default=str))
    meta = doc.get("metadata") or {}
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(MODE_ANNOTATION, None)
    meta["annotations"] = annotations
    doc["metadata"] = meta
    doc.pop("source", None)
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
