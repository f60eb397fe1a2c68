"""Finding the lab of a desired repo: its topology (full load) or just its cluster name.

`lab down` and `lab status` must work even when the repo's policies do not load (that is when
people need them most), so they read only the cluster and node names from meshctl.toml.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from meshctl.errors import ConfigError, LabError
from meshctl.lab.topology import CONFIG_FILE, Topology, from_desired

if TYPE_CHECKING:
    from meshctl.source import DesiredState


def load_topology(root: Path) -> Topology:
    return from_desired(lab_desired(root))


def lab_desired(root: Path) -> DesiredState:
    """The repo's desired state; with `[inventory] source = "lab"` its pods are those of the lab's
    inventory store plus the repo's that the store lacks (pods `lab pod add` made stay)."""
    import dataclasses

    from meshctl.lab import inventory
    from meshctl.source import load_desired

    desired = load_desired(root)
    if desired.config.inventory.source != "lab":
        return desired
    store = inventory.load(desired.config.cluster)
    if store is None:
        return desired
    keys = {p.key for p in store.pods}
    names = {ns.name for ns in desired.namespaces}
    return dataclasses.replace(
        desired, pods=(*store.pods, *(p for p in desired.pods if p.key not in keys)),
        namespaces=(*desired.namespaces, *(ns for ns in store.namespaces if ns.name not in names)))


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
