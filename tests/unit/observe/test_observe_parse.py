"""observe's pure half: RawNode facts -> NodeState, with every sentinel."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from meshctl.dataplane.libbpf import BPF_TCX_EGRESS, BPF_TCX_INGRESS
from meshctl.dataplane.maps import encode_config, encode_endpoint, encode_ipcache, encode_policy
from meshctl.nodestate import (
    Attachment,
    DatapathConfig,
    Direction,
    EndpointEntry,
    IpcacheEntry,
    NodeState,
    PolicyEntry,
    PolicyKey,
)
from meshctl.observe.parse import parse_node
from meshctl.observe.raw import RawLink, RawNode

IP = IPv4Address("10.0.0.5")


def link(hook: str = "from-pod", prog_id: int = 11, link_if: int = 4, dev_if: int | None = 4) -> RawLink:
    attach = BPF_TCX_INGRESS if hook == "from-pod" else BPF_TCX_EGRESS
    return RawLink("lxc0", hook, IP, prog_id, link_if, attach, dev_if)


def raw(**kw: object) -> RawNode:
    base: dict[str, object] = {"node": "n1", "loaded": True, "build": "abc",
                               "prog_ids": {"from-pod": 11, "to-pod": 12}}
    base.update(kw)
    return RawNode(**base)  # type: ignore[arg-type]


def test_missing_pin_dir_is_an_empty_node() -> None:
    assert parse_node(RawNode("n1")) == NodeState("n1")


def test_loaded_but_empty_is_an_empty_node() -> None:
    assert parse_node(raw()) == NodeState("n1")


def test_maps_are_decoded() -> None:
    net = IPv4Network("10.0.0.0/24")
    key = PolicyKey(Direction.INGRESS, 256, 6, 443, 16)
    state = parse_node(raw(
        config=encode_config(DatapathConfig(ipv6_pass=True)),
        ipcache=[encode_ipcache(net, IpcacheEntry(256))],
        endpoints=[encode_endpoint(IP, EndpointEntry(1, 256, True, False))],
        policies={1: [encode_policy(key, PolicyEntry(7))], 2: []},
    ))
    assert state.config.ipv6_pass
    assert dict(state.ipcache) == {net: IpcacheEntry(256)}
    assert dict(state.endpoints) == {IP: EndpointEntry(1, 256, True, False)}
    assert {ep: dict(v) for ep, v in state.policies.items()} == {1: {key: PolicyEntry(7)}, 2: {}}


def test_attachments_and_their_sentinels() -> None:
    good = [link("from-pod", 11), link("to-pod", 12)]
    assert parse_node(raw(links=good)).attachments == {Attachment(IP, "from-pod", "abc"),
                                                       Attachment(IP, "to-pod", "abc")}
    assert parse_node(raw(links=[link(link_if=0)])).attachments == frozenset()  # device gone
    assert parse_node(raw(links=[link(dev_if=9)])).attachments == frozenset()  # veth re-created
    assert parse_node(raw(links=[link(dev_if=None)])).attachments == frozenset()  # no such veth
    (stale,) = parse_node(raw(links=[link(prog_id=99)])).attachments
    assert stale.build == "unknown:prog-99"
