"""meshctl.impact: what a change of the desired repo (base -> head revision) does to connectivity.

Both revisions are compiled against one inventory; every (source, destination, port) whose
verdict flips is listed with the rules on each side, and the flows recorded by the agents are
replayed through both revisions. Pure data out (ImpactReport); renderers live in render.py.
"""

from meshctl.impact.compute import compare_revisions, compare_states
from meshctl.impact.model import FlowReplay, ImpactPair, ImpactReport, ReplayedFlow

__all__ = ["FlowReplay", "ImpactPair", "ImpactReport", "ReplayedFlow", "compare_revisions", "compare_states"]
