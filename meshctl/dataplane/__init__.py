"""meshctl.dataplane: the only code that touches the kernel.

libbpf (ctypes binding), structs (mirrors of bpf/lib/common.h), maps (typed pinned maps <->
NodeState values), node (load, pin, attach one node's datapath), netns (setns, tcx links),
reconcile (make the kernel hold a NodeState), ringbuf (flow events), wireguard (the WireGuard
device, keys, routing and strict mode of a node). frames.py builds test frames for the datapath
tests.
"""
