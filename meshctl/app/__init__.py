"""The use cases: plan, apply, drift, recover, status, encryption rollout, connectivity test.

The only layer that combines the ones below it. Each use case opens a Workspace (the desired
repo with its backend, meshctl.app.workspace) and talks to the nodes through the backend only.
"""
