"""One planned change: an address for people, a key and values for machines, and a reason.

As in Terraform's plans.Change, `reason` and `origins` only explain the plan to people; apply
steers by `kind`, `key`, `before` and `after` alone (see patch.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from meshctl.plan.action import Action


class ChangeKind(enum.Enum):
    """The kind of object changed; the order here is the display order within a node."""

    CONFIG = "config"
    IPCACHE = "ipcache"
    ENDPOINT = "endpoint"
    POLICY_MAP = "policymap"  # an endpoint's inner policy map (exists or not)
    POLICY = "policy"  # one entry of an endpoint's policy map
    ATTACHMENT = "attachment"
    HTTP_RULE = "http-rule"  # what the node's HTTP proxy allows on one L7 port from one peer
    DNS_RULE = "dns-rule"  # the names the node's DNS proxy lets one endpoint ask one peer for
    FQDN = "fqdn"  # the node's toFQDNs selectors and their identities (what the DNS proxy learns)
    WIREGUARD = "wireguard"  # a node's WireGuard interface, key, routing rules, strict mode
    WIREGUARD_PEER = "wireguard-peer"  # one WireGuard peer (keyed by its public key)
    LOAD_BALANCER = "loadbalancer"  # a node's LB settings (on/off, device, SNAT address, mode...)
    LB_BACKEND = "lb-backend"  # one backend (keyed by its backend id)
    LB_SERVICE = "lb-service"  # one frontend (keyed by "ip:port/PROTO")
    FOREIGN = "foreign"  # a map entry in a form compile never writes (observed only: destroyed)


KIND_ORDER = {kind: i for i, kind in enumerate(ChangeKind)}

# JSON-ready values: dicts of str/int/bool, or None for "absent".
Value = dict[str, Any] | None


@dataclass(frozen=True)
class Change:
    """One object of one node going from `before` to `after` (None = absent)."""

    node: str
    kind: ChangeKind
    key: Any  # JSON-ready machine key, unique per (node, kind) except degenerate attachments
    address: str  # readable: "node-1 ipcache 10.101.2.7/32"
    action: Action
    before: Value
    after: Value
    reason: str = ""
    origins: tuple[str, ...] = ()  # "CiliumNetworkPolicy demo/x ingress[0] (policies/x.yaml:12)"

    def to_json(self) -> dict[str, Any]:
        """The shape of one `resource_changes` item of `terraform show -json`."""
        return {
            "address": self.address,
            "node": self.node,
            "type": self.kind.value,
            "key": self.key,
            "change": {"actions": self.action.json_actions, "before": self.before, "after": self.after},
            "reason": self.reason,
            "origins": list(self.origins),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Change:
        change = d["change"]
        return cls(
            node=d["node"],
            kind=ChangeKind(d["type"]),
            key=d["key"],
            address=d["address"],
            action=Action.from_json_actions(change["actions"]),
            before=change["before"],
            after=change["after"],
            reason=d.get("reason", ""),
            origins=tuple(d.get("origins", ())),
        )


def describe_drift(change: Change, ahead: bool = False) -> dict[str, str]:
    """What happened on the node, in words, for a change from the live state to the desired one
    (the change itself says what healing does). `ahead`: the node is as the last apply left it
    there, and the desired state moved on (a commit not applied yet)."""
    if ahead:
        what = {
            Action.CREATE: "in the desired state, not applied yet",
            Action.DELETE: "applied, but no longer in the desired state",
        }.get(change.action, "changed in the desired state, not applied yet")
        return {"drift": what}
    what = {
        Action.CREATE: "missing on the node (deleted outside meshctl)",
        Action.DELETE: "present on the node but not in the desired state (added outside meshctl)",
        Action.UPDATE: "changed outside meshctl",
        Action.REPLACE: "changed outside meshctl",
    }.get(change.action, "differs")
    return {"drift": what}
