"""`PruneLowMagnitude`: the wrapper that prunes a layer's weights by magnitude."""

import keras
import numpy as np
from absl import logging

from tfprune import backends
from tfprune import graph_updates
from tfprune import masks as mask_math
from tfprune import prune_registry
from tfprune import schedules as schedules_lib
from tfprune.masked_wrapper import MaskedWeightsWrapper


def _as_pair(value, name):
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"`{name}` must be a pair of positive integers. Received: {name}={value!r}")
    return pair


def _m_by_n_axis(weight, input_axis):
    """tfmot's N:M layout for rank-2 and rank-4 kernels; the input axis for others."""
    return None if len(weight.shape) in (2, 4) else input_axis


@keras.saving.register_keras_serializable(package="tfprune")
class PruneLowMagnitude(MaskedWeightsWrapper):
    """Zeroes the smallest-magnitude weights of a layer, on a schedule.

    Every time the schedule says so (`should_prune(step)`), the mask of each
    prunable weight is recomputed from the current magnitudes to reach the
    schedule's sparsity. Masked weights stay exactly zero in between.

    Args:
      layer: The layer to prune (see `tfprune.prune_low_magnitude` for the
        supported types).
      pruning_schedule: A `tfprune.PruningSchedule`.
      block_size: `(rows, cols)`: prune whole blocks of a weight that is a
        matrix once its size-1 axes are dropped (as tfmot: Dense kernels, 1x1
        convolutions); blocks that do not fit at the edge are padded, as
        tfmot pads them. `(1, 1)` prunes single weights (any layer).
      block_pooling_type: `"AVG"` or `"MAX"`: how a block is scored.
      sparsity_m_by_n: `(m, n)`, e.g. `(2, 4)`: zero `m` of every `n`
        consecutive weights along the input-channel axis, with tfmot's layout
        (a shorter last group keeps its largest `min(r, n - m)`). As in
        tfmot, the pattern is chosen once, at step 1; the schedule is not
        consulted. `None` for magnitude sparsity.
      global_pruning: Rank this layer's weights together with those of every
        other `global_pruning` wrapper in the model that has the same
        schedule: one magnitude threshold for all of them, so the schedule's
        sparsity holds for their weights in total while each layer's own
        sparsity follows from its magnitudes. Needs single-weight pruning
        (no `block_size` or `sparsity_m_by_n`).
      **kwargs: Passed to `keras.layers.Layer`.

    Raises:
      ValueError: On an unsupported layer or out-of-range argument, or (when
        built) block pruning of a weight that is not a matrix.
    """

    def __init__(
        self,
        layer,
        pruning_schedule=None,
        block_size=(1, 1),
        block_pooling_type="AVG",
        sparsity_m_by_n=None,
        global_pruning=False,
        **kwargs,
    ):
        if pruning_schedule is None:
            pruning_schedule = schedules_lib.ConstantSparsity(0.5, 0)
        pruning_schedule = schedules_lib.deserialize(pruning_schedule)
        if not isinstance(pruning_schedule, schedules_lib.PruningSchedule):
            raise ValueError(
                "`pruning_schedule` must be a tfprune.PruningSchedule such as "
                f"tfprune.PolynomialDecay(...). Received: {pruning_schedule!r}"
            )
        if not isinstance(layer, keras.layers.Layer) or not prune_registry.is_prunable(layer):
            raise ValueError(prune_registry.unsupported_layer_message(layer))
        if block_pooling_type not in ("AVG", "MAX"):
            raise ValueError(
                "`block_pooling_type` must be 'AVG' or 'MAX'. "
                f"Received: block_pooling_type={block_pooling_type!r}"
            )
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        super().__init__(layer, **kwargs)
        self.pruning_schedule = pruning_schedule
        self.block_size = _as_pair(block_size, "block_size")
        self.block_pooling_type = block_pooling_type
        self.sparsity_m_by_n = (
            None if sparsity_m_by_n is None else _as_pair(sparsity_m_by_n, "sparsity_m_by_n")
        )
        if self.sparsity_m_by_n is not None and self.block_size != (1, 1):
            raise ValueError(
                "Use either `block_size` or `sparsity_m_by_n`, not both. Received: "
                f"block_size={self.block_size}, sparsity_m_by_n={self.sparsity_m_by_n}"
            )
        self.global_pruning = bool(global_pruning)
        if self.global_pruning and (self.sparsity_m_by_n is not None or self.block_size != (1, 1)):
            raise ValueError(
                "`global_pruning=True` ranks single weights across layers; it cannot be "
                f"combined with block_size={self.block_size} or "
                f"sparsity_m_by_n={self.sparsity_m_by_n}. Use one or the other."
            )
        if layer.built:
            self._validate_patterns()

    def _validate_patterns(self):
        for weight, axis in prune_registry.prunable_weights(self.layer):
            name = f"'{weight.path}' of layer '{self.layer.name}'"
            if self.sparsity_m_by_n is not None:
                mask_math.validate_m_by_n(
                    tuple(weight.shape), self.sparsity_m_by_n, _m_by_n_axis(weight, axis), name
                )
            elif self.block_size != (1, 1):
                mask_math.validate_block_size(tuple(weight.shape), self.block_size, name)

    def build(self, input_shape=None):
        """Builds the wrapped layer, its masks and one threshold per pruned weight.

        Args:
          input_shape: The input shape Keras passes.

        Raises:
          ValueError: If `block_size` or `sparsity_m_by_n` does not fit a
            pruned weight.
        """
        if not self.layer.built:
            self.layer.build(input_shape)
        self._validate_patterns()
        super().build(input_shape)
        self.thresholds = [
            self.add_weight(
                name=f"threshold_{i}",
                shape=(),
                initializer="zeros",
                trainable=False,
                aggregation="only_first_replica",
            )
            for i in range(len(self.masked_weights))
        ]

    def get_masked_weights(self):
        return [weight for weight, _ in prune_registry.prunable_weights(self.layer)]

    def get_prunable_weights(self):
        """The pruned variables (tfmot's name for `get_masked_weights`)."""
        return self.get_masked_weights()

    @classmethod
    def make_controllers(cls, model, wrappers):
        # Per-layer masks are computed inside the training step
        # (update_masks_in_step); global ones need every layer's weights.
        shared = {}
        for wrapper in wrappers:
            if wrapper.global_pruning:
                schedule = wrapper.pruning_schedule
                key = (type(schedule).__name__, repr(sorted(schedule.get_config().items())))
                shared.setdefault(key, []).append(wrapper)
        return [GlobalMagnitudeController(group) for group in shared.values()]

    def set_global_masks(self, masks, threshold):
        """Sets masks decided across layers, and the one threshold they share."""
        self.set_masks(masks)
        for variable in self.thresholds:
            variable.assign(threshold)

    def _new_masks(self, step):
        """`[(mask, threshold)]` for the current weights at `step` (tensors)."""
        sparsity = self.pruning_schedule.sparsity(step)
        results = []
        for (weight, mask), (_, axis) in zip(
            self.masked_weights, prune_registry.prunable_weights(self.layer)
        ):
            value = weight.value
            if not backends.constraints_read_masks():
                # JAX: stored pruned weights were never zeroed; rank them at zero.
                value = value * keras.ops.cast(mask.value, value.dtype)
            if self.sparsity_m_by_n is not None:
                mask = mask_math.m_by_n_mask_ops(
                    value, self.sparsity_m_by_n, _m_by_n_axis(weight, axis)
                )
                results.append((mask, mask_math.M_BY_N_THRESHOLD))
            else:
                results.append(
                    mask_math.magnitude_mask_ops(
                        value, sparsity, self.block_size, self.block_pooling_type
                    )
                )
        return results

    def _updates_at(self, step):
        """Whether masks are recomputed at `step`, by this wrapper or its controller."""
        if self.sparsity_m_by_n is not None:
            return keras.ops.equal(step, 1)
        return self.pruning_schedule.should_prune(step)

    def keeps_pruned_values(self):
        """True in the optimizer step just before a mask update.

        tfmot zeroes pruned weights before each forward pass, so the optimizer
        moves them off zero again (they receive the full gradient), and its
        next mask update ranks those moved values: a pruned weight whose
        update made it large enough comes back. To rank the same values,
        the mask constraint leaves pruned weights as the optimizer made them
        in the step before an update; the update then masks them, before the
        forward pass. As in tfmot (which re-masks at every epoch end), the
        callback masks all weights at the end of every epoch.
        """
        counter = self._step_counter
        if counter is None:
            return None
        return self._updates_at(keras.ops.add(counter.current_step(self), 1))

    def pruned_values_may_be_nonzero(self, step):
        return bool(self._updates_at(int(step) + 1)) if step >= 0 else False

    def update_masks_in_step(self, step):
        """Recomputes the masks when the schedule names `step`, inside the step.

        tfmot's rule, step for step: before the forward pass of the batch
        whose step the schedule selects, each prunable weight's mask becomes
        the top magnitudes for the schedule's sparsity, and the weights it
        removes are zeroed. (With `global_pruning=True`, the model's
        `GlobalMagnitudeController` decides instead.)
        """
        if self.global_pruning or not self.masked_weights:
            return
        targets = []
        for (weight, mask), threshold in zip(self.masked_weights, self.thresholds):
            targets.extend([mask, threshold, weight])
        graph_updates.assign_if(self._updates_at(step), self._updated_values, targets, step)

    def _updated_values(self, step):
        values = []
        for (weight, _), (mask, threshold) in zip(self.masked_weights, self._new_masks(step)):
            mask = keras.ops.cast(mask, weight.dtype)
            values.extend([mask, keras.ops.cast(threshold, "float32"), weight.value * mask])
        return values

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pruning_schedule": keras.saving.serialize_keras_object(self.pruning_schedule),
                "block_size": list(self.block_size),
                "block_pooling_type": self.block_pooling_type,
                "sparsity_m_by_n": (
                    None if self.sparsity_m_by_n is None else list(self.sparsity_m_by_n)
                ),
                "global_pruning": self.global_pruning,
            }
        )
        return config


class GlobalMagnitudeController:
    """Recomputes the masks of several `global_pruning` wrappers together.

    The wrappers share one schedule; whenever it says so, all their prunable
    weights are ranked by magnitude together (`masks.global_magnitude_masks_ops`).

    Args:
      wrappers: `PruneLowMagnitude` layers with `global_pruning=True` and
        equal schedules.
    """

    def __init__(self, wrappers):
        self.wrappers = list(wrappers)
        self.pruning_schedule = self.wrappers[0].pruning_schedule

    def update(self, step):
        """Recomputes every wrapper's masks if the schedule says so at `step`.

        Returns:
          Whether the masks were recomputed.
        """
        if not self.pruning_schedule.should_prune(step):
            return False
        sparsity = self.pruning_schedule.sparsity(step)
        weights = [w for wrapper in self.wrappers for w in wrapper.get_masked_weights()]
        masks, threshold = mask_math.global_magnitude_masks_ops(
            [w.numpy() for w in weights], sparsity
        )
        masks = [keras.ops.convert_to_numpy(m) for m in masks]
        threshold = float(keras.ops.convert_to_numpy(threshold))
        for wrapper in self.wrappers:
            count = len(wrapper.get_masked_weights())
            wrapper.set_global_masks(masks[:count], threshold)
            masks = masks[count:]
        logging.vlog(1, "global magnitude pruning of %d layers: step %d, sparsity %.4f",
                     len(self.wrappers), step, sparsity)
        return True
