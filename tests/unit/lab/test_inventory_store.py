"""The lab's inventory store: one writer at a time, numbers given once and kept, churn logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshctl.compile import EndpointTable, IdentityTable, compile_cluster
from meshctl.errors import LabError
from meshctl.lab import inventory
from meshctl.lab.inventory import StoredPod


@pytest.fixture(autouse=True)
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MESHCTL_LAB_DIR", str(tmp_path))
    return tmp_path


def load() -> inventory.RuntimeInventory:
    loaded = inventory.load("c")
    assert loaded is not None
    return loaded


def seed(store: inventory.Store) -> None:
    store.namespaces["demo"] = {"team": "a"}
    store.add_pod("demo/api", StoredPod("node-1", "10.0.1.2", {"app": "api"}, [["http", 80, "TCP"]]))
    store.add_pod("demo/web", StoredPod("node-2", "10.0.2.2", {"app": "web"}))


def test_identities_once_per_label_set_endpoint_ids_per_node() -> None:
    inventory.update("c", seed)
    first = load()
    ids = IdentityTable.from_dict(first.identities)
    assert first.revision == 1 and len(ids.by_labels) == 2
    inventory.update("c", lambda s: s.add_pod("demo/api-2", StoredPod("node-1", "10.0.1.3", {"app": "api"})))
    second = load()
    again = IdentityTable.from_dict(second.identities)
    assert again.by_labels == ids.by_labels  # an existing label set keeps its number
    inventory.update("c", lambda s: s.add_pod("demo/new", StoredPod("node-1", "10.0.1.4", {"app": "new"})))
    third = load()
    grown = IdentityTable.from_dict(third.identities)
    assert len(grown.by_labels) == 3 and max(grown.by_labels.values()) == max(ids.by_labels.values()) + 1
    eps = EndpointTable.from_dict(third.endpoint_ids)
    assert eps.get("node-1", "demo/api") == 1 and eps.get("node-1", "demo/api-2") == 2
    assert eps.get("node-2", "demo/web") == 1
    inventory.update("c", lambda s: s.delete_pod("demo/api-2"))
    fourth = load()
    inventory.update("c", lambda s: s.add_pod("demo/api-3", StoredPod("node-1", "10.0.1.3", {"app": "api"})))
    fifth = load()
    assert EndpointTable.from_dict(fifth.endpoint_ids).get("node-1", "demo/api-3") == 4  # 2 is not reused
    assert fourth.churn_since(1).deleted == ()  # api-2 came after revision 1 and went
    assert fifth.churn_since(1).added == ("demo/new", "demo/api-3")


def test_the_compiler_allocates_nothing_new_with_the_store_tables() -> None:
    """The plan and the agents compile with the store's numbers: the same identity per pod."""
    from meshctl.source.config import parse_config
    from meshctl.source.desired import DesiredState

    inventory.update("c", seed)
    inv = load()
    config = parse_config('[cluster]\nname = "c"\n[[nodes]]\nname = "node-1"\npodCIDR = "10.0.1.0/24"\n'
                          '[[nodes]]\nname = "node-2"\npodCIDR = "10.0.2.0/24"\n', Path("."))
    desired = inv.apply_to(DesiredState(Path("."), None, False, config, (), (), (), ()))
    tables = IdentityTable.from_dict(inv.identities), EndpointTable.from_dict(inv.endpoint_ids)
    compiled = compile_cluster(desired, *tables, "b")
    assert compiled.identities == tables[0] and compiled.endpoint_ids.by_pod == tables[1].by_pod


def test_load_follows_the_file_and_a_corrupt_file_is_one_error(run_dir: Path) -> None:
    assert inventory.load("c") is None
    inventory.update("c", seed)
    loaded = inventory.load("c")
    assert loaded is not None and [p.key for p in loaded.pods] == ["demo/api", "demo/web"]
    api = loaded.pods[0]
    assert str(api.pod_ip) == "10.0.1.2" and api.ports[0].name == "http" and api.labels == {"app": "api"}
    inventory.inventory_path("c").write_text("{not json")
    with pytest.raises(LabError, match=r"lab inventory .* is unreadable"):
        inventory.load("c")
    with pytest.raises(LabError, match="is unreadable"):
        inventory.update("c", seed)
    inventory.delete("c")
    assert inventory.load("c") is None


def test_the_log_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory, "LOG_LIMIT", 3)
    inventory.update("c", seed)
    for i in range(3):
        inventory.update("c", lambda s, i=i: s.add_pod(f"demo/p{i}", StoredPod("node-1", f"10.0.1.{10 + i}")))
    raw = json.loads(inventory.inventory_path("c").read_text())
    assert len(raw["log"]) == 3 and raw["log_start"] == 1  # revision 1's two adds dropped
    loaded = inventory.load("c")
    assert loaded is not None and not loaded.churn_since(0).complete and loaded.churn_since(1).complete
