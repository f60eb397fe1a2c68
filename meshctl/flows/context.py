"""Where the agent's names come from: the desired repo compiled with the state's tables, and the
rules behind cookies from the applied revision (recorded in the state by apply).

The agent cannot compile per event: it builds an EnrichContext at start and again when the
state file or its inventory changes (an apply bumps the serial and rewrites state.json). It
compiles with the state's tables as `meshctl plan` does (meshctl.state.tables), so identities
and endpoint ids are the numbers apply wrote into the kernel. Pod IPs come from whoever runs the
agent (the lab's registry on the lab).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshctl.catalog import Catalog
from meshctl.errors import MeshctlError
from meshctl.flows.enrich import EnrichContext

if TYPE_CHECKING:
    from meshctl.model.config import InventorySection
from meshctl.nodestate import FrozenMap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepoInfo:
    """The few facts of a desired repo the agent and the observe commands need."""

    root: Path
    cluster: str
    state_dir: Path
    nodes: tuple[str, ...]
    retention: str
    max_rows: int
    metrics_address: str
    metrics_base_port: int
    inventory: InventorySection  # [inventory]: where the agent follows pods from

    def metrics_port(self, node: str) -> int:
        if not self.metrics_base_port:
            return 0
        return self.metrics_base_port + (self.nodes.index(node) if node in self.nodes else 0)


def repo_info(root: Path) -> RepoInfo:
    """meshctl.toml only (no YAML, no compile): cheap enough for every CLI call."""
    from meshctl.errors import ConfigError
    from meshctl.source.config import CONFIG_FILE, parse_config

    path = Path(root) / CONFIG_FILE
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(str(path), None, "", f"cannot read ({err.strerror}); pass -C REPO") from None
    cfg = parse_config(text, Path(root).resolve())
    obs = cfg.observability
    return RepoInfo(Path(root), cfg.cluster, cfg.state_dir, tuple(n.name for n in cfg.nodes),
                    obs.flow_retention, obs.flow_max_rows, obs.metrics_address, obs.metrics_base_port,
                    cfg.inventory)


def change_token(info: RepoInfo, watched: Sequence[Path] = ()) -> tuple[int, ...]:
    """Changes when an apply rewrote the state, a `watched` file (the lab's registry) changed or
    the repo was edited: time to reload."""
    out = []
    for p in (info.state_dir / "state.json", *watched):
        try:
            out.append(p.stat().st_mtime_ns)
        except OSError:
            out.append(0)
    skip = {info.state_dir.resolve(), (info.root / "plans").resolve(), (info.root / ".git").resolve()}
    newest, count = 0, 0
    for p in _repo_files(info.root.resolve(), skip):
        count += 1
        newest = max(newest, p.stat().st_mtime_ns)
    return (*out, newest, count)


def _repo_files(root: Path, skip: set[Path]) -> list[Path]:
    """The desired repo's YAML and TOML files (not state/, plans/, .git)."""
    out: list[Path] = []
    for entry in root.iterdir():
        if entry in skip or entry.name.startswith("."):
            continue
        if entry.is_dir():
            out.extend(_repo_files(entry, skip))
        elif entry.suffix in (".yaml", ".yml", ".toml"):
            out.append(entry)
    return out


def load_context(info: RepoInfo, node: str,
                 pod_ips: Mapping[str, IPv4Address] | None = None) -> EnrichContext:
    """Compile the repo with the state's tables; `pod_ips` fill the pods without status.podIP."""
    from meshctl.dataplane.node import current_build
    from meshctl.source import load_desired
    from meshctl.state import load_state
    from meshctl.state.tables import compile_desired

    desired = load_desired(info.root)
    if pod_ips:
        desired = desired.with_pod_ips(pod_ips)
    state = load_state(info.state_dir)
    try:
        build = current_build()
    except MeshctlError:
        build = ""
    compiled = compile_desired(desired, state, build)
    pod_by_ip = {str(p.pod_ip): p.key for p in desired.pods if p.pod_ip is not None}
    catalog = applied_catalog(compiled.catalog, state.rules)
    return EnrichContext(node=node, catalog=catalog, pod_by_ip=pod_by_ip)


def applied_catalog(compiled: Catalog, rules: Mapping[str, Any]) -> Catalog:
    """The catalog with its rules taken from the applied revision: a cookie in the kernel was put
    there by an apply, so the rule it names is the one that apply recorded, whatever the working
    tree says now (an edited or uncommitted policy must not rename the rule behind a drop). Before
    any apply recorded rules, the compiled ones stand in."""
    from meshctl.plan.model import rule_from

    if not rules:
        return compiled
    return replace(compiled, cookies=FrozenMap({int(c): rule_from(o) for c, o in rules.items()}))


def try_load_context(info: RepoInfo, node: str, previous: EnrichContext | None,
                     pod_ips: Callable[[], Mapping[str, IPv4Address]] = dict) -> EnrichContext:
    """Like load_context, but a broken repo keeps the previous names (logged), never stops the agent."""
    try:
        return load_context(info, node, pod_ips())
    except MeshctlError as err:
        log.warning("agent %s: cannot build the catalog (%s); flows keep %s names", node, err,
                    "the previous" if previous else "no")
        return previous or EnrichContext(node=node)
