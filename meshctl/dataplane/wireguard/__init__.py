"""Transparent encryption with WireGuard: keys, wireguard-go devices, peers, routing, strict mode.

The kernel side of WireGuard of one node netns: wireguard-go processes, the `wg` tool, the
tunnel routing table and the strict-mode drop rules. The phased rollout that plans and applies
its steps is a use case (meshctl.app.rollout).
"""
