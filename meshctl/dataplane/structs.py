"""ctypes mirrors of every struct and enum in bpf/lib/common.h (the kernel ABI).

One class per C struct, field by field, in the C order. Fields the C side declares `__be16` /
`__be32` end in `_be` and hold network byte order (as in Cilium's pkg/maps). Every struct is
padded explicitly in C; the `pad` fields here must stay zero because hash and LPM keys compare
byte for byte. tests/privileged/test_structs_btf.py checks sizes and offsets against the BTF of
the compiled object (Cilium's alignchecker).
"""

from __future__ import annotations

import ctypes
import enum
from ctypes import c_uint8, c_uint16, c_uint32, c_uint64

MESHCTL_ABI_VERSION = 2


class Verdict(enum.IntEnum):
    """enum verdict."""

    FORWARDED = 1
    DROPPED = 2
    AUDIT = 4


class FlowReason(enum.IntEnum):
    """enum flow_reason: why a verdict was reached."""

    ALLOWED = 0
    NOT_ENFORCED = 1
    DEFAULT_DENY = 2
    EXPLICIT_DENY = 3
    IPV6 = 4
    MALFORMED = 5
    NO_ENDPOINT = 6


class EndpointFlags(enum.IntFlag):
    """ENDPOINT_F_* of struct endpoint_value.flags."""

    ENFORCE_INGRESS = 1 << 0
    ENFORCE_EGRESS = 1 << 1
    AUDIT_INGRESS = 1 << 2
    AUDIT_EGRESS = 1 << 3


class PolicyFlags(enum.IntFlag):
    """POLICY_F_* of struct policy_value.flags."""

    DENY = 1 << 0


class CtFlags(enum.IntFlag):
    """CT_F_* of struct ct_value.flags."""

    SEEN_REPLY = 1 << 0
    CLOSING = 1 << 1
    PROXY = 1 << 2  # a UDP flow the proxy judges: every datagram goes to it


# L7 redirect marks (skb->mark): what the datapath hands the proxy, what the proxy sends
MARK_PROXY_MASK = 0xF00
MARK_TO_PROXY = 0x200
MARK_FROM_PROXY = 0xA00


class ConfigFlags(enum.IntFlag):
    """CONFIG_F_* of struct datapath_config.flags."""

    IPV6_PASS = 1 << 0
    PROXY = 1 << 1


POLICY_PREFIX_STATIC = 40
POLICY_PREFIX_PROTO = 48
POLICY_PREFIX_FULL = 64

IPCACHE_MAP_SIZE = 512000
ENDPOINTS_MAP_SIZE = 65536
POLICY_OUTER_MAP_SIZE = 65536
POLICY_MAP_SIZE = 16384
CT_MAP_SIZE = 262144
EVENTS_RINGBUF_SIZE = 16 * 1024 * 1024
METRICS_MAP_SIZE = 1024


class IpcacheKey(ctypes.Structure):
    """struct ipcache_key (LPM trie key)."""

    _fields_ = [("prefixlen", c_uint32), ("addr_be", c_uint32)]


class IpcacheValue(ctypes.Structure):
    """struct ipcache_value."""

    _fields_ = [("identity", c_uint32), ("flags", c_uint32)]


class EndpointKey(ctypes.Structure):
    """struct endpoint_key."""

    _fields_ = [("addr_be", c_uint32)]


class EndpointValue(ctypes.Structure):
    """struct endpoint_value."""

    _fields_ = [("endpoint_id", c_uint32), ("identity", c_uint32), ("flags", c_uint32)]


class PolicyKey(ctypes.Structure):
    """struct policy_key (LPM trie key of an endpoint's inner policy map)."""

    _fields_ = [
        ("prefixlen", c_uint32),
        ("identity", c_uint32),
        ("egress", c_uint8),
        ("protocol", c_uint8),
        ("dport_be", c_uint16),
    ]


class PolicyValue(ctypes.Structure):
    """struct policy_value."""

    _fields_ = [("cookie", c_uint32), ("flags", c_uint8), ("pad", c_uint8), ("proxy_port", c_uint16)]


class CtKey(ctypes.Structure):
    """struct ct_key."""

    _fields_ = [
        ("saddr_be", c_uint32),
        ("daddr_be", c_uint32),
        ("sport_be", c_uint16),
        ("dport_be", c_uint16),
        ("protocol", c_uint8),
        ("direction", c_uint8),
        ("pad", c_uint8 * 2),
    ]


class CtValue(ctypes.Structure):
    """struct ct_value."""

    _fields_ = [
        ("expires_ns", c_uint64),
        ("packets", c_uint64),
        ("bytes", c_uint64),
        ("cookie", c_uint32),
        ("flags", c_uint32),
        ("policy_rev", c_uint32),
        ("pad", c_uint32),
    ]


class FlowEvent(ctypes.Structure):
    """struct flow_event (ringbuf record)."""

    _fields_ = [
        ("timestamp_ns", c_uint64),
        ("saddr_be", c_uint32),
        ("daddr_be", c_uint32),
        ("sport_be", c_uint16),
        ("dport_be", c_uint16),
        ("protocol", c_uint8),
        ("direction", c_uint8),
        ("verdict", c_uint8),
        ("reason", c_uint8),
        ("src_identity", c_uint32),
        ("dst_identity", c_uint32),
        ("endpoint_id", c_uint32),
        ("cookie", c_uint32),
        ("tcp_flags", c_uint8),
        ("pad", c_uint8 * 3),
        ("length", c_uint32),
    ]


class MetricsKey(ctypes.Structure):
    """struct metrics_key."""

    _fields_ = [("verdict", c_uint8), ("reason", c_uint8), ("direction", c_uint8), ("pad", c_uint8)]


class MetricsValue(ctypes.Structure):
    """struct metrics_value (one per CPU in the per-CPU hash)."""

    _fields_ = [("packets", c_uint64), ("bytes", c_uint64)]


class DatapathConfig(ctypes.Structure):
    """struct datapath_config."""

    _fields_ = [
        ("flags", c_uint32),
        ("ct_timeout_tcp_s", c_uint32),
        ("ct_timeout_non_tcp_s", c_uint32),
        ("ct_timeout_syn_s", c_uint32),
        ("ct_timeout_close_s", c_uint32),
        ("pad", c_uint32),
    ]


# ---- Load balancer (bpf/lib/lb.h) ----
REASON_NO_SERVICE_BACKEND = 7  # flow_reason value of a drop at a frontend with no backend


class LbServiceFlags(enum.IntFlag):
    """LB_SVC_F_* of struct lb_service_value.flags."""

    MAGLEV = 1 << 0
    AFFINITY = 1 << 1
    EXTERNAL = 1 << 2
    DSR = 1 << 3


class LbBackendFlags(enum.IntFlag):
    """LB_BE_F_* of struct lb_backend.flags."""

    LOCAL = 1 << 0


class LbFlowFlags(enum.IntFlag):
    """LB_FLOW_F_* of struct lb_flow_value.flags."""

    SNAT = 1 << 0
    DSR = 1 << 1
    NETDEV = 1 << 2


LB_FLOW_SVC = 0
LB_FLOW_REV = 1
LB_CFG_F_ENABLED = 1 << 0
DSR_IPV4_OPT_TYPE = 0x9A
DSR_IPV4_OPT_LEN = 8
LB_SERVICES_MAP_SIZE = 65536
LB_BACKENDS_MAP_SIZE = 65536
LB_SLOTS_MAP_SIZE = 262144
LB_MAGLEV_OUTER_MAP_SIZE = 65536
LB_MAGLEV_DEFAULT_SIZE = 16381
LB_FLOWS_MAP_SIZE = 262144
LB_AFFINITY_MAP_SIZE = 65536


class LbServiceKey(ctypes.Structure):
    """struct lb_service_key."""

    _fields_ = [("addr_be", c_uint32), ("dport_be", c_uint16), ("protocol", c_uint8), ("pad", c_uint8)]


class LbServiceValue(ctypes.Structure):
    """struct lb_service_value."""

    _fields_ = [
        ("service_id", c_uint32),
        ("backend_count", c_uint32),
        ("maglev_size", c_uint32),
        ("affinity_timeout_s", c_uint32),
        ("flags", c_uint32),
    ]


class LbSlotKey(ctypes.Structure):
    """struct lb_slot_key."""

    _fields_ = [("service_id", c_uint32), ("slot", c_uint32)]


class LbBackend(ctypes.Structure):
    """struct lb_backend."""

    _fields_ = [("addr_be", c_uint32), ("port_be", c_uint16), ("protocol", c_uint8), ("flags", c_uint8)]


class LbFlowKey(ctypes.Structure):
    """struct lb_flow_key."""

    _fields_ = [
        ("saddr_be", c_uint32),
        ("daddr_be", c_uint32),
        ("sport_be", c_uint16),
        ("dport_be", c_uint16),
        ("protocol", c_uint8),
        ("kind", c_uint8),
        ("pad", c_uint8 * 2),
    ]


class LbFlowValue(ctypes.Structure):
    """struct lb_flow_value."""

    _fields_ = [
        ("backend_id", c_uint32),
        ("service_id", c_uint32),
        ("addr_be", c_uint32),
        ("addr2_be", c_uint32),
        ("port_be", c_uint16),
        ("port2_be", c_uint16),
        ("flags", c_uint32),
        ("packets", c_uint64),
    ]


class LbAffinityKey(ctypes.Structure):
    """struct lb_affinity_key."""

    _fields_ = [("client_be", c_uint32), ("service_id", c_uint32)]


class LbAffinityValue(ctypes.Structure):
    """struct lb_affinity_value."""

    _fields_ = [("last_ns", c_uint64), ("backend_id", c_uint32), ("pad", c_uint32)]


class LbNodeConfig(ctypes.Structure):
    """struct lb_node_config."""

    _fields_ = [("snat_addr_be", c_uint32), ("flags", c_uint32)]


# C struct name -> mirror: the alignment test walks this table.
MIRRORS: dict[str, type[ctypes.Structure]] = {
    "ipcache_key": IpcacheKey,
    "ipcache_value": IpcacheValue,
    "endpoint_key": EndpointKey,
    "endpoint_value": EndpointValue,
    "policy_key": PolicyKey,
    "policy_value": PolicyValue,
    "ct_key": CtKey,
    "ct_value": CtValue,
    "flow_event": FlowEvent,
    "metrics_key": MetricsKey,
    "metrics_value": MetricsValue,
    "datapath_config": DatapathConfig,
    "lb_service_key": LbServiceKey,
    "lb_service_value": LbServiceValue,
    "lb_slot_key": LbSlotKey,
    "lb_backend": LbBackend,
    "lb_flow_key": LbFlowKey,
    "lb_flow_value": LbFlowValue,
    "lb_affinity_key": LbAffinityKey,
    "lb_affinity_value": LbAffinityValue,
    "lb_node_config": LbNodeConfig,
}

# Python field name -> C field name where byte order shows in the Python name.
def c_field_name(name: str) -> str:
    """The C field behind a mirror field (`addr_be` -> `addr`)."""
    return name[:-3] if name.endswith("_be") else name
