"""`Layout`: the channel slots of a layer and the weight axes along them.

A slot is one channel axis of a layer's parameters: a Conv2D has an `"in"`
slot (its kernel's input-channel axis) and an `"out"` slot (the kernel's
output-channel axis and the bias); a BatchNormalization has one `"channel"`
slot shared by gamma, beta and the moving statistics; a MultiHeadAttention
has a `"heads"` slot. The dependency graph joins slots to the tensors a layer
reads and writes; masking and shrinking slice weights along the axes listed.

Roles say what a weight axis means for importance and masking:

- `"producer"`: slicing this axis removes a filter that produces a channel
  (kernel output axes, depthwise kernels). Norms of these are "l1"/"l2"
  importance.
- `"consumer"`: this axis reads input channels (kernel input axes).
- `"param"`: a per-channel parameter (bias, gamma, beta, statistics).

`maskable` is False for weights that the optimizer does not update (moving
statistics): a constraint-based mask would not hold on them, and masking
gamma and beta already makes a dead channel's output zero.
"""

import dataclasses

import numpy as np


class Unsupported(Exception):
    """A layer or operation whose channels cannot be changed; the message says why."""


@dataclasses.dataclass(frozen=True)
class WeightAxis:
    """One axis of one weight that runs over a slot.

    Attributes:
      variable: The layer's `keras.Variable`.
      axis: The axis (non-negative) of `variable` along the slot.
      slot: The slot name.
      role: `"producer"`, `"consumer"` or `"param"`.
      maskable: Whether the weight can be held at zero by a mask.
      repeat: Consecutive entries of `axis` per slot entry (1 for a plain
        channel axis; e.g. 4 gates of an LSTM are 4 blocks, see `blocks`).
      blocks: The axis holds `blocks` copies of the slot laid end to end
        (an LSTM kernel's columns are 4 gates x units).
    """

    variable: object
    axis: int
    slot: str
    role: str
    maskable: bool = True
    blocks: int = 1

    def positions(self, indices, slot_size):
        """Positions along `axis` of the slot entries `indices` (all blocks)."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.blocks == 1:
            return indices
        return np.concatenate([indices + b * slot_size for b in range(self.blocks)])

    def expand(self, flags):
        """A per-position 0/1 vector along `axis` from per-slot-entry flags."""
        flags = np.asarray(flags)
        return np.tile(flags, self.blocks) if self.blocks > 1 else flags


@dataclasses.dataclass
class Layout:
    """The channel slots of a built layer and the weight axes along them.

    Attributes:
      slots: Slot name -> size (None: as wide as the layer's input, filled
        in by the graph).
      axes: `WeightAxis` entries.
    """

    slots: dict
    axes: list

    def add(self, variable, axis, slot, role, maskable=True, blocks=1):
        """Records that `variable`'s axis `axis` runs over `slot` (`blocks` times)."""
        if variable is None:
            return
        axis = axis % len(variable.shape)
        self.axes.append(WeightAxis(variable, axis, slot, role, maskable, blocks))

    def masked_variables(self):
        """Variables with at least one maskable slot axis, in layout order."""
        seen, out = set(), []
        for entry in self.axes:
            if entry.maskable and id(entry.variable) not in seen:
                seen.add(id(entry.variable))
                out.append(entry.variable)
        return out
