"""meshctl.plan."""
