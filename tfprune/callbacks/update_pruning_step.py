"""`UpdatePruningStep`: the callback that drives pruning during training."""

import collections

import keras
from absl import logging

from tfprune import backends
from tfprune import checkpointing
from tfprune import multi_worker
from tfprune.masked_wrapper import collect_wrappers
from tfprune.step_counter import StepCounter, wrapper_steps


class UpdatePruningStep(keras.callbacks.Callback):
    """Connects a model's pruning wrappers to its training steps.

    Required in `model.fit` (and around `train_on_batch` or a custom loop)
    for any model with tfprune wrappers: training without it raises a
    `ValueError` naming the layer, in every `fit` and `train_on_batch`.

    Steps are counted as in tfmot: the first batch trained is step 1, and
    the masks a schedule names for step `t` are computed before the forward
    pass of batch `t`, so after batch `t` the masks are those of the last
    update step `<= t`. The count has one owner,
    `tfprune.step_counter.StepCounter`: one pruning step per optimizer step
    (`optimizer.iterations`), however `fit` runs it (`steps_per_execution`,
    `jit_compile`, `tf.distribute`) and however often a layer is called in
    the step. Each wrapper keeps the step in its `pruning_step` variable, so
    it is saved with the model and training resumes where it stopped.

    Magnitude-pruning masks are computed inside the training step. Masks
    decided across layers (`prune_channels`, `global_pruning=True`) are
    computed in Python before each batch; those need `steps_per_execution=1`
    (a clear error says so otherwise).

    Restoring: the step is taken from the wrappers' variables at the first
    batch, after every callback's `on_train_begin` has run, so
    `keras.callbacks.BackupAndRestore` may come before or after this callback.
    A restore while `fit` starts is checked (`tfprune.checkpointing`): a file
    that cannot be read, does not fit the model, or holds masks that do not
    belong to its weights raises `tfprune.checkpointing.CheckpointError`
    (a `ValueError`) naming the file and the remedy. `fit` ends by zeroing
    masked weights that the optimizer changed when finalizing (e.g.
    `use_ema=True`).

    Custom training loops (as in tfmot's guides): set
    `model.optimizer = optimizer`, call `set_model(model)` and
    `on_train_begin()` once, `on_train_batch_begin(batch=...)` before each
    step and, optionally, `on_epoch_end(batch=...)` and `on_train_end()`.

    Under `tf.distribute`, every replica sees the same masks. Under a
    `MultiWorkerMirroredStrategy`, call
    `tfprune.multi_worker.enable_multi_worker_fit()` first (a Keras 3 fix);
    every worker computes the same masks from the same weights, which this
    callback checks.
    """

    def __init__(self):
        super().__init__()
        self._wrappers = []
        self._controllers = []
        self._counter = None
        self._synced = False
        self._steps_before = []
        self._guard = None
        self._agreement = None
        self._batch_begin = None

    @property
    def step(self):
        """Pruning steps taken so far (0 before training)."""
        if self._counter is None or not self._counter.started:
            return 0
        return self._counter.steps_done()

    def set_model(self, model):
        """Keras' hook; also guards the model's `load_weights` if it is pruned.

        Keras sets the model before any `on_train_begin`, so a backup restored
        by `BackupAndRestore` is checked whichever callback comes first.
        """
        super().set_model(model)
        # Keras gives every callback the model before any on_train_begin, so the
        # guard is in place whichever callback restores, in whatever order.
        if isinstance(model, keras.Model) and collect_wrappers(model):
            self._guard = checkpointing.RestoreGuard.install(model)

    def on_train_begin(self, logs=None):
        self._wrappers = collect_wrappers(self.model)
        self._controllers = []
        self._synced = False
        if not self._wrappers:
            logging.warning(
                "UpdatePruningStep: model '%s' has no tfprune wrappers; nothing to prune.",
                self.model.name,
            )
            return
        checkpointing.StateWatch.remove_from(self.model)
        if self._guard is None:
            self._guard = checkpointing.RestoreGuard.install(self.model)
        self._counter = StepCounter.for_model(self.model)
        self._steps_before = wrapper_steps(self._wrappers)
        self._counter.begin(max([0] + self._steps_before))
        for wrapper in self._wrappers:
            wrapper._step_counter = self._counter
        # The training step is traced anew for this run, with the counter
        # attached; on_train_end drops it again, so that a later fit without
        # this callback traces without it and raises.
        _drop_traced_train_function(self.model)

    def _sync(self):
        """Takes the step and masks from the variables, once all callbacks have begun."""
        self._synced = True
        guard, self._guard = self._guard, None
        restored_from = guard.restored_from if guard is not None else None
        if guard is not None:
            guard.remove()
        if not self._wrappers:
            return
        checkpointing.check_backup_restored(self.model, self._steps_before, restored_from)
        checkpointing.validate_restored_masks(self.model, source=restored_from)
        steps = wrapper_steps(self._wrappers)
        start = max([0] + steps)
        if steps != self._steps_before:
            logging.info(
                "UpdatePruningStep: model '%s' was restored after on_train_begin; "
                "resuming pruning at step %d.",
                self.model.name,
                start,
            )
        # Restores bring back the optimizer's iterations with the steps; the
        # counter continues from whatever both hold now.
        self._counter.begin(start)
        for wrapper in self._wrappers:
            if wrapper.built:
                wrapper.pruning_step.assign(start)
        self._warn_if_never_pruned(start)
        by_class = collections.defaultdict(list)
        for wrapper in self._wrappers:
            by_class[type(wrapper)].append(wrapper)
        for wrapper_class, wrappers in by_class.items():
            self._controllers.extend(wrapper_class.make_controllers(self.model, wrappers))
        steps_per_execution = getattr(self.model, "steps_per_execution", 1) or 1
        if self._controllers and steps_per_execution > 1:
            kinds = sorted({type(c).__name__ for c in self._controllers})
            raise ValueError(
                f"Model '{self.model.name}' is compiled with "
                f"steps_per_execution={steps_per_execution}, but its masks are "
                f"decided across layers ({', '.join(kinds)}: prune_channels or "
                "global_pruning=True), in Python between training steps, and Keras "
                f"runs {steps_per_execution} steps per call, so the updates the "
                "schedule names in between would be skipped. Remedy: compile with "
                "steps_per_execution=1 for this training (prune_low_magnitude's "
                "per-layer masks work with any steps_per_execution)."
            )
        strategy = multi_worker.other_workers_strategy(self.model)
        self._agreement = (
            multi_worker.WorkerAgreement(self.model, strategy, self._wrappers)
            if strategy is not None
            else None
        )
        if self._agreement is not None:
            self._agreement.check(None)

    def _warn_if_never_pruned(self, start):
        """Warns once per schedule that will not have pruned by the end of this `fit`."""
        steps, epochs = (self.params or {}).get("steps"), (self.params or {}).get("epochs")
        if not steps or not epochs:
            return  # unknown length (a custom loop, or a dataset without a length)
        last = start + steps * epochs
        warned = set()
        for wrapper in self._wrappers:
            schedule = getattr(wrapper, "pruning_schedule", None)
            if schedule is None or repr(schedule) in warned:
                continue
            if getattr(wrapper, "sparsity_m_by_n", None) is not None:
                first = 1  # tfmot's N:M masks: at step 1, whatever the schedule
            else:
                first = schedule.first_update_after(0)
            if first is not None and first <= last:
                continue
            warned.add(repr(schedule))
            if first is None:
                reason = (
                    "it has no update step at all: its update steps are begin_step + k * "
                    "frequency up to end_step, and training starts at step 1 (as in tfmot), "
                    "so step 0 is never trained"
                )
            else:
                reason = f"its first update is at step {first}, after the last step of this training"
            logging.warning(
                "UpdatePruningStep: %s of layer '%s' (and others with the same schedule) "
                "never prunes in this training of model '%s' (steps %d to %d): %s. "
                "Lower begin_step or frequency, or raise end_step.",
                schedule, wrapper.name, self.model.name, start + 1, last, reason,
            )

    # tfmot's custom-loop calls pass keyword arguments (batch=..., epoch=...).
    def on_train_batch_begin(self, batch=None, logs=None, **kwargs):
        if self._counter is None:
            raise ValueError(
                "UpdatePruningStep.on_train_batch_begin was called before "
                "on_train_begin. In a custom training loop, call "
                "callback.set_model(model) and callback.on_train_begin() once first."
            )
        self._batch_begin = batch
        if not self._synced:
            self._sync()
        if not self._controllers:
            return
        step = self._counter.next_step()
        if backends.counts_steps_per_call() and any(_due(c, step) for c in self._controllers):
            # JAX keeps the training state outside the variables during an
            # epoch; bring it back so the controllers read and set the real
            # values (the next step takes them up again).
            self.model.jax_state_sync()
        changed = False
        for controller in self._controllers:
            # update() says whether it recomputed; None (unknown) counts as yes.
            changed |= controller.update(step) is not False
        if changed and self._agreement is not None:
            self._agreement.check(step)

    def on_train_batch_end(self, batch=None, logs=None, **kwargs):
        if self._counter is None or not self._synced:
            return
        # Keras passes the first and the last step of each call.
        first = self._batch_begin
        if isinstance(first, int) and isinstance(batch, int) and batch >= first:
            self._counter.advance(batch - first + 1)
        else:
            self._counter.advance(int(getattr(self.model, "steps_per_execution", 1) or 1))

    def on_epoch_end(self, epoch=None, logs=None, **kwargs):
        # As tfmot: every epoch ends with the pruned weights at zero, also those
        # the optimizer moved in a step before a mask update (see
        # PruneLowMagnitude.keeps_pruned_values), so the next update of the
        # schedule ranks them at zero.
        if self._wrappers:
            checkpointing.apply_masks(self.model)
        if self._agreement is not None and self._synced:
            self._agreement.check(self.step)

    def on_train_end(self, logs=None):
        if self._guard is not None:
            self._guard.remove()
            self._guard = None
        for wrapper in self._wrappers:
            wrapper._step_counter = None
        _drop_traced_train_function(self.model)
        if self._wrappers and self._synced:
            # A callback before this one may have restored an older state
            # already; one after it would do so through set_weights.
            trained = self._counter.steps_done()
            if not checkpointing.warn_if_older_state(self.model, trained):
                checkpointing.StateWatch.install(self.model, trained)
        if self._wrappers:
            # Optimizers may overwrite the weights when fit ends (use_ema=True
            # swaps in the moving averages, which no constraint masked).
            zeroed = checkpointing.apply_masks(self.model)
            if zeroed:
                logging.info(
                    "UpdatePruningStep: re-applied masks to %d weights of model '%s' "
                    "that the optimizer changed at the end of fit.",
                    zeroed,
                    self.model.name,
                )


def _due(controller, step):
    """Whether a controller will recompute masks at `step` (unknown: yes)."""
    schedule = getattr(controller, "pruning_schedule", None)
    return True if schedule is None else bool(schedule.should_prune(step))


def _drop_traced_train_function(model):
    """Makes Keras trace the model's training step again at its next call."""
    if isinstance(model, keras.Model) and getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)
