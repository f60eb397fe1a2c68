"""Pods and Namespaces kept current from the Kubernetes API: list, then watch, relist on 410.

What client-go's informers do, for the two resources the node agent needs: list (paginated) to
get the state and its resourceVersion, then watch from that version and apply ADDED, MODIFIED
and DELETED events (BOOKMARKs only move the version). When the API server has compacted past
the version (410 Gone, as an HTTP status or an ERROR event) the watch starts over with a list,
and a periodic resync relists anyway. Every change bumps `revision`, so the agent knows when
to bring its node in step. Parsing is meshctl.source.kubernetes's (pods that are not endpoints
are skipped the same way).

Tested against a local HTTP server speaking the list and watch API (tests/unit/kubernetes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meshctl.model.inventory import Namespace, Pod
from meshctl.source.kubernetes import DEFAULT_PAGE_SIZE, KubernetesError, list_all, parse_namespace, parse_pod

log = logging.getLogger(__name__)
GONE = 410


@dataclass(frozen=True)
class Snapshot:
    revision: int
    namespaces: tuple[Namespace, ...]
    pods: tuple[Pod, ...]


class _Resource:
    """One resource's objects by key, its list function and the version to watch from."""

    def __init__(self, name: str, lister: Callable[..., Any],
                 parse: Callable[[dict[str, Any]], tuple[str, Any | None]]) -> None:
        self.name, self.lister, self.parse = name, lister, parse
        self.objects: dict[str, Any] = {}
        self.version = ""


class InventoryWatch:
    """The cluster's Namespaces and Pods, current to the last event (`snapshot()`)."""

    def __init__(self, api: Any, cluster: str = "", page_size: int = DEFAULT_PAGE_SIZE,
                 watch_timeout_s: int = 60, resync_s: float = 600.0) -> None:
        from kubernetes import client

        core = client.CoreV1Api(api)
        self.api, self.page_size = api, page_size
        self.watch_timeout_s, self.resync_s = watch_timeout_s, resync_s
        self.lock = threading.Lock()
        self.revision = 0
        self.relists = 0  # lists made (the first one included): 410s and resyncs add to it
        self._cache: Snapshot | None = None

        def pod(item: dict[str, Any]) -> tuple[str, Any | None]:
            meta = item.get("metadata") or {}
            parsed = parse_pod(item, cluster)  # a pod that is not an endpoint is kept as None
            key = f"{meta.get('namespace', 'default')}/{meta.get('name')}"
            return key, parsed if isinstance(parsed, Pod) else None

        def namespace(item: dict[str, Any]) -> tuple[str, Any | None]:
            return str((item.get("metadata") or {}).get("name")), parse_namespace(item, cluster)

        self.resources = [_Resource("namespaces", core.list_namespace, namespace),
                          _Resource("pods", core.list_pod_for_all_namespaces, pod)]

    def snapshot(self) -> Snapshot:
        with self.lock:
            if self._cache is None or self._cache.revision != self.revision:
                ns = self.resources[0].objects
                pods = self.resources[1].objects
                self._cache = Snapshot(self.revision, tuple(ns[k] for k in sorted(ns)),
                                       tuple(pods[k] for k in sorted(pods) if pods[k] is not None))
            return self._cache

    def relist(self, resource: _Resource) -> None:
        versions: list[str] = []
        objects = {}
        for item in list_all(resource.lister, resource.name, self.page_size, versions):
            key, value = resource.parse(item)
            objects[key] = value
        with self.lock:
            if objects != resource.objects:
                self.revision += 1
            resource.objects, resource.version = objects, versions[-1] if versions else ""
            self.relists += 1

    def watch_once(self, resource: _Resource) -> None:
        """Stream events from the resource's version until the server ends the watch; raises
        ApiException 410 when the version is gone."""
        from kubernetes import watch

        stream = watch.Watch().stream(resource.lister, resource_version=resource.version,
                                      timeout_seconds=self.watch_timeout_s, allow_watch_bookmarks=True)
        for event in stream:  # raw_object: the JSON (the client's model of it is not used)
            kind, item = event.get("type"), event.get("raw_object") or {}
            version = str((item.get("metadata") or {}).get("resourceVersion") or "")
            with self.lock:
                if kind in ("ADDED", "MODIFIED"):
                    key, value = resource.parse(item)
                    if resource.objects.get(key) != value:
                        resource.objects[key] = value
                        self.revision += 1
                elif kind == "DELETED":
                    key, _ = resource.parse(item)
                    if resource.objects.pop(key, None) is not None:
                        self.revision += 1
                if version:
                    resource.version = version

    def follow(self, resource: _Resource, stop: threading.Event) -> None:
        """List, then watch until `stop`: relist on 410 Gone and every `resync_s`."""
        from kubernetes.client.exceptions import ApiException

        listed_at = 0.0
        while not stop.is_set():
            try:
                if not resource.version or time.monotonic() - listed_at > self.resync_s:
                    self.relist(resource)
                    listed_at = time.monotonic()
                self.watch_once(resource)
            except ApiException as err:
                if err.status == GONE:
                    log.info("kubernetes: %s watch expired (410 Gone): relisting", resource.name)
                    resource.version = ""
                    continue
                log.warning("kubernetes: watching %s: HTTP %s %s", resource.name, err.status, err.reason)
                stop.wait(1.0)
            except (KubernetesError, OSError, ValueError) as err:
                log.warning("kubernetes: watching %s: %s", resource.name, err)
                stop.wait(1.0)
            except Exception as err:  # urllib3's errors too: keep following, the agent stays up
                log.warning("kubernetes: watching %s: %s", resource.name, err)
                stop.wait(1.0)

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.follow, args=(r, stop), name=f"watch-{r.name}", daemon=True)
                   for r in self.resources]
        for t in threads:
            t.start()
        return threads
