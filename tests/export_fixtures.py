"""Helpers shared by the tflite_export tests (not a conftest: the lead owns that).

The trained CNN is cached per process so every test module that needs it
pays for training once.
"""

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


@functools.lru_cache(maxsize=None)
def fashion_data(n_train=12000, n_test=5000):
    """Fashion-MNIST slices as float32 in [0, 1] with a channel axis."""
    import tfprune.datasets

    (x_train, y_train), (x_test, y_test) = tfprune.datasets.load_fashion_mnist()

    def prep(x):
        return x[..., None].astype(np.float32) / 255.0

    return (prep(x_train[:n_train]), y_train[:n_train].astype(np.int64)), (
        prep(x_test[:n_test]), y_test[:n_test].astype(np.int64))


def make_cnn(filters=(16, 32), name="cnn"):
    """The example CNN. ReLU6 keeps activation ranges tight for int8."""
    import keras

    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(filters[0], 3, activation="relu6"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(filters[1], 3, activation="relu6"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ], name=name)


@functools.lru_cache(maxsize=None)
def trained_cnn():
    """The example CNN trained briefly (3 epochs on 12k images, ~15 s)."""
    import keras

    (x_train, y_train), _ = fashion_data()
    keras.utils.set_random_seed(0)
    model = make_cnn()
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=3, batch_size=64, verbose=0)
    return model


def files_in(folder):
    """Sorted file names in a folder (to check nothing partial was left)."""
    return sorted(os.listdir(folder))
