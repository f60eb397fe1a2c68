"""Pure parsing of a RawNode into the NodeState that compile would produce for the same content.

Sentinels: a node with no pin dir parses as `NodeState(node)` (a new node: everything is to be
created); a zero config timeout is the datapath's default; an attachment whose device is gone or
was re-created (index changed) is not attached; an attachment running another program than the
pinned one reports build `unknown:prog-<id>` so the plan replaces it.
"""

from __future__ import annotations

from meshctl.dataplane.lb_maps import decode_state
from meshctl.dataplane.maps import (
    POLICY_KEY_SIZE,
    POLICY_VALUE_SIZE,
    decode_config,
    decode_endpoint_table,
    decode_ipcache_table,
    decode_policy_entries,
    decode_policy_table,
)
from meshctl.dataplane.netns import HOOKS
from meshctl.lazypolicy import LazyPolicyMap, text_sha
from meshctl.nodestate import Attachment, FrozenMap, NodeState, PolicyEntry, PolicyKey, policy_map_text
from meshctl.observe.mapcache import MapCache, raw_sha
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


_LAZY: dict[str, LazyPolicyMap] = {}  # raw sha -> lazy map: one object for equal dumps of all nodes


def _policy(raw: Items | Dump, cache: MapCache | None) -> FrozenMap[PolicyKey, PolicyEntry]:
    """A decoded map, or a lazy one when `cache` knows the dump's digest (the map is learned
    into `cache` when decoded)."""
    if not isinstance(raw, tuple):
        return decode_policy_entries(raw)
    keys, values = raw
    count = len(keys) // POLICY_KEY_SIZE
    if cache is None or count * POLICY_KEY_SIZE != len(keys) or count * POLICY_VALUE_SIZE != len(values):
        return decode_policy_table(keys, values)
    digest = raw_sha(keys, values)
    sha = cache.get(digest)
    if sha is None:
        table = decode_policy_table(keys, values)
        cache.learn(digest, text_sha(policy_map_text(table)))
        return table
    lazy = _LAZY.get(digest)
    if lazy is None or lazy.text_sha != sha:
        if len(_LAZY) >= 4096:
            _LAZY.clear()
        lazy = _LAZY[digest] = LazyPolicyMap(keys, values, count, sha, decode_policy_table)
    return lazy


def _policies(raw: RawNode, cache: MapCache | None) -> FrozenMap[int, FrozenMap[PolicyKey, PolicyEntry]]:
    by_dump: dict[int, FrozenMap[PolicyKey, PolicyEntry]] = {}  # id(dump) -> map: endpoints share dumps
    out = []
    for ep, dump in sorted(raw.policies.items()):
        table = by_dump.get(id(dump))
        if table is None:
            table = by_dump[id(dump)] = _policy(dump, cache)
        out.append((ep, table))
    return FrozenMap.from_sorted(out)


def parse_node(raw: RawNode, cache: MapCache | None = None) -> NodeState:
    """`cache` (meshctl.observe.mapcache) lets known policy dumps stay undecoded until read."""
    if not raw.loaded:
        return NodeState(raw.node)
    attachments = (parse_attachment(link, raw) for link in raw.links)
    return NodeState(
        node=raw.node,
        config=decode_config(raw.config),
        ipcache=decode_ipcache_table(raw.ipcache),
        endpoints=decode_endpoint_table(raw.endpoints),
        policies=_policies(raw, cache),
        attachments=frozenset(a for a in attachments if a is not None),
        load_balancer=decode_state(raw.lb),
    )
