"""Pure parsing of a RawNode into the NodeState that compile would produce for the same content.

Sentinels: a node with no pin dir parses as `NodeState(node)` (a new node: everything is to be
created); a zero config timeout is the datapath's default; an attachment whose device is gone or
was re-created (index changed) is not attached; an attachment running another program than the
pinned one reports build `unknown:prog-<id>` so the plan replaces it.
"""

from __future__ import annotations

from meshctl.dataplane.lb_maps import decode_state
from meshctl.dataplane.maps import (
    decode_config,
    decode_endpoint_table,
    decode_ipcache_table,
    decode_policy_entries,
    decode_policy_table,
)
from meshctl.dataplane.netns import HOOKS
from meshctl.nodestate import Attachment, FrozenMap, NodeState, PolicyEntry, PolicyKey
from meshctl.observe.raw import Dump, Items, RawLink, RawNode


def parse_attachment(link: RawLink, raw: RawNode) -> Attachment | None:
    if link.hook not in HOOKS or link.attach_type != HOOKS[link.hook]:
        return None
    if link.link_ifindex == 0 or link.device_ifindex != link.link_ifindex:
        return None
    if raw.build and raw.prog_ids.get(link.hook) == link.prog_id:
        build = raw.build
    else:
        build = f"unknown:prog-{link.prog_id}"
    return Attachment(link.endpoint, link.hook, build)


def _policy(raw: Items | Dump) -> FrozenMap[PolicyKey, PolicyEntry]:
    if isinstance(raw, tuple):
        return decode_policy_table(*raw)
    return decode_policy_entries(raw)


def parse_node(raw: RawNode) -> NodeState:
    if not raw.loaded:
        return NodeState(raw.node)
    attachments = (parse_attachment(link, raw) for link in raw.links)
    return NodeState(
        node=raw.node,
        config=decode_config(raw.config),
        ipcache=decode_ipcache_table(raw.ipcache),
        endpoints=decode_endpoint_table(raw.endpoints),
        policies=FrozenMap.from_sorted((ep, _policy(d)) for ep, d in sorted(raw.policies.items())),
        attachments=frozenset(a for a in attachments if a is not None),
        load_balancer=decode_state(raw.lb),
    )
