"""Keras callbacks that drive pruning during `model.fit`."""

import collections
import os

import keras
import numpy as np
from absl import logging

from tfprune.masked_wrapper import MaskedWeightsWrapper


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
    """

    def __init__(self):
        super().__init__()
        self.step = 0
        self._wrappers = []
        self._controllers = []
        self._batch_begin = 0

    def on_train_begin(self, logs=None):
        self._wrappers = collect_wrappers(self.model)
        if not self._wrappers:
            logging.warning(
                "UpdatePruningStep: model '%s' has no tfprune wrappers; nothing to prune.",
                self.model.name,
            )
            return
        # Variables start at -1 ("never trained"); a resumed model keeps its step.
        steps = [int(w.pruning_step.numpy()) for w in self._wrappers]
        self.step = max(0, max(steps))
        for wrapper in self._wrappers:
            wrapper.pruning_step.assign(self.step)
            wrapper._step_callback_active = True
        by_class = collections.defaultdict(list)
        for wrapper in self._wrappers:
            by_class[type(wrapper)].append(wrapper)
        self._controllers = []
        for wrapper_class, wrappers in by_class.items():
            self._controllers.extend(wrapper_class.make_controllers(self.model, wrappers))

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_begin = batch
        for controller in self._controllers:
            controller.update(self.step)

    def on_train_batch_end(self, batch, logs=None):
        # With steps_per_execution > 1, one call covers batches begin..end.
        self.step += max(1, batch - self._batch_begin + 1)


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
