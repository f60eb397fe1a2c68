"""The load balancer end to end in the lab: real TCP through services, east-west and north-south.

Two nodes; demo/client on n1; backends demo/api-1 (n1), demo/api-2 and demo/api-3 (n2), all
serving 3000. The LB state comes from compile_load_balancer (the real compiler), is written with
lb_maps.write + the netdev attachment (what reconcile does), and is read back by observe.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

import pytest
from lab_helpers import lab, unique
from lb_helpers import ReplyTap

from meshctl.lab import cluster, datapath, probe
from meshctl.lab.topology import LabNode, LabPod, Topology, validate

pytestmark = pytest.mark.privileged

if not datapath.available():
    pytest.skip("meshctl.dataplane.node not available", allow_module_level=True)

from meshctl.compile.services import LbNode, compile_load_balancer  # noqa: E402
from meshctl.dataplane import lb_maps  # noqa: E402
from meshctl.dataplane import structs as S  # noqa: E402
from meshctl.dataplane.node import NodeDatapath  # noqa: E402
from meshctl.lab.seed import seed_node  # noqa: E402
from meshctl.model.config import LoadBalancerSettings  # noqa: E402
from meshctl.model.inventory import Pod  # noqa: E402
from meshctl.model.service import Service, ServicePort  # noqa: E402
from meshctl.nodestate import EndpointEntry, LoadBalancerState  # noqa: E402
from meshctl.observe import observe_node  # noqa: E402

NAME = unique("t-lb-e2e")
VIP, LB_IP = IPv4Address("10.96.0.10"), IPv4Address("192.0.2.50")
BACKENDS = ("demo/api-1", "demo/api-2", "demo/api-3")
IDS = {"demo/client": 1001, "demo/api-1": 1002, "demo/api-2": 1002, "demo/api-3": 1002}
EPS = {"demo/client": 11, "demo/api-1": 12, "demo/api-2": 13, "demo/api-3": 14}
SERVICE = Service(namespace="demo", name="api", type="LoadBalancer", cluster_ip=VIP, selector={"app": "api"},
                  load_balancer_ip=LB_IP, ports=(ServicePort(port=80, target_port=3000, node_port=30080),))


def topology() -> Topology:
    topo = Topology(
        cluster=NAME, underlay_cidr=IPv4Network("172.31.252.0/24"),
        nodes=(LabNode("n1", IPv4Network("10.212.1.0/24")), LabNode("n2", IPv4Network("10.212.2.0/24"))),
        pods=(LabPod("demo/client", "n1", (80,)), LabPod("demo/api-1", "n1", (3000,)),
              LabPod("demo/api-2", "n2", (3000,)), LabPod("demo/api-3", "n2", (3000,))),
        external=True, external_routes=(IPv4Network(f"{LB_IP}/32"),), external_via="n1",
    )
    validate(topo)
    return topo


class Lab:
    def __init__(self, res: cluster.UpResult) -> None:
        self.res = res
        reg = res.registry
        self.pods = [Pod(namespace=k.split("/")[0], name=k.split("/")[1], node_name=p.node, podIP=p.ip,
                         labels={"app": "api"} if k in BACKENDS else {"app": "client"})
                     for k, p in reg.pods.items()]
        self.nodes = [LbNode(n, IPv4Address(r.underlay_ip)) for n, r in sorted(reg.nodes.items())]
        self.dps = {n: NodeDatapath(NAME, n, r.netns) for n, r in reg.nodes.items()}
        self.state = {n: LoadBalancerState() for n in self.dps}

    def node_ip(self, node: str) -> IPv4Address:
        return next(n.underlay_ip for n in self.nodes if n.name == node)

    def configure(self, **settings: object) -> dict[str, LoadBalancerState]:
        s = LoadBalancerSettings(kube_proxy_replacement=True, **settings)  # type: ignore[arg-type]
        targets = compile_load_balancer([SERVICE], self.pods, self.nodes, s)
        for node, dp in self.dps.items():
            lb_maps.write(dp.pin_dir, self.state[node], targets[node])
            dp.attach_netdev(targets[node].interface)
            self.state[node] = targets[node]
        return targets

    def flush_flows(self) -> None:
        for dp in self.dps.values():
            with lb_maps.Map.from_pin(dp.pin_dir / "lb_flows") as m:
                m.clear()



@pytest.fixture(scope="module")
def env() -> Iterator[Lab]:
    with lab(topology(), with_datapath=True) as res:
        assert res.datapath
        reg = res.registry
        ipcache = {IPv4Network(f"{p.ip}/32"): IDS[k] for k, p in reg.pods.items()}
        for node in ("n1", "n2"):
            local = {k: p for k, p in reg.pods.items() if p.node == node}
            seed_node(NAME, node, ipcache=ipcache, policies={EPS[k]: {} for k in local},
                      endpoints={p.address: EndpointEntry(EPS[k], IDS[k], False, False)
                                 for k, p in local.items()})
        yield Lab(res)


def who(result: probe.ProbeResult) -> str:
    assert result.ok, result.error
    return result.reply.strip().rsplit(":", 1)[0]


def test_clusterip_from_a_pod_spreads_random_then_maglev(env: Lab) -> None:
    for algorithm in ("random", "maglev"):
        env.configure(algorithm=algorithm, maglev_table_size=251)
        seen = Counter(who(probe.connect(NAME, "demo/client", VIP, 80)) for _ in range(30))
        assert set(seen) == set(BACKENDS), (algorithm, seen)


def test_observe_reads_back_exactly_what_was_written(env: Lab) -> None:
    targets = env.configure(algorithm="maglev", maglev_table_size=251)
    for node, dp in env.dps.items():
        observed = observe_node(NAME, node, dp.netns).load_balancer
        assert observed == targets[node]


@pytest.mark.parametrize("mode", ["snat", "dsr"])
def test_nodeport_and_loadbalancer_from_the_external_client(env: Lab, mode: str) -> None:
    env.configure(mode=mode)
    env.flush_flows()
    ext = env.res.registry.external
    assert ext is not None
    remote = [env.res.registry.pods[p].ip for p in ("demo/api-2", "demo/api-3")]
    with ReplyTap(env.res.registry.nodes["n1"].netns, ext.underlay_ip, remote, 3000) as tap:
        for addr, port in ((env.node_ip("n1"), 30080), (LB_IP, 80)):
            seen = Counter(who(probe.connect_external(NAME, str(addr), port)) for _ in range(12))
            assert set(seen) <= set(BACKENDS) and len(seen) >= 2, (mode, addr, seen)
        remote_replies, requests = tap.read()
    with lb_maps.Map.from_pin(env.dps["n1"].pin_dir / "lb_flows") as flows:
        rev_n1 = [S.LbFlowValue.from_buffer_copy(v) for k, v in flows.items()
                  if S.LbFlowKey.from_buffer_copy(k).kind == S.LB_FLOW_REV]
    if mode == "dsr":
        # Replies of connections to n2's backends never touch n1: no reverse state, no packets.
        assert not [v for v in rev_n1 if v.flags & S.LbFlowFlags.SNAT]
        assert remote_replies == 0
    else:
        assert any(v.flags & S.LbFlowFlags.SNAT and v.packets > 0 for v in rev_n1)
        assert remote_replies > 0  # the tap does see replies when they come back through n1
    assert requests > 0  # the counter works: the client's packets do arrive on n1's eth0


def test_removed_backend_gets_no_new_connections(env: Lab) -> None:
    env.configure(algorithm="maglev", maglev_table_size=251)
    survivors = [p for p in env.pods if p.name != "api-2"]
    s = LoadBalancerSettings(kube_proxy_replacement=True, algorithm="maglev", maglev_table_size=251)
    targets = compile_load_balancer([SERVICE], survivors, env.nodes, s)
    for node, dp in env.dps.items():
        lb_maps.write(dp.pin_dir, env.state[node], targets[node])
        env.state[node] = targets[node]
    seen = {who(probe.connect(NAME, "demo/client", VIP, 80)) for _ in range(20)}
    assert "demo/api-2" not in seen and seen <= {"demo/api-1", "demo/api-3"}
