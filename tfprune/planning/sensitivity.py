"""Predicted accuracy loss per group and kept count, for the allocator.

Two estimates, both `fn(group key, kept) -> loss` with loss 0 when every
channel is kept:

- `ScoreSensitivity`: from the importance scores `prune_channels` ranks
  channels by: the share of the group's importance that its removed
  channels carry. Free to compute.
- `MeasuredSensitivity`: from a few hundred validation examples: the
  increase in the model's loss when only this group is cut to each grid
  count (its least important channels masked, as `prune_channels` would),
  interpolated in between.
"""

import keras
import numpy as np

from tfprune import importance as importance_lib
from tfprune.planning.channel_plan import group_key
from tfprune.planning.cost_model import grid_levels


class ScoreSensitivity:
    """Share of a group's importance carried by the channels it drops.

    Args:
      graph: A `DependencyGraph`.
      importance: An importance name or callable (see `tfprune.importance`);
        `"taylor"` needs gradients from training and is not available here.
    """

    def __init__(self, graph, importance="l2"):
        scorer = importance_lib.get(importance)
        self._sorted = {}
        for group in graph.prunable_groups:
            scores = np.sort(np.maximum(np.asarray(scorer(group), np.float64), 0.0))[::-1]
            total = scores.sum()
            cumulative = np.concatenate([[0.0], np.cumsum(scores)])
            self._sorted[group_key(group)] = (cumulative, total if total > 0 else 1.0)

    def __call__(self, key, kept):
        cumulative, total = self._sorted[key]
        kept = int(min(max(kept, 0), len(cumulative) - 1))
        return float((cumulative[-1] - cumulative[kept]) / total)


class MeasuredSensitivity:
    """Loss increase on validation data when one group alone is cut.

    Args:
      model: The model (not wrapped).
      x: A few hundred validation examples.
      y: Their labels.
      loss_fn: `fn(y_true, y_pred) -> scalar`; default sparse categorical
        cross-entropy (from logits unless the outputs are probabilities).
      round_to: Measured kept counts are multiples of this (see `grid_levels`).
      levels: Kept counts measured per group (see `grid_levels`).
      importance: Which channels go first (as `prune_channels` ranks them).
      progress: Optional `fn(done, total, group key)`.
    """

    def __init__(self, model, x, y, loss_fn=None, round_to=1, levels=4, importance="l2",
                 progress=None):
        from tfprune import channel_pruning
        from tfprune import schedules

        wrapped = channel_pruning.prune_channels(
            model, schedules.ConstantSparsity(0.0, begin_step=2**62), importance=importance)
        pruner = channel_pruning.get_channel_pruner(wrapped)
        loss_fn = loss_fn or default_loss
        base = float(loss_fn(y, predict_numpy(wrapped, x)))
        scores = pruner.scores()
        full = pruner.current_keep()
        # Masking zeroes the masked weights: every cut is undone from this copy.
        saved = [np.asarray(keras.ops.convert_to_numpy(w)) for w in wrapped.weights]
        self.base_loss = base
        self._tables = {}
        work = [(g, grid_levels(g.size, round_to, levels)) for g in pruner.groups]
        total = sum(len(l) - 1 for _, l in work)
        done = 0
        for group, counts in work:
            order = np.argsort(-np.asarray(scores[group.id]), kind="stable")
            losses = []
            for kept in counts[:-1]:
                flags = np.zeros(group.size, dtype=bool)
                flags[order[:kept]] = True
                pruner.set_keep({group.id: flags})
                losses.append(float(loss_fn(y, predict_numpy(wrapped, x))) - base)
                pruner.set_keep(full)
                for weight, value in zip(wrapped.weights, saved):
                    weight.assign(value)
                done += 1
                if progress is not None:
                    progress(done, total, group_key(group))
            losses.append(0.0)
            # Fewer channels never predict less loss than more channels.
            losses = np.maximum.accumulate(np.asarray(losses)[::-1])[::-1]
            self._tables[group_key(group)] = (np.asarray(counts, np.float64), np.maximum(losses, 0))

    def __call__(self, key, kept):
        counts, losses = self._tables[key]
        return float(np.interp(kept, counts, losses))


def as_inputs(x):
    """`x` as a list of arrays, one per model input (an array, or a list/tuple of them)."""
    return [np.asarray(a) for a in x] if isinstance(x, (list, tuple)) else [np.asarray(x)]


def batches(x, batch_size):
    """Consecutive slices of `batch_size` examples of `x` (an array or a list of arrays)."""
    inputs = as_inputs(x)
    for start in range(0, len(inputs[0]), batch_size):
        batch = [a[start:start + batch_size] for a in inputs]
        yield batch if len(batch) > 1 else batch[0]


def predict_numpy(model, x, batch_size=64):
    """`model(x)` in inference mode, batch by batch, as NumPy (a list or dict of arrays for
    several outputs). Direct calls: `predict` would trace a new function for every model."""
    parts = []
    for batch in batches(x, batch_size):
        outputs = model(batch, training=False)
        if isinstance(outputs, dict):
            parts.append({k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()})
        elif isinstance(outputs, (list, tuple)):
            parts.append([keras.ops.convert_to_numpy(v) for v in outputs])
        else:
            parts.append(keras.ops.convert_to_numpy(outputs))
    first = parts[0]
    if isinstance(first, dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in first}
    if isinstance(first, list):
        return [np.concatenate([p[i] for p in parts]) for i in range(len(first))]
    return np.concatenate(parts)


def default_loss(y, outputs):
    """Categorical cross-entropy of `outputs` (logits, or probabilities summing to 1).

    `y` holds class indices (one per example) or one-hot rows as wide as the
    outputs.

    Raises:
      ValueError: If `outputs` is not one array of class scores per example,
        or `y` fits neither form (pass your own `loss_fn` then).
    """
    if isinstance(outputs, (list, tuple, dict)):
        raise ValueError(f"The default loss needs one output of class scores; the model has "
                         f"{len(outputs)}. Pass loss_fn=fn(y_true, y_pred) -> scalar.")
    y = np.asarray(y)
    outputs = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    if len(y) != len(outputs):
        raise ValueError(f"{len(y)} labels for {len(outputs)} examples: give one label per "
                         "example.")
    probabilities = np.all(outputs >= 0) and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3)
    if not probabilities:
        outputs = outputs - outputs.max(axis=1, keepdims=True)
        outputs = np.exp(outputs) / np.exp(outputs).sum(axis=1, keepdims=True)
    log_p = np.log(np.maximum(outputs, 1e-12))
    if y.ndim == 2 and y.shape[1] == outputs.shape[1] and y.shape[1] > 1:
        return float(-np.mean(np.sum(y * log_p, axis=1)))  # one-hot (or soft) labels
    labels = y.reshape(-1)
    if labels.size != len(outputs) or not np.all(np.equal(np.mod(labels, 1), 0)) \
            or labels.min() < 0 or labels.max() >= outputs.shape[1]:
        raise ValueError(
            f"Labels of shape {y.shape} do not fit {outputs.shape[1]} class scores per example: "
            "give class indices in [0, classes) or one-hot rows, or pass loss_fn=fn(y_true, "
            "y_pred) -> scalar.")
    return float(-np.mean(log_p[np.arange(len(labels)), labels.astype(np.int64)]))
