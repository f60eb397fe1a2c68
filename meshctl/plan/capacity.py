"""Map capacities, mirrored from the `*_MAP_SIZE` defines of bpf/lib/common.h (change both)."""

from __future__ import annotations

IPCACHE_MAP_SIZE = 512000
ENDPOINTS_MAP_SIZE = 65536
POLICY_OUTER_MAP_SIZE = 65536
POLICY_MAP_SIZE = 16384
CT_MAP_SIZE = 262144

FILL_WARNING_RATIO = 0.8  # warn from 80 % full: a few more rules could fail an apply
