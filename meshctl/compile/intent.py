"""The applied intent a node keeps, so its agent can follow pods without the CLI.

What an apply put on a node is a function of two inputs: the intent (policies and cluster
settings from git, the datapath build, the WireGuard and load-balancer state the plan chose)
and the inventory (pods, namespaces and the identity and endpoint-id tables they were given).
The node keeps the intent as JSON; when pods come and go the agent compiles the same intent
with the new inventory, as Cilium's agent regenerates endpoints under the policy in force.
Policies travel as their documents (YAML keys), so the agent runs the very compiler the plan ran.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from meshctl.compile.cluster import Compiled, CompileMemo, compile_spec
from meshctl.compile.documents import Document
from meshctl.compile.identities import EndpointTable, IdentityTable
from meshctl.compile.ir import SourceRef
from meshctl.compile.spec import ClusterSpec, PodSpec
from meshctl.nodestate import LoadBalancerState, NodeState, WireguardState

FORMAT_VERSION = 1


def _plain(value: Any) -> Any:
    """JSON for a document body dumped by the loader (enums, addresses and tuples inside)."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, IPv4Address | IPv4Network):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class NodeIntent:
    """Everything but the inventory that made a node's applied state."""

    cluster: str
    nodes: tuple[str, ...]
    mode: str
    ipv6_pass: bool
    policies: tuple[Document, ...]
    build: str
    encryption: WireguardState
    load_balancer: LoadBalancerState
    plan_id: str = ""
    commit: str = ""

    @classmethod
    def of(cls, spec: ClusterSpec, build: str, target: NodeState, plan_id: str = "",
           commit: str = "") -> NodeIntent:
        docs = tuple(replace(d, body=_plain(d.body)) for d in spec.policies)
        return cls(spec.cluster, spec.nodes, spec.mode, spec.ipv6_pass, docs, build, target.encryption,
                   target.load_balancer, plan_id, commit)

    def spec(self, namespaces: Mapping[str, Mapping[str, str]], pods: Sequence[PodSpec]) -> ClusterSpec:
        return ClusterSpec(self.cluster, self.nodes, namespaces, tuple(pods), self.policies, self.mode,
                           self.ipv6_pass)

    def compile(self, node: str, namespaces: Mapping[str, Mapping[str, str]], pods: Sequence[PodSpec],
                identities: IdentityTable, endpoint_ids: EndpointTable,
                memo: CompileMemo | None = None) -> tuple[NodeState, Compiled]:
        """The node's state under this intent with these pods (and the compile, for its memo). Only
        `node` is compiled: the other nodes' pods are its peers, not its endpoints."""
        spec = replace(self.spec(namespaces, pods), nodes=(node,))
        compiled = compile_spec(spec, identities, endpoint_ids, self.build, memo=memo)
        state = compiled.nodes.get(node) or NodeState(node)
        return replace(state, encryption=self.encryption, load_balancer=self.load_balancer), compiled

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION, "cluster": self.cluster, "nodes": list(self.nodes),
            "mode": self.mode, "ipv6_pass": self.ipv6_pass, "build": self.build,
            "plan_id": self.plan_id, "commit": self.commit,
            "encryption": self.encryption.canonical(), "load_balancer": self.load_balancer.canonical(),
            "policies": [{"kind": d.kind, "namespace": d.namespace, "name": d.name, "body": d.body,
                          "staged": d.staged, "file": d.source.file if d.source else "",
                          "line": d.source.line if d.source else 0} for d in self.policies],
        }

    def to_text(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> NodeIntent:
        """Raises ValueError on anything that is not an intent of this format."""
        try:
            if d["format_version"] != FORMAT_VERSION:
                raise ValueError(f"format_version {d['format_version']!r}, expected {FORMAT_VERSION}")
            docs = tuple(
                Document(str(p["kind"]), str(p["namespace"]), str(p["name"]), dict(p["body"]),
                         SourceRef(str(p["file"]), int(p["line"])) if p.get("file") else None,
                         bool(p.get("staged", False)))
                for p in d["policies"])
            return cls(str(d["cluster"]), tuple(str(n) for n in d["nodes"]), str(d["mode"]),
                       bool(d["ipv6_pass"]), docs, str(d["build"]),
                       WireguardState.from_canonical(d["encryption"]),
                       LoadBalancerState.from_canonical(d["load_balancer"]),
                       str(d.get("plan_id", "")), str(d.get("commit", "")))
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"not a node intent ({type(err).__name__}: {err})") from None

