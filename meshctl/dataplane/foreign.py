"""Map entries in forms the compiler never writes (nodestate.ForeignEntry): what they do.

Pure (no libbpf): `explain` reads the raw bytes the way the datapath does and says in words what
the entry lets through, so a reviewer sees "allows identity 258 in both directions, every
protocol and port" rather than a hex string; `lpm_slot` is what an LPM trie matches of a key
(reconcile uses it to tell an entry its writes overwrote from one it must delete).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network

from meshctl.dataplane import structs as S
from meshctl.nodestate import PROTOCOL_NAMES, ForeignEntry

ARRAYS = frozenset({"config", "lb_config", "lb_settings"})  # one entry at index 0: rewritten, never deleted
POLICY_KEY = struct.Struct("<IIBBH")  # dport read big-endian below
U32 = struct.Struct("<I")


def _range(value: int, bits: int, prefix: int) -> tuple[int, int]:
    """First and last value of a `bits`-wide field whose first `prefix` bits are fixed."""
    host = (1 << (bits - max(0, min(prefix, bits)))) - 1
    first = value & ~host & ((1 << bits) - 1)
    return first, first | host


def explain_policy(key: bytes, value: bytes, peer: Callable[[int], str] = str) -> str:
    """What an inner policy map entry matches, read as the LPM trie does (prefixlen bits of
    identity, then direction, protocol and port) and what it does (allow or deny)."""
    prefixlen, identity, egress, protocol, _ = POLICY_KEY.unpack(key)
    dport = int.from_bytes(key[10:12], "big")
    cookie, flags = struct.unpack("<IB", value[:5])
    verb = "denies" if flags & S.PolicyFlags.DENY else "allows"
    extra = flags & ~int(S.PolicyFlags.DENY)
    lo, hi = _range(identity, 32, prefixlen)
    if prefixlen == 0:
        who = "every peer"
    elif lo == hi:
        who = peer(identity)
    else:
        who = f"identities {lo}..{hi}"
    elo, ehi = _range(egress, 8, prefixlen - 32)
    directions = tuple(d for d in (0, 1) if elo <= d <= ehi)
    where = {(0, 1): "in both directions", (0,): "on ingress", (1,): "on egress"}.get(
        directions, f"in no direction (direction byte {egress})")
    if prefixlen <= 40:
        what = "every protocol and port"
    elif prefixlen < 48:
        plo, phi = _range(protocol, 8, prefixlen - 40)
        what = f"protocols {plo}..{phi}, every port"
    else:
        name = PROTOCOL_NAMES.get(protocol, str(protocol))
        qlo, qhi = _range(dport, 16, prefixlen - 48)
        what = f"{name}, every port" if (qlo, qhi) == (0, 65535) else (
            f"{name} port {qlo}" if qlo == qhi else f"{name} ports {qlo}-{qhi}")
    tail = f" (cookie {cookie:#x}"
    tail += f", unknown flag bits {extra:#x})" if extra else ")"
    return f"{verb} {who} {where}, {what}{tail}; prefix length {prefixlen}"


def explain(entry: ForeignEntry, peer: Callable[[int], str] = str) -> str:
    """One line on what a foreign entry holds and does in the datapath."""
    if entry.map == "lb_maglev":  # its value is a length and digest, not bytes
        sid = U32.unpack(bytes.fromhex(entry.key))[0]
        return f"Maglev table of service id {sid} that no service uses ({entry.value})"
    key, value = bytes.fromhex(entry.key), bytes.fromhex(entry.value)
    if entry.map == "policy" and len(key) == 12 and len(value) == 8:
        return explain_policy(key, value, peer)
    if entry.map == "ipcache" and len(key) == 8 and len(value) == 8:
        prefixlen, addr = struct.unpack("<I4s", key)
        identity, _ = struct.unpack("<II", value)
        net = IPv4Network((int.from_bytes(addr, "big"), min(prefixlen, 32)), strict=False)
        return (f"maps {net} to {peer(identity)} (key {IPv4Address(addr)}/{prefixlen} has bits beyond "
                "its prefix)")
    if entry.map == "endpoints" and len(value) == 12:
        eid, identity, flags = struct.unpack("<III", value)
        return (f"endpoint {IPv4Address(key)} (id {eid}, {peer(identity)}) with unknown flag bits "
                f"{flags & ~3:#x}")
    if entry.map == "lb_slots":
        sid, slot = struct.unpack("<II", key)
        return f"backend slot {slot} of service id {sid} that no service uses"
    return f"{entry.map} entry {entry.key} = {entry.value[:64]} is not in a form meshctl writes"


def lpm_slot(key: bytes) -> bytes:
    """An LPM key reduced to what the trie matches: prefixlen and the data bits it covers."""
    prefixlen = U32.unpack(key[:4])[0]
    data = int.from_bytes(key[4:], "big")
    bits = 8 * (len(key) - 4)
    masked = data & ~((1 << (bits - min(prefixlen, bits))) - 1) & ((1 << bits) - 1)
    return key[:4] + masked.to_bytes(len(key) - 4, "big")
