"""Checks that a restored pruning state (masks, weights, step) is one tfprune wrote.

A pruned model's state lives in its variables: each wrapper's 0/1 masks, the
weights they mask (exactly zero where the mask is 0), and the `pruning_step`
counter. `keras.callbacks.BackupAndRestore`, `ModelCheckpoint` +
`keras.models.load_model` and `model.load_weights` restore all of it. What
they cannot tell is whether a file that loads was written by this model in a
consistent state; this module does, so that a damaged or foreign backup stops
training with an error instead of resuming with masks that do not belong to
the weights.

`tfprune.UpdatePruningStep` runs these checks by itself whenever `fit`
starts (after `BackupAndRestore` has restored, in whichever order the two
callbacks are listed). Call them yourself after restoring by other means.
"""

import os
import zipfile

import numpy as np
from absl import logging

from tfprune.masked_wrapper import collect_wrappers
from tfprune.step_counter import wrapper_steps

_GUARD = "_tfprune_restore_guard"

_CORRUPT_FILE = (
    "Cannot restore the pruned model{model} from '{path}': the file cannot be "
    "read ({error}). It is corrupted or truncated, for example because the process "
    "was killed while writing it. Remedy: restore from another checkpoint of this "
    "model, or, for keras.callbacks.BackupAndRestore, delete the backup directory "
    "'{directory}' to start training afresh; BackupAndRestore(..., "
    "double_checkpoint=True) keeps the previous backup and falls back to it when "
    "the latest one is damaged."
)

_FOREIGN_FILE = (
    "Cannot restore the pruned model{model} from '{path}': {error}\n"
    "A backup or checkpoint fits only the model that wrote it: the same layers, "
    "wrapped the same way (tfprune.prune_low_magnitude / prune_channels), with the "
    "same shapes. A file of the unpruned model, or of a model pruned differently, "
    "does not fit. Remedy: point BackupAndRestore's backup_dir (or load_weights) "
    "at this model's own files, or delete the backup directory '{directory}' to "
    "start training afresh."
)

_REMEDY = (
    "Remedy: restore from a checkpoint written by this model, or delete the "
    "BackupAndRestore backup directory to start training afresh. If you changed "
    "the weights or masks yourself and want to keep them, call "
    "tfprune.checkpointing.apply_masks(model) before fit."
)


class CheckpointError(ValueError, OSError):
    """A backup or checkpoint that cannot be, or must not be, restored.

    It is a `ValueError`; it is also an `OSError`, so that
    `keras.callbacks.BackupAndRestore(double_checkpoint=True)` falls back to
    its previous backup when the latest one raises it.
    """


def _wrappers(model):
    return [w for w in collect_wrappers(model) if w.built]


def _source(source):
    return f" restored from '{os.fspath(source)}'" if source else ""


def validate_restored_masks(model, source=None):
    """Raises if the pruning state of `model` is not one tfprune can produce.

    Checks every pruning wrapper (nested models included): each mask holds
    only 0 and 1, every weight its mask removes is exactly zero (unless the
    state was saved just before a mask update, when the optimizer's values
    of pruned weights are kept for it to rank, as tfmot does), and
    `pruning_step` is -1 (never trained) or a step count.

    Args:
      model: A Keras model (or layer) with tfprune wrappers.
      source: The file the state was restored from, named in the error.

    Raises:
      CheckpointError: (a `ValueError`) naming the layer, the weight and
        `source`, with the remedy.
    """
    for wrapper in _wrappers(model):
        step = int(np.asarray(wrapper.pruning_step.numpy()))
        if step < -1:
            raise CheckpointError(
                f"Layer '{wrapper.name}' of model '{model.name}'{_source(source)} has "
                f"pruning_step {step}; a pruning step is -1 (never trained) or the "
                f"number of steps trained. The state is corrupted. {_REMEDY}"
            )
        for weight, mask in wrapper.masked_weights:
            mask_value = np.asarray(mask.numpy())
            binary = (mask_value == 0) | (mask_value == 1)
            if not binary.all():
                bad = float(mask_value[~binary].reshape(-1)[0])
                raise CheckpointError(
                    f"The mask of '{weight.path}' in layer '{wrapper.name}' of model "
                    f"'{model.name}'{_source(source)} holds values other than 0 and 1 "
                    f"({int((~binary).sum())} of {mask_value.size}, e.g. {bad:g}). "
                    f"The state is corrupted. {_REMEDY}"
                )
            removed = mask_value == 0
            if not removed.any() or wrapper.pruned_values_may_be_nonzero(step):
                continue
            weight_value = np.asarray(weight.numpy())
            try:
                leaked = np.broadcast_to(removed, weight_value.shape) & (weight_value != 0)
            except ValueError:  # a mask that does not broadcast is not an element mask
                continue
            if leaked.any():
                raise CheckpointError(
                    f"{int(leaked.sum())} weights of '{weight.path}' in layer "
                    f"'{wrapper.name}' of model '{model.name}'{_source(source)} are "
                    "nonzero although their mask removes them, so the masks do not "
                    "belong to these weights: tfprune keeps every masked weight exactly "
                    "zero. The file was written by a different model or run, or is "
                    f"corrupted. {_REMEDY}"
                )


def apply_masks(model):
    """Zeroes every weight that its mask removes, keeping the masks.

    For weights changed outside training (e.g. `set_weights`, or an optimizer
    with `use_ema=True`, which replaces the weights with their moving averages
    at the end of `fit`).

    Returns:
      The number of weights that were nonzero and are now zero.
    """
    changed = 0
    for wrapper in _wrappers(model):
        for weight, mask in wrapper.masked_weights:
            mask_value = np.asarray(mask.numpy())
            weight_value = np.asarray(weight.numpy())
            masked = weight_value * mask_value.astype(weight_value.dtype)
            leaked = int(np.count_nonzero(masked != weight_value))
            if leaked:
                weight.assign(masked)
                changed += leaked
    return changed


def _details(model_name, filepath):
    path = os.fspath(filepath)
    return dict(model=f" '{model_name}'" if model_name else "", path=path, directory=os.path.dirname(path) or ".")


def load_weights_checked(model, load_weights, filepath, *args, **kwargs):
    """Calls `load_weights(filepath, ...)`, then validates the restored state.

    This is what `UpdatePruningStep` wraps around `model.load_weights` while
    `fit` starts, so that `BackupAndRestore`'s restore is checked.

    Args:
      model: The model being restored.
      load_weights: The function that loads, normally `model.load_weights`.
      filepath: The file to load from.
      *args: Passed to `load_weights`.
      **kwargs: Passed to `load_weights`.

    Returns:
      What `load_weights` returns.

    Raises:
      CheckpointError: If the file cannot be read (`OSError`), does not fit
        the model (`ValueError`), or holds an inconsistent pruning state.
    """
    details = _details(model.name, filepath)
    try:
        result = load_weights(filepath, *args, **kwargs)
    except CheckpointError:
        raise
    except (OSError, EOFError) as error:
        raise CheckpointError(_CORRUPT_FILE.format(error=error, **details)) from error
    except ValueError as error:
        raise CheckpointError(_FOREIGN_FILE.format(error=error, **details)) from error
    validate_restored_masks(model, source=details["path"])
    return result


def load_weights(model, filepath, *args, **kwargs):
    """`model.load_weights(filepath, ...)` with clear errors and a checked result.

    For `.weights.h5` files written by `ModelCheckpoint(save_weights_only=True)`
    or `model.save_weights` from the same pruned model. Like
    `BackupAndRestore`, it first builds the compiled model's optimizer, so
    that the optimizer's state is restored too (Keras skips it otherwise).

    Raises:
      CheckpointError: (a `ValueError`) naming the file and the remedy, if it
        cannot be read, does not fit `model`, or holds masks that do not
        belong to its weights.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    return load_weights_checked(model, model.load_weights, filepath, *args, **kwargs)


def load_model(filepath, **kwargs):
    """`keras.models.load_model` with clear errors and a checked pruning state.

    For `.keras` files written by `ModelCheckpoint` or `model.save`. (Keras
    reports a damaged `.keras` file as "File not found".)

    Args:
      filepath: The `.keras` file.
      **kwargs: Passed to `keras.models.load_model`.

    Returns:
      The model, whose masks, weights and pruning step resume training.

    Raises:
      CheckpointError: (a `ValueError`) naming the file and the remedy, if it
        is damaged or holds masks that do not belong to its weights.
    """
    import keras

    details = _details(None, filepath)
    path = details["path"]
    if os.path.isfile(path) and path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise CheckpointError(
            _CORRUPT_FILE.format(error="it is not a zip archive, as .keras files are", **details)
        )
    try:
        model = keras.models.load_model(filepath, **kwargs)
    # h5py reports a damaged weights payload inside a sound zip as KeyError or
    # RuntimeError ("bad local heap signature"), Keras a payload of another
    # model as a ValueError about variables.
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError) as error:
        raise CheckpointError(_CORRUPT_FILE.format(error=error, **details)) from error
    except ValueError as error:
        if "variables" not in str(error):
            raise
        raise CheckpointError(_FOREIGN_FILE.format(error=error, **details)) from error
    validate_restored_masks(model, source=path)
    return model


class RestoreGuard:
    """Checks every `model.load_weights` while training starts.

    `keras.callbacks.BackupAndRestore` restores a backup with
    `model.load_weights` from its `on_train_begin`, which may run before or
    after `UpdatePruningStep`'s. The guard replaces the model's
    `load_weights` (on this model object only) with `load_weights_checked`
    and remembers the file, until `remove()`.

    Use `RestoreGuard.install(model)`: one guard per model, shared by the
    callbacks that install it.
    """

    def __init__(self, model):
        self.model = model
        self.restored_from = None
        self._original = model.load_weights

    @classmethod
    def install(cls, model):
        """The model's guard, installed if it is not already."""
        guard = model.__dict__.get(_GUARD)
        if guard is None:
            guard = cls(model)
            model.__dict__[_GUARD] = guard
            model.__dict__["load_weights"] = guard.load_weights
        guard.restored_from = None
        return guard

    def load_weights(self, filepath, *args, **kwargs):
        """The model's `load_weights`, checked (`load_weights_checked`); remembers the file."""
        result = load_weights_checked(self.model, self._original, filepath, *args, **kwargs)
        self.restored_from = os.fspath(filepath)
        return result

    def remove(self):
        """Puts the model's own `load_weights` back."""
        if self.model.__dict__.get(_GUARD) is self:
            del self.model.__dict__[_GUARD]
            if self.model.__dict__.get("load_weights") == self.load_weights:
                del self.model.__dict__["load_weights"]


def check_backup_restored(model, steps_before, restored_from):
    """Raises if `BackupAndRestore` resumed an epoch without restoring weights.

    Keras's `BackupAndRestore` reads its training metadata (the epoch to
    resume) and its weights file separately; with the weights file missing
    it resumes at a later epoch from untrained weights, and pruning would
    restart from step 0 with no masks.

    Args:
      model: The model being trained.
      steps_before: The wrappers' `pruning_step`s when training began
        (before any restore).
      restored_from: The file a restore loaded, if any.

    Raises:
      CheckpointError: Naming the epoch and the remedy.
    """
    initial_epoch = getattr(model, "_initial_epoch", None)  # set by BackupAndRestore
    steps_now = wrapper_steps(collect_wrappers(model))
    if (
        restored_from is None
        and initial_epoch is not None
        and steps_before
        and all(step == -1 for step in steps_before)
        and steps_now == steps_before
    ):
        raise CheckpointError(
            f"keras.callbacks.BackupAndRestore resumed model '{model.name}' at "
            f"epoch {initial_epoch} from its training metadata, but "
            "restored no weights (the backup's weights file is missing), so pruning "
            "would restart from step 0 with no masks. Remedy: delete the backup "
            "directory to start training afresh, or put back its latest.weights.h5."
        )


_WATCH = "_tfprune_state_watch"


def warn_if_older_state(model, steps_trained):
    """Warns if the model's pruning state is older than the steps it trained.

    `keras.callbacks.EarlyStopping(restore_best_weights=True)` puts back the
    weights of the best epoch when training ends, and with them that epoch's
    masks and `pruning_step`: a less sparse model than the schedule reached.

    Returns:
      Whether it warned.
    """
    steps = wrapper_steps(collect_wrappers(model))
    if not steps or max(steps) >= steps_trained:
        return False
    zeros = total = 0
    for wrapper in _wrappers(model):
        for _, mask in wrapper.masked_weights:
            value = np.asarray(mask.numpy())
            zeros += int((value == 0).sum())
            total += value.size
    logging.warning(
        "Model '%s' trained %d pruning steps, but its weights, masks and pruning_step were "
        "then replaced by an earlier state, of step %d (keras.callbacks.EarlyStopping("
        "restore_best_weights=True) does this), so its masks are those of step %d "
        "(%.1f%% of the masked weights are zero), not the schedule's at step %d. To keep "
        "the pruned model, use EarlyStopping without restore_best_weights, or monitor "
        "only after the schedule's end_step.",
        model.name, steps_trained, max(steps), max(steps),
        100.0 * zeros / max(total, 1), steps_trained,
    )
    return True


class StateWatch:
    """Warns once if `model.set_weights` brings back an older pruning state.

    Installed by `UpdatePruningStep` when training ends, so that a callback
    that restores weights after it (EarlyStopping) is noticed; removed when
    the next training begins. Use `StateWatch.install(model, steps_trained)`.
    """

    def __init__(self, model, steps_trained):
        self.model = model
        self.steps_trained = steps_trained
        self._original = model.set_weights

    @classmethod
    def install(cls, model, steps_trained):
        """Watches `model.set_weights` (replacing any earlier watch); returns the watch.

        Args:
          model: The pruned model that just finished training.
          steps_trained: Its pruning step at the end of training.
        """
        cls.remove_from(model)
        watch = cls(model, steps_trained)
        model.__dict__[_WATCH] = watch
        model.__dict__["set_weights"] = watch.set_weights
        return watch

    @staticmethod
    def remove_from(model):
        """Puts the model's own `set_weights` back, if a watch is installed."""
        watch = model.__dict__.pop(_WATCH, None)
        if watch is not None and model.__dict__.get("set_weights") == watch.set_weights:
            del model.__dict__["set_weights"]

    def set_weights(self, *args, **kwargs):
        """The model's `set_weights`; warns (once) if it brought back an older state."""
        result = self._original(*args, **kwargs)
        if warn_if_older_state(self.model, self.steps_trained):
            StateWatch.remove_from(self.model)  # once
        return result
