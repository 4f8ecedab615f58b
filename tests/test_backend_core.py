"""The core of tfprune, on whichever Keras backend this process runs.

It runs in the main test run (TensorFlow), and `tests/test_backends.py` runs
it again in processes with `KERAS_BACKEND=jax` and `KERAS_BACKEND=torch`:
training to the schedule's exact sparsity, N:M, channel pruning and `shrink`
on a residual CNN and on MobileNetV2, Taylor importance, `.keras` save and
resume, summaries. Nothing here may use TensorFlow directly.
"""

import os

import keras
import numpy as np
import pytest

import tfprune
from pruning_oracle import expected_zeros

RNG = np.random.default_rng(0)
X = RNG.random((64, 8, 8, 1)).astype("float32")
Y = RNG.integers(0, 10, 64)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def residual_cnn():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    r = keras.layers.Conv2D(8, 3, padding="same", name="c2")(h)
    r = keras.layers.BatchNormalization(name="bn")(r)
    h = keras.layers.Add()([h, keras.layers.ReLU()(r)])
    h = keras.layers.Conv2D(16, 1, activation="relu", name="c3")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="out")(h))


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _rel_err(a, b):
    a, b = _numpy(a), _numpy(b)
    return float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-12))


def _zeros(model, name):
    return int(np.sum(_numpy(model.get_layer(name).kernel) == 0))


@pytest.mark.parametrize("epochs", [1, 2])
def test_training_reaches_the_schedules_exact_sparsity(epochs):
    keras.utils.set_random_seed(0)
    schedule = tfprune.PolynomialDecay(0.0, 0.8, 0, 12, frequency=3)
    pruned = tfprune.prune_low_magnitude(residual_cnn(), pruning_schedule=schedule)
    pruned.compile("adam", LOSS)
    pruned.fit(X, Y, batch_size=8, epochs=epochs, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    steps = 8 * epochs
    stripped = tfprune.strip_pruning(pruned)
    for name in ("c1", "c2", "c3", "out"):
        size = int(np.prod(stripped.get_layer(name).kernel.shape))
        assert _zeros(stripped, name) == expected_zeros(size, schedule, steps), name
    assert {int(_numpy(w.pruning_step)) for w in pruned.layers
            if isinstance(w, tfprune.PruneLowMagnitude)} == {steps}


def test_training_and_saving_warn_of_no_integer_truncation(tmp_path):
    # JAX without x64 has no int64: step counters there are int32, not truncated with a warning.
    import warnings

    keras.utils.set_random_seed(0)
    schedule = tfprune.PolynomialDecay(0.0, 0.5, 0, 8, frequency=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = tfprune.prune_low_magnitude(residual_cnn(), pruning_schedule=schedule)
        pruned.compile("adam", LOSS)
        pruned.fit(X, Y, batch_size=8, epochs=1, verbose=0,
                   callbacks=[tfprune.UpdatePruningStep()])
        pruned.save(tmp_path / "pruned.keras")
        keras.saving.load_model(tmp_path / "pruned.keras")
    truncated = [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert truncated == []
    assert int(_numpy(pruned.get_layer("prune_low_magnitude_c1").pruning_step)) == 8


def test_two_by_four_and_block_sparsity():
    keras.utils.set_random_seed(0)
    pruned = tfprune.prune_low_magnitude(residual_cnn(), sparsity_m_by_n=(2, 4))
    pruned.compile("adam", LOSS)
    pruned.fit(X, Y, batch_size=16, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    kernel = _numpy(tfprune.strip_pruning(pruned).get_layer("c3").kernel)  # (1, 1, 8, 16)
    groups = np.moveaxis(kernel, -2, -1).reshape(-1, 4)
    assert np.all(np.sum(groups != 0, axis=1) <= 2)

    dense = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="d"),
                              keras.layers.Dense(10, name="out")])
    pruned = tfprune.prune_low_magnitude(
        dense, pruning_schedule=tfprune.ConstantSparsity(0.5, 0, frequency=1), block_size=(2, 2))
    pruned.compile("adam", LOSS)
    pruned.fit(RNG.random((32, 16)).astype("float32"), Y[:32], batch_size=8, epochs=1, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    kernel = _numpy(tfprune.strip_pruning(pruned).get_layer("d").kernel)  # (16, 8)
    blocks = kernel.reshape(8, 2, 4, 2).transpose(0, 2, 1, 3).reshape(32, 4)
    zero_blocks = np.all(blocks == 0, axis=1)
    assert zero_blocks.sum() == 16 and np.all(np.any(blocks[~zero_blocks] != 0, axis=1))


def test_save_and_resume_continue_the_step():
    import tempfile

    keras.utils.set_random_seed(0)
    schedule = tfprune.PolynomialDecay(0.0, 0.6, 0, 16, frequency=4)
    pruned = tfprune.prune_low_magnitude(residual_cnn(), pruning_schedule=schedule)
    pruned.compile("adam", LOSS)
    pruned.fit(X, Y, batch_size=8, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    path = os.path.join(tempfile.mkdtemp(), "pruned.keras")
    pruned.save(path)
    resumed = keras.saving.load_model(path)
    resumed.fit(X, Y, batch_size=8, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    assert {int(_numpy(w.pruning_step)) for w in resumed.layers
            if isinstance(w, tfprune.PruneLowMagnitude)} == {16}
    stripped = tfprune.strip_pruning(resumed)
    size = int(np.prod(stripped.get_layer("c2").kernel.shape))
    assert _zeros(stripped, "c2") == expected_zeros(size, schedule, 16)


@pytest.mark.parametrize("importance", ["l2", "taylor"])
def test_channel_pruning_on_a_residual_cnn_shrinks_exactly(importance):
    keras.utils.set_random_seed(0)
    pruned = tfprune.prune_channels(residual_cnn(), tfprune.PolynomialDecay(0.0, 0.5, 0, 8, frequency=4),
                                    importance=importance)
    pruned.compile("adam", LOSS)
    pruned.fit(X, Y, batch_size=8, epochs=2, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    pruner = tfprune.get_channel_pruner(pruned)
    assert not pruner.notes  # Taylor scores came from the training steps
    small = tfprune.shrink(pruned)
    assert _rel_err(pruned(X[:8]), small(X[:8])) <= 1e-5
    assert small.get_layer("c3").filters == 8


def test_channel_pruning_on_mobilenet_v2_shrinks_exactly():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None,
                                           classes=10)
    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.5, 0), round_to=4)
    small = tfprune.shrink(pruned)
    x = RNG.random((2, 32, 32, 3)).astype("float32")
    assert _rel_err(pruned(x), small(x)) <= 1e-5
    assert tfprune.count_macs(small) < 0.6 * tfprune.count_macs(model)


def test_dependency_graph_and_unstructured_strip_are_plain_keras():
    graph = tfprune.DependencyGraph(residual_cnn())
    assert len(graph.prunable_groups) == 2  # c1 and c2 (joined by the Add), c3
    stripped = tfprune.strip_pruning(tfprune.prune_low_magnitude(residual_cnn()))
    assert not any(isinstance(layer, tfprune.MaskedWeightsWrapper) for layer in stripped.layers)


def test_pruning_summaries_write_event_files(tmp_path):
    keras.utils.set_random_seed(0)
    pruned = tfprune.prune_low_magnitude(
        residual_cnn(), pruning_schedule=tfprune.ConstantSparsity(0.5, 0, frequency=2))
    pruned.compile("adam", LOSS)
    pruned.fit(X, Y, batch_size=16, epochs=1, verbose=0,
               callbacks=[tfprune.UpdatePruningStep(), tfprune.PruningSummaries(str(tmp_path))])
    files = os.listdir(tmp_path / "pruning")
    assert files and all(name.startswith("events.out.tfevents") for name in files)
