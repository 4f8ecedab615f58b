"""Channel importance: how much each channel of a group is worth keeping.

This is policy, kept apart from the dependency graph (which only says what
is coupled). An importance maps a `tfprune.dependency.Group` to one score
per channel of the group; the lowest-scored channels are removed first.

- `"l1"` / `"l2"`: norms of the filters that produce each channel (kernel
  output slices, depthwise kernels), summed over every producer in the group.
- `"bn_scale"`: |gamma| of the group's BatchNormalization layers (network
  slimming, Liu et al. 2017). Groups without a learned gamma (no BN, or BN
  with `scale=False` as in InceptionV3) fall back to `"l2"`; the channel
  pruner's summary says so for each such group.
- `"taylor"`: first-order Taylor saliency |sum(activation * gradient)| per
  channel (Molchanov et al. 2019), accumulated over the training steps since
  the last mask update. Before any gradient has been seen (one-shot pruning
  at step 0) it falls back to `"l2"`.
- A callable `fn(group) -> array of group.size scores`.
"""

import numpy as np


class ImportanceUnavailable(Exception):
    """An importance that cannot score a group; the message says why."""


def _axis_norms(variable, axis, order):
    value = np.asarray(variable.numpy(), dtype=np.float64)
    rows = np.moveaxis(value, axis, 0).reshape(value.shape[axis], -1)
    if order == 1:
        return np.abs(rows).sum(axis=1)
    return np.sqrt(np.square(rows).sum(axis=1))


def _accumulate(group, members, per_index):
    scores = np.zeros(group.size, dtype=np.float64)
    for member, values in zip(members, per_index):
        np.add.at(scores, member.channels, values[member.indices])
    return scores


class NormImportance:
    """Sum over the group's producing filters of their L1 or L2 norm.

    Args:
      order: 1 or 2.
    """

    def __init__(self, order=2):
        self.order = order
        self.name = f"l{order}"

    def __call__(self, group):
        members = [m for m in group.members if m.role == "producer"]
        if not members:
            # No producing filter (e.g. only consumers of an Embedding-free
            # input): fall back to the weights that read the channels.
            members = [m for m in group.members if m.role == "consumer"]
        if not members:
            raise ImportanceUnavailable("the group has no kernels")
        return _accumulate(group, members,
                           [_axis_norms(m.variable, m.axis, self.order) for m in members])


class BNScaleImportance:
    """|gamma| of the BatchNormalization layers in the group."""

    name = "bn_scale"

    def __call__(self, group):
        import keras

        members, scale_free = [], []
        for m in group.members:
            if isinstance(m.layer, keras.layers.BatchNormalization):
                if m.layer.gamma is None:
                    scale_free.append(m.layer.name)
                elif m.variable is m.layer.gamma:
                    members.append(m)
        if not members:
            if scale_free:
                raise ImportanceUnavailable(
                    f"BatchNormalization '{scale_free[0]}' has scale=False (no gamma)"
                )
            raise ImportanceUnavailable("no BatchNormalization in the group")
        return _accumulate(group, members, [np.abs(np.asarray(m.variable.numpy()))
                                            for m in members])


class TaylorImportance:
    """First-order Taylor saliency accumulated by the channel wrappers.

    Args:
      lookup: `fn(layer, slot) -> array or None`: the accumulated |dL/dmask|
        of a layer slot's entries (its output channels for `"out"`, its heads
        for a MultiHeadAttention's `"heads"`), or None if not tracked.
    """

    name = "taylor"

    def __init__(self, lookup):
        self.lookup = lookup

    def __call__(self, group):
        members, values = [], []
        seen = set()
        for m in group.members:
            if (id(m.layer), m.slot) in seen:
                continue
            scores = self.lookup(m.layer, m.slot)
            if scores is None:
                continue
            seen.add((id(m.layer), m.slot))
            scores = np.asarray(scores, dtype=np.float64)
            # Positions along a gated axis repeat the slot (LSTM gates): one
            # score per slot entry.
            entries, first = np.unique(m.indices % scores.size, return_index=True)
            members.append(_SlotEntries(entries, m.channels[first]))
            values.append(scores)
        if not members:
            raise ImportanceUnavailable("no producing layer tracks gradients")
        out = _accumulate(group, members, values)
        if not np.any(out > 0):
            raise ImportanceUnavailable(
                "no gradients seen yet (no training step since the last update)"
            )
        return out


class _SlotEntries:
    """Slot entries of a group member and their group channels (for `_accumulate`)."""

    def __init__(self, indices, channels):
        self.indices = indices
        self.channels = channels


class CallableImportance:
    """Wraps a user function `fn(group) -> scores`, checking what it returns."""

    def __init__(self, fn):
        self.fn = fn
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, group):
        scores = np.asarray(self.fn(group), dtype=np.float64).reshape(-1)
        if scores.size != group.size or not np.all(np.isfinite(scores)):
            raise ValueError(
                f"Importance function {self.name!r} must return {group.size} finite scores "
                f"for group {group.id} ({', '.join(group.layer_names()[:3])}); it returned "
                f"{scores.size} values."
            )
        return scores


NAMES = ("l1", "l2", "bn_scale", "taylor")
"""The importance criteria `prune_channels` accepts by name (besides a callable)."""


def validate(importance):
    """Raises a ValueError unless `importance` is a known name or a callable."""
    if callable(importance) or importance in NAMES:
        return
    raise ValueError(
        f"`importance` must be one of {', '.join(repr(n) for n in NAMES)} or a callable "
        f"fn(group) -> scores. Received: importance={importance!r}"
    )


def get(importance, taylor_lookup=None):
    """The importance object for a name or callable.

    Args:
      importance: `"l1"`, `"l2"`, `"bn_scale"`, `"taylor"` or a callable.
      taylor_lookup: For `"taylor"`: `fn(layer, slot) -> accumulated scores or None`.

    Returns:
      A callable `group -> scores` with a `name` attribute.

    Raises:
      ValueError: If `importance` is unknown.
    """
    validate(importance)
    if callable(importance):
        return CallableImportance(importance)
    if importance == "l1":
        return NormImportance(1)
    if importance == "l2":
        return NormImportance(2)
    if importance == "bn_scale":
        return BNScaleImportance()
    return TaylorImportance(taylor_lookup or (lambda layer, slot: None))
