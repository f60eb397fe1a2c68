"""The agent's Kubernetes path against a real HTTP server speaking list and watch: pods followed
event by event, a 410 Gone that forces a relist, and identities allocated as CiliumIdentity
objects that two agents agree on."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kube_api_server import KubeApiServer

from meshctl.agentapi.kubeinventory import CrdIdentities, KubeRuntime
from meshctl.source.kubernetes import api_client
from meshctl.source.kubewatch import InventoryWatch


def pod(name: str, node: str, ip: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "prod", "name": name, "labels": labels or {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
            "status": {"phase": "Running", "podIP": ip}}


def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[KubeApiServer]:
    objects = {"namespaces": [{"metadata": {"name": "prod", "labels": {"team": "a"}}}],
               "pods": [pod("web-0", "node-a", "10.1.0.10", app="web"), pod("db", "node-b", "10.1.1.10")]}
    with KubeApiServer(objects) as srv:
        (tmp_path / "kubeconfig").write_text(srv.kubeconfig())
        yield srv


@pytest.fixture
def api(server: KubeApiServer, tmp_path: Path) -> Iterator[Any]:
    client = api_client(str(tmp_path / "kubeconfig"))
    yield client
    client.close()


@pytest.fixture
def watching(api: Any) -> Iterator[InventoryWatch]:
    watch = InventoryWatch(api, "c1", watch_timeout_s=1)
    stop = threading.Event()
    threads = watch.start(stop)
    until(lambda: watch.relists >= 2)  # namespaces and pods listed
    yield watch
    stop.set()
    for t in threads:
        t.join(5)


def keys(watch: InventoryWatch) -> list[str]:
    return [p.key for p in watch.snapshot().pods]


def test_list_then_watch_follows_adds_changes_and_deletes(server: KubeApiServer,
                                                          watching: InventoryWatch) -> None:
    assert keys(watching) == ["prod/db", "prod/web-0"]
    before = watching.revision
    server.put("pods", pod("web-1", "node-a", "10.1.0.11", app="web"))
    until(lambda: "prod/web-1" in keys(watching))
    server.put("pods", pod("web-1", "node-a", "10.1.0.11", app="web", version="v2"))
    until(lambda: {p.key: p for p in watching.snapshot().pods}["prod/web-1"].labels.get("version") == "v2")
    server.delete("pods", "prod/db")
    until(lambda: "prod/db" not in keys(watching))
    server.put("namespaces", {"metadata": {"name": "prod", "labels": {"team": "b"}}})
    until(lambda: watching.snapshot().namespaces[0].labels == {"team": "b"})
    assert watching.revision >= before + 4
    assert watching.relists == 2  # events only: no list since the first ones
    watches = [q for path, q in server.requests if path == "/api/v1/pods" and q.get("watch") == ["true"]]
    assert watches and all(q.get("resourceVersion") for q in watches)  # watched from the listed version


def test_a_410_gone_forces_a_relist_that_catches_up(server: KubeApiServer, watching: InventoryWatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", "meshctl.source.kubewatch")
    lists_before = watching.relists
    server.held.set()  # the agent falls behind: events it never receives ...
    server.put("pods", pod("late", "node-b", "10.1.1.11"))
    server.delete("pods", "prod/web-0")
    server.compact()  # ... and then they are compacted away: its version is gone
    server.held.clear()
    until(lambda: keys(watching) == ["prod/db", "prod/late"])
    assert watching.relists > lists_before  # caught up by listing again, not by events
    assert "pods watch expired (410 Gone): relisting" in caplog.text


def test_identities_are_cilium_identity_objects_every_agent_agrees_on(
        server: KubeApiServer, api: Any, watching: InventoryWatch, tmp_path: Path) -> None:
    one = KubeRuntime(watching, CrdIdentities(api), "c1", "node-a", tmp_path / "a")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = one()
    assert first is not None and len(first.identities["identities"]) == 2
    created = dict(server.identities)
    assert sorted(created) == ["256", "257"] and server.creates == [("256", 201), ("257", 201)]
    web = next(o for o in created.values() if o["security-labels"].get("k8s:app") == "web")
    assert web["security-labels"]["k8s:io.kubernetes.pod.namespace"] == "prod"
    assert web["security-labels"]["k8s:io.cilium.k8s.namespace.labels.team"] == "a"
    # another node's agent, starting later, reuses the objects instead of allocating again
    other = KubeRuntime(watching, CrdIdentities(api), "c1", "node-b", tmp_path / "b")
    second = other()
    assert second is not None and second.identities == first.identities and dict(server.identities) == created
    # a new label set: the first agent creates 258, the second finds it when it lists
    server.put("pods", pod("api", "node-b", "10.1.1.12", app="api"))
    until(lambda: "prod/api" in keys(watching))
    a, b = one(), other()
    assert a is not None and b is not None and a.identities == b.identities
    assert sorted(server.identities) == ["256", "257", "258"]

    class Raced(CrdIdentities):
        """Another agent takes the next number between this agent's list and its create."""

        rival_made = False

        def refresh(self) -> Any:
            table = super().refresh()
            if not self.rival_made:
                self.rival_made = True
                name = str(table.next_id)
                rival = {"metadata": {"name": name}, "security-labels": {"k8s:app": "rival"}}
                server.identities[name] = rival
            return table

    worker = ("k8s:app=worker", "k8s:io.kubernetes.pod.namespace=prod")
    table = Raced(api).allocate([worker])
    assert table.by_labels[worker] == 260 and table.by_labels[("k8s:app=rival",)] == 259
    assert server.creates[-2:] == [("259", 409), ("260", 201)]
    assert server.identities["260"]["security-labels"] == dict(label.split("=") for label in worker)
    # endpoint ids are each node's own, kept across restarts of the agent
    assert b.endpoint_ids["node-b"]["endpoints"] == {"prod/api": 2, "prod/db": 1}
    again = KubeRuntime(watching, CrdIdentities(api), "c1", "node-b", tmp_path / "b")()
    assert again is not None and again.endpoint_ids == b.endpoint_ids


def test_no_inventory_before_the_first_list(api: Any, tmp_path: Path) -> None:
    watch = InventoryWatch(api, "c1")
    assert KubeRuntime(watch, CrdIdentities(api), "c1", "node-a", tmp_path)() is None
