"""meshctl.apply."""
