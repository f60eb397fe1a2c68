"""meshctl.model."""
