"""meshctl.flows."""
