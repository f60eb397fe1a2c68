"""Uniform access to policy documents: loader models or plain dicts with the YAML keys.

The translators read YAML-keyed dicts, so they work the same on the loader's pydantic models
(dumped by alias) and on raw documents (conformance cases, tests).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from meshctl.compile.ir import SourceRef
from meshctl.model.staging import mode_of


@dataclass(frozen=True)
class Document:
    kind: str
    namespace: str
    name: str
    body: dict[str, Any]  # the whole document with YAML keys
    source: SourceRef | None
    staged: bool = False  # audit mode (meshctl.model.staging): compiled, judged, never enforced

    @property
    def title(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


def _source_of(obj: Any, lines: Mapping[Any, Mapping[tuple[str | int, ...], int]] | None) -> SourceRef | None:
    src = obj.get("source") if isinstance(obj, dict) else getattr(obj, "source", None)
    if src is None:
        return None
    if isinstance(src, dict):
        file, line = str(src.get("file", "")), int(src.get("line") or 0)
    else:
        file, line = str(getattr(src, "file", "")), int(getattr(src, "line", 0) or 0)
    return SourceRef(file, line, (lines or {}).get((file, line), {}))


def as_document(
    obj: Any,
    lines: Mapping[Any, Mapping[tuple[str | int, ...], int]] | None = None,
    audit_namespaces: Collection[str] = (),
) -> Document:
    """A loader model or a dict -> Document; `lines` = DesiredState.lines (per-rule lines)."""
    body = obj if isinstance(obj, dict) else obj.model_dump(by_alias=True, exclude_none=True, mode="python")
    kind = str(body.get("kind") or type(obj).__name__)
    meta = body.get("metadata") or {}
    namespace = "" if kind == "CiliumClusterwideNetworkPolicy" else str(meta.get("namespace") or "default")
    staged = mode_of(meta.get("annotations") or {}, namespace, audit_namespaces) == "audit"
    return Document(kind, namespace, str(meta.get("name", "")), body, _source_of(obj, lines), staged)
