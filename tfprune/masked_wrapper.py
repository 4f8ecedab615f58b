"""A Keras wrapper layer that keeps some of the wrapped layer's weights masked.

The mask lives in non-trainable variables beside the weights. It is enforced
without touching the wrapped layer's forward pass: each masked weight carries
a Keras variable constraint, which every Keras optimizer applies right after
its update, so masked weights are exactly zero after every optimizer step
(Adam and momentum included) and the forward pass runs the layer unchanged.
That keeps training overhead to one multiply per masked weight per step, and
works the same under `jit_compile=True` and `tf.distribute`.

Masks are decided at the start of the training step the schedule names,
before the forward pass, as tfmot decides them. A wrapper whose masks depend
on its own weights only (magnitude pruning) computes them inside the training
step (`update_masks_in_step`), so every step counts, however `fit` is
configured. Masks decided across layers (channel pruning, global magnitude
pruning) are decided in Python by a *controller*: the `UpdatePruningStep`
callback groups the wrappers of a model by class and asks the class for its
controllers (`make_controllers`), and runs them before each batch.

The step itself has one owner, `tfprune.step_counter.StepCounter`, which
`UpdatePruningStep` attaches to every wrapper when training begins; a
wrapper trained without it raises the error below.
"""

import keras
import numpy as np

from tfprune import backends

CALLBACK_MISSING = (
    "Layer '{name}' is being trained with pruning wrappers, but the "
    "tfprune.UpdatePruningStep() callback is not active. Add it to every fit "
    "(and train_on_batch) call: model.fit(..., "
    "callbacks=[tfprune.UpdatePruningStep()]). In a custom training loop, set "
    "model.optimizer = your_optimizer, then call the callback's "
    "set_model(model) and on_train_begin() before the first step, and "
    "on_train_batch_begin(batch) before each step."
)


def collect_wrappers(model):
    """All pruning wrappers in `model`, nested models included, in layer order."""
    found, seen = [], set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, MaskedWeightsWrapper):
            found.append(layer)
            return
        for child in getattr(layer, "layers", None) or []:
            visit(child)

    visit(model)
    return found


class MaskConstraint(keras.constraints.Constraint):
    """Multiplies a weight by its mask, after the weight's own constraint.

    Every Keras optimizer applies it right after its update. With
    `keep_unmasked` (a function returning a boolean tensor, or None), the
    masking is skipped for the steps where it returns True: the wrapper
    then masks the weight itself before the next forward pass, after reading
    what the optimizer made of the pruned weights (tfmot's order, see
    `PruneLowMagnitude`).

    Not serialized: the wrapper re-attaches it when it is built.
    """

    def __init__(self, mask, inner=None, keep_unmasked=None):
        self.mask = mask
        self.inner = inner
        self.keep_unmasked = keep_unmasked

    def __call__(self, weight):
        if self.inner is not None:
            weight = self.inner(weight)
        masked = keras.ops.multiply(weight, keras.ops.cast(self.mask, weight.dtype))
        keep = self.keep_unmasked() if self.keep_unmasked is not None else None
        if keep is None:
            return masked
        return keras.ops.cond(keep, lambda: weight, lambda: masked)


def _relative_name(variable, layer):
    """`query/kernel` for the variable `mha/query/kernel` of layer `mha`."""
    path = variable.path
    prefix = layer.path + "/" if getattr(layer, "path", None) else layer.name + "/"
    if path.startswith(prefix):
        path = path[len(prefix):]
    return path.replace("/", "_")


class MaskedWeightsWrapper(keras.layers.Wrapper):
    """Base wrapper: holds one 0/1 mask per masked weight of the wrapped layer.

    Subclasses say which weights are masked (`get_masked_weights`) and who
    decides the masks (`make_controllers`).

    Args:
      layer: The Keras layer to wrap. Must not already be wrapped.
      **kwargs: Passed to `keras.layers.Layer`.

    Raises:
      ValueError: If `layer` is already a pruning wrapper.
    """

    def __init__(self, layer, **kwargs):
        if isinstance(layer, MaskedWeightsWrapper):
            raise ValueError(
                f"Layer '{layer.name}' is already wrapped by {type(layer).__name__}; "
                "wrapping it again would stack masks. Prune the original model, or "
                "call tfprune.strip_pruning(model) first."
            )
        super().__init__(layer, **kwargs)
        if getattr(self, "_input_shape_arg", None) is None:
            # `Sequential([prune(Conv2D(..., input_shape=...))])`, as in tfmot's
            # guides: the wrapper is the first layer, so it carries the shape
            # that Sequential reads to build the model.
            shape = getattr(layer, "_input_shape_arg", None)
            if shape is not None:
                self._input_shape_arg = shape
        self._masked = []
        # Set by UpdatePruningStep for the duration of training.
        self._step_counter = None

    # -- what subclasses provide -------------------------------------------

    def get_masked_weights(self):
        """The inner layer's variables to mask, once it is built."""
        raise NotImplementedError

    @classmethod
    def make_controllers(cls, model, wrappers):
        """Objects with `update(step)` that decide the masks of `wrappers` in Python.

        `UpdatePruningStep` calls `update(step)` before each batch with the
        step of that batch. Wrappers that decide their masks inside the
        training step (`update_masks_in_step`) need no controller.
        """
        return []

    def keeps_pruned_values(self):
        """Whether the optimizer step being applied leaves pruned weights unmasked.

        Called by the mask constraints inside the optimizer's update, with
        the step counter at the step being trained. None (the base class):
        the constraint always masks.
        """
        return None

    def pruned_values_may_be_nonzero(self, step):
        """Whether, after `step` steps, pruned weights may legitimately be nonzero.

        For checks of a restored state; see `keeps_pruned_values`.
        """
        return False

    def update_masks_in_step(self, step):
        """Updates masks inside the training step, before the forward pass.

        Called from `call` with the step of the batch (an int64 tensor) on
        every training step. The base class decides nothing here.
        """

    # -- state ---------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        if not self.layer.built:
            # Let the layer build itself from its own call: Keras builds a
            # wrapper from its first input's shape only, which is not enough
            # for layers called with several inputs or keyword arguments
            # (`MultiHeadAttention(query=..., value=...)`).
            inner_kwargs = {k: v for k, v in kwargs.items() if k != "training"}
            self.layer(*args, **inner_kwargs)
        return super().__call__(*args, **kwargs)

    def build(self, input_shape=None):
        """Builds the wrapped layer, then one all-ones mask per masked weight.

        Args:
          input_shape: The input shape Keras passes; the wrapped layer is built
            with it if it is not built yet.
        """
        if not self.layer.built:
            self.layer.build(input_shape)
        self._build_masks()
        self.built = True

    def _build_masks(self):
        self._masked = []
        for weight in self.get_masked_weights():
            mask = self.add_weight(
                name=_relative_name(weight, self.layer) + "_mask",
                shape=weight.shape,
                dtype=weight.dtype,
                initializer="ones",
                trainable=False,
                aggregation="only_first_replica",
            )
            original = weight.constraint
            if isinstance(original, MaskConstraint):
                original = original.inner
            if backends.constraints_read_masks():
                weight.constraint = MaskConstraint(mask, original, self.keeps_pruned_values)
            self._masked.append((weight, mask, original))
        # -1 means "never trained with the step callback", as in tfmot.
        self.pruning_step = self.add_weight(
            name="pruning_step",
            shape=(),
            dtype=backends.step_dtype(),
            initializer=keras.initializers.Constant(-1),
            trainable=False,
            aggregation="only_first_replica",
        )

    @property
    def masked_weights(self):
        """`(weight, mask)` pairs, in `get_masked_weights` order."""
        return [(w, m) for w, m, _ in self._masked]

    def set_masks(self, masks):
        """Assigns new masks and zeroes the weights they remove.

        Args:
          masks: One array per masked weight, of 0s and 1s, same shapes.

        Raises:
          ValueError: If the number or shapes of masks do not match.
        """
        if len(masks) != len(self._masked):
            raise ValueError(
                f"Layer '{self.name}' masks {len(self._masked)} weights; "
                f"received {len(masks)} masks."
            )
        for (weight, mask, _), value in zip(self._masked, masks):
            value = np.asarray(value, dtype=mask.dtype)
            if tuple(value.shape) != tuple(mask.shape):
                raise ValueError(
                    f"Mask for '{weight.path}' must have shape {tuple(mask.shape)}; "
                    f"received {value.shape}."
                )
            mask.assign(value)
            weight.assign(np.asarray(weight.numpy()) * value)

    def baked_weights(self):
        """The inner layer's weights with masks applied, for stripping."""
        masks = {id(w): m for w, m, _ in self._masked}
        values = []
        for weight in self.layer.weights:
            value = np.asarray(weight.numpy())
            if id(weight) in masks:
                value = value * np.asarray(masks[id(weight)].numpy())
            values.append(value)
        return values

    def release_constraints(self):
        """Puts the original constraints back on the inner layer's weights."""
        for weight, _, original in self._masked:
            weight.constraint = original

    # -- forward -------------------------------------------------------------

    def begin_training_step(self, training):
        """Records the step and updates masks, when `training` is on.

        Raises:
          ValueError: If training without `UpdatePruningStep` (see
            `CALLBACK_MISSING`).
        """
        if not (training is True and self.trainable):
            return
        counter = self._step_counter
        if counter is None:
            raise ValueError(CALLBACK_MISSING.format(name=self.name))
        step = counter.current_step(self)
        # An assignment, not an increment: a layer called at several sites of
        # one step, or a model called twice in one step, records one step.
        self.pruning_step.assign(step)
        self.update_masks_in_step(step)

    def call(self, *args, training=None, **kwargs):
        """Runs the wrapped layer unchanged (its masked weights are already zero).

        In training, first records the step and updates the masks the
        schedule names for it (`begin_training_step`).
        """
        self.begin_training_step(training)
        if self.layer._call_has_training_arg:
            kwargs["training"] = training
        with self.masked_weights_scope():
            return self.layer(*args, **kwargs)

    def masked_weights_scope(self):
        """A block in which the wrapped layer reads its masked weights.

        On JAX (no constraint can mask the weights, see `tfprune.backends`)
        each masked weight is read as `weight * mask`; elsewhere the weights
        are already masked and the block changes nothing.
        """
        return backends.masked_weights_scope(self.masked_weights, self.layer.variables)
