"""Predicted accuracy loss per group (`tfprune.planning.sensitivity`)."""

import keras
import numpy as np

import tfprune
from tfprune import planning


def _cnn():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="a")(inputs)
    x = keras.layers.Conv2D(12, 3, activation="relu", name="b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(x))


def _data():
    rng = np.random.default_rng(0)
    return rng.random((64, 8, 8, 1)).astype("float32"), rng.integers(0, 4, 64)


def test_measured_loss_of_a_group_does_not_depend_on_the_groups_measured_before():
    keras.utils.set_random_seed(0)
    model = _cnn()
    x, y = _data()
    measured = planning.MeasuredSensitivity(model, x, y, levels=3)
    # Measure group "b" alone, by hand, cut to its lowest grid count.
    graph = tfprune.DependencyGraph(model)
    group_b = next(g for g in graph.prunable_groups if planning.group_key(g) == "b[out]")
    kept = planning.grid_levels(group_b.size, 1, 3)[0]
    wrapped = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.0, begin_step=2**40))
    pruner = tfprune.get_channel_pruner(wrapped)
    scores = pruner.scores()[group_b.id]
    flags = np.zeros(group_b.size, bool)
    flags[np.argsort(-scores, kind="stable")[:kept]] = True
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    base = float(loss(y, wrapped(x)))
    pruner.set_keep({group_b.id: flags})
    alone = float(loss(y, wrapped(x))) - base
    np.testing.assert_allclose(measured("b[out]", kept), max(alone, 0.0), rtol=1e-4, atol=1e-6)
    # The model the measurement was made from is untouched.
    assert measured("a[out]", 8) == 0.0 and measured("b[out]", 12) == 0.0


def test_score_sensitivity_is_the_share_of_importance_removed():
    model = _cnn()
    graph = tfprune.DependencyGraph(model)
    sensitivity = planning.ScoreSensitivity(graph)
    group = graph.prunable_groups[0]
    key = planning.group_key(group)
    scores = np.sort(tfprune.importance.get("l2")(group))[::-1]
    assert sensitivity(key, group.size) == 0.0
    np.testing.assert_allclose(sensitivity(key, 3), scores[3:].sum() / scores.sum(), rtol=1e-9)
    assert sensitivity(key, 2) >= sensitivity(key, 3)
