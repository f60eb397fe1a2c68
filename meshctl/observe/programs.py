"""Programs of others on the interfaces meshctl manages: read (kernel) and parse (pure).

meshctl attaches with tcx links. Anything else at those hooks changes what the datapath does:
a tcx program before meshctl's that returns TC_ACT_OK ends the chain and passes the packet
unchecked; a classic tc (cls_bpf) filter runs after tcx. So observe lists every program at the
tcx hooks (BPF_PROG_QUERY, in run order) and every classic tc bpf filter (`tc -j`, only on
devices that carry a clsact or ingress qdisc: meshctl never makes one) of the pod veths and the
underlay device, and reports those that are not meshctl's.
"""

from __future__ import annotations

import errno as errno_mod
import json
import subprocess
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from meshctl.dataplane.libbpf import BPF_TCX_EGRESS, BPF_TCX_INGRESS, prog_info_by_id, query_tcx
from meshctl.dataplane.netns import device_indexes, in_netns, netns_exists
from meshctl.errors import DataplaneError
from meshctl.nodestate import ForeignProgram

TCX_HOOKS = {"tcx-ingress": BPF_TCX_INGRESS, "tcx-egress": BPF_TCX_EGRESS}
# the classic tc hooks each qdisc kind has (meshctl makes neither: it attaches with tcx)
QDISC_HOOKS = {"clsact": ("tc-ingress", "tc-egress"), "ingress": ("tc-ingress",)}


@dataclass(frozen=True)
class RawHook:
    """The programs at one hook of one device, in the order they run: (id, name)."""

    interface: str
    hook: str
    programs: tuple[tuple[int, str], ...]


def read_hooks(
    netns: str | None, interfaces: Iterable[str], devices: dict[str, int] | None = None
) -> list[RawHook]:
    """Every program at the tcx and classic tc hooks of `interfaces` in the node's netns;
    `devices`: its name -> index table when the caller has read it already."""
    names = sorted(set(interfaces))
    if not names or (netns is not None and not netns_exists(netns)):
        return []
    out: list[RawHook] = []
    known: dict[int, str] = {}  # program id -> name: meshctl's programs sit on every device
    with in_netns(netns):
        present = device_indexes() if devices is None else devices
        indexes = {n: present[n] for n in names if n in present}
        for name, index in indexes.items():
            for hook, attach_type in TCX_HOOKS.items():
                ids = query_tcx(index, attach_type, f"device {name}")
                if ids:
                    out.append(RawHook(name, hook, tuple((i, _name(i, known)) for i in ids)))
    out.extend(_classic(netns, indexes))
    return out


def _name(prog_id: int, known: dict[int, str]) -> str:
    if prog_id not in known:
        info = prog_info_by_id(prog_id)
        known[prog_id] = info.name if info is not None else ""
    return known[prog_id]


def _classic(netns: str | None, indexes: dict[str, int]) -> list[RawHook]:
    """cls_bpf filters on devices with a clsact/ingress qdisc (one qdisc dump for the netns).

    Qdiscs and filters are read with `tc -j` (run in the node's netns): pyroute2 0.9 does not
    decode TCA_BPF_ID, and decodes a dump of 10,000 devices' qdiscs ten times slower than tc;
    only devices someone gave a clsact or ingress qdisc are asked for filters."""
    qdiscs = {q.get("dev"): q.get("kind") for q in _tc(netns, ["qdisc", "show"], "qdiscs", "the node")}
    out: list[RawHook] = []
    for device in sorted(d for d in indexes if qdiscs.get(d) in QDISC_HOOKS):
        for hook in QDISC_HOOKS[str(qdiscs[device])]:
            filters = _tc(netns, ["filter", "show", "dev", device, hook.removeprefix("tc-")], "tc filters",
                          f"{device} ({hook})")
            progs = tuple(
                (int(f["options"]["prog"]["id"]), str(f["options"]["prog"].get("name", "")))
                for f in filters
                if f.get("kind") == "bpf" and "prog" in f.get("options", {})
            )
            if progs:
                out.append(RawHook(device, hook, progs))
    return out


def _tc(netns: str | None, args: list[str], what: str, of: str) -> list[dict[str, Any]]:
    argv = ["tc", "-j", *args]
    if netns is not None:
        argv = ["nsenter", f"--net=/run/netns/{netns}", *argv]
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    if res.returncode != 0:  # never read a failure as "nothing there": that would hide a program
        raise DataplaneError(f"read {what} of", of, errno_mod.EIO, res.stderr.strip())
    return list(json.loads(res.stdout or "[]"))


def foreign_programs(hooks: Iterable[RawHook], ours: Collection[int]) -> list[ForeignProgram]:
    """The programs that are not meshctl's, with where they run relative to meshctl's."""
    out: list[ForeignProgram] = []
    for raw in hooks:
        mine = [i for i, (pid, _) in enumerate(raw.programs) if pid in ours]
        for position, (pid, name) in enumerate(raw.programs):
            if pid in ours:
                continue
            if raw.hook.startswith("tc-"):
                where = "after"  # classic tc runs once the tcx chain passed the packet on
            elif not mine:
                where = ""
            else:
                where = "before" if position < mine[0] else "after"
            out.append(ForeignProgram(raw.interface, raw.hook, pid, name, where))
    return sorted(out)
