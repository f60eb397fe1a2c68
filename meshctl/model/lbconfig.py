"""Load-balancer setting values shared by meshctl.toml and compile: modes, algorithms, Maglev.

Maglev follows Cilium (pkg/maglev, `--bpf-lb-maglev-table-size`, `--bpf-lb-maglev-hash-seed`):
the table size is one of Cilium's primes and the seed is 12 bytes written in base64, the same
on every node so every node builds the same table and a flow keeps its backend across nodes.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

LoadBalancerMode = Literal["snat", "dsr", "hybrid"]
LoadBalancerAlgorithm = Literal["random", "maglev"]

# Cilium's supported table sizes: primes, each well above 100 x the backends of a service.
MAGLEV_PRIMES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
DEFAULT_MAGLEV_TABLE_SIZE = 16381
DEFAULT_MAGLEV_SEED = "JLfvgnHc2kaSUFaI"  # Cilium's maglev.DefaultHashSeed


def check_maglev_table_size(value: int) -> int:
    if value not in MAGLEV_PRIMES:
        raise ValueError(
            f"{value} is not a supported Maglev table size; use one of "
            f"{', '.join(str(p) for p in MAGLEV_PRIMES)} (primes, as in Cilium)"
        )
    return value


def maglev_seed_bytes(seed: str) -> bytes:
    """The 12 bytes behind a base64 seed (ValueError naming the problem otherwise)."""
    try:
        raw = base64.b64decode(seed, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"{seed!r} is not base64; make one with `head -c12 /dev/urandom | base64 -w0`"
        ) from None
    if len(raw) != 12:
        raise ValueError(
            f"hashSeed {seed!r} decodes to {len(raw)} bytes, not 12; "
            "make one with `head -c12 /dev/urandom | base64 -w0`"
        )
    return raw


def check_maglev_seed(value: str) -> str:
    maglev_seed_bytes(value)
    return value
