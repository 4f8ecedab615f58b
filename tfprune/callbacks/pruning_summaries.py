"""`PruningSummaries`: per-layer sparsity and thresholds for TensorBoard."""

import os

import keras
import numpy as np

from tfprune.masked_wrapper import collect_wrappers


class PruningSummaries(keras.callbacks.Callback):
    """Writes per-layer sparsity and threshold scalars for TensorBoard.

    Use it beside `UpdatePruningStep`. Scalars are named
    `<layer>/<weight>/sparsity` and `<layer>/<weight>/threshold` and logged
    against the pruning step: at the start of every epoch (as tfmot's
    `PruningSummaries`, so a custom training loop that calls
    `on_epoch_begin(epoch=...)` by hand logs too), at the end of every epoch
    and of training, and every `update_freq` batches if it is an integer.

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
            try:
                # TensorBoard's event writer, on every Keras backend.
                import tensorflow as tf
            except ImportError:
                raise ValueError(
                    "PruningSummaries writes TensorBoard event files with TensorFlow's "
                    f"summary writer, and TensorFlow is not installed (Keras backend: "
                    f"{keras.backend.backend()}). Install it (pip install tensorflow; the "
                    "training itself stays on your backend), or leave PruningSummaries out: "
                    "UpdatePruningStep does not need it."
                ) from None

            folder = os.path.join(self.log_dir, "pruning")
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as error:
                raise ValueError(
                    f"PruningSummaries cannot create its log folder '{folder}' under "
                    f"log_dir='{self.log_dir}': {error.strerror or error}. A file may stand "
                    "where a folder is needed, or the folder is not writable. Pass a "
                    "log_dir that is (or can become) a writable folder."
                ) from error
            self._writer = tf.summary.create_file_writer(folder)
        return self._writer

    def on_train_begin(self, logs=None):
        self._summary_writer()  # a bad log_dir fails before training, not after an epoch

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

        wrappers = [w for w in collect_wrappers(self.model) if w.built]
        if not wrappers:
            return
        step = max(0, max(int(w.pruning_step.numpy()) for w in wrappers))
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

    def on_train_batch_end(self, batch=None, logs=None, **kwargs):
        if self.update_freq != "epoch":
            self._batches += 1
            if self._batches % self.update_freq == 0:
                self._write()

    # tfmot's custom-loop calls pass keyword arguments (epoch=..., batch=...).
    def on_epoch_begin(self, epoch=None, logs=None, **kwargs):
        self._write()

    def on_epoch_end(self, epoch=None, logs=None, **kwargs):
        self._write()

    def on_train_end(self, logs=None):
        self._write()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
