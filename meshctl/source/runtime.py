"""The inventory a running cluster has now: pods, namespaces and the numbers they were given.

Git holds intent; pods coming and going are runtime. A runtime inventory (the lab's inventory
store, `[inventory] source = "lab"`) carries, beside the pods and namespaces, the identity and
endpoint-id tables the cluster allocated for them, so the CLI's plan and every node agent
compile the same numbers. `revision` grows with every change; `changes` lists the recent ones, so
a plan can say what churned since the last apply without calling it drift.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any, NamedTuple

from meshctl.model.base import SourceRef
from meshctl.model.inventory import ContainerPort, Namespace, Pod

if TYPE_CHECKING:
    from meshctl.source.desired import DesiredState


@dataclass(frozen=True)
class Churn:
    """Pods added and deleted between two revisions of a runtime inventory."""

    since: int
    revision: int
    added: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    complete: bool = True  # False when the log no longer reaches back to `since`

    @property
    def any(self) -> bool:
        return bool(self.added or self.deleted)

    @property
    def noteworthy(self) -> bool:
        """Pods churned, or the inventory cannot tell: either way a plan or drift says so."""
        return self.any or not self.complete

    def describe(self) -> str:
        parts = []
        if self.added:
            parts.append(f"{len(self.added)} pod{'s' if len(self.added) != 1 else ''} added")
        if self.deleted:
            parts.append(f"{len(self.deleted)} pod{'s' if len(self.deleted) != 1 else ''} deleted")
        revisions = f"inventory revision {self.since} -> {self.revision}"
        if not parts and not self.complete:
            return f"pod changes since the last apply are not logged by this inventory ({revisions})"
        text = " and ".join(parts) or "no pod changes"
        return f"{text} since the last apply ({revisions})" + (
            "" if self.complete else "; older changes are no longer logged")

    def to_json(self) -> dict[str, Any]:
        return {"since": self.since, "revision": self.revision, "added": list(self.added),
                "deleted": list(self.deleted), "complete": self.complete}


class PodRow(NamedTuple):
    """A pod as the runtime inventory holds it: plain values, cheap to make 10,000 of."""

    namespace: str
    name: str
    node: str
    ip: str | None
    labels: Mapping[str, str]
    ports: tuple[tuple[str | None, int, str], ...] = ()  # (name, containerPort, protocol)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def of(cls, pod: Pod) -> PodRow:
        ports = tuple((p.name, int(p.container_port), str(p.protocol)) for p in pod.ports)
        return cls(pod.namespace, pod.name, pod.node_name, str(pod.pod_ip) if pod.pod_ip else None,
                   dict(pod.labels), ports)


@dataclass(frozen=True)
class RuntimeInventory:
    source: str  # where it came from, for people ("the lab of demo")
    revision: int
    namespaces: tuple[Namespace, ...]
    rows: tuple[PodRow, ...]  # sorted by key
    identities: Mapping[str, Any] = field(default_factory=dict)  # IdentityTable.as_dict()
    endpoint_ids: Mapping[str, Any] = field(default_factory=dict)  # EndpointTable.as_dict()
    log: tuple[tuple[int, str, str], ...] = ()  # (revision, "+" or "-", "ns/pod"), oldest first
    log_start: int = 0  # the log holds every change after this revision

    @cached_property
    def pods(self) -> tuple[Pod, ...]:
        """The rows as the loader's Pods (for a DesiredState), made on first use. They were
        validated where they came from, so they are built without validating again."""
        def pod(row: PodRow) -> Pod:
            ports = tuple(ContainerPort.model_construct(name=n, container_port=p, protocol=proto)
                          for n, p, proto in row.ports)
            return Pod.model_construct(
                namespace=row.namespace, name=row.name, labels=dict(row.labels), node_name=row.node,
                ports=ports, pod_ip=IPv4Address(row.ip) if row.ip else None,
                source=SourceRef.model_construct(file=f"{self.source}/pods/{row.key}", line=0))

        return tuple(pod(r) for r in self.rows)

    def apply_to(self, desired: DesiredState) -> DesiredState:
        """`desired` with this inventory's namespaces and pods (policies stay the repo's)."""
        return dataclasses.replace(desired, namespaces=self.namespaces, pods=self.pods)

    def churn_since(self, revision: int) -> Churn:
        added: dict[str, None] = {}
        deleted: dict[str, None] = {}
        for rev, op, key in self.log:
            if rev <= revision:
                continue
            if op == "+":
                if key in deleted:
                    deleted.pop(key)  # deleted and added again: still there
                else:
                    added[key] = None
            elif key in added:
                added.pop(key)  # came and went between the two revisions
            else:
                deleted[key] = None
        return Churn(revision, self.revision, tuple(added), tuple(deleted), revision >= self.log_start)
