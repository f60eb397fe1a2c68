"""meshctl.compile."""
