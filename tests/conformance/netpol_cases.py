"""Load a netpol-analyzer conformance case into a ClusterSpec (one node) and expand its queries."""

from __future__ import annotations

import json
import lzma
import tarfile
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from meshctl.compile.documents import as_document
from meshctl.compile.spec import ClusterSpec, PodSpec

REPO = Path(__file__).resolve().parents[2]
# the project's shared/ folder next to the checkout (never copied into the repo)
ARCHIVE = REPO.parent / "shared" / "conformance" / "netpol-analyzer-cases.tar.xz"
NODE = "node-1"
PROTO = {"TCP": 6, "UDP": 17, "SCTP": 132}


def extract_cases(out: Path) -> Path:
    """Unpack the archive into `out`; returns its cases/ folder."""
    with lzma.open(ARCHIVE) as xz, tarfile.open(fileobj=xz) as tar:
        tar.extractall(out, filter="data")
    return out / "cases"


def pod_addresses(case: dict[str, Any]) -> dict[str, IPv4Address]:
    """The case's IPs where unique, else our own distinct addresses (host-network pods reuse one)."""
    seen: dict[str, int] = {}
    for p in case["pods"]:
        if p.get("ip"):
            seen[p["ip"]] = seen.get(p["ip"], 0) + 1
    out: dict[str, IPv4Address] = {}
    nxt = int(IPv4Address("10.250.0.1"))
    taken = {IPv4Address(ip) for ip, n in seen.items() if n == 1}
    for p in case["pods"]:
        key = f"{p['namespace']}/{p['name']}"
        ip = p.get("ip")
        if ip and seen[ip] == 1:
            out[key] = IPv4Address(ip)
            continue
        while IPv4Address(nxt) in taken:
            nxt += 1
        out[key] = IPv4Address(nxt)
        taken.add(IPv4Address(nxt))
        nxt += 1
    return out


def case_spec(case: dict[str, Any]) -> ClusterSpec:
    ips = pod_addresses(case)
    pods = tuple(
        PodSpec(
            p["namespace"],
            p["name"],
            dict(p.get("labels") or {}),
            NODE,
            tuple(
                (cp.get("name"), int(cp["containerPort"]), cp.get("protocol") or "TCP")
                for cp in p.get("ports") or ()
                if cp.get("containerPort") is not None
            ),
            ips[f"{p['namespace']}/{p['name']}"],
        )
        for p in case["pods"]
    )
    return ClusterSpec(
        cluster="conformance",
        nodes=(NODE,),
        namespaces=case["namespaces"],
        pods=pods,
        policies=tuple(as_document(d) for d in case["policies"]),
    )


def representatives(cidr: str, avoid: set[IPv4Address]) -> list[IPv4Address]:
    """A few addresses of an external CIDR class (first, middle, last), never a pod address."""
    net = IPv4Network(cidr)
    cands = [net.network_address, net.network_address + net.num_addresses // 2, net.broadcast_address]
    if net.num_addresses > 2:
        cands[0] += 1
        cands[2] -= 1
    out = []
    for a in dict.fromkeys(cands):
        while a in avoid and a in net:
            a += 1
        if a in net and a not in avoid:
            out.append(a)
    return out


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
