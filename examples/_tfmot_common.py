"""What the four `examples/tfmot_*.py` guide scripts share.

* `define_flags(...)` and `start(...)`: the flags every script has
  (`--output_dir`, `--train_images`, `--test_images`, `--frequency`,
  `--seed`) and what every `main` does first.
* `import_tensorflow()`: TensorFlow's start-up lines (oneDNN, CUDA drivers)
  are filtered by `tflite_export._quiet.setup()`, as in every entry point.
* `quiet()`: TensorFlow and LiteRT write converter chatter straight to file
  descriptor 2, where `TF_CPP_MIN_LOG_LEVEL` does not reach. Inside
  `quiet()` that output goes to a temporary file, which is replayed on
  stderr if the block raises, so nothing is lost when something fails.
* `load_fashion_mnist(...)`: Fashion-MNIST slices (Debian package
  `dataset-fashion-mnist`) in the guides' format: float images in [0, 1].
* `Progress`: numbered progress lines with the time each step took, and
  the results lines at the end.
* `gzipped_size(path)`: the guides' "size of the gzipped file";
  `save_for_size(model, path)`: the guides' `model.save(path,
  include_optimizer=False)`, which Keras 3 ignores for `.keras` files (the
  optimizer state, two more copies of every weight for Adam, is saved anyway).
"""

import gzip
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS


def define_flags(train_images):
    """Defines the flags the four scripts share; `train_images` is the default."""
    flags.DEFINE_string("output_dir", "", "Folder for the files the script writes "
                        "(default: a new temporary folder).")
    flags.DEFINE_integer("train_images", train_images, "Training images used (at most 60000).")
    flags.DEFINE_integer("test_images", 10000, "Test images evaluated (at most 10000).")
    flags.DEFINE_integer("frequency", 100, "Steps between mask updates (tfmot's default, 100).")
    flags.DEFINE_integer("seed", 0, "Random seed.")


def start(name, channel_axis=False):
    """Imports Keras quietly, seeds, makes the output folder and loads the data.

    Args:
      name: The script's name, for a temporary output folder.
      channel_axis: Give the images a trailing channel axis.

    Returns:
      `(keras, output_dir, ((x_train, y_train), (x_test, y_test)))`.
    """
    keras = import_tensorflow()
    keras.utils.set_random_seed(FLAGS.seed)
    out = FLAGS.output_dir or tempfile.mkdtemp(prefix=name + "_")
    os.makedirs(out, exist_ok=True)
    return keras, out, load_fashion_mnist(FLAGS.train_images, FLAGS.test_images, channel_axis)


def quiet():
    """Diverts native stderr (fd 2) into a temp file; replays it on error."""
    from tflite_export import _quiet

    return _quiet.filtered_stderr(drop=lambda line: True)


def import_tensorflow():
    """Imports TensorFlow and Keras without their start-up lines; returns keras.

    The start-up is `tflite_export._quiet.setup()`, shared by every entry point.
    """
    from tflite_export import _quiet

    _quiet.setup()
    import keras
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return keras


def load_fashion_mnist(train_images, test_images, channel_axis=False):
    """`((x_train, y_train), (x_test, y_test))`: float32 images in [0, 1].

    Args:
      train_images: How many training images (the first ones) to keep.
      test_images: How many test images to keep.
      channel_axis: Add a trailing channel axis (28, 28, 1).
    """
    import numpy as np

    import tfprune

    (x_train, y_train), (x_test, y_test) = tfprune.datasets.load_fashion_mnist()

    def prep(x):
        x = x.astype(np.float32) / 255.0
        return x[..., None] if channel_axis else x

    return ((prep(x_train[:train_images]), y_train[:train_images].astype(np.int32)),
            (prep(x_test[:test_images]), y_test[:test_images].astype(np.int32)))


class Progress:
    """Numbered progress lines while a script runs, its results at the end.

    `progress("what")` prints `[i/n] what` and, when the next step starts,
    how long this one took; `progress.add(label, value)` keeps a results line;
    `progress.finish(out)` prints them, aligned, with the total time.
    """

    def __init__(self, steps):
        self.steps = steps
        self.index = 0
        self.results = []
        self._started = time.perf_counter()
        self._step_start = None

    def _close_step(self):
        if self._step_start is not None:
            print(f"      ({time.perf_counter() - self._step_start:.1f} s)", flush=True)
            self._step_start = None

    def __call__(self, what):
        self._close_step()
        self.index += 1
        print(f"[{self.index}/{self.steps}] {what}", flush=True)
        self._step_start = time.perf_counter()

    def add(self, label, value):
        self.results.append((label, value))

    def finish(self, out):
        self._close_step()
        width = max(len(label) for label, _ in self.results) + 1
        print("\nResults")
        for label, value in self.results:
            print(f"{label + ':':{width}s} {value}")
        print(f"Files in {out}; total time {time.perf_counter() - self._started:.0f} s",
              flush=True)


def gzipped_size(path):
    """Bytes of `path` once gzipped (level 9)."""
    with open(path, "rb") as f:
        return len(gzip.compress(f.read(), compresslevel=9))


def save_for_size(model, path):
    """Saves `model` to a `.keras` file without optimizer state; returns its gzipped size.

    Keras 3 writes the optimizer into every `.keras` file of a compiled model
    (`include_optimizer=False` is accepted and ignored), and a model cloned
    from a compiled one is compiled too. An uncompiled copy from the model's
    config has the same architecture and weights and no optimizer.
    """
    copy = model.__class__.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    copy.save(path)
    return gzipped_size(path)
