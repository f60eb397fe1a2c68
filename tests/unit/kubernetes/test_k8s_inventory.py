"""The Kubernetes inventory source against a real HTTP server speaking the list API."""

from __future__ import annotations

import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kube_api_server import KubeApiServer

from meshctl.model.config import InventorySection
from meshctl.source.kubernetes import KubernetesError, inventory_from_config


def _pod(ns: str, name: str, node: str | None, ip: str | None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "ports": [{"containerPort": 5432, "name": "pg"}]}]}
    if node:
        spec["nodeName"] = node
    spec.update(extra.pop("spec", {}))
    status: dict[str, Any] = {"phase": extra.pop("phase", "Running")}
    if ip:
        status["podIP"] = ip
    status.update(extra.pop("status", {}))
    return {
        "metadata": {"namespace": ns, "name": name, "labels": {"app": name}},
        "spec": spec,
        "status": status,
    }


def _objects(n_pods: int = 7) -> dict[str, list[dict[str, Any]]]:
    pods = [_pod("prod", f"web-{i}", "node-a", f"10.1.0.{10 + i}") for i in range(n_pods)]
    pods += [
        _pod("prod", "starting", "node-b", None, phase="Pending"),
        _pod("prod", "unscheduled", None, None, phase="Pending"),
        _pod("prod", "done", "node-a", "10.1.0.99", phase="Succeeded"),
        _pod("kube-system", "hostnet", "node-a", "172.18.0.2", spec={"hostNetwork": True}),
        _pod("prod", "dual", "node-b", "fd00::5", status={"podIPs": [{"ip": "fd00::5"}, {"ip": "10.1.1.5"}]}),
    ]
    return {
        "namespaces": [
            {"metadata": {"name": n, "labels": {"team": n}}} for n in ("prod", "kube-system", "dev")
        ],
        "pods": pods,
        "services": [
            {
                "metadata": {"namespace": "prod", "name": "db"},
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": "10.96.0.10",
                    "selector": {"app": "db"},
                    "ports": [{"port": 5432, "targetPort": "pg", "protocol": "TCP"}],
                },
            },
            {
                "metadata": {"namespace": "prod", "name": "headless"},
                "spec": {"clusterIP": "None", "selector": {"app": "x"}},
            },
        ],
        "nodes": [
            {
                "metadata": {"name": "node-a", "labels": {"zone": "a"}},
                "spec": {"podCIDR": "10.1.0.0/24"},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]},
            },
            {"metadata": {"name": "node-b"}, "spec": {"podCIDRs": ["fd00::/64", "10.1.1.0/24"]}},
        ],
    }


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with KubeApiServer(_objects()) as srv:
        (tmp_path / "kubeconfig").write_text(srv.kubeconfig())
        yield srv


def test_reads_every_resource_through_paginated_lists(server: KubeApiServer, tmp_path: Path) -> None:
    inv = inventory_from_config(
        InventorySection(source="kubernetes", kubeconfig="kubeconfig"), tmp_path, "t-go-k8s", page_size=3
    )
    assert [n.name for n in inv.namespaces] == ["dev", "kube-system", "prod"]
    keys = [p.key for p in inv.pods]
    assert keys == sorted([f"prod/web-{i}" for i in range(7)] + ["prod/starting", "prod/dual"])
    pods = {p.key: p for p in inv.pods}
    assert pods["prod/web-3"].pod_ip == IPv4Address("10.1.0.13")
    assert pods["prod/web-3"].ports[0].container_port == 5432 and pods["prod/web-3"].ports[0].name == "pg"
    assert pods["prod/starting"].pod_ip is None  # no IP yet: kept
    assert pods["prod/dual"].pod_ip == IPv4Address("10.1.1.5")
    assert pods["prod/web-0"].source.file == "kubernetes:t-go-k8s/pods/prod/web-0"
    assert sorted(s.split(":")[0] for s in inv.skipped) == [
        "kube-system/hostnet",
        "prod/done",
        "prod/unscheduled",
    ]
    db = next(s for s in inv.services if s.name == "db")
    assert db.cluster_ip == IPv4Address("10.96.0.10") and db.ports[0].target_port == "pg"
    assert next(s for s in inv.services if s.name == "headless").cluster_ip is None
    nodes = {n.name: n for n in inv.nodes}
    assert nodes["node-a"].pod_cidr == IPv4Network("10.1.0.0/24")
    assert nodes["node-a"].internal_ip == IPv4Address("192.0.2.1")
    assert nodes["node-b"].pod_cidr == IPv4Network("10.1.1.0/24")
    # 12 pods in pages of 3: 4 requests, the later ones carrying the previous continue token.
    pod_requests = [q for path, q in server.requests if path == "/api/v1/pods"]
    assert len(pod_requests) == 4
    assert all(q["limit"] == ["3"] for q in pod_requests)
    assert "continue" not in pod_requests[0] and all("continue" in q for q in pod_requests[1:])


def test_wrong_token_is_one_clear_error(server: KubeApiServer, tmp_path: Path) -> None:
    (tmp_path / "bad").write_text(server.kubeconfig(token="nope"))
    with pytest.raises(KubernetesError, match=r"listing namespaces: HTTP 401"):
        inventory_from_config(InventorySection(source="kubernetes", kubeconfig="bad"), tmp_path)


def test_expired_continue_token(server: KubeApiServer, tmp_path: Path) -> None:
    server.expire_continue = True
    with pytest.raises(KubernetesError, match="continue token expired"):
        inventory_from_config(
            InventorySection(source="kubernetes", kubeconfig="kubeconfig"), tmp_path, page_size=2
        )


def test_missing_kubeconfig_and_unreachable_server(tmp_path: Path) -> None:
    with pytest.raises(KubernetesError, match="cannot"):
        inventory_from_config(InventorySection(source="kubernetes", kubeconfig="absent"), tmp_path)
    with KubeApiServer({}) as srv:
        cfg = srv.kubeconfig()
    (tmp_path / "down").write_text(cfg)  # the server is gone now
    with pytest.raises(KubernetesError, match="listing namespaces"):
        inventory_from_config(InventorySection(source="kubernetes", kubeconfig="down"), tmp_path)
