"""meshctl.dataplane."""
