"""meshctl.report."""
