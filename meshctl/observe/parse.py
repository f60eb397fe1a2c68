"""Pure parsing of a RawNode into the NodeState that compile would produce for the same content.

Lossless: every map entry is either typed or kept byte for byte in NodeState.foreign (the maps'
decoders decide). Sentinels: a node with no pin dir parses as `NodeState(node)` (a new node:
everything is to be created); an attachment whose device is gone or
was re-created (index changed) is not attached; an attachment running another program than the
pinned one reports build `unknown:prog-<id>` so the plan replaces it.
"""

from __future__ import annotations

from meshctl.dataplane.lb_maps import decode_lb
from meshctl.dataplane.maps import (
    POLICY_KEY_SIZE,
    POLICY_VALUE_SIZE,
    decode_config_entry,
    decode_endpoint_table,
    decode_ipcache_table,
    decode_policy_dump,
    decode_policy_table,
    foreign_entry,
)
from meshctl.dataplane.netns import HOOKS
from meshctl.lazypolicy import LazyPolicyMap, text_sha
from meshctl.nodestate import (
    Attachment,
    ForeignEntry,
    FrozenMap,
    NodeState,
    PolicyEntry,
    PolicyKey,
    policy_map_text,
)
from meshctl.observe.mapcache import MapCache, raw_sha
from meshctl.observe.programs import foreign_programs
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
Foreign = tuple[tuple[bytes, bytes], ...]


def parse_policy(raw: Items | Dump,
                 cache: MapCache | None) -> tuple[FrozenMap[PolicyKey, PolicyEntry], Foreign]:
    """A decoded map and its foreign entries, or a lazy map when `cache` knows the dump's digest
    (only dumps without foreign entries are learned into `cache`, so a lazy map has none)."""
    if isinstance(raw, tuple):
        keys, values = raw
    else:
        keys, values = b"".join(k for k, _ in raw), b"".join(v for _, v in raw)
    count = len(keys) // POLICY_KEY_SIZE
    if cache is None or count * POLICY_KEY_SIZE != len(keys) or count * POLICY_VALUE_SIZE != len(values):
        return decode_policy_dump(keys, values)
    digest = raw_sha(keys, values)
    sha = cache.get(digest)
    if sha is None:
        table, foreign = decode_policy_dump(keys, values)
        if not foreign:
            cache.learn(digest, text_sha(policy_map_text(table)))
        return table, foreign
    lazy = _LAZY.get(digest)
    if lazy is None or lazy.text_sha != sha:
        if len(_LAZY) >= 4096:
            _LAZY.clear()
        lazy = _LAZY[digest] = LazyPolicyMap(keys, values, count, sha, decode_policy_table)
    return lazy, ()


def _policies(
    raw: RawNode, cache: MapCache | None
) -> tuple[FrozenMap[int, FrozenMap[PolicyKey, PolicyEntry]], list[ForeignEntry]]:
    # id(dump) -> decoded: endpoints whose outer entries name one inner map share its dump
    by_dump: dict[int, tuple[FrozenMap[PolicyKey, PolicyEntry], Foreign]] = {}
    out = []
    foreign: list[ForeignEntry] = []
    for ep, dump in sorted(raw.policies.items()):
        decoded = by_dump.get(id(dump))
        if decoded is None:
            decoded = by_dump[id(dump)] = parse_policy(dump, cache)
        out.append((ep, decoded[0]))
        foreign.extend(foreign_entry("policy", k, v, owner=ep) for k, v in decoded[1])
    return FrozenMap.from_sorted(out), foreign


def parse_node(raw: RawNode, cache: MapCache | None = None) -> NodeState:
    """`cache` (meshctl.observe.mapcache) lets known policy dumps stay undecoded until read."""
    if not raw.loaded:
        return NodeState(raw.node)
    attachments = (parse_attachment(link, raw) for link in raw.links)
    config, foreign_config = decode_config_entry(raw.config)
    ipcache, foreign_ipcache = decode_ipcache_table(raw.ipcache)
    endpoints, foreign_endpoints = decode_endpoint_table(raw.endpoints)
    policies, foreign_policies = _policies(raw, cache)
    load_balancer, foreign_lb = decode_lb(raw.lb)
    return NodeState(
        node=raw.node,
        config=config,
        ipcache=ipcache,
        endpoints=endpoints,
        policies=policies,
        attachments=frozenset(a for a in attachments if a is not None),
        load_balancer=load_balancer,
        foreign=frozenset([*foreign_config, *foreign_ipcache, *foreign_endpoints, *foreign_policies,
                           *foreign_lb]),
        foreign_programs=tuple(foreign_programs(raw.hooks, raw.our_programs)),
    )
