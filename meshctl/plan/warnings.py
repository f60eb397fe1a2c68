"""Plan warnings: things a reviewer should know that are not changes.

Egress default deny introduced without DNS,
hand-made map entries and foreign programs on meshctl's interfaces, and the compiler's own
warnings (ineffective L7 rules, toFQDNs without a DNS rule, ...), passed through. Map fill is
meshctl.plan.capacity's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from meshctl.catalog import Catalog
from meshctl.dataplane.foreign import explain
from meshctl.nodestate import (
    DNS_PORT,
    PROTO_ANY,
    PROTO_UDP,
    Direction,
    ForeignProgram,
    NodeState,
    PolicyEntry,
    PolicyKey,
)
from meshctl.plan.model import PlanWarning
from meshctl.plan.names import Namer


def _allows_dns(entries: Mapping[PolicyKey, PolicyEntry]) -> bool:
    """Some egress allow entry covers UDP/53 to some peer."""
    for key, entry in entries.items():
        if key.direction != Direction.EGRESS or entry.deny:
            continue
        if key.protocol == PROTO_ANY:
            return True
        if key.protocol == PROTO_UDP and key.port_range is not None:
            lo, hi = key.port_range
            if lo <= DNS_PORT <= hi:
                return True
    return False


def dns_warnings(
    observed: Mapping[str, NodeState], intended: Mapping[str, NodeState], catalog: Catalog
) -> list[PlanWarning]:
    """Egress default deny introduced on an endpoint whose policy allows no DNS (UDP/53)."""
    out: list[PlanWarning] = []
    for name in sorted(intended):
        ns = intended[name]
        before = observed.get(name, NodeState(name))
        if ns.endpoints is before.endpoints:
            continue  # the same entries: none becomes default-deny
        namer = Namer(catalog, name, ns, before)
        for ip, ep in ns.endpoints.items():
            old = before.endpoints.get(ip)
            if not ep.enforce_egress or (old is not None and old.enforce_egress):
                continue
            if _allows_dns(ns.policies.get(ep.endpoint_id, {})):
                continue
            pod = namer.endpoint(ep.endpoint_id)
            out.append(PlanWarning(
                f"Egress default deny for {pod} without DNS",
                f"{pod} becomes default-deny for egress and no rule allows UDP/53 to any peer: "
                "name lookups will fail. Allow DNS with toEndpoints selecting "
                "k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns and toPorts 53/UDP.",
                node=name,
            ))
    return out


FOREIGN_SHOWN = 10  # hand-made entries named one by one per node; the rest are counted


def foreign_warnings(observed: Mapping[str, NodeState], catalog: Catalog) -> list[PlanWarning]:
    """Hand-made map entries (destroyed by the plan) and other programs on meshctl's interfaces
    (left alone): both can let through what the policy drops, so the reviewer hears of them."""
    out: list[PlanWarning] = []
    for name in sorted(observed):
        ns = observed[name]
        namer = Namer(catalog, name, ns)
        entries = sorted(ns.foreign)
        for entry in entries[:FOREIGN_SHOWN]:
            where = f"the policy map of {namer.endpoint(entry.owner)}" if entry.map == "policy" else entry.map
            out.append(PlanWarning(
                f"Hand-made entry in {where} on {name}",
                f"{explain(entry, namer.peer)}. meshctl never writes this entry; the plan removes it.",
                node=name,
            ))
        if len(entries) > FOREIGN_SHOWN:
            out.append(PlanWarning(f"{len(entries) - FOREIGN_SHOWN} more hand-made map entries on {name}",
                                   "see the changes marked hand-made; the plan removes them", node=name))
        out.extend(program_warning(name, p) for p in ns.foreign_programs)
    return out


def program_warning(node: str, p: ForeignProgram) -> PlanWarning:
    order = f", {p.position} meshctl's program" if p.position else ""
    return PlanWarning(
        f"Foreign program on {p.interface} on {node}",
        f"{p.hook} program {p.name or '(unnamed)'} (id {p.prog_id}){order}: it can pass traffic that "
        "meshctl's policy would drop. meshctl does not remove programs it did not attach.",
        node=node,
    )


def passthrough(compiled_warnings: Iterable[object]) -> list[PlanWarning]:
    """The compiler's warnings, kept as they are (their text already names file and line)."""
    out: list[PlanWarning] = []
    for w in compiled_warnings:
        if isinstance(w, PlanWarning):
            out.append(w)
        else:
            text = str(w)
            summary, _, detail = text.partition("\n")
            out.append(PlanWarning(summary, detail))
    return out
