"""Shared fixtures: quiet TensorFlow, small slices of the real Fashion-MNIST."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest


@pytest.fixture(scope="session")
def fashion_mnist():
    """The full dataset as uint8 arrays: ((x_train, y_train), (x_test, y_test))."""
    import tfprune

    return tfprune.datasets.load_fashion_mnist()


@pytest.fixture(scope="session")
def fashion_small(fashion_mnist):
    """4096 training and 1024 test images, float32 in [0, 1] with a channel axis."""
    (x_train, y_train), (x_test, y_test) = fashion_mnist

    def prep(x):
        return (x[..., None].astype(np.float32) / 255.0)

    return (prep(x_train[:4096]), y_train[:4096].astype(np.int32)), (
        prep(x_test[:1024]),
        y_test[:1024].astype(np.int32),
    )


@pytest.fixture(autouse=True)
def _restore_environment():
    """Undo environment changes a test makes (importing tfmot sets TF_USE_LEGACY_KERAS=1)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
