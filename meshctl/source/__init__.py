"""meshctl.source."""
