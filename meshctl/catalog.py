"""Names behind the numbers of a NodeState: identities, endpoints and rule cookies.

The kernel holds only numbers. The compiler produces a Catalog next to the NodeStates so plans,
traces and flows can say `demo/frontend` and `CiliumNetworkPolicy demo/api-ingress ingress[0]`
instead of `identity 48291` and `cookie 0x1a2b3c4d`. The catalog explains; it never steers
apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshctl.nodestate import Direction, FrozenMap


@dataclass(frozen=True, order=True)
class RuleOrigin:
    """Where a policy entry comes from: one rule of one policy document."""

    kind: str  # NetworkPolicy | CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy
    namespace: str  # "" for cluster-wide policies
    name: str
    section: str  # ingress | egress | ingressDeny | egressDeny
    index: int  # rule index within the section
    file: str = ""  # path in the desired repo
    line: int = 0

    @property
    def policy(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def __str__(self) -> str:
        return f"{self.kind} {self.policy} {self.section}[{self.index}]"

    @property
    def located(self) -> str:
        """With its place in the repo: `CiliumNetworkPolicy demo/x egress[0] (policies/x.yaml:12)`."""
        return f"{self}" + (f" ({self.file}:{self.line})" if self.file else "")


@dataclass(frozen=True)
class IdentityInfo:
    """One numeric identity: its labels (k8s:... form) and, for pods, the pods that carry it."""

    identity: int
    labels: tuple[str, ...]
    pods: tuple[str, ...] = ()  # "namespace/pod"

    @property
    def display(self) -> str:
        if len(self.pods) == 1:
            return self.pods[0]
        if self.labels:
            return ",".join(self.labels)
        return str(self.identity)


@dataclass(frozen=True)
class Catalog:
    identities: FrozenMap[int, IdentityInfo] = field(default_factory=FrozenMap)
    # node -> endpoint_id -> "namespace/pod"
    endpoints: FrozenMap[str, FrozenMap[int, str]] = field(default_factory=FrozenMap)
    # cookie -> every rule that produced entries with that cookie
    cookies: FrozenMap[int, RuleOrigin] = field(default_factory=FrozenMap)
    # "namespace/pod" -> direction -> policies (kind ns/name) that isolate it (default deny)
    isolation: FrozenMap[str, FrozenMap[Direction, tuple[str, ...]]] = field(default_factory=FrozenMap)
    # "namespace/pod" -> direction -> the staged policies (kind ns/name) it is audited against
    staged: FrozenMap[str, FrozenMap[Direction, tuple[str, ...]]] = field(default_factory=FrozenMap)
    # the same as `isolation`, with the staged policies counted: who an AUDIT default deny names
    staged_isolation: FrozenMap[str, FrozenMap[Direction, tuple[str, ...]]] = field(default_factory=FrozenMap)

    def rule_text(self, cookie: int, http_rule: int | None = None) -> str:
        """The rule behind a cookie with its place in the repo, and one of its HTTP rules:
        `CiliumNetworkPolicy demo/x ingress[0] rules.http[1] (policies/x.yaml:12)`."""
        origin = self.cookies.get(cookie)
        http = f" rules.http[{http_rule}]" if http_rule is not None else ""
        if origin is None:
            return f"cookie {cookie:#x}{http}"
        return f"{origin}{http}" + (f" ({origin.file}:{origin.line})" if origin.file else "")

    def identity_name(self, identity: int) -> str:
        info = self.identities.get(identity)
        return info.display if info else f"identity:{identity}"
