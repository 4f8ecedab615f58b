"""`ChannelPlan`: how many channels each group keeps.

A plan maps each channel group to the number of channels it keeps. Groups
are named by their first layer slot (`"block_1_expand[out]"`), which stays
the same for every copy of a model (a wrapped copy, a saved and reloaded
one), where group numbers might not. A plan is plain data: JSON on disk,
a config inside `prune_channels`' wrappers.
"""

import json

from tfprune.dependency.graph import Group
from tfprune.json_files import save_json


def group_key(group):
    """The name of a group in plans: its first `layer[slot]`."""
    names = group.layer_names()
    if not names:
        raise ValueError(f"Group {group.id} has no layer slots; it cannot be planned.")
    return names[0]


class ChannelPlan:
    """Kept channels per channel group, and what the plan was made for.

    Args:
      targets: `{group key: kept channels}` (see `group_key`), or
        `{Group: kept}`.
      budget: Optional dict describing the budget the plan meets (e.g.
        `{"latency_ms": 4.0, "num_threads": 1, "precision": "int8"}`).
      info: Optional dict of facts about how the plan was made (predicted
        cost, rounds, device), kept with it.

    Raises:
      ValueError: If a target is not a positive integer.
    """

    def __init__(self, targets, budget=None, info=None):
        clean = {}
        for key, kept in dict(targets).items():
            if isinstance(key, Group):
                key = group_key(key)
            if isinstance(kept, bool) or int(kept) != kept or int(kept) < 1:
                raise ValueError(
                    f"A plan keeps a positive whole number of channels per group; received "
                    f"{kept!r} for group '{key}'."
                )
            clean[str(key)] = int(kept)
        self.targets = clean
        self.budget = dict(budget or {})
        self.info = dict(info or {})

    def counts(self, graph):
        """`{group id: kept}` for the groups of `graph` that the plan names.

        Raises:
          ValueError: If the plan names a group the graph does not have, one
            that must keep its channels, or keeps more channels than a group has.
        """
        by_key = {}
        for group in graph.groups:
            if group.layers:
                by_key.setdefault(group_key(group), group)
        out = {}
        for key, kept in self.targets.items():
            group = by_key.get(key)
            if group is None:
                known = ", ".join(sorted(group_key(g) for g in graph.prunable_groups)[:6])
                raise ValueError(
                    f"The plan names channel group '{key}', which model '{graph.model.name}' "
                    f"does not have (its prunable groups start with: {known}, ...). Make the plan "
                    "for this model (tflite_export.plan), or edit its targets."
                )
            if kept > group.size:
                raise ValueError(
                    f"The plan keeps {kept} channels of group '{key}', which has {group.size}."
                )
            if kept < group.size and not group.prunable:
                raise ValueError(
                    f"The plan removes channels of group '{key}', which must keep them all: "
                    f"{'; '.join(group.reasons) or 'single channel'}."
                )
            out[group.id] = kept
        return out

    def sparsities(self, graph):
        """`{group id: fraction of channels removed}` for the planned groups."""
        return {gid: 1.0 - kept / graph.groups[gid].size
                for gid, kept in self.counts(graph).items()}

    def get_config(self):
        """A JSON-serializable dict (see `from_config`)."""
        return {"targets": dict(self.targets), "budget": dict(self.budget),
                "info": dict(self.info)}

    @classmethod
    def from_config(cls, config):
        """The plan `get_config` described."""
        return cls(config["targets"], budget=config.get("budget"), info=config.get("info"))

    def save(self, path):
        """Writes the plan as JSON (a new file; an existing one is replaced atomically)."""
        save_json(path, self.get_config(), indent=2)

    @classmethod
    def load(cls, path):
        """Reads a plan written by `save`.

        Raises:
          ValueError: If the file is not a plan.
        """
        with open(path, encoding="utf-8") as f:
            try:
                config = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"'{path}' is not a channel plan (invalid JSON: {err}).") from None
        if not isinstance(config, dict) or "targets" not in config:
            raise ValueError(f"'{path}' is not a channel plan: it has no 'targets'.")
        return cls.from_config(config)

    def __eq__(self, other):
        return isinstance(other, ChannelPlan) and self.get_config() == other.get_config()

    def __repr__(self):
        return f"ChannelPlan({len(self.targets)} groups, budget={self.budget})"
