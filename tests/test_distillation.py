"""Pruning while distilling: tfprune wrappers in the student of a `keras.distillation.Distiller`.

The quickstart and the compression table fine-tune every pruned variant this
way (the dense model is the teacher), so the callback has to find the
student's wrappers inside the distiller, and stripping/shrinking the student
afterwards has to give what the masked student computes.
"""

import keras
import numpy as np
import pytest

import tfprune

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def small_cnn():
    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inputs)
    # momentum 0.9: the teacher's moving statistics settle within the short
    # training below (the distiller runs the teacher in inference mode).
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="cnn")


@pytest.fixture(scope="module")
def teacher(fashion_small):
    (x, y), _ = fashion_small
    keras.utils.set_random_seed(0)
    model = small_cnn()
    model.compile("adam", LOSS, metrics=["accuracy"])
    model.fit(x, y, batch_size=128, epochs=2, verbose=0)
    return model


def copy_of(model):
    """A fresh, trainable copy (a Distiller freezes its teacher, and a clone would inherit that)."""
    copy = small_cnn()
    copy.set_weights(model.get_weights())
    return copy


def distiller(teacher, student):
    model = keras.distillation.Distiller(
        teacher=teacher, student=student,
        distillation_losses=keras.distillation.LogitsDistillation(
            temperature=4.0, loss=keras.losses.KLDivergence()),
        student_loss_weight=0.3)
    model.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    return model


def test_the_distillation_loss_is_the_tempered_kl_divergence(teacher, fashion_small):
    """Guards the recipe: T^2 * KL(softmax(t / T) || softmax(s / T)), which is >= 0.

    With `loss="kl_divergence"` (the default string) Keras 3.15 resolves a bare
    function and skips the softmax, so the README and the quickstart pass a
    `keras.losses.KLDivergence()` instance.
    """
    (x, _), _ = fashion_small
    student = small_cnn()  # freshly initialized
    loss = keras.distillation.LogitsDistillation(temperature=4.0, loss=keras.losses.KLDivergence())
    t, s = teacher(x[:256]).numpy(), student(x[:256]).numpy()

    def softmax(z):
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    p, q = softmax(t / 4.0), softmax(s / 4.0)
    expected = 16.0 * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))
    got = float(loss.compute_loss(t, s))
    assert expected > 0
    assert got == pytest.approx(expected, rel=1e-3)


def max_rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def test_magnitude_pruning_in_a_distilled_student(teacher, fashion_small):
    (x, y), (x_test, y_test) = fashion_small
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    schedule = tfprune.PolynomialDecay(0.0, 0.6, begin_step=0, end_step=16, frequency=4)
    student = tfprune.prune_low_magnitude(copy_of(teacher), schedule, ignored_layers=["conv1"])
    history = distiller(teacher, student).fit(
        x, y, batch_size=128, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])

    assert history.history["distillation_loss"][0] > 0
    wrappers = [l for l in student.layers if isinstance(l, tfprune.PruneLowMagnitude)]
    assert [w.layer.name for w in wrappers] == ["conv2", "fc", "logits"]
    for wrapper in wrappers:
        assert int(wrapper.pruning_step.numpy()) == len(x) // 128
        for weight, mask in wrapper.masked_weights:
            kernel = weight.numpy()
            assert np.mean(kernel == 0) == pytest.approx(0.6, abs=1e-3), wrapper.name
            assert not kernel[mask.numpy() == 0].any()
    # The teacher is frozen: distillation never changes it.
    for before, after in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)

    stripped = tfprune.strip_pruning(student)
    assert max_rel_err(student(x_test[:64]), stripped(x_test[:64])) <= 1e-6
    logits = stripped.predict(x_test, verbose=0)
    assert np.mean(np.argmax(logits, axis=-1) == y_test) > 0.6


@pytest.mark.parametrize("importance", ["l2", "taylor"])
def test_channel_pruning_in_a_distilled_student_shrinks_exactly(teacher, fashion_small, importance):
    (x, y), (x_test, _) = fashion_small
    schedule = tfprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=16, frequency=4)
    student = tfprune.prune_channels(copy_of(teacher), schedule, importance=importance)
    distiller(teacher, student).fit(
        x, y, batch_size=128, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])

    thin = tfprune.shrink(student)
    assert thin.count_params() < teacher.count_params() / 2
    assert thin.get_layer("conv1").filters == 8
    assert max_rel_err(student(x_test[:64]), thin(x_test[:64])) <= 1e-5


def test_distilling_without_the_callback_is_a_clear_error(teacher, fashion_small):
    (x, y), _ = fashion_small
    student = tfprune.prune_low_magnitude(copy_of(teacher))
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        distiller(teacher, student).fit(x[:64], y[:64], batch_size=32, verbose=0)
