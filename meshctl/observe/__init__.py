"""meshctl.observe."""
