"""Helpers of the apply/plan/drift/recover lab tests: a three-tier copy with its own lab.

Each test module copies examples/three-tier into a tmp dir under its own cluster name (t-ap-*),
so state/ and plans/ live in the copy, and brings one lab up for the whole module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import git

from meshctl.nodestate import NodeState

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "three-tier"
MESHCTL = Path(sys.executable).with_name("meshctl")


def unique_cluster(base: str) -> str:
    """`base` plus this process's pid: two people running the suite at once never share a lab."""
    return f"{base}-{os.getpid()}"


def example_copy(
    name: str, dest: Path, cluster: str, verify_window: float = 0.05, metrics_base_port: int | None = None
) -> Path:
    """examples/`name` at `dest`, renamed to `cluster`, with a short verify window."""
    shutil.copytree(REPO / "examples" / name, dest, ignore=shutil.ignore_patterns("state", "plans"))
    toml = dest / "meshctl.toml"
    text = toml.read_text()
    text, renamed = re.subn(r'(?m)^(\[cluster\]\nname = )".*"', rf'\1"{cluster}"', text)
    assert renamed == 1, f"{name}/meshctl.toml: expected `name` right under [cluster]"
    text = re.sub(r"(?m)^verifyWindow = .*$", f"verifyWindow = {verify_window}", text)
    if metrics_base_port is not None:
        text += f"\n[observability]\nmetricsBasePort = {metrics_base_port}\n"
    toml.write_text(text)
    return dest


def inline_repo(root: Path, toml: str, pods: str) -> Path:
    """A desired-state repo at `root` made of a meshctl.toml and one inventory file."""
    (root / "inventory").mkdir(parents=True)
    (root / "meshctl.toml").write_text(toml)
    (root / "inventory" / "pods.yaml").write_text(pods)
    return root


def git_init(root: Path, message: str) -> git.Repo:
    """`root` as a git repository on `main` with everything committed (state/ and plans/ ignored)."""
    (root / ".gitignore").write_text("state/\nplans/\n")
    repo = git.Repo.init(root, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "meshctl-tests").set_value("user", "email", "tests@example.invalid")
    repo.git.add(A=True)
    repo.index.commit(message)
    return repo


def three_tier_copy(dest: Path, cluster: str, verify_window: float = 0.05) -> Path:
    return example_copy("three-tier", dest, cluster, verify_window)


def lab_inventory_copy(dest: Path, cluster: str, toml_tail: str = "") -> Path:
    """The three-tier demo whose lab is the inventory (`[inventory] source = "lab"`: pods churn
    with `lab pod add/delete`), with `toml_tail` appended to its meshctl.toml."""
    root = three_tier_copy(dest, cluster)
    with (root / "meshctl.toml").open("a") as toml:
        toml.write(f'\n[inventory]\nsource = "lab"\n{toml_tail}')
    return root


@contextmanager
def cli_lab(repo: Path) -> Iterator[Path]:
    """`meshctl lab up` (with its flow agents) for the block, `lab down` always after."""
    try:
        up = meshctl(repo, "lab", "up", timeout=120)
        assert up.returncode == 0, up.stderr
        yield repo
    finally:
        meshctl(repo, "lab", "down", timeout=120)


def meshctl(
    repo: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (a subprocess) in `repo`."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [str(MESHCTL), *args], cwd=repo, capture_output=True, text=True, env=full_env, timeout=timeout,
        input=stdin,
    )


@contextmanager
def lab_of(repo: Path) -> Iterator[str]:
    """The repo's lab, up for the block and always torn down after."""
    from meshctl.lab import cluster
    from meshctl.lab.repo import cluster_of, load_topology

    name, nodes = cluster_of(repo)
    try:
        cluster.up(load_topology(repo), with_datapath=True)
        yield name
    finally:
        cluster.down(name, nodes)


@contextmanager
def flow_agents(root: Path, cluster: str, nodes: tuple[str, ...]) -> Iterator[None]:
    """The lab's flow agents of `nodes` for the block (their stores exist), stopped after."""
    import time

    from meshctl.flows.store import store_path
    from meshctl.lab import agents

    try:
        agents.start(root, cluster, list(nodes))
        deadline = time.monotonic() + 20
        while not all(store_path(root / "state", n).exists() for n in nodes):
            assert time.monotonic() < deadline, "flow agents did not create their stores"
            time.sleep(0.1)
        assert set(agents.running(cluster)) == set(nodes)
        yield
    finally:
        agents.stop(cluster)


def observe_all(repo: Path) -> dict[str, NodeState]:
    from meshctl.app.workspace import open_workspace

    ws = open_workspace(repo)
    return ws.backend.observe_many(ws.node_order)


def connect(cluster: str, src: str, dst: str, port: int) -> bool:
    from meshctl.lab import probe, registry

    return probe.connect(cluster, src, registry.pod(cluster, dst).address, port, "TCP", 0.5).ok


def bpftool_json(*args: str) -> list[dict[str, object]]:
    """bpftool -j output, entries sorted (hash and trie dumps have no stable order)."""
    out = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, check=True)
    return sorted(json.loads(out.stdout), key=lambda e: json.dumps(e, sort_keys=True))


def map_dumps(cluster: str, node: str) -> dict[str, object]:
    """bpftool dumps of the node's maps; policy_maps resolved to the content of each inner map
    (inner map ids change on every swap; their entries are what the datapath enforces)."""
    pins = Path("/sys/fs/bpf/meshctl") / cluster / node
    out: dict[str, object] = {}
    for name in ("ipcache", "endpoints", "config"):
        out[name] = bpftool_json("map", "dump", "pinned", str(pins / name))
    inner = {}
    for entry in bpftool_json("map", "dump", "pinned", str(pins / "policy_maps")):
        key = json.dumps(entry["key"])
        value: list[str] = entry["value"]  # type: ignore[assignment]
        inner_id = int.from_bytes(bytes(int(b, 16) for b in value[:4]), "little")
        inner[str(key)] = bpftool_json("map", "dump", "id", str(inner_id))
    out["policy_maps"] = dict(sorted(inner.items()))
    return out


def drift_causes(repo: Path, env: dict[str, str] | None = None) -> dict[str, set[str]]:
    """`meshctl drift` of the repo: node -> the causes of its drift ("desired": the desired state
    is not applied yet, "node": changed on the node outside meshctl); clean nodes are absent."""
    res = meshctl(repo, "drift", "-o", "json", env=env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    return {node: {c["cause"] for c in changes} for node, changes in report["nodes"].items()}
