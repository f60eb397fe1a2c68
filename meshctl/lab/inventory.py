"""The lab's inventory store: the pods and namespaces the lab runs, as an API server keeps them.

With `[inventory] source = "lab"`, the lab is the inventory (as a Kubernetes API server is on a
cluster): `lab up` seeds it from the repo's Pods and Namespaces, `lab pod add` and `lab pod
delete` change it, and the node agents follow it. It also holds the identities and endpoint ids
the pods were given, allocated here when a pod is written (as Cilium allocates an identity when
a pod with a new label set appears), so every agent and the CLI's plan use the same numbers.

One JSON file per cluster next to the registry (<lab run dir>/<cluster>.inventory.json), written
atomically under an flock; readers cache it by file stamp. `revision` grows with every write.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from meshctl.compile.identities import EndpointTable, IdentityTable
from meshctl.compile.labels import identity_label_sets
from meshctl.compile.spec import namespace_labels
from meshctl.errors import LabError
from meshctl.gcpause import paused_gc
from meshctl.lab.registry import file_lock, run_dir
from meshctl.model.base import SourceRef
from meshctl.model.inventory import Namespace
from meshctl.source.runtime import PodRow, RuntimeInventory
from meshctl.state.atomic import atomic_write

FORMAT_VERSION = 1
LOG_LIMIT = 10_000  # changes kept for "churn since the last apply"


def inventory_path(cluster: str) -> Path:
    return run_dir() / f"{cluster}.inventory.json"


@dataclass
class StoredPod:
    node: str
    ip: str
    labels: dict[str, str] = field(default_factory=dict)
    ports: list[list[Any]] = field(default_factory=list)  # [name or None, port, protocol]


@dataclass
class Store:
    """The file's content, mutable while a writer holds the lock."""

    cluster: str
    revision: int = 0
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    pods: dict[str, StoredPod] = field(default_factory=dict)
    identities: IdentityTable = field(default_factory=IdentityTable)
    endpoint_ids: EndpointTable = field(default_factory=EndpointTable)
    log: list[list[Any]] = field(default_factory=list)  # [revision, "+"/"-", key]
    log_start: int = 0

    def add_pod(self, key: str, pod: StoredPod) -> None:
        self.pods[key] = pod
        self.log.append([self.revision + 1, "+", key])

    def delete_pod(self, key: str) -> StoredPod:
        pod = self.pods.pop(key)
        self.log.append([self.revision + 1, "-", key])
        return pod

    def allocate(self) -> None:
        """Numbers for new label sets and new pods (kept forever, never reused)."""
        sets = identity_label_sets(((k.split("/", 1)[0], p.labels) for k, p in self.pods.items()),
                                   lambda ns: namespace_labels(self.namespaces, ns), self.cluster)
        self.identities = self.identities.allocate(sets)
        by_node: dict[str, list[str]] = {}
        for key, pod in self.pods.items():
            by_node.setdefault(pod.node, []).append(key)
        for node, keys in sorted(by_node.items()):
            self.endpoint_ids = self.endpoint_ids.allocate(node, keys)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION, "cluster": self.cluster, "revision": self.revision,
            "namespaces": self.namespaces,
            "pods": {k: {"node": p.node, "ip": p.ip, "labels": p.labels, "ports": p.ports}
                     for k, p in sorted(self.pods.items())},
            "identities": self.identities.as_dict(), "endpoint_ids": self.endpoint_ids.as_dict(),
            "log": self.log, "log_start": self.log_start,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Store:
        if raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format {raw.get('format_version')!r}, expected {FORMAT_VERSION}")
        return cls(
            cluster=str(raw["cluster"]), revision=int(raw["revision"]),
            namespaces={str(k): dict(v) for k, v in raw["namespaces"].items()},
            pods={str(k): StoredPod(str(v["node"]), str(v["ip"]), dict(v["labels"]), list(v["ports"]))
                  for k, v in raw["pods"].items()},
            identities=IdentityTable.from_dict(raw["identities"]),
            endpoint_ids=EndpointTable.from_dict(raw["endpoint_ids"]),
            log=[list(e) for e in raw["log"]], log_start=int(raw["log_start"]),
        )


_CACHE: dict[Path, tuple[tuple[int, int, int], RuntimeInventory]] = {}


def load(cluster: str) -> RuntimeInventory | None:
    """The lab's inventory now (None when it has none); read once per version of the file."""
    path = inventory_path(cluster)
    try:
        stamp = _stamp(path)
        hit = _CACHE.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        with paused_gc():  # 10,000 pods are 100,000 small acyclic objects
            inventory = _runtime(orjson.loads(path.read_bytes()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise _unreadable(path, err) from err
    _CACHE[path] = (stamp, inventory)
    return inventory


def _runtime(raw: Mapping[str, Any]) -> RuntimeInventory:
    """The file's JSON straight into the runtime inventory (readers need no Store)."""
    if raw.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"format {raw.get('format_version')!r}, expected {FORMAT_VERSION}")
    cluster = str(raw["cluster"])
    namespaces = tuple(
        Namespace.model_construct(name=n, labels=dict(labels), source=SourceRef.model_construct(
            file=f"lab:{cluster}/namespaces/{n}", line=0))
        for n, labels in sorted(raw["namespaces"].items()))
    rows = tuple(PodRow(*k.split("/", 1), v["node"], v["ip"], v["labels"], tuple(map(tuple, v["ports"])))
                 for k, v in sorted(raw["pods"].items()))
    log = tuple((int(r), str(op), str(k)) for r, op, k in raw["log"])
    return RuntimeInventory(f"the lab of {cluster}", int(raw["revision"]), namespaces, rows,
                            raw["identities"], raw["endpoint_ids"], log, int(raw["log_start"]))


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _unreadable(path: Path, err: Exception) -> LabError:
    return LabError(f"lab inventory {path} is unreadable ({err}); `meshctl lab down` removes it")


def update(cluster: str, change: Callable[[Store], None]) -> int:
    """Read, `change`, allocate numbers, write revision + 1: one writer at a time, atomically.
    Returns the new revision."""
    path = inventory_path(cluster)
    # 10,000 pods are only acyclic objects: the cyclic collector pauses meanwhile
    with file_lock(run_dir() / f".{cluster}.inventory.lock"), paused_gc():
        try:
            store = Store.from_json(orjson.loads(path.read_bytes()))
        except FileNotFoundError:
            store = Store(cluster)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise _unreadable(path, err) from err
        change(store)
        store.allocate()
        store.revision += 1
        if len(store.log) > LOG_LIMIT:
            dropped = store.log[: len(store.log) - LOG_LIMIT]
            store.log = store.log[len(dropped):]
            store.log_start = int(dropped[-1][0])
        atomic_write(path, orjson.dumps(store.to_json(), option=orjson.OPT_SORT_KEYS))
    return store.revision


def delete(cluster: str) -> None:
    inventory_path(cluster).unlink(missing_ok=True)
    (run_dir() / f".{cluster}.inventory.lock").unlink(missing_ok=True)
