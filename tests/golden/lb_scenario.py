"""Two nodes whose load balancer changes, for the golden plans of a mode change and a scale-out.

`[loadBalancer]` goes from `mode = "snat"`, random selection to `mode = "dsr"`, Maglev (the
default table of 16381 slots, several kilobytes of base64 per service); then the api Deployment
grows from three replicas to four under Maglev, which moves about a quarter of the slots.
"""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address as A
from typing import Any

from meshctl.catalog import Catalog
from meshctl.compile.services import LbNode, compile_load_balancer
from meshctl.model.config import LoadBalancerSettings
from meshctl.model.inventory import Pod
from meshctl.model.service import Service, ServicePort
from meshctl.nodestate import NodeState
from meshctl.plan import Plan, build_plan
from meshctl.state import State

NODES = (LbNode("node-1", A("172.31.250.1")), LbNode("node-2", A("172.31.250.2")))
SERVICES = [
    Service(namespace="demo", name="api", cluster_ip=A("10.96.0.10"), selector={"app": "api"},
            ports=(ServicePort(port=80, target_port=3000),)),
    Service(namespace="demo", name="database", cluster_ip=A("10.96.0.20"), selector={"app": "database"},
            ports=(ServicePort(port=5432, target_port=5432),)),
]
CREATED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
STATE = State(lineage="0b7e4c1e-0000-4000-8000-000000000002", serial=7)


class _Desired:
    commit = "9d1e2f3a4b5c6d7e8f9012a3b4c5d6e7f8091a2b"
    dirty = False


def _pods(api_replicas: int) -> list[Pod]:
    api = [Pod(namespace="demo", name=f"api-{i}", labels={"app": "api"}, node_name=f"node-{1 + i % 2}",
               podIP=f"10.101.2.{10 + i}") for i in range(api_replicas)]
    db = [Pod(namespace="demo", name="database-0", labels={"app": "database"}, node_name="node-2",
              podIP="10.101.2.30")]
    return api + db


def nodes(api_replicas: int, **settings: Any) -> dict[str, NodeState]:
    lb = compile_load_balancer(SERVICES, _pods(api_replicas), NODES,
                               LoadBalancerSettings(kube_proxy_replacement=True, **settings))
    return {name: NodeState(name, load_balancer=state) for name, state in lb.items()}


def plan(before: dict[str, NodeState], after: dict[str, NodeState]) -> Plan:
    return build_plan(before, after, Catalog(), desired=_Desired(), state=STATE, impact=False,
                      created_at=CREATED)


def mode_change() -> Plan:
    """snat + random -> dsr + Maglev, same backends."""
    return plan(nodes(3), nodes(3, mode="dsr", algorithm="maglev"))


def scale_out() -> Plan:
    """dsr + Maglev, the api grows from three backends to four."""
    return plan(nodes(3, mode="dsr", algorithm="maglev"), nodes(4, mode="dsr", algorithm="maglev"))
