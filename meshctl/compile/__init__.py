"""meshctl.compile: desired state -> per-node NodeState (identities, ipcache, policy entries)."""

from meshctl.compile.cluster import Compiled, compile_cluster, compile_spec
from meshctl.compile.identities import EndpointTable, IdentityTable
from meshctl.compile.ir import CompileWarning, SourceRef

__all__ = [
    "CompileWarning",
    "Compiled",
    "EndpointTable",
    "IdentityTable",
    "SourceRef",
    "compile_cluster",
    "compile_spec",
]
