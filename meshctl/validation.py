"""`meshctl validate`: load and compile a desired-state repo with no nodes, and list every problem.

The loader stops at the first bad document (plan and apply need all or nothing); validate goes on:
every file and every document is checked on its own, so one run names every problem with its
file and line. Only when each document is valid do the cross-checks (names, namespaces, nodes,
pod addresses) and the compiler run, since they need the whole set. Compile warnings (rules that
enforce nothing, L7 not enforced, ...) are listed too but do not fail validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from meshctl.errors import MeshctlError, SourceError


@dataclass
class Validation:
    root: Path
    errors: list[str] = field(default_factory=list)  # "file:line: field: message"
    warnings: list[str] = field(default_factory=list)
    documents: int = 0
    policies: int = 0
    pods: int = 0
    nodes: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, object]:
        return {"root": str(self.root), "valid": self.ok, "errors": self.errors,
                "warnings": self.warnings, "documents": self.documents, "policies": self.policies,
                "pods": self.pods, "nodes": self.nodes}


def validate_repo(root: Path) -> Validation:
    """Every problem of the repo at `root` (a directory); nothing on any node is read."""
    from meshctl.source.config import CONFIG_FILE, parse_config
    from meshctl.source.documents import Documents, add_document
    from meshctl.source.tree import YAML_SUFFIXES, DirTree
    from meshctl.source.yamlines import load_documents

    root = Path(root).resolve()
    out = Validation(root)
    if not root.is_dir():
        out.errors.append(f"{root}: desired-state directory not found")
        return out
    tree = DirTree(root)
    try:
        text = tree.read(CONFIG_FILE)
        if text is None:
            raise SourceError(CONFIG_FILE, None, "", "missing: a desired-state repo has meshctl.toml at "
                              "its root")
        out.nodes = len(parse_config(text, root).nodes)
    except MeshctlError as err:
        out.errors.append(str(err))
    docs = Documents()
    for rel in tree.files():
        if not rel.endswith(YAML_SUFFIXES):
            continue
        try:
            yaml_docs = load_documents(tree.read(rel) or "", rel)
        except MeshctlError as err:
            out.errors.append(str(err))
            continue
        for doc in yaml_docs:
            out.documents += 1
            try:
                add_document(doc, docs)
            except MeshctlError as err:
                out.errors.append(str(err))
    if out.ok:
        _load_and_compile(root, out)
    return out


def _load_and_compile(root: Path, out: Validation) -> None:
    """The whole-repo checks and the compiler (identities fresh; pod addresses placeholders)."""
    from meshctl.compile import EndpointTable, IdentityTable, compile_cluster
    from meshctl.compile.trace import with_trace_ips
    from meshctl.source import load_desired

    try:
        desired = load_desired(root)
        out.policies, out.pods = len(desired.policies), len(desired.pods)
        compiled = compile_cluster(with_trace_ips(desired), IdentityTable(), EndpointTable(), "validate")
    except MeshctlError as err:
        out.errors.append(str(err))
        return
    out.warnings.extend(str(w) for w in compiled.warnings)
