"""Transparent encryption with WireGuard: keys, wireguard-go devices, peers, routing, strict mode.

The kernel side of WireGuard lives here (not in meshctl/dataplane): wireguard-go processes, the
`wg` tool, the tunnel routing table and the strict-mode drop rules of one node netns.
"""
