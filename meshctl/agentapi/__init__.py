"""meshctl.agentapi: the node agent's local API, through which a remote apply drives one node.

server.py serves observe/apply/revert/verify on a unix socket (HTTP/1.1 + JSON); client.py
speaks it; driver.py turns it into the apply engine's NodeDriver so `[apply] driver = "agent"`
runs the same engine over agents instead of touching the lab's kernel state directly.
"""
