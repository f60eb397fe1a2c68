"""Compile with the state's tables: identities and endpoint ids stay the numbers apply wrote.

Allocation happens at plan time, like Cilium allocating an identity when an endpoint appears:
the saved plan's targets use the new numbers, so they are saved into the state right away.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshctl.compile import Compiled
    from meshctl.source import DesiredState
    from meshctl.source.runtime import RuntimeInventory
    from meshctl.state.store import State


def compile_desired(desired: DesiredState, state: State, build: str,
                    runtime: RuntimeInventory | None = None) -> Compiled:
    """Compile `desired` with the state's identity and endpoint tables, or with a runtime
    inventory's (the numbers the cluster gave its pods, which the node agents use too)."""
    from meshctl.compile import EndpointTable, IdentityTable, compile_cluster

    ids, eps = (runtime.identities, runtime.endpoint_ids) if runtime is not None else (
        state.identities, state.endpoint_ids)
    identities = IdentityTable.from_dict(ids) if ids else IdentityTable()
    endpoints = EndpointTable.from_dict(eps) if eps else EndpointTable()
    return compile_cluster(desired, identities, endpoints, build)


def tables_of(compiled: Compiled) -> tuple[dict[str, Any], dict[str, Any]]:
    return compiled.identities.as_dict(), compiled.endpoint_ids.as_dict()


def persist_tables(state_dir: Path, state: State, compiled: Compiled, runtime: bool = False) -> State:
    """Save newly allocated identities/endpoint ids (numbers are never reused; serial unchanged).
    Caller holds the state lock. With a `runtime` inventory the numbers are the cluster's: not kept."""
    from meshctl.state.store import save_state

    if runtime:
        return state
    identities, endpoints = tables_of(compiled)
    if identities == state.identities and endpoints == state.endpoint_ids:
        return state
    return save_state(state_dir, state.with_tables(identities, endpoints))
