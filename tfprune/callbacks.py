"""Keras callbacks that drive pruning during `model.fit`."""

import collections
import os

import keras
import numpy as np
from absl import logging

from tfprune import checkpointing
from tfprune.masked_wrapper import MaskedWeightsWrapper

_RESTORE_GUARD = "_tfprune_restore_guard"


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


class UpdatePruningStep(keras.callbacks.Callback):
    """Advances the pruning step and updates masks when the schedules say so.

    Required in `model.fit` for any model with tfprune wrappers (training
    without it raises a `ValueError` on the first batch). The step is the
    number of training steps taken with pruning, kept in each wrapper's
    `pruning_step` variable, so it survives `model.save` and resumes where it
    stopped.

    Masks are recomputed before the batch whose step a schedule selects, so
    the state after the final batch is what a schedule says for that step.

    Restoring: the step and the mask controllers are taken from the model's
    variables at the first batch of each `fit`, after every callback's
    `on_train_begin` has run, so `keras.callbacks.BackupAndRestore` may come
    before or after this callback in the list. A restore that happens while
    `fit` starts (`BackupAndRestore`) is checked: a file that cannot be read,
    does not fit the model, or holds masks that do not belong to its weights
    raises `tfprune.checkpointing.CheckpointError` (a `ValueError`) naming the
    file and the remedy, and so does a backup whose metadata was found without
    its weights. Every `fit` also starts by checking that the masks are 0/1 and
    the weights they remove are zero, and ends by zeroing masked weights that
    the optimizer changed when finalizing (e.g. `use_ema=True`).

    Under `tf.distribute` the callback runs once per process: masks are
    assigned to every local replica from the synchronized weights, and every
    worker of a `MultiWorkerMirroredStrategy` computes the same masks from the
    same weights. (Creating the callback also lets Keras 3 `fit` run under a
    multi-worker strategy at all; see `_patch_keras_multi_worker_fit`.)
    """

    def __init__(self):
        super().__init__()
        _patch_keras_multi_worker_fit()
        self.step = 0
        self._wrappers = []
        self._controllers = []
        self._batch_begin = 0
        self._synced = False
        self._begin_steps = []
        self._restored_from = None
        self._workers = None

    # -- restore guard -------------------------------------------------------

    def set_model(self, model):
        super().set_model(model)
        self._restored_from = None
        # Keras gives every callback the model before any on_train_begin, so the
        # guard is in place whichever callback restores, in whatever order.
        if isinstance(model, keras.Model) and collect_wrappers(model):
            self._install_restore_guard(model)

    def _install_restore_guard(self, model):
        if _RESTORE_GUARD in model.__dict__:
            model.__dict__[_RESTORE_GUARD].owner = self
            return
        original = model.load_weights

        def load_weights(filepath, *args, **kwargs):
            result = checkpointing.load_weights_checked(model, original, filepath, *args, **kwargs)
            owner = getattr(load_weights, "owner", None)
            if owner is not None:
                owner._restored_from = os.fspath(filepath)
            return result

        load_weights.owner = self
        model.__dict__["load_weights"] = load_weights
        model.__dict__[_RESTORE_GUARD] = load_weights

    def _remove_restore_guard(self):
        model = self.model
        if model is None:
            return
        guard = model.__dict__.get(_RESTORE_GUARD)
        if guard is not None and model.__dict__.get("load_weights") is guard:
            del model.__dict__["load_weights"]
        model.__dict__.pop(_RESTORE_GUARD, None)

    # -- training ------------------------------------------------------------

    def _read_steps(self):
        return [int(w.pruning_step.numpy()) for w in self._wrappers]

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
        # Variables start at -1 ("never trained"); a resumed model keeps its step.
        self._begin_steps = self._read_steps()
        self.step = max(0, max(self._begin_steps))
        for wrapper in self._wrappers:
            wrapper.pruning_step.assign(self.step)
            wrapper._step_callback_active = True

    def _sync(self):
        """Takes the step and masks from the variables, once all callbacks have begun."""
        self._remove_restore_guard()
        self._synced = True
        if not self._wrappers:
            return
        steps = self._read_steps()
        restored_later = steps != [self.step] * len(steps)
        if (
            self._restored_from is None
            and not restored_later
            and all(step == -1 for step in self._begin_steps)
            and getattr(self.model, "_initial_epoch", None) is not None
        ):
            raise checkpointing.CheckpointError(
                f"keras.callbacks.BackupAndRestore resumed model '{self.model.name}' at "
                f"epoch {self.model._initial_epoch} from its training metadata, but "
                "restored no weights (the backup's weights file is missing), so pruning "
                "would restart from step 0 with no masks. Remedy: delete the backup "
                "directory to start training afresh, or put back its latest.weights.h5."
            )
        checkpointing.validate_restored_masks(self.model, source=self._restored_from)
        self._restored_from = None
        step = max(0, max(steps))
        if step != self.step:
            logging.info(
                "UpdatePruningStep: model '%s' was restored after on_train_begin; "
                "resuming pruning at step %d.",
                self.model.name,
                step,
            )
        self.step = step
        for wrapper in self._wrappers:
            wrapper.pruning_step.assign(self.step)
            wrapper._step_callback_active = True
        by_class = collections.defaultdict(list)
        for wrapper in self._wrappers:
            by_class[type(wrapper)].append(wrapper)
        self._controllers = []
        for wrapper_class, wrappers in by_class.items():
            self._controllers.extend(wrapper_class.make_controllers(self.model, wrappers))
        self._workers = _other_workers_strategy(self.model)
        self._check_workers_agree(None)

    def on_train_batch_begin(self, batch, logs=None):
        if not self._synced:
            self._sync()
        self._batch_begin = batch
        changed = False
        for controller in self._controllers:
            # update() says whether it recomputed; None (unknown) counts as yes.
            changed |= controller.update(self.step) is not False
        if changed:
            self._check_workers_agree(self.step)

    # -- multi-worker --------------------------------------------------------

    def _fingerprint(self):
        """Exact float64 checksums of every wrapper's step and masks, and their names."""
        values, names = [], []
        for wrapper in self._wrappers:
            values.append(float(wrapper.pruning_step.numpy()))
            names.append(f"the pruning_step of layer '{wrapper.name}'")
            for weight, mask in wrapper.masked_weights:
                flat = np.asarray(mask.numpy(), dtype=np.float64).reshape(-1)
                positions = (np.arange(flat.size, dtype=np.int64) % 65521 + 1).astype(np.float64)
                values.append(float(flat.sum()))  # exact: integers below 2**53
                values.append(float(flat @ positions))
                names.extend([f"the mask of '{weight.path}' in layer '{wrapper.name}'"] * 2)
        return np.asarray(values, dtype=np.float64), names

    def _check_workers_agree(self, step):
        """Under a multi-worker strategy, raises if the workers' masks or steps differ.

        Every worker runs this callback and computes masks itself; one
        all-reduce of checksums per mask update proves they agree.
        """
        strategy = self._workers
        if strategy is None or not self._wrappers:
            return
        import tensorflow as tf

        local, names = self._fingerprint()
        total = strategy.reduce(
            "SUM",
            strategy.experimental_distribute_values_from_function(lambda _: tf.constant(local)),
            axis=None,
        )
        differ = np.nonzero(np.asarray(total) != local * strategy.num_replicas_in_sync)[0]
        if not differ.size:
            return
        what = sorted({names[i] for i in differ})
        workers = f"workers of {_strategy_name(strategy)}"
        listed = "; ".join(what[:5]) + (f"; and {len(what) - 5} more" if len(what) > 5 else "")
        if step is None:
            raise ValueError(
                f"The {workers} start training model "
                f"'{self.model.name}' from different pruning states ({listed} differ). "
                "They restored different backups or checkpoints. Remedy: give each "
                "worker its own BackupAndRestore backup_dir, written by the same run "
                "(or delete them all to start afresh), and load the same checkpoint on "
                "every worker."
            )
        raise ValueError(
            f"After the mask update at step {step}, the {workers} hold different masks for model "
            f"'{self.model.name}' ({listed}). Every worker computes the masks itself, "
            "so the values they come from must be the same on every worker: weights "
            "(synchronized by the strategy) or variables whose aggregation combines "
            "all replicas ('mean' or 'sum'), not per-replica state such as an "
            "'only_first_replica' accumulator. Remedy: compute the masks from "
            "synchronized values in the pruning controller (make_controllers) of "
            "these layers' wrapper class."
        )

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution > 1, one call covers batches begin..end.
        self.step += max(1, batch - self._batch_begin + 1)

    def on_train_end(self, logs=None):
        self._remove_restore_guard()
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


def _other_workers_strategy(model):
    """The model's strategy if its replicas span several workers, else None."""
    strategy = getattr(model, "distribute_strategy", None)
    try:
        local = len(strategy.extended.worker_devices)
        return strategy if strategy.num_replicas_in_sync > local else None
    except (AttributeError, TypeError, NotImplementedError, RuntimeError):
        # The default strategy has no worker_devices.
        return None


def _strategy_name(strategy):
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "tf.distribute.MultiWorkerMirroredStrategy"
    return type(strategy).__name__


# -- Keras 3 + MultiWorkerMirroredStrategy ------------------------------------
#
# Keras 3 (up to at least 3.15.1, keras-team/keras#20585) cannot run
# `model.fit` under a MultiWorkerMirroredStrategy with more than one worker:
# `_maybe_symbolic_build` hands a whole (x, y) batch of per-replica values to
# `strategy.reduce`, which takes one value, and the train step reduces the
# scalar loss with `axis=0`. tfprune's multi-worker support is `model.fit`
# with `UpdatePruningStep`, so constructing the callback applies the two fixes
# below. Both step aside (call the originals unchanged) for every strategy
# other than multi-worker collective all-reduce, and nothing is patched when
# the Keras internals they replace are absent.

_KERAS_MULTI_WORKER_PATCHED = False


def _patch_keras_multi_worker_fit():
    global _KERAS_MULTI_WORKER_PATCHED
    if _KERAS_MULTI_WORKER_PATCHED:
        return
    _KERAS_MULTI_WORKER_PATCHED = True
    try:
        import tensorflow as tf
        from keras.src.backend.tensorflow import trainer as tf_trainer

        trainer_class = tf_trainer.TensorFlowTrainer
        original_build = trainer_class._maybe_symbolic_build
        original_reduce = tf_trainer.reduce_per_replica
        is_multi_worker = tf_trainer._collective_all_reduce_multi_worker
    except (ImportError, AttributeError):
        return
    if getattr(original_reduce, "_tfprune_patched", False):
        return

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or iterator is None or not is_multi_worker(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, step_iterator in iterator:
            batch = next(step_iterator)
            # Only the shapes matter here; reduce each tensor on its own.
            data_batch = keras.tree.map_structure(
                lambda v: (
                    strategy.reduce("MEAN", v, axis=None)
                    if isinstance(v, tf.distribute.DistributedValues)
                    else v
                ),
                batch,
            )
            break
        return original_build(self, iterator=None, data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction="auto"):
        if reduction in ("auto", "mean") and is_multi_worker(strategy):

            def reduce(v):
                if v is None:
                    return v
                local = strategy.experimental_local_results(v)[0]
                rank = getattr(getattr(local, "shape", None), "rank", None)
                return strategy.reduce("MEAN", v, axis=0 if rank else None)

            return keras.tree.map_structure(reduce, values)
        return original_reduce(values, strategy, reduction=reduction)

    reduce_per_replica._tfprune_patched = True
    trainer_class._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    logging.vlog(1, "tfprune: patched Keras %s for MultiWorkerMirroredStrategy fit.", keras.version())


class PruningSummaries(keras.callbacks.Callback):
    """Writes per-layer sparsity and threshold scalars for TensorBoard.

    Use it beside `UpdatePruningStep`. Scalars are named
    `<layer>/<weight>/sparsity` and `<layer>/<weight>/threshold` and logged
    against the pruning step.

    Args:
      log_dir: Directory for the TensorBoard event files (created if missing).
      update_freq: `"epoch"` to write at the end of each epoch, or an integer
        to write every that many batches as well.

    Raises:
      ValueError: If `log_dir` is empty or `update_freq` is invalid.
    """

    def __init__(self, log_dir, update_freq="epoch"):
        super().__init__()
        if not log_dir:
            raise ValueError(f"`log_dir` must be a directory path. Received: {log_dir!r}")
        if update_freq != "epoch" and not (isinstance(update_freq, int) and update_freq > 0):
            raise ValueError(
                f"`update_freq` must be 'epoch' or a positive integer. Received: {update_freq!r}"
            )
        self.log_dir = os.fspath(log_dir)
        self.update_freq = update_freq
        self._writer = None
        self._batches = 0

    def _summary_writer(self):
        if self._writer is None:
            import tensorflow as tf  # TensorBoard's writer; tfprune targets the TF backend.

            os.makedirs(self.log_dir, exist_ok=True)
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "pruning"))
        return self._writer

    def _write(self):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        # tf.summary.scalar needs the tensorboard package, which TF 2.21 no
        # longer installs; the core write op with the scalars plugin's metadata
        # produces the same event records.
        metadata = summary_pb2.SummaryMetadata()
        metadata.plugin_data.plugin_name = "scalars"
        metadata = metadata.SerializeToString()

        def scalar(tag, value):
            tf.summary.write(tag, tf.constant(value, tf.float32), metadata=metadata)

        wrappers = collect_wrappers(self.model)
        if not wrappers:
            return
        step = int(max(int(w.pruning_step.numpy()) for w in wrappers))
        with self._summary_writer().as_default(step=step):
            for wrapper in wrappers:
                thresholds = getattr(wrapper, "thresholds", [None] * len(wrapper.masked_weights))
                for (weight, mask), threshold in zip(wrapper.masked_weights, thresholds):
                    tag = f"{wrapper.name}/{weight.name}"
                    mask_value = np.asarray(mask.numpy())
                    scalar(f"{tag}/sparsity", 1.0 - float(mask_value.mean()))
                    if threshold is not None:
                        scalar(f"{tag}/threshold", float(threshold.numpy()))
        self._writer.flush()

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq != "epoch":
            self._batches += 1
            if self._batches % self.update_freq == 0:
                self._write()

    def on_epoch_end(self, epoch, logs=None):
        self._write()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
