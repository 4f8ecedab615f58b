"""Fashion-MNIST from the Debian package `dataset-fashion-mnist` (no downloads)."""

import gzip
import os

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
"""Where the Debian package `dataset-fashion-mnist` installs the idx files."""

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
"""The ten class names, indexed by label."""

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Reads an IDX file (optionally gzipped) into a NumPy array.

    Args:
      path: Path to an `.idx*-ubyte` file or its `.gz`.

    Returns:
      The array, with the shape stored in the file.

    Raises:
      ValueError: If the file is not a valid IDX file.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r}).")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: {len(data)} bytes, expected {expected} "
            f"for shape {shape}. Reinstall the package dataset-fashion-mnist."
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {directory}. On Debian or "
        "Ubuntu install it with `apt-get install -y dataset-fashion-mnist`, or "
        "pass `data_dir=` (or set TFPRUNE_FASHION_MNIST_DIR) to a folder holding "
        "the four idx files."
    )


def load_fashion_mnist(data_dir=None):
    """Loads Fashion-MNIST as `keras.datasets.fashion_mnist.load_data()` does.

    Args:
      data_dir: Folder with the idx files; defaults to `$TFPRUNE_FASHION_MNIST_DIR`
        or the Debian package's `/usr/share/datasets/fashion-mnist`.

    Returns:
      `((x_train, y_train), (x_test, y_test))`: uint8 images of shape
      `(n, 28, 28)` and uint8 labels 0-9.

    Raises:
      FileNotFoundError: If the files are missing (the message says what to install).
    """
    data_dir = data_dir or os.environ.get("TFPRUNE_FASHION_MNIST_DIR") or DEFAULT_DIR
    splits = []
    for split in ("train", "test"):
        images_stem, labels_stem = _FILES[split]
        images = read_idx(_find(data_dir, images_stem))
        labels = read_idx(_find(data_dir, labels_stem))
        if len(images) != len(labels):
            raise ValueError(
                f"Fashion-MNIST {split} split in {data_dir} has {len(images)} images "
                f"but {len(labels)} labels."
            )
        splits.append((images, labels))
    return tuple(splits)
