"""The service map's data: workloads, edges per verdict, bounded memory, views over real stores."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from meshctl.catalog import Catalog, IdentityInfo
from meshctl.flows.enrich import EVENT, EnrichContext, Enricher
from meshctl.flows.flow import Flow
from meshctl.flows.store import FlowStore, store_path
from meshctl.nodestate import FrozenMap
from meshctl.ui.graph import RECENT, ServiceMap, node_of
from meshctl.ui.plan import plan_edges
from meshctl.ui.server import UiApp, UiSettings

CNP = "CiliumNetworkPolicy"


def flow(src: str, dst: str, port: int, verdict: int = 1, reason: int = 0, t: int = 1, **kw: object) -> Flow:
    return Flow(time_ns=t, node="n1", verdict=verdict, reason=reason, direction=0, protocol=6,
                src_ip="10.0.0.1", dst_ip="10.0.0.2", src_port=40000, dst_port=port, src_identity=256,
                dst_identity=257, src_pod=src, dst_pod=dst, **kw)  # type: ignore[arg-type]


def test_ends_are_workloads_entities_cidrs_or_world() -> None:
    assert node_of("shop/web-7d9f8c6b5d-x2k9p", (), "")[:3] == ("shop/web", "web", "shop")
    assert node_of("shop/pod-a", ("k8s:app=cart",), "")[:2] == ("shop/cart", "cart")  # the app label wins
    assert node_of("", ("reserved:world",), "1.2.3.4")[0] == "world"
    assert node_of("", ("cidr:10.0.0.0/8", "reserved:world"), "10.1.1.1")[0] == "cidr:10.0.0.0/8"
    assert node_of("", ("reserved:host",), "172.31.0.1")[:2] == ("entity:host", "host")
    assert node_of("", (), "192.0.2.9")[0] == "ip:192.0.2.9"


def test_edges_count_verdicts_and_keep_the_rule_of_each() -> None:
    m = ServiceMap()
    m.add([
        flow("shop/web-1", "shop/db-0", 5432, verdict=2, reason=2, t=1, isolated_by=(f"{CNP} shop/db",)),
        flow("shop/web-2", "shop/db-0", 5432, verdict=1, t=2, policy=f"{CNP} shop/db ingress[0]"),
        flow("shop/web-1", "shop/db-0", 5432, verdict=4, reason=2, t=3, isolated_by=(f"{CNP} shop/x",)),
        flow("shop/web-1", "shop/api", 80, t=4),
    ])
    snap = m.snapshot()
    assert sorted(n["id"] for n in snap["nodes"]) == ["shop/api", "shop/db", "shop/web"]
    edges = {e["id"]: e for e in snap["edges"]}
    db = edges["shop/web>shop/db>tcp/5432"]
    assert db["counts"] == {"forwarded": 1, "dropped": 1, "audit": 1}
    assert (db["verdict"], db["label"]) == ("both", "tcp/5432")
    assert edges["shop/web>shop/api>tcp/80"]["verdict"] == "forwarded"
    detail = m.detail("shop/web>shop/db>tcp/5432")
    assert detail is not None
    assert detail["rules"] == {
        "dropped": "default deny: shop/db-0 ingress isolated by CiliumNetworkPolicy shop/db",
        "forwarded": "allowed by CiliumNetworkPolicy shop/db ingress[0]",
        "audit": "would drop: default deny: shop/db-0 ingress isolated by CiliumNetworkPolicy shop/x",
    }
    assert [f["time_ns"] for f in detail["flows"]] == [3, 2, 1]  # newest first


def test_changes_are_batched_and_memory_is_bounded() -> None:
    m = ServiceMap()
    m.add([flow("a/x", "a/y", 1, t=0)])
    m.snapshot()
    assert m.take_changes() is None
    m.add(flow("a/x", "a/y", 1, t=t) for t in range(1, 10_001))  # a flood on one known connection
    changes = m.take_changes()
    assert changes is not None and changes["edges"] == [] and changes["nodes"] == []
    assert changes["counts"] == [["a/x>a/y>tcp/1", 10_001, 0, 0, "forwarded"]] and changes["flows"] == 10_001
    assert len(m.edges["a/x>a/y>tcp/1"].recent) == RECENT
    m.add([flow("a/x", "b/z", 2), flow("a/x", "b/z", 2, verdict=2, reason=2)])
    changes = m.take_changes()
    assert changes is not None and [n["id"] for n in changes["nodes"]] == ["b/z"]
    [new] = changes["edges"]  # a new edge goes whole, once
    assert (new["id"], new["verdict"]) == ("a/x>b/z>tcp/2", "both")
    assert new["counts"] == {"forwarded": 1, "dropped": 1, "audit": 0}
    assert changes["counts"] == []


def test_plan_edges_fold_pods_and_name_the_change() -> None:
    view = plan_edges([("prod/cache", "prod/postgres", "tcp", 5432, "DROPPED"),
                       ("world", "prod/postgres", "tcp", 5432, "DROPPED"),
                       ("prod/web-1", "prod/api", "TCP", 80, "FORWARDED"),
                       ("prod/web-2", "prod/api", "TCP", 80, "FORWARDED")], "plan x")
    changes = {c["id"]: (c["change"], c["pairs"]) for c in view["changes"]}
    assert changes == {"prod/cache>prod/postgres>tcp/5432": ("drop", 1),
                       "world>prod/postgres>tcp/5432": ("drop", 1), "prod/web>prod/api>tcp/80": ("allow", 2)}


def _store(state_dir: Path, records: list[tuple[str, str, int, int]]) -> None:
    """(src ip, dst ip, dport, verdict) records into node n1's store, enriched with pod names."""
    catalog = Catalog(identities=FrozenMap({256: IdentityInfo(256, ("k8s:app=web",), ("shop/web-1",))}))
    path = store_path(state_dir, "n1")
    path.parent.mkdir(parents=True, exist_ok=True)
    pods = {"10.0.0.1": "shop/web-1", "10.0.0.2": "shop/db-0", "10.0.1.3": "other/cron"}
    with FlowStore(path, "n1") as store:
        e = Enricher(EnrichContext("n1", catalog, pods), store.dims)
        now = time.monotonic_ns()  # bpf_ktime_get_ns(): "now", whatever the machine's uptime
        raw = b"".join(EVENT.pack(now + i, socket.inet_aton(s), socket.inet_aton(d), socket.htons(40000 + i),
                                  socket.htons(port), 6, 0, verdict, 2 if verdict == 2 else 0, 256, 257, 1, 0,
                                  2, 60)
                       for i, (s, d, port, verdict) in enumerate(records))
        store.insert(e.rows(raw))


def test_a_view_reads_the_window_with_observe_filters_then_follows(tmp_path: Path) -> None:
    _store(tmp_path, [("10.0.0.1", "10.0.0.2", 5432, 2), ("10.0.1.3", "10.0.0.2", 5432, 1)])
    app = UiApp(UiSettings(tmp_path, "c", since="24h"))
    page = app.new_view({"namespace": ["shop"], "verdict": ["DROPPED"]})
    assert [e["id"] for e in page["edges"]] == ["shop/web>shop/db>tcp/5432"] and page["note"] == ""
    everything = app.new_view({})
    assert len(everything["edges"]) == 2
    view = app.view(page["view"])
    _store(tmp_path, [("10.0.0.1", "10.0.0.2", 5432, 2), ("10.0.0.1", "10.0.0.2", 5432, 1)])
    with FlowStore(store_path(tmp_path, "n1"), "n1", readonly=True) as store:
        app.poll(view, [store])
    changes = view.map.take_changes()
    assert changes is not None  # the filter holds live too: the forwarded flow is not counted
    assert changes["counts"] == [["shop/web>shop/db>tcp/5432", 0, 2, 0, "dropped"]]


def test_no_store_is_a_note_not_an_error(tmp_path: Path) -> None:
    page = UiApp(UiSettings(tmp_path, "c")).new_view({})
    assert page["edges"] == [] and "no flow store" in page["note"]


def test_an_edge_seen_only_in_audit_is_an_audit_edge() -> None:
    m = ServiceMap()
    m.add([flow("a/x", "a/y", 1, verdict=4, reason=2)])
    [edge] = m.snapshot()["edges"]
    assert (edge["verdict"], edge["audit"]) == ("audit", True)
    m.add([flow("a/x", "a/y", 1, verdict=1, reason=1)])
    assert m.snapshot()["edges"][0]["verdict"] == "audit"  # forwarded today, staged policies would drop it


def test_rules_name_their_file_and_line(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compile"))
    from test_staged import _compile, _db_policy

    from meshctl.ui.locate import locator

    doc = _db_policy()
    doc["source"] = {"file": "policies/db.yaml", "line": 4}
    compiled = _compile(doc)
    cookie = next(c for c, o in compiled.origins.items() if o.name == "database-security")
    locate = locator(compiled)
    allowed = flow("prod/backend", "prod/postgres", 5432, cookie=cookie, policy="x ingress[0]")
    assert locate(allowed) == " (policies/db.yaml:4)"  # the rule's line (here: its document's)
    assert locate(flow("prod/backend", "prod/postgres", 5432)) == ""  # not enforced: nothing to name
    isolated = flow("prod/cache", "prod/postgres", 5432, verdict=2, reason=2,
                    isolated_by=("CiliumNetworkPolicy prod/database-security",))
    assert locate(isolated) == " (policies/db.yaml:4)"
    m = ServiceMap(locate)
    m.add([isolated])
    detail = m.detail("prod/cache>prod/postgres>tcp/5432")
    assert detail is not None and detail["rules"]["dropped"].endswith(
        "isolated by CiliumNetworkPolicy prod/database-security (policies/db.yaml:4)")


def test_the_plan_view_of_two_revisions_is_the_war_story(tmp_path: Path) -> None:
    import shutil

    import git

    from meshctl.ui.plan import from_revisions

    examples = Path(__file__).resolve().parents[3] / "examples"
    root = tmp_path / "desired"
    shutil.copytree(examples / "production", root, ignore=shutil.ignore_patterns("state", "plans"))
    repo = git.Repo.init(root, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "t").set_value("user", "email", "t@example.invalid")
    repo.git.add(A=True)
    repo.index.commit("production")
    shutil.copy(examples / "production-changes" / "database-security.yaml", root / "policies")  # the worktree
    view = from_revisions(root, "main", None)
    changes = {c["id"]: c["change"] for c in view["changes"]}
    assert changes == {"production/cache>production/postgres>tcp/5432": "drop",
                       "world>production/postgres>tcp/5432": "drop"}
    assert view["title"].startswith("main (") and "uncommitted" in view["title"]
