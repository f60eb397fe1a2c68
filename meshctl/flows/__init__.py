"""meshctl.flows: flow events from the datapath, enriched, stored, filtered and rendered (hubble-like)."""
