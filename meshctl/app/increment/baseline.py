"""The baseline: what a full plan that found nothing to do leaves for the incremental plans after it.

When a full plan finds every node exactly as compiled, the compile and the live state agree, and
the next plan needs to redo only what a later edit touches. The baseline records, as plain
values (marshal: nothing runs on load, a 10,000-pod baseline loads in milliseconds):
- the repo's files (size and mtime, like git's index) and the policies each file holds;
- the universe of the compile (the pods' identities, the selector index over their labels, the
  named ports, the CIDR identities), each policy's subject identities, CIDR prefixes, rule origins
  with their cookies and warnings;
- each class's compiled policy map by digest, size and cookies, and its enforcement;
- each node's endpoints, ipcache and attachments, and the catalog's identities and isolation.
It lives in the cache directory: losing it costs one full plan.
"""

from __future__ import annotations

import hashlib
import marshal
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshctl import __version__
from meshctl.cachedir import cache_dir, write_cache
from meshctl.lazypolicy import map_cookies
from meshctl.nodestate import NO_ENCRYPTION, NO_LOAD_BALANCER, NodeState, policy_map_sha
from meshctl.source.tree import CONFIG_FILE, YAML_SUFFIXES

FORMAT = "meshctl-baseline/5"  # bump whenever a key or row layout changes


KEYS = frozenset({  # every key record() and record_baseline() write
    "format", "version", "stamps", "files", "file_titles", "mixed", "docs", "cookies", "salted", "universe",
    "classes", "nodes", "cluster", "node_order", "mode", "ipv6_pass", "cidrs", "identities", "isolations",
    "isolation", "identity_table", "state_dir", "netns", "pods", "impact_max_pods", "audit_namespaces",
    "fingerprints", "state_stamp", "full_only",
})


def baseline_path(root: Path) -> Path:
    key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:32]
    return cache_dir() / "baselines" / f"{key}.marshal"


def repo_files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file the loader reads (meshctl.toml and YAML, hidden paths skipped) -> (mtime_ns,
    size): what tells an edit since the baseline, without reading a byte."""
    out: dict[str, tuple[int, int]] = {}
    base = len(str(root)) + 1
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = path[base:]
            if not name.startswith(".") and (name.endswith(YAML_SUFFIXES) or rel == CONFIG_FILE):
                st = os.stat(path)
                out[rel] = (st.st_mtime_ns, st.st_size)
    return out


def stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def origin_row(o: Any) -> tuple[Any, ...]:
    return (o.kind, o.namespace, o.name, o.section, o.index, o.file, o.line)


def warning_row(w: Any) -> tuple[Any, ...]:
    src = w.source
    return (w.code, w.message) if src is None else (w.code, w.message, src.file, src.line)


@dataclass(frozen=True)
class Stamps:
    """What must not have moved since the baseline besides the repo's files."""

    build: str
    registry: tuple[int, int] | None  # the lab's registry file (pods and nodes)
    lineage: str | None
    serial: int

    def row(self) -> tuple[Any, ...]:
        return (self.build, self.registry, self.lineage, self.serial)


def eligible(observed: Mapping[str, NodeState], intended: Mapping[str, NodeState]) -> bool:
    """A baseline is a converged state of policy only: encryption, load balancing and hand-made
    entries are planned in full (their live state moves on its own: keys, conntrack)."""
    for name, state in intended.items():
        live = observed.get(name)
        if live is None:
            return False
        for s in (state, live):
            if s.encryption != NO_ENCRYPTION or s.load_balancer != NO_LOAD_BALANCER or s.foreign:
                return False
        if live.foreign_programs:
            return False
    return True


def record(compiled: Any, stamps: Stamps, files: Mapping[str, tuple[int, int]],
           file_titles: Mapping[str, list[str]], mixed: Iterable[str]) -> dict[str, Any]:
    """The baseline of a converged full plan (see the module docstring) as plain values.

    `files`: repo_files() before the load; `file_titles`: every YAML file -> the titles of the
    policies it holds, in order; `mixed`: the files holding anything else (an edit there means
    a full plan)."""
    from meshctl.compile.cluster import l7_warning
    from meshctl.compile.partial import (
        PartialCompiler,
        class_of,
        needs_full_plan,
        translations,
        universe_spec,
    )

    spec = compiled.spec
    uni = universe_spec(compiled)
    cidrs = compiled.memo.universe[2] if compiled.memo is not None else ()
    partial = PartialCompiler.of(uni, compiled.identities, dict(cidrs))
    docs: dict[str, Any] = {}
    # the proxy's HTTP rules and toFQDNs selectors (world takes in every selector's identity) are
    # not planned incrementally: with any, plans are full
    full_only = False
    for doc, t in translations(compiled):
        full_only = full_only or any(needs_full_plan(r) for r in t.rules)
        docs[doc.title] = (
            sorted(partial.subjects(t)),
            [(sorted(idents), sorted(prefixes)) for idents, prefixes in partial.cidr_rules(t)],
            [origin_row(x.origin) for x in (*t.rules, *t.isolations)],
            [warning_row(w) for w in t.warnings],
        )
    classes: list[Any] = []
    class_index: dict[Any, int] = {}
    memo = compiled.memo.endpoints if compiled.memo is not None else {}
    for key, made in memo.items():
        class_index[key] = len(classes)
        classes.append((
            key[0], _ports_row(key[1]),
            policy_map_sha(made.entries), len(made.entries), sorted(map_cookies(made.entries)),
            made.enforce_in, made.enforce_out,
            [warning_row(w) for w in made.warnings],
            [warning_row(l7_warning(pair)) for pair in made.ineffective_l7],
        ))
    pods = {p.key: p for p in spec.pods}
    nodes: dict[str, Any] = {}
    ipcaches: dict[str, Any] = {}  # nodes without CIDR prefixes share one ipcache: stored once
    for name, state in compiled.nodes.items():
        eps = compiled.catalog.endpoints.get(name, {})
        parts = state.canonical_parts()
        nodes[name] = {
            "ipcache": ipcaches.setdefault(parts["ipcache"], ipcache_rows(state.ipcache)),
            "ipcache_text": parts["ipcache"],
            "endpoints_text": parts["endpoints"],
            "attachments_text": parts["attachments"],
            "endpoints": [
                (int(ip), e.endpoint_id, e.identity, e.enforce_ingress, e.enforce_egress,
                 class_index[class_of(e.identity, pods[eps[e.endpoint_id]])],
                 eps[e.endpoint_id])
                for ip, e in state.endpoints.items()
            ],
            "config": state.config.ipv6_pass,
        }
    cat = compiled.catalog
    distinct: dict[Any, int] = {}  # pods of one identity share their isolation
    for by in cat.isolation.values():
        distinct.setdefault(by, len(distinct))
    return {
        "format": FORMAT,
        "version": __version__,
        "stamps": stamps.row(),
        "files": dict(files),
        "file_titles": {rel: list(ts) for rel, ts in file_titles.items()},
        "mixed": sorted(mixed),
        "full_only": full_only,
        "docs": docs,
        "cookies": [(origin_row(o), c) for c, o in cat.cookies.items()],
        "salted": _salted(cat.cookies),
        "universe": partial.parts(),
        "classes": classes,
        "nodes": nodes,
        "cluster": spec.cluster,
        "node_order": list(spec.nodes),
        "mode": spec.mode,
        "ipv6_pass": spec.ipv6_pass,
        "cidrs": [(str(p), i) for p, i in cidrs],
        "identities": [(i, info.labels, info.pods) for i, info in cat.identities.items()],
        "isolations": [{int(d): v for d, v in by.items()} for by in distinct],
        "isolation": {pod: distinct[by] for pod, by in cat.isolation.items()},
        "identity_table": compiled.identities.as_dict(),
    }


def _salted(cookies: Mapping[int, Any]) -> bool:
    """Some policy's cookies are not what assign_cookies gives its origins alone: a cookie of one
    policy met another's (see replan._cookies)."""
    from meshctl.compile.cookies import assign_cookies

    by_policy: dict[tuple[str, str, str], dict[Any, int]] = {}
    for cookie, o in cookies.items():
        by_policy.setdefault((o.kind, o.namespace, o.name), {})[o] = cookie
    return any(assign_cookies(own) != own for own in by_policy.values())


def ipcache_rows(ipcache: Any) -> list[tuple[int, int, int, int]]:
    """(network as int, prefix length, identity, flags) of each ipcache entry."""
    return [(int(p.network_address), p.prefixlen, e.identity, e.flags) for p, e in ipcache.items()]


def _ports_row(ports: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(tuple(p) for p in ports)


def save(root: Path, baseline: Mapping[str, Any]) -> bool:
    return write_cache(baseline_path(root), marshal.dumps(dict(baseline)))


def load(root: Path) -> dict[str, Any] | None:
    """The baseline of `root`, or None (none, unreadable, or of another meshctl)."""
    try:
        data = marshal.loads(baseline_path(root).read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != __version__:
        return None
    return data if data.keys() >= KEYS else None


def forget(root: Path) -> None:
    """Drop the baseline (a full plan found the nodes moved, or the repo is not eligible)."""
    baseline_path(root).unlink(missing_ok=True)
