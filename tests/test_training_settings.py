"""Every training setting the README names reaches the schedule's sparsity exactly.

One schedule, whose update steps fall inside executions of `steps_per_execution`
and across epoch boundaries; after N optimizer steps, however they were run,
every wrapper's `pruning_step` is N and every mask zeroes exactly the count
tfmot's rule gives for the last update step <= N.
"""

import os
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from pruning_oracle import expected_zeros
from python_script import run_python

# Updates at steps 2, 5, 8, 11, 14; 4 steps per epoch of 64 images.
SCHEDULE = tfprune.PolynomialDecay(0.1, 0.75, begin_step=2, end_step=14, power=3, frequency=3)
BATCH = 16
IMAGES = 64
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def tiny_cnn(shared=False):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    if shared:
        square = keras.layers.Dense(16, activation="relu", name="shared")
        x = square(square(x))
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs)


def pruned(shared=False, **compile_kwargs):
    model = tfprune.prune_low_magnitude(tiny_cnn(shared), SCHEDULE)
    model.compile(keras.optimizers.Adam(1e-3), LOSS, **compile_kwargs)
    return model


def assert_state(model, steps):
    wrappers = tfprune.callbacks.collect_wrappers(model)
    assert wrappers
    for wrapper in wrappers:
        assert int(wrapper.pruning_step.numpy()) == steps, wrapper.name
        for weight, mask in wrapper.masked_weights:
            m, w = mask.numpy(), weight.numpy()
            assert int((m == 0).sum()) == expected_zeros(m.size, SCHEDULE, steps), weight.path
            assert np.all(w[m == 0] == 0), weight.path


@pytest.fixture(scope="module")
def data(fashion_small):
    (x, y), _ = fashion_small
    return x[:IMAGES], y[:IMAGES]


def fit(model, data, epochs, callbacks=(), **kwargs):
    x, y = data
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
                     callbacks=[tfprune.UpdatePruningStep(), *callbacks], **kwargs)


@pytest.mark.parametrize(
    "compile_kwargs",
    [{}, {"jit_compile": True}, {"steps_per_execution": 3}, {"steps_per_execution": 3, "jit_compile": True}],
    ids=["plain", "jit_compile", "steps_per_execution", "steps_per_execution+jit"],
)
def test_fit_settings(data, compile_kwargs):
    model = pruned(**compile_kwargs)
    fit(model, data, epochs=4)
    assert_state(model, 16)


def test_repeated_fit_continues_the_schedule(data):
    model = pruned()
    fit(model, data, epochs=1)
    assert_state(model, 4)
    fit(model, data, epochs=2)
    assert_state(model, 12)
    model.compile(keras.optimizers.SGD(1e-2), LOSS)  # a new optimizer starts at 0
    fit(model, data, epochs=1)
    assert_state(model, 16)


def test_shared_layer_counts_one_step_per_batch(data):
    model = pruned(shared=True)
    fit(model, data, epochs=2)
    assert_state(model, 8)
    fit(model, data, epochs=2)
    assert_state(model, 16)


def test_early_stopping(data):
    stop = keras.callbacks.EarlyStopping(monitor="loss", min_delta=1e9, patience=1)
    model = pruned()
    fit(model, data, epochs=10, callbacks=[stop])
    assert stop.stopped_epoch == 1
    assert_state(model, 8)


@pytest.mark.parametrize("order", ["step_first", "backup_first"])
def test_backup_and_restore_after_interruption(tmp_path, data, order):
    class Interrupt(Exception):
        pass

    class Stop(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.model.optimizer.iterations.numpy() == 10:
                raise Interrupt()

    def backup():
        return keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=2)

    model = pruned()
    with pytest.raises(Interrupt):
        fit(model, data, epochs=4, callbacks=[backup(), Stop()])
    model = pruned()  # a new process would start from a fresh model
    x, y = data
    update = tfprune.UpdatePruningStep()
    callbacks = [update, backup()] if order == "step_first" else [backup(), update]
    model.fit(x, y, batch_size=BATCH, epochs=4, shuffle=False, verbose=0, callbacks=callbacks)
    # Keras resumes the interrupted epoch from its start: the 10 steps of the
    # backup, then epochs 3 and 4 in full. Every optimizer step is a pruning step.
    assert int(model.optimizer.iterations.numpy()) == 18
    assert_state(model, 18)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_custom_training_loop_as_in_tfmot_guide(data, compiled):
    """The comprehensive guide's loop: callbacks driven by hand with keyword arguments."""
    x, y = data
    model = tfprune.prune_low_magnitude(tiny_cnn(), SCHEDULE)
    optimizer = keras.optimizers.Adam(1e-3)
    model.optimizer = optimizer
    step_callback = tfprune.UpdatePruningStep()
    step_callback.set_model(model)
    log_callback = tfprune.PruningSummaries(log_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                                 "tfprune_custom_loop_logs"))
    log_callback.set_model(model)

    def train_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            # A second forward pass in the same step still counts one step.
            logits = 0.5 * (logits + model(images, training=True))
            loss = LOSS(labels, logits)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    if compiled:
        train_step = tf.function(train_step, jit_compile=False)
    step_callback.on_train_begin()
    for _ in range(4):
        log_callback.on_epoch_begin(epoch=-1)
        for start in range(0, IMAGES, BATCH):
            step_callback.on_train_batch_begin(batch=-1)
            train_step(x[start:start + BATCH], y[start:start + BATCH])
        step_callback.on_epoch_end(batch=-1)
    assert_state(model, 16)


def test_custom_loop_without_an_optimizer_on_the_model_is_a_clear_error():
    model = tfprune.prune_low_magnitude(tiny_cnn(), SCHEDULE)
    callback = tfprune.UpdatePruningStep()
    callback.set_model(model)
    with pytest.raises(ValueError, match="model.optimizer = your_optimizer"):
        callback.on_train_begin()


def test_every_fit_and_train_on_batch_without_the_callback_raises(data):
    x, y = data
    model = pruned()
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        model.fit(x, y, batch_size=BATCH, verbose=0)
    fit(model, data, epochs=1)
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        model.fit(x, y, batch_size=BATCH, verbose=0)
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        model.train_on_batch(x[:BATCH], y[:BATCH])
    assert_state(model, 4)  # nothing was trained without the callback
    model.evaluate(x, y, verbose=0)
    model.predict(x, verbose=0)


def test_mirrored_strategy(tmp_path):
    """Two local replicas (a subprocess: logical devices must be set before TF starts)."""
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import tfprune
        import test_training_settings as t
        (x, y), _ = tfprune.datasets.load_fashion_mnist()
        x = x[:t.IMAGES, ..., None].astype("float32") / 255.0
        y = y[:t.IMAGES].astype("int32")
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = t.pruned()
        t.fit(model, (x, y), epochs=4)
        t.assert_state(model, 16)
        for wrapper in tfprune.callbacks.collect_wrappers(model):
            for weight, mask in wrapper.masked_weights:
                for v in (weight.value, mask.value):
                    a, b = [r.numpy() for r in strategy.experimental_local_results(v)]
                    np.testing.assert_array_equal(a, b)
        print("MIRRORED_OK")
        """
    )
    run_python(script, "MIRRORED_OK")


@pytest.mark.parametrize("kind", ["channels", "global"])
def test_masks_decided_across_layers_refuse_steps_per_execution(data, kind):
    if kind == "channels":
        model = tfprune.prune_channels(tiny_cnn(), SCHEDULE)
    else:
        model = tfprune.prune_low_magnitude(tiny_cnn(), SCHEDULE, global_pruning=True)
    model.compile(keras.optimizers.Adam(1e-3), LOSS, steps_per_execution=3)
    with pytest.raises(ValueError, match=r"steps_per_execution=3.*steps_per_execution=1"):
        fit(model, data, epochs=1)
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    fit(model, data, epochs=4)
    if kind == "global":
        total = sum(m.numpy().size for w in tfprune.callbacks.collect_wrappers(model)
                    for _, m in w.masked_weights)
        zeros = sum(int((m.numpy() == 0).sum()) for w in tfprune.callbacks.collect_wrappers(model)
                    for _, m in w.masked_weights)
        assert zeros == expected_zeros(total, SCHEDULE, 16)


def test_sequential_whose_wrappers_are_built_by_fit(data):
    """No input shape anywhere: the wrappers are built inside the first training step."""
    model = keras.Sequential([
        tfprune.prune_low_magnitude(keras.layers.Conv2D(4, 3, strides=2, name="conv"), SCHEDULE),
        keras.layers.Flatten(),
        tfprune.prune_low_magnitude(keras.layers.Dense(10, name="logits"), SCHEDULE),
    ])
    assert not model.built
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    fit(model, data, epochs=4)
    assert_state(model, 16)
