"""Channel dependency analysis for Keras 3 models (inspection only).

`DependencyGraph(model)` finds the groups of channels that must be removed
together; `count_macs` measures a model. Policies (importance, schedules)
and model surgery live elsewhere (`tfprune.importance`, `tfprune.surgery`).
"""

from tfprune.dependency.graph import DependencyGraph, Group, Member
from tfprune.dependency.macs import count_macs

__all__ = ["DependencyGraph", "Group", "Member", "count_macs"]
