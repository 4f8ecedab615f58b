"""Loading the CLI's `--representative_data` / `--eval_data` values.

A value is a `.npy` file (inputs only), a `.npz` file (arrays `x` and
optionally `y`; or `arr_0`/`arr_1` as written by `np.savez(path, x, y)`), or
the word `fashion_mnist` (optionally `fashion_mnist:N` for the first N
examples): Fashion-MNIST from the Debian package `dataset-fashion-mnist`
scaled to float32 in [0, 1] with shape (N, 28, 28, 1). It gives the training
split for representative data and the test split (with labels) for
evaluation.
"""

import os

import numpy as np
from absl import logging

FASHION_MNIST = "fashion_mnist"


def _fashion_mnist(split, limit):
    import tfprune.datasets

    (x_train, y_train), (x_test, y_test) = tfprune.datasets.load_fashion_mnist()
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return (x[..., None].astype(np.float32) / 255.0), y.astype(np.int64)


def load(value, flag, split):
    """Loads a data flag value.

    Args:
      value: The flag value (path or `fashion_mnist[:N]`).
      flag: Flag name for messages, e.g. `--eval_data`.
      split: `"train"` or `"test"`: which Fashion-MNIST split the word means.

    Returns:
      `x` or `(x, y)` as NumPy arrays.

    Raises:
      ValueError: If the file is missing, of an unknown kind, or malformed, or
        `fashion_mnist:N` has an N that is not a whole number >= 1.
    """
    if value.split(":")[0] == FASHION_MNIST:
        limit = None
        if ":" in value:
            text = value.split(":", 1)[1]
            try:
                limit = int(text)
            except ValueError:
                raise ValueError(f"{flag}={value!r}: write fashion_mnist:N with a whole number "
                                 f"N >= 1 of examples, e.g. {flag}={FASHION_MNIST}:500.")
            if limit < 1:
                # Python slicing would read x[:-5] as "all but the last 5".
                raise ValueError(f"{flag}={value!r}: the number of examples must be >= 1 "
                                 f"(got {limit}); write e.g. {flag}={FASHION_MNIST}:500, or "
                                 f"{flag}={FASHION_MNIST} for the whole split.")
        x, y = _fashion_mnist(split, limit)
        if limit is not None and x.shape[0] < limit:
            logging.warning("%s=%s: the Fashion-MNIST %s split has only %d examples; using "
                            "all of them.", flag, value, split, x.shape[0])
        return x, y
    if not os.path.isfile(value):
        raise ValueError(f"{flag}={value!r} does not exist (give a .npy or .npz file, or "
                         f"'{FASHION_MNIST}').")
    if not value.endswith((".npy", ".npz")):
        raise ValueError(f"{flag}={value!r} is neither a .npy nor a .npz file.")
    try:
        return _load_numpy(value, flag)
    except (OSError, EOFError, ValueError) as e:
        if str(e).startswith(flag):
            raise
        raise ValueError(f"{flag}={value!r} could not be read as NumPy data ({e}); write it "
                         "with np.save / np.savez from numeric arrays.") from e


def _load_numpy(value, flag):
    if value.endswith(".npy"):
        return np.load(value, allow_pickle=False)
    with np.load(value, allow_pickle=False) as archive:
        keys = list(archive.keys())
        if "x" in keys:
            return (archive["x"], archive["y"]) if "y" in keys else archive["x"]
        if keys[:1] == ["arr_0"]:
            return (archive["arr_0"], archive["arr_1"]) if "arr_1" in keys \
                else archive["arr_0"]
    raise ValueError(f"{flag}={value!r} has arrays {keys}; name them x (and y).")
