"""meshctl: GitOps for an eBPF network datapath."""

__version__ = "0.1.0"
