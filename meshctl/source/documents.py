"""Dispatch YAML documents on apiVersion/kind to their models.

Each supported kind maps to a function that validates the document and returns the value
DesiredState holds, with its SourceRef. Unknown kinds are errors, not skipped: a typo in
`kind` must not quietly remove a policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshctl.model.base import SourceRef
from meshctl.model.cilium import CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy
from meshctl.model.k8s import NetworkPolicy
from meshctl.source.validate import validate_doc
from meshctl.source.yamlines import FieldPath, YamlDoc

if TYPE_CHECKING:  # the other kinds' models are imported by their loaders, when a repo has them
    from meshctl.model.check import ConnectivityCheck
    from meshctl.model.inventory import Namespace, Pod
    from meshctl.model.service import Service

Policy = NetworkPolicy | CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy


@dataclass
class Documents:
    """Everything found in the desired tree, in file order, before cross-document checks."""

    namespaces: list[Namespace] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)
    checks: list[ConnectivityCheck] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    # (file, line) of each document -> its YAML, so cross-document errors can name a field's line
    yaml: dict[tuple[str, int], YamlDoc] = field(default_factory=dict)


def _policy(model: type[Policy]) -> Callable[[YamlDoc, SourceRef, Documents], None]:
    def load(doc: YamlDoc, source: SourceRef, out: Documents) -> None:
        out.policies.append(validate_doc(model, doc).model_copy(update={"source": source}))

    return load


def _namespace(doc: YamlDoc, source: SourceRef, out: Documents) -> None:
    from meshctl.model.inventory import NamespaceDocument

    out.namespaces.append(validate_doc(NamespaceDocument, doc).to_namespace(source))


def _pod(doc: YamlDoc, source: SourceRef, out: Documents) -> None:
    from meshctl.model.inventory import PodDocument

    out.pods.append(validate_doc(PodDocument, doc).to_pod(source))


def _check(doc: YamlDoc, source: SourceRef, out: Documents) -> None:
    from meshctl.model.check import ConnectivityCheckDocument

    out.checks.append(validate_doc(ConnectivityCheckDocument, doc).to_check(source))


def _service(doc: YamlDoc, source: SourceRef, out: Documents) -> None:
    from meshctl.model.service import ServiceDocument

    out.services.append(validate_doc(ServiceDocument, doc).to_service(source))


KINDS: dict[str, tuple[str, Callable[[YamlDoc, SourceRef, Documents], None]]] = {
    "Namespace": ("v1", _namespace),
    "Pod": ("v1", _pod),
    "NetworkPolicy": ("networking.k8s.io/v1", _policy(NetworkPolicy)),
    "CiliumNetworkPolicy": ("cilium.io/v2", _policy(CiliumNetworkPolicy)),
    "CiliumClusterwideNetworkPolicy": ("cilium.io/v2", _policy(CiliumClusterwideNetworkPolicy)),
    "ConnectivityCheck": ("meshctl.io/v1alpha1", _check),
    "Service": ("v1", _service),
}


def is_list(data: Any) -> bool:
    """`kind: List` (what `kubectl get -o yaml` prints) or a typed list such as PodList."""
    kind = data.get("kind") if isinstance(data, dict) else None
    return isinstance(kind, str) and kind.endswith("List") and (kind == "List" or kind[:-4] in KINDS)


def list_items(doc: YamlDoc) -> list[YamlDoc]:
    """The items of a list document, each a document of its own with its own lines.

    Items of a typed list (PodList) may omit kind and apiVersion: they take the list's.
    """
    data = doc.data
    kind, api_version = data["kind"], data.get("apiVersion")
    want = "v1" if kind == "List" else KINDS[kind.removesuffix("List")][0]
    if api_version != want:
        raise doc.error(("apiVersion",), f"{kind} has apiVersion {want}, not {api_version!r}")
    for key in data:
        if key not in ("apiVersion", "kind", "items", "metadata"):
            raise doc.error((key,), f"unknown field of a {kind} (apiVersion, kind, metadata, items)")
    items = data.get("items")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise doc.error(("items",), f"expected a list (got {items!r})")
    lines: dict[int, dict[FieldPath, int]] = {}
    for path, line in doc.lines.items():  # one pass: a kubectl export may hold thousands of items
        if len(path) > 2 and path[0] == "items" and isinstance(path[1], int):
            lines.setdefault(path[1], {})[path[2:]] = line
    out: list[YamlDoc] = []
    for i, item in enumerate(items):
        if kind != "List" and isinstance(item, dict):
            item = {"apiVersion": want, "kind": kind.removesuffix("List"), **item}
        line = doc.lines.get(("items", i), doc.line)
        out.append(YamlDoc(file=doc.file, line=line, data=item, lines=lines.get(i, {})))
    return out


def add_document(doc: YamlDoc, out: Documents) -> None:
    """Validate one document and append its value to `out` (SourceError on bad input)."""
    data: Any = doc.data
    if not isinstance(data, dict):
        got = type(data).__name__
        raise doc.error((), f"a document must be a mapping with apiVersion and kind (got {got})")
    kind, api_version = data.get("kind"), data.get("apiVersion")
    if kind is None:
        raise doc.error(("kind",), "required field is missing")
    if not isinstance(kind, str):
        raise doc.error(("kind",), f"expected a kind name such as NetworkPolicy (got {kind!r})")
    if is_list(data):
        for item in list_items(doc):
            add_document(item, out)
        return
    if kind not in KINDS:
        known = ", ".join(f"{v} {k}" for k, (v, _) in KINDS.items())
        raise doc.error(("kind",), f"unknown kind {kind!r}; meshctl reads {known}")
    want, load = KINDS[kind]
    if api_version is None:
        raise doc.error(("apiVersion",), f"required field is missing (expected {want})")
    if api_version != want:
        raise doc.error(("apiVersion",), f"{kind} has apiVersion {want}, not {api_version!r}")
    if "source" in data:
        raise doc.error(("source",), "unknown field")
    out.yaml[(doc.file, doc.line)] = doc
    load(doc, SourceRef(file=doc.file, line=doc.line), out)
