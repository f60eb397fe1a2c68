"""Kube-proxy replacement glue: desired services + lab node addresses -> each node's LB target."""
