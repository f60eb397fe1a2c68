"""The node's L7 proxies, supervised by its agent (or the lab): Envoy for HTTP."""
