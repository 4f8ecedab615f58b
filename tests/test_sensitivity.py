"""Predicted accuracy loss per group (`tfprune.planning.sensitivity`)."""

import keras
import numpy as np
import pytest

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


def test_default_loss_takes_class_indices_or_one_hot_rows_and_refuses_the_rest():
    from tfprune.planning.sensitivity import default_loss

    logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    sparse = default_loss(np.array([0, 2]), logits)
    assert sparse == pytest.approx(default_loss(np.eye(3)[[0, 2]], logits), rel=1e-12)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert default_loss(np.array([[0], [2]]), probabilities) == pytest.approx(sparse, rel=1e-9)
    with pytest.raises(ValueError, match="do not fit 3 class scores"):
        default_loss(np.array([0, 3]), logits)
    with pytest.raises(ValueError, match="3 labels for 2 examples"):
        default_loss(np.array([0, 1, 2]), logits)
    with pytest.raises(ValueError, match="one output of class scores"):
        default_loss(np.array([0, 1]), [logits, logits])


def test_a_model_with_two_outputs_needs_its_own_loss():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="a")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, [keras.layers.Dense(4, name="o1")(x),
                                 keras.layers.Dense(2, name="o2")(x)])
    x, y = _data()
    with pytest.raises(ValueError, match="Pass loss_fn"):
        planning.MeasuredSensitivity(model, x, y, levels=2)
    measured = planning.MeasuredSensitivity(
        model, x, y, levels=2, loss_fn=lambda y, outs: float(np.mean(outs[0] ** 2)))
    assert measured("a[out]", 8) == 0.0
