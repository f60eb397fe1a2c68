"""One interface to "the nodes", chosen once when a workspace opens (`[apply] driver`).

- lab (default, meshctl.backend.lab): the embedded lab on this host. Its registry gives node
  netns, pod IPs and node underlay addresses; node states are read straight from the pinned
  maps, checks connect from the pods' netns, drops come from the lab agents' flow stores.
- agent (meshctl.backend.agents): a real cluster, one `meshctl agent` per node (the DaemonSet).
  Pod IPs come from the inventory, node states, checks and drops from each node's agent.

The use cases (meshctl.app) talk to a Backend only; no other package above the lab reads the
lab's registry. Heavy imports (libbpf, pyroute2, the kubernetes client) stay inside functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from meshctl.apply.engine import CheckRunner, FlowDropSource, Journal, NodeDriver
    from meshctl.compile.intent import NodeIntent
    from meshctl.connections import TrackedConnection
    from meshctl.dataplane.dnsproxy import CachedIp
    from meshctl.nodestate import NodeState, WireguardState
    from meshctl.source import DesiredState
    from meshctl.source.runtime import RuntimeInventory
    from meshctl.state import State


class Backend(Protocol):
    """What the use cases need of "the live cluster", whatever carries it."""

    kind: str  # "lab" | "agent"
    cluster: str
    # the cluster's inventory now, with the numbers it gave the pods (`[inventory] source = "lab"`):
    # the node agents follow it between applies; None when pods come from the repo
    runtime: RuntimeInventory | None

    @property
    def nodes(self) -> frozenset[str]:
        """Nodes this backend can reach."""
        ...

    def describe(self) -> str: ...

    def observe(self, node: str) -> NodeState: ...

    def observe_many(self, nodes: Iterable[str]) -> dict[str, NodeState]: ...

    def wireguard(self, nodes: Iterable[str]) -> dict[str, WireguardState]:
        """Each node's live WireGuard state (a plan limited to some nodes needs every node's keys)."""
        ...

    def connections(self, nodes: Iterable[str]) -> dict[str, tuple[TrackedConnection, ...]]:
        """Each node's live established connections (its conntrack table; runtime, not intent)."""
        ...

    def fqdn_cache(self, nodes: Iterable[str]) -> dict[str, list[CachedIp]]:
        """Each node's IPs learned by its DNS proxy (runtime state, not intent)."""
        ...

    def fqdn_clean(self, nodes: Iterable[str], pattern: str) -> dict[str, list[str]]:
        """Each node's DNS proxy forgets the IPs learned for names `pattern` matches ("" = all)."""
        ...

    def state_lock(self, state_dir: Path, operation: str) -> AbstractContextManager[Any]:
        """The local state's lock: the lab's state lives here (a lock file, broken by a person);
        with the agents it is a cache of the nodes' (an flock that dies with its holder)."""
        ...

    def driver(self, plan_id: str = "", hold: Sequence[str] = ()) -> NodeDriver:
        """The engine's driver; with a `plan_id`, for that apply (the agents: one apply session that
        first locks the `hold` nodes, in that order, waiting up to --lock-timeout for another's)."""
        ...

    def journal(self, state_dir: Path, plan_id: str) -> Journal:
        """Where an apply journals: the state dir (lab), or memory (each agent journals its node)."""
        ...

    def end_apply(self, driver: NodeDriver, applied: Iterable[str]) -> list[str]:
        """The apply is recorded: release the nodes it holds; the errors of nodes no longer held."""
        ...

    def check_runner(self, driver: NodeDriver, pod_nodes: Mapping[str, str],
                     pod_ips: Mapping[str, IPv4Address], state_dir: Path) -> CheckRunner:
        """Runs apply's verify probes as real connections from the source pods."""
        ...

    def drop_source(self, driver: NodeDriver, pod_ips: Mapping[str, IPv4Address],
                    state_dir: Path) -> FlowDropSource:
        """The drop gate's flows: the dropped flows each node recorded in a time window."""
        ...

    def restore(self, node: str, before: NodeState) -> None:
        """Put `node` back at `before` exactly (recover), or raise."""
        ...

    def uninstall(self, node: str, state_dir: Path) -> NodeState:
        """Remove meshctl's programs, maps and devices from `node`, and its share of the state;
        returns what was there."""
        ...

    def shares(self, nodes: Iterable[str], state_dir: Path) -> dict[str, State | None]:
        """Each node's share of the state (meshctl.state.cluster); None: it holds none."""
        ...

    def record_share(self, node: str, share: dict[str, Any], state_dir: Path) -> None:
        """Hand `node` its share of the state an apply recorded (it must be at the share's state)."""
        ...

    def intent(self, node: str, state_dir: Path) -> NodeIntent | None:
        """The intent `node` holds (None: none yet), to compare it with the pods of now."""
        ...

    def record_intent(self, node: str, intent: NodeIntent, state_dir: Path) -> None:
        """Hand `node` the intent its applied state was compiled from (its agent follows pods
        under it); the agents receive it with the apply itself (AgentDriver)."""
        ...



def open_backend(desired: DesiredState) -> tuple[DesiredState, Backend]:
    """The backend `[apply] driver` names, and the desired state with what it knows filled in
    (pod IPs; the lab: its nodes' underlay addresses). Raises LabError when the lab is not up."""
    if desired.config.apply.driver == "agent":
        from meshctl.backend.agents import open_agents

        return open_agents(desired)
    from meshctl.backend.lab import open_lab

    return open_lab(desired)
