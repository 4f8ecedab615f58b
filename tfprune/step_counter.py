"""`StepCounter`: the one owner of a model's pruning step.

The pruning step is the number of optimizer steps a model has taken with
pruning, counted as tfmot counts them: the first training batch is step 1,
and the masks a schedule names for step `t` are computed before the forward
pass of batch `t`. Each wrapper keeps the step in its `pruning_step` variable
(so it is saved with the model and resumes where it stopped), but nothing
increments those variables: they are assigned from this counter.

The counter is derived from the optimizer's own step count,
`optimizer.iterations`, which Keras advances once per optimizer step however
`fit` runs (`steps_per_execution > 1`, `jit_compile`, `tf.distribute`,
gradient accumulation) and which a custom training loop advances through
`optimizer.apply_gradients`. So a layer called at two sites in one step, or a
model called twice per step, still counts one step:

    step of the current batch = offset + optimizer.iterations + 1

where `offset` is fixed when training begins so that the first batch
continues from the step the wrappers hold (0 for a new model).
"""

import keras
import numpy as np

from tfprune import backends

_ATTRIBUTE = "_tfprune_step_counter"


def wrapper_steps(wrappers):
    """The `pruning_step` values of the built wrappers among `wrappers`."""
    return [int(np.asarray(w.pruning_step.numpy())) for w in wrappers if w.built]


class StepCounter:
    """Counts the pruning steps of one model from its optimizer's iterations.

    Use `StepCounter.for_model(model)`, which keeps one counter per model and
    optimizer, so a traced training step that captured it stays valid for
    the next `fit`.

    Args:
      optimizer: The optimizer whose `iterations` clock the steps.
    """

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self._offset = None
        self._python_steps = None

    @classmethod
    def for_model(cls, model, optimizer=None):
        """The model's counter for `optimizer` (default: `model.optimizer`).

        Raises:
          ValueError: If there is no optimizer to count steps with.
        """
        optimizer = optimizer if optimizer is not None else getattr(model, "optimizer", None)
        if optimizer is None:
            raise ValueError(
                f"Model '{model.name}' has no optimizer, so tfprune.UpdatePruningStep "
                "cannot count its training steps (one pruning step per optimizer "
                "step). Call model.compile(optimizer=...) before fit, or, in a custom "
                "training loop, set model.optimizer = your_optimizer before calling "
                "the callback's on_train_begin()."
            )
        counter = model.__dict__.get(_ATTRIBUTE)
        if counter is None or counter.optimizer is not optimizer:
            counter = cls(optimizer)
            model.__dict__[_ATTRIBUTE] = counter
        return counter

    def _iterations(self):
        return int(np.asarray(keras.ops.convert_to_numpy(self.optimizer.iterations)))

    def begin(self, start_step):
        """Makes the next optimizer step count as step `start_step + 1`.

        Args:
          start_step: Steps already taken (the wrappers' `pruning_step`, or 0).
        """
        if backends.counts_steps_per_call():
            # JAX: the optimizer's step count is not readable during fit;
            # the callback counts the batches it sees.
            self._python_steps = int(start_step)
            if self._offset is None:
                self._offset = keras.Variable(
                    0, dtype=backends.step_dtype(), trainable=False,
                    name="tfprune_step_offset")
            return
        offset = int(start_step) - self._iterations()
        if self._offset is None:
            self._offset = keras.Variable(
                offset, dtype=backends.step_dtype(), trainable=False, name="tfprune_step_offset"
            )
        else:
            self._offset.assign(offset)

    @property
    def started(self):
        """Whether `begin` has run, so that steps can be counted."""
        return self._offset is not None

    def steps_done(self):
        """Steps taken so far, in Python (after `begin`)."""
        if self._python_steps is not None:
            return self._python_steps
        return int(np.asarray(self._offset.numpy())) + self._iterations()

    def advance(self, steps):
        """Counts `steps` more trained steps in Python (JAX; elsewhere a no-op)."""
        if self._python_steps is not None:
            self._python_steps += int(steps)

    def next_step(self):
        """The step of the coming batch, in Python (after `begin`)."""
        return self.steps_done() + 1

    def current_step(self, wrapper=None):
        """The step of the batch being computed, as an integer tensor (`backends.step_dtype()`).

        For use inside the training step, before the optimizer applies its
        update. On JAX, where the forward pass cannot read the optimizer's
        step count, it is the calling `wrapper`'s own count of training calls
        plus one (tfmot's way: a layer called at two sites counts two).
        """
        if backends.counts_steps_per_call():
            if wrapper is None:
                raise ValueError("On JAX the step is counted per wrapper; pass the wrapper.")
            done = keras.ops.maximum(
                keras.ops.cast(wrapper.pruning_step.value, backends.step_dtype()), 0)
            return keras.ops.add(done, 1)
        iterations = keras.ops.cast(self.optimizer.iterations, backends.step_dtype())
        return keras.ops.add(keras.ops.add(self._offset.value, iterations), 1)
