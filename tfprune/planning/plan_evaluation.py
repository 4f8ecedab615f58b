"""The validation loss of a whole plan, after re-estimating BatchNorm statistics.

Per-group sensitivities add up the loss of cutting one group at a time; they
miss how cuts interact, and a cut measured with the dense model's BatchNorm
statistics looks worse than it is, since fine-tuning re-estimates them in its
first steps. `PlanEvaluator` measures a whole plan the way it will start
fine-tuning: the model is pruned one-shot to the plan and shrunk, the moving
mean and variance of its trainable BatchNorm layers are re-estimated on the
validation images (`recalibrate_batch_norm`), and the loss is measured on the
same images. Li et al., "EagleEye: Fast Sub-net Evaluation for Efficient
Neural Network Pruning" (ECCV 2020) found that this "adaptive BatchNorm"
evaluation ranks candidate sub-networks by their accuracy after fine-tuning
far better than the plain one.
"""

import keras
import numpy as np

from tfprune.layer_walk import all_layers
from tfprune.planning.sensitivity import as_inputs, batches, default_loss, predict_numpy


def batch_norm_layers(model):
    """Every `BatchNormalization` layer of `model`, nested models and wrappers included."""
    return [layer for layer in all_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)]


def recalibrate_batch_norm(model, x, batch_size=64):
    """Re-estimates the moving statistics of `model`'s trainable BatchNorm layers on `x`.

    After one-shot pruning, the statistics measured on the dense model no
    longer describe the activations. This runs `x` through the model in
    training mode (dropout included, as in fine-tuning) and sets each
    trainable `BatchNormalization` layer's moving mean and variance to the
    average of the batches' statistics. Frozen BatchNorm layers
    (`trainable=False`) and all weights are left unchanged.

    Args:
      model: A Keras model (not wrapped for pruning: wrappers count training
        steps). Its BatchNorm layers are changed in place.
      x: Examples (an array, or a list of arrays for several inputs).
      batch_size: Examples per forward pass.

    Returns:
      The number of BatchNorm layers re-estimated.

    Raises:
      ValueError: If `x` is empty, `batch_size` is not a positive integer, or
        the model holds pruning wrappers.
    """
    from tfprune.masked_wrapper import collect_wrappers

    wrappers = collect_wrappers(model)
    if wrappers:
        raise ValueError(
            f"recalibrate_batch_norm got a model with pruning wrappers (e.g. "
            f"'{wrappers[0].name}'), whose training-mode calls count pruning steps. Pass "
            "tfprune.shrink(model) or tfprune.strip_pruning(model) instead.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer. Received: {batch_size!r}")
    if len(as_inputs(x)[0]) == 0:
        raise ValueError("recalibrate_batch_norm needs at least one example; x is empty.")
    layers = [layer for layer in batch_norm_layers(model) if layer.trainable]
    if not layers:
        return 0
    saved = [layer.momentum for layer in layers]
    try:
        for number, batch in enumerate(batches(x, batch_size)):
            # Momentum n/(n+1): the moving value becomes the mean over the n+1 batches seen.
            for layer in layers:
                layer.momentum = number / (number + 1.0)
            model(batch, training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return len(layers)


def prune_to_plan(model, counts, importance="l2"):
    """`model` pruned one-shot to `{group key: kept}` (the lowest-ranked channels go) and shrunk.

    Args:
      model: A model (not wrapped); it is not changed.
      counts: Kept channels per group key (a `ChannelPlan`'s `targets`).
      importance: How channels are ranked (as `prune_channels`).
    """
    from tfprune import channel_pruning
    from tfprune import schedules
    from tfprune import surgery
    from tfprune.planning.channel_plan import ChannelPlan

    # With a plan, the schedule only says when: at step 0, every group reaches its count.
    wrapped = channel_pruning.prune_channels(model, schedules.ConstantSparsity(0.5, 0),
                                             importance=importance, plan=ChannelPlan(dict(counts)))
    return surgery.shrink(wrapped)


class PlanEvaluator:
    """`fn(counts) -> loss`: the validation loss of a model pruned to a plan.

    Args:
      model: The model (not wrapped); it is not changed.
      x: A few hundred validation examples.
      y: Their labels.
      loss_fn: `fn(y_true, y_pred) -> scalar`; default sparse categorical
        cross-entropy (from logits unless the outputs are probabilities).
      importance: Which channels go first (as `prune_channels` ranks them).
      recalibrate: Re-estimate BatchNorm statistics on `x` first (see the
        module docstring).
      batch_size: Examples per forward pass.
    """

    def __init__(self, model, x, y, loss_fn=None, importance="l2", recalibrate=True,
                 batch_size=64):
        self.model = model
        self.x = x
        self.y = np.asarray(y)
        self.loss_fn = loss_fn or default_loss
        self.importance = importance
        self.recalibrate = recalibrate
        self.batch_size = batch_size
        self.history = []

    def pruned_model(self, counts):
        """The model pruned one-shot to `{group key: kept}`, shrunk, BatchNorm re-estimated."""
        small = prune_to_plan(self.model, counts, importance=self.importance)
        if self.recalibrate:
            recalibrate_batch_norm(small, self.x, self.batch_size)
        return small

    def __call__(self, counts):
        small = self.pruned_model(counts)
        # Direct calls: `predict` would trace a new function for every model evaluated.
        loss = float(self.loss_fn(self.y, predict_numpy(small, self.x, self.batch_size)))
        self.history.append((dict(counts), loss))
        return loss

