"""Pure parsing of a RawNode into the NodeState that compile would produce for the same content.

Sentinels: a node with no pin dir parses as `NodeState(node)` (a new node: everything is to be
created); a zero config timeout is the datapath's default; an attachment whose device is gone or
was re-created (index changed) is not attached; an attachment running another program than the
pinned one reports build `unknown:prog-<id>` so the plan replaces it.
"""

from __future__ import annotations

from meshctl.dataplane.lb_maps import decode_state
from meshctl.dataplane.maps import decode_config, decode_endpoint, decode_ipcache, decode_policy_entries
from meshctl.dataplane.netns import HOOKS
from meshctl.nodestate import Attachment, FrozenMap, NodeState
from meshctl.observe.raw import RawLink, RawNode


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


def parse_node(raw: RawNode) -> NodeState:
    if not raw.loaded:
        return NodeState(raw.node)
    attachments = (parse_attachment(link, raw) for link in raw.links)
    return NodeState(
        node=raw.node,
        config=decode_config(raw.config),
        ipcache=FrozenMap(dict(decode_ipcache(k, v) for k, v in raw.ipcache)),
        endpoints=FrozenMap(dict(decode_endpoint(k, v) for k, v in raw.endpoints)),
        policies=FrozenMap({ep: decode_policy_entries(items) for ep, items in raw.policies.items()}),
        attachments=frozenset(a for a in attachments if a is not None),
        load_balancer=decode_state(raw.lb),
    )
