"""`tfprune.planning.plan_evaluation`: BatchNorm re-estimation and the loss of a whole plan."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune import planning
from tfprune.planning.sensitivity import default_loss


def _bn_cnn(name="bn_cnn"):
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(8, 3, name="a")(inputs)
    x = keras.layers.BatchNormalization(name="a_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, name="b")(x)
    x = keras.layers.BatchNormalization(name="b_bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name=name)


def _data(n=48):
    rng = np.random.default_rng(0)
    return (rng.normal(2.0, 3.0, (n, 8, 8, 2)).astype("float32"), rng.integers(0, 3, n))


def test_one_batch_sets_the_moving_statistics_to_that_batch():
    keras.utils.set_random_seed(0)
    model = _bn_cnn()
    x, _ = _data()
    kernel = [w.numpy().copy() for w in model.trainable_weights]
    momentum = model.get_layer("a_bn").momentum
    assert planning.recalibrate_batch_norm(model, x, batch_size=len(x)) == 2
    bn_input = keras.Model(model.input, model.get_layer("a").output)(x).numpy()
    layer = model.get_layer("a_bn")
    np.testing.assert_allclose(layer.moving_mean.numpy(), bn_input.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), bn_input.var(axis=(0, 1, 2)),
                               rtol=1e-3, atol=1e-5)
    assert layer.momentum == momentum
    for before, after in zip(kernel, model.trainable_weights):
        np.testing.assert_array_equal(before, after.numpy())


def test_several_batches_average_their_statistics_and_frozen_layers_stay():
    keras.utils.set_random_seed(0)
    model = _bn_cnn()
    x, _ = _data(48)
    frozen = model.get_layer("b_bn")
    frozen.trainable = False
    frozen_mean = frozen.moving_mean.numpy().copy()
    assert planning.recalibrate_batch_norm(model, x, batch_size=16) == 1
    np.testing.assert_array_equal(frozen.moving_mean.numpy(), frozen_mean)
    features = keras.Model(model.input, model.get_layer("a").output)
    means = [features(x[i:i + 16]).numpy().mean(axis=(0, 1, 2)) for i in (0, 16, 32)]
    np.testing.assert_allclose(model.get_layer("a_bn").moving_mean.numpy(),
                               np.mean(means, axis=0), rtol=1e-4, atol=1e-5)


def test_bad_arguments_are_refused_and_momentum_is_restored_after_an_error():
    model = _bn_cnn()
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        planning.recalibrate_batch_norm(model, _data()[0], batch_size=0)
    with pytest.raises(ValueError, match="x is empty"):
        planning.recalibrate_batch_norm(model, np.zeros((0, 8, 8, 2), "float32"))
    with pytest.raises(ValueError):
        planning.recalibrate_batch_norm(model, np.zeros((4, 8, 8, 5), "float32"))
    wrapped = tfprune.prune_low_magnitude(_bn_cnn("wrapped"))
    with pytest.raises(ValueError, match="pruning wrappers .*tfprune.shrink"):
        planning.recalibrate_batch_norm(wrapped, _data()[0])
    assert all(layer.momentum == 0.99 for layer in planning.plan_evaluation.batch_norm_layers(
        model))


def test_the_loss_of_the_full_plan_is_the_models_loss_and_the_model_is_unchanged():
    keras.utils.set_random_seed(0)
    model = _bn_cnn()
    x, y = _data()
    before = [w.numpy().copy() for w in model.weights]
    graph = tfprune.DependencyGraph(model)
    full = {planning.group_key(g): g.size for g in graph.prunable_groups}
    evaluator = planning.PlanEvaluator(model, x, y, recalibrate=False)
    assert evaluator(full) == pytest.approx(default_loss(y, model.predict(x, verbose=0)),
                                            rel=1e-5)
    half = {k: v // 2 for k, v in full.items()}
    recalibrated = planning.PlanEvaluator(model, x, y)
    small = recalibrated.pruned_model(half)
    assert [small.get_layer(n).filters for n in ("a", "b")] == [4, 8]
    assert recalibrated(half) == pytest.approx(default_loss(y, small.predict(x, verbose=0)),
                                               rel=1e-5)
    assert len(recalibrated.history) == 1
    for value, weight in zip(before, model.weights):
        np.testing.assert_array_equal(value, weight.numpy())


def test_recalibration_brings_a_cut_model_back_to_normalized_activations():
    # Cutting half of "a" shifts what "b_bn" sees; with the statistics
    # re-estimated, b_bn's outputs are normalized again on the same data.
    keras.utils.set_random_seed(0)
    model = _bn_cnn()
    x, y = _data()
    planning.recalibrate_batch_norm(model, x, batch_size=len(x))
    half = {"a[out]": 4, "b[out]": 16}
    plain = planning.PlanEvaluator(model, x, y, recalibrate=False).pruned_model(half)
    fixed = planning.PlanEvaluator(model, x, y).pruned_model(half)

    def spread(small):
        out = keras.Model(small.input, small.get_layer("b_bn").output)(x).numpy()
        return np.abs(out.mean(axis=(0, 1, 2))).max()

    assert spread(fixed) < 1e-3 < spread(plain)
