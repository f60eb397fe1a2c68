"""hubble-observe-like flow filters, compiled to one SQL WHERE clause.

Same flag repeated = OR, different flags = AND (as in `hubble observe`). --namespace, --pod,
--port and --identity-free forms match either end of the flow; --from-*/--to-* one end.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime

from meshctl.errors import MeshctlError
from meshctl.flows.flow import PROTOCOL_NUMBERS

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class FilterError(MeshctlError):
    """A flow filter flag with a bad value."""


def parse_duration(text: str, flag: str = "duration") -> float:
    """`30s`, `5m`, `1.5h`, `24h`, `7d` -> seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise FilterError(f"{flag}: {text!r} is not a duration like 30s, 5m, 24h")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_time(text: str, flag: str, now: float | None = None) -> int:
    """A duration ago (`5m`) or an absolute ISO/RFC3339 time -> wall-clock ns."""
    now = time.time() if now is None else now
    if _DURATION.match(text.strip()):
        return int((now - parse_duration(text, flag)) * 1e9)
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(
            f"{flag}: {text!r} is neither a duration (5m) nor a time (2024-12-09T10:23:45Z)") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()
    return int(dt.timestamp() * 1e9)


def _label_patterns(label: str) -> str:
    """`app=x` matches `k8s:app=x` (any source prefix); `k8s:app=x` matches only itself."""
    label = label.strip()
    if not label:
        raise FilterError("label filter: empty label")
    if "=" not in label:
        label_key = label
        return f"%:{label_key}=%" if ":" not in label_key else f"%,{label_key}=%"
    key = label.split("=", 1)[0]
    return f"%,{label},%" if ":" in key else f"%:{label},%"


def _pod_clause(column: str, pod: str) -> tuple[str, list[object]]:
    """`ns/pod` exact; `pod` (no namespace) matches that pod name in any namespace."""
    if "/" in pod:
        return f"{column} = ?", [pod]
    return f"{column} LIKE ?", [f"%/{pod}"]


@dataclass(frozen=True)
class FlowFilter:
    namespaces: tuple[str, ...] = ()
    pods: tuple[str, ...] = ()
    from_pods: tuple[str, ...] = ()
    to_pods: tuple[str, ...] = ()
    from_labels: tuple[str, ...] = ()
    to_labels: tuple[str, ...] = ()
    from_identities: tuple[int, ...] = ()
    to_identities: tuple[int, ...] = ()
    verdicts: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    to_ports: tuple[int, ...] = ()
    since_ns: int | None = None
    until_ns: int | None = None

    def __post_init__(self) -> None:
        for v in self.verdicts:
            if v.upper() not in ("FORWARDED", "DROPPED"):
                raise FilterError(f"--verdict: {v!r} is not FORWARDED or DROPPED")
        for p in self.protocols:
            if p.lower() not in PROTOCOL_NUMBERS:
                raise FilterError(f"--protocol: {p!r} is not tcp, udp or icmp")
        for port in (*self.ports, *self.to_ports):
            if not 0 <= port <= 65535:
                raise FilterError(f"--port: {port} is not a port number (0-65535)")

    def where(self) -> tuple[str, list[object]]:
        """SQL condition (never empty: "1" when nothing filters) and its parameters."""
        clauses: list[str] = []
        params: list[object] = []

        def any_of(parts: list[tuple[str, list[object]]]) -> None:
            if parts:
                clauses.append("(" + " OR ".join(p for p, _ in parts) + ")")
                for _, ps in parts:
                    params.extend(ps)

        any_of([(f"{c} = ?", [ns]) for ns in self.namespaces for c in ("src_ns", "dst_ns")])
        any_of([_pod_clause(c, p) for p in self.pods for c in ("src_pod", "dst_pod")])
        any_of([_pod_clause("src_pod", p) for p in self.from_pods])
        any_of([_pod_clause("dst_pod", p) for p in self.to_pods])
        any_of([("src_labels LIKE ?", [_label_patterns(lab)]) for lab in self.from_labels])
        any_of([("dst_labels LIKE ?", [_label_patterns(lab)]) for lab in self.to_labels])
        any_of([("src_identity = ?", [i]) for i in self.from_identities])
        any_of([("dst_identity = ?", [i]) for i in self.to_identities])
        any_of([("verdict = ?", [1 if v.upper() == "FORWARDED" else 2]) for v in self.verdicts])
        any_of([("protocol = ?", [PROTOCOL_NUMBERS[p.lower()]]) for p in self.protocols])
        any_of([(f"{c} = ?", [p]) for p in self.ports for c in ("src_port", "dst_port")])
        any_of([("dst_port = ?", [p]) for p in self.to_ports])
        if self.since_ns is not None:
            clauses.append("time_ns >= ?")
            params.append(self.since_ns)
        if self.until_ns is not None:
            clauses.append("time_ns <= ?")
            params.append(self.until_ns)
        return (" AND ".join(clauses) or "1"), params
