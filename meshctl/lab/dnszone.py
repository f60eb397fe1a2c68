"""The lab's DNS zone: what its kube-dns pods answer (meshctl.lab.server --dns-zone).

Kubernetes' names (`SERVICE.NS.svc.cluster.local` for clusterIPs, `A-B-C-D.NS.pod.cluster.local`
for pods) and the `[[lab.externalHosts]]` of meshctl.toml, with their TTLs. Written by `lab up`
(atomically: the servers read it again whenever it changes).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from meshctl.lab.registry import Registry, log_dir
from meshctl.state.atomic import atomic_write

CLUSTER_DOMAIN = "cluster.local"
CLUSTER_TTL = 5  # CoreDNS's kubernetes plugin default

Zone = dict[str, tuple[list[str], int]]  # name -> (IPv4 addresses, ttl)


def zone_path(cluster: str) -> Path:
    return log_dir(cluster) / "dns-zone.json"


def records(reg: Registry, services: Iterable[tuple[str, IPv4Address]], hosts: Iterable[Any]) -> Zone:
    zone: Zone = {}
    for key, ip in services:
        ns, name = key.split("/", 1)
        zone[f"{name}.{ns}.svc.{CLUSTER_DOMAIN}"] = ([str(ip)], CLUSTER_TTL)
    for key, pod in reg.pods.items():
        ns = key.split("/", 1)[0]
        zone[f"{pod.ip.replace('.', '-')}.{ns}.pod.{CLUSTER_DOMAIN}"] = ([pod.ip], CLUSTER_TTL)
    for host in hosts:
        zone[host.name] = ([str(host.address)], host.ttl)
    return zone


def write(cluster: str, zone: Zone) -> None:
    path = zone_path(cluster)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {name: {"addresses": addrs, "ttl": ttl} for name, (addrs, ttl) in sorted(zone.items())}
    atomic_write(path, json.dumps(body, indent=1).encode())


def read(path: Path) -> Zone:
    body = json.loads(path.read_text())
    return {name: (list(rec["addresses"]), int(rec["ttl"])) for name, rec in body.items()}
