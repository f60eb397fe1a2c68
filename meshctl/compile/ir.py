"""The normalized rule IR: every policy kind lowers to these few plain values.

Kubernetes NetworkPolicy, CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy are translated
once (translate_*.py) into `Rule`s and `Isolation`s; everything below (map state, reference
evaluator, trace) works on this IR only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network

from meshctl.catalog import RuleOrigin
from meshctl.compile.selectors import Selector
from meshctl.fqdnmatch import FqdnSelector
from meshctl.nodestate import Direction, HttpRule


@dataclass(frozen=True, order=True)
class SourceRef:
    """file:line of a document (mirrors the loader's SourceRef, which may not be importable).

    `lines` (field path -> line, from the loader's YAML index) lets origins name the line of one
    rule; it never takes part in comparisons.
    """

    file: str
    line: int
    lines: Mapping[tuple[str | int, ...], int] = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, path: tuple[str | int, ...]) -> int:
        """The line of the deepest prefix of `path` the document has, else the document's line."""
        while path:
            hit = self.lines.get(path)
            if hit:
                return hit
            path = path[:-1]
        return self.line

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True, order=True)
class CompileWarning:
    code: str  # empty-section | l7-ineffective | unsupported | named-port |
    # fqdn-not-learned | fqdn-wildcard
    message: str
    source: SourceRef | None = None

    def __str__(self) -> str:
        return f"{self.source}: {self.message}" if self.source else self.message


@dataclass(frozen=True, order=True)
class CidrRule:
    """A CIDR peer minus its exceptions. Never matches cluster endpoints (they have /32s)."""

    cidr: IPv4Network
    excepts: tuple[IPv4Network, ...] = ()

    def contains_prefix(self, prefix: IPv4Network) -> bool:
        return prefix.subnet_of(self.cidr) and not any(prefix.subnet_of(e) for e in self.excepts)


ENTITIES = (
    "all",
    "world",
    "world-ipv4",
    "cluster",
    "host",
    "remote-node",
    "health",
    "init",
    "unmanaged",
    "kube-apiserver",
    "ingress",
    "none",
)


@dataclass(frozen=True, order=True)
class Peers:
    """Who a rule talks to: the union of its parts. `wildcard` = any peer, world included."""

    wildcard: bool = False
    selectors: tuple[Selector, ...] = ()
    entities: tuple[str, ...] = ()
    cidrs: tuple[CidrRule, ...] = ()
    fqdns: tuple[FqdnSelector, ...] = ()  # toFQDNs: each selects the identity of its learned IPs

    @property
    def empty(self) -> bool:
        return not (self.wildcard or self.selectors or self.entities or self.cidrs or self.fqdns)


@dataclass(frozen=True, order=True)
class PortSpec:
    """One protocol and a port range (0-65535 = all ports) or a named port."""

    protocol: int
    first: int = 0
    last: int = 65535
    name: str | None = None

    def __str__(self) -> str:
        from meshctl.nodestate import PROTOCOL_NAMES

        proto = PROTOCOL_NAMES.get(self.protocol, str(self.protocol)).upper()
        if self.name:
            return f"{self.name}/{proto}"
        if (self.first, self.last) == (0, 65535):
            return f"*/{proto}"
        if self.first == self.last:
            return f"{self.first}/{proto}"
        return f"{self.first}-{self.last}/{proto}"


@dataclass(frozen=True, order=True)
class Rule:
    """One allow or deny rule: subjects, direction, peers, ports (None = any protocol)."""

    origin: RuleOrigin
    subject: Selector
    direction: Direction
    deny: bool
    peers: Peers
    ports: tuple[PortSpec, ...] | None = None
    l7: str = ""  # description of the L7 rules riding on this rule
    http: tuple[HttpRule, ...] | None = None  # rules.http: the node's proxy judges each request
    dns: tuple[FqdnSelector, ...] | None = None  # rules.dns: the names the DNS proxy lets through


@dataclass(frozen=True, order=True)
class Isolation:
    """A policy that selects `subject` with a section in `direction`.

    default_deny False (Cilium's enableDefaultDeny) enforces the direction but allows all that
    is not explicitly denied.
    """

    policy: str  # "Kind ns/name"
    subject: Selector
    direction: Direction
    default_deny: bool
    origin: RuleOrigin  # cookie owner of the allow-all entry when no policy default-denies


@dataclass(frozen=True)
class Translated:
    rules: tuple[Rule, ...] = ()
    isolations: tuple[Isolation, ...] = ()
    warnings: tuple[CompileWarning, ...] = field(default=())
