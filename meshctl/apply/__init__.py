"""meshctl.apply: roll a plan out node by node, verify, revert; recover after a crash; drift.

- rollout: canary wave first, then batches (pure)
- revert: the revert stack (Cilium's pkg/revert)
- gates: which checks run mid-rollout, the drop-rate gate (pure)
- engine: waves -> journal -> reconcile -> verify -> revert (no kernel, no files)
- driver, checks: the lab side of the engine (observe/reconcile/metrics, real connections)
- run: lock, stale-plan refusal, engine, state commit
- recover: finish an interrupted apply from its journal
- drift: live state vs the last applied intent, and the plan that heals it
- crash: the MESHCTL_TEST_CRASH_AT hook of the crash-safety tests
"""
