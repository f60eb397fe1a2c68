"""Finding the lab of a desired repo: its topology (full load) or just its cluster name.

`lab down` and `lab status` must work even when the repo's policies do not load (that is when
people need them most), so they read only the cluster and node names from meshctl.toml.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from meshctl.errors import ConfigError, LabError
from meshctl.lab.topology import CONFIG_FILE, Topology, from_desired


def load_topology(root: Path) -> Topology:
    from meshctl.source import load_desired  # the source package lands in parallel

    return from_desired(load_desired(root))


def cluster_of(root: Path) -> tuple[str, tuple[str, ...]]:
    """(cluster name, node names) from root/meshctl.toml without validating anything else."""
    path = root / CONFIG_FILE
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise LabError(f"no {CONFIG_FILE} in {root}; give -C REPO or --cluster NAME") from None
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(CONFIG_FILE, None, "", f"unreadable: {err}") from err
    name = (doc.get("cluster") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(CONFIG_FILE, None, "cluster.name", "missing")
    nodes = tuple(n.get("name") for n in doc.get("nodes", []) if isinstance(n, dict) and n.get("name"))
    return name, nodes
