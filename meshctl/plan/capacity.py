"""Map capacities (the `*_MAP_SIZE` defines of bpf/lib/common.h, via dataplane.structs): the
plan's refusal of a state that would not fit, and its warnings about maps nearly full.

A map that overflows fails the apply half-way through a node (the kernel answers E2BIG on the
first entry too many), so the plan refuses such a state up front: an error, not a warning.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from meshctl.catalog import Catalog
from meshctl.dataplane import structs as S
from meshctl.errors import CompileError
from meshctl.nodestate import NodeState
from meshctl.plan.model import PlanWarning
from meshctl.plan.names import Namer

FILL_WARNING_RATIO = 0.8  # warn from 80 % full: a few more rules could fail an apply
SETTINGS_FILE = "bpf/lib/common.h"


@dataclass(frozen=True)
class Overflow:
    node: str
    map_name: str
    what: str  # whose entries: "endpoint production/api-0", "services", ...
    entries: int
    capacity: int
    setting: str  # the define to raise

    def __str__(self) -> str:
        return (
            f"node {self.node}: map {self.map_name} would overflow: {self.what} needs {self.entries} "
            f"entries, capacity {self.capacity}; raise {self.setting} in {SETTINGS_FILE} "
            "(and rebuild the datapath), or reduce the rules"
        )


def overflows(intended: Mapping[str, NodeState], catalog: Catalog) -> Iterator[Overflow]:
    """Every map of every node whose intended content exceeds its capacity."""
    for name in sorted(intended):
        ns = intended[name]
        sizes = [
            ("ipcache", "the ipcache", len(ns.ipcache), S.IPCACHE_MAP_SIZE, "IPCACHE_MAP_SIZE"),
            ("endpoints", "the endpoints", len(ns.endpoints), S.ENDPOINTS_MAP_SIZE, "ENDPOINTS_MAP_SIZE"),
            ("policy_maps", "the endpoints' policy maps", len(ns.policies), S.POLICY_OUTER_MAP_SIZE,
             "POLICY_OUTER_MAP_SIZE"),
        ]
        lb = ns.load_balancer
        if lb.enabled:
            sizes += [
                ("lb_services", "the service frontends", len(lb.services), S.LB_SERVICES_MAP_SIZE,
                 "LB_SERVICES_MAP_SIZE"),
                ("lb_backends", "the service backends", len(lb.backends), S.LB_BACKENDS_MAP_SIZE,
                 "LB_BACKENDS_MAP_SIZE"),
                ("lb_slots", "the backend slots", sum(len(s.backends) for s in lb.services.values()),
                 S.LB_SLOTS_MAP_SIZE, "LB_SLOTS_MAP_SIZE"),
                ("lb_maglev", "the Maglev tables", sum(1 for s in lb.services.values() if s.maglev),
                 S.LB_MAGLEV_OUTER_MAP_SIZE, "LB_MAGLEV_OUTER_MAP_SIZE"),
            ]
        for map_name, what, n, size, setting in sizes:
            if n > size:
                yield Overflow(name, map_name, what, n, size, setting)
        namer = Namer(catalog, name, ns)
        for eid, entries in ns.policies.items():
            if len(entries) > S.POLICY_MAP_SIZE:
                yield Overflow(name, "policy map", f"endpoint {namer.endpoint(eid)}", len(entries),
                               S.POLICY_MAP_SIZE, "POLICY_MAP_SIZE")


def check_capacity(intended: Mapping[str, NodeState], catalog: Catalog) -> None:
    """Raise a CompileError naming every overflowing map (at most 5 lines, then a count)."""
    found = list(overflows(intended, catalog))
    if not found:
        return
    lines = [str(o) for o in found[:5]]
    if len(found) > 5:
        lines.append(f"... and {len(found) - 5} more")
    raise CompileError("the desired state does not fit the BPF maps:\n  " + "\n  ".join(lines))


def _pct(n: int, size: int) -> str:
    return f"{n} of {size} entries ({100 * n / size:.1f}%)"


def capacity_warnings(intended: Mapping[str, NodeState], catalog: Catalog) -> list[PlanWarning]:
    out: list[PlanWarning] = []
    largest: tuple[int, str, str] = (0, "", "")
    for name in sorted(intended):
        ns = intended[name]
        namer = Namer(catalog, name, ns)
        for eid, entries in ns.policies.items():
            n = len(entries)
            if n > largest[0]:
                largest = (n, namer.endpoint(eid), name)
            if n >= FILL_WARNING_RATIO * S.POLICY_MAP_SIZE:
                out.append(PlanWarning(
                    f"Policy map of {namer.endpoint(eid)} on {name} is nearly full",
                    f"{_pct(n, S.POLICY_MAP_SIZE)}; broaden selectors or port ranges before it overflows",
                    node=name,
                ))
        if len(ns.ipcache) >= FILL_WARNING_RATIO * S.IPCACHE_MAP_SIZE:
            fill = _pct(len(ns.ipcache), S.IPCACHE_MAP_SIZE)
            out.append(PlanWarning(f"ipcache on {name} is nearly full", fill, node=name))
    if largest[0]:
        n, ep, node = largest
        biggest_ipcache = max((len(ns.ipcache) for ns in intended.values()), default=0)
        out.append(PlanWarning(
            "Map fill",
            f"largest policy map: {ep} on {node}, {_pct(n, S.POLICY_MAP_SIZE)}; "
            f"largest ipcache: {_pct(biggest_ipcache, S.IPCACHE_MAP_SIZE)}",
            severity="info",
        ))
    return out
