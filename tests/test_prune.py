"""Magnitude pruning with Keras 3: wrapping, training on a schedule, saving, stripping."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from absl.testing import parameterized

import tfprune
from pruning_oracle import expected_zeros, zeros_at
from tfprune import masks as mask_math

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def small_cnn(name="cnn"):
    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def pruned_weights(model):
    """{wrapper name: [(weight array, mask array)]}."""
    return {
        layer.name: [(w.numpy(), m.numpy()) for w, m in layer.masked_weights]
        for layer in model.layers
        if isinstance(layer, tfprune.PruneLowMagnitude)
    }


# Prunes at the first step already (tfmot's default frequency of 100 waits for step 100).
HALF = tfprune.ConstantSparsity(0.5, begin_step=0, frequency=1)


class ScheduleTrainingTest(parameterized.TestCase):
    @parameterized.named_parameters(
        ("adam", lambda: keras.optimizers.Adam(1e-3)),
        ("sgd_momentum", lambda: keras.optimizers.SGD(0.05, momentum=0.9)),
    )
    def test_sparsity_follows_schedule_and_pruned_weights_stay_zero(self, optimizer):
        (x, y), _ = self.data
        schedule = tfprune.PolynomialDecay(0.0, 0.75, begin_step=4, end_step=40, frequency=6)
        model = tfprune.prune_low_magnitude(small_cnn(), schedule)
        model.compile(optimizer(), LOSS)

        wrappers = [l for l in model.layers if isinstance(l, tfprune.PruneLowMagnitude)]
        violations = []

        class CheckZeros(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if schedule.should_prune(batch + 2):
                    # Before an update the optimizer's values of pruned
                    # weights are kept for it to rank, as in tfmot.
                    return
                for layer in wrappers:
                    for weight, mask in layer.masked_weights:
                        if np.any(weight.numpy()[mask.numpy() == 0] != 0):
                            violations.append((batch, layer.name))

        steps = 48
        model.fit(x[: steps * 32], y[: steps * 32], batch_size=32, epochs=1, verbose=0,
                  callbacks=[tfprune.UpdatePruningStep(), CheckZeros()])
        self.assertEqual(violations, [])
        for name, pairs in pruned_weights(model).items():
            for weight, mask in pairs:
                wrapper = model.get_layer(name)
                self.assertEqual(int(wrapper.pruning_step.numpy()), steps)
                zeros = expected_zeros(weight.size, schedule, steps)
                self.assertEqual(int((mask == 0).sum()), zeros, name)
                self.assertTrue(np.all(weight[mask == 0] == 0), name)

    @classmethod
    def setUpClass(cls):
        from tfprune.datasets import load_fashion_mnist

        (x, y), _ = load_fashion_mnist()
        cls.data = ((x[:2048, ..., None] / 255.0).astype("float32"), y[:2048].astype("int32")), None


def test_fit_without_callback_is_a_clear_error(fashion_small):
    (x, y), _ = fashion_small
    model = tfprune.prune_low_magnitude(small_cnn())
    model.compile("adam", LOSS)
    with pytest.raises(ValueError, match="UpdatePruningStep"):
        model.fit(x[:64], y[:64], batch_size=32, verbose=0)


def test_save_load_keeps_masks_and_step_and_resumes(tmp_path, fashion_small):
    (x, y), _ = fashion_small
    schedule = tfprune.PolynomialDecay(0.1, 0.8, begin_step=0, end_step=60, frequency=5)
    x, y = x[:40 * 32], y[:40 * 32]

    def fit(model, epochs):
        model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=False,
                  callbacks=[tfprune.UpdatePruningStep()])

    model = tfprune.prune_low_magnitude(small_cnn(), schedule)
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    fit(model, 1)
    path = tmp_path / "pruned.keras"
    model.save(path)
    restored = keras.models.load_model(path)  # no custom_objects
    self_pairs, restored_pairs = pruned_weights(model), pruned_weights(restored)
    assert self_pairs.keys() == restored_pairs.keys()
    for name in self_pairs:
        assert int(restored.get_layer(name).pruning_step.numpy()) == 40
        assert restored.get_layer(name).pruning_schedule == schedule
        for (w1, m1), (w2, m2) in zip(self_pairs[name], restored_pairs[name]):
            np.testing.assert_array_equal(m1, m2)
            np.testing.assert_array_equal(w1, w2)
    # Resuming continues the schedule from step 40, exactly as an uninterrupted run.
    fit(restored, 1)
    fit(model, 1)
    for name, pairs in pruned_weights(restored).items():
        assert int(restored.get_layer(name).pruning_step.numpy()) == 80
        for (weight, mask), (_, reference_mask) in zip(pairs, pruned_weights(model)[name]):
            assert int((mask == 0).sum()) == expected_zeros(weight.size, schedule, 80)
            np.testing.assert_array_equal(mask, reference_mask)


def test_jit_compile_and_steps_per_execution(fashion_small):
    (x, y), _ = fashion_small
    schedule = tfprune.ConstantSparsity(0.6, begin_step=0, frequency=8)
    model = tfprune.prune_low_magnitude(small_cnn(), schedule)
    model.compile("adam", LOSS, jit_compile=True, steps_per_execution=4)
    model.fit(x[:32 * 24], y[:32 * 24], batch_size=32, verbose=0,
              callbacks=[tfprune.UpdatePruningStep()])
    for name, pairs in pruned_weights(model).items():
        assert int(model.get_layer(name).pruning_step.numpy()) == 24
        for weight, mask in pairs:
            assert mask_math.sparsity_of(weight) == pytest.approx(0.6, abs=1.0 / weight.size)


def test_strip_pruning_restores_architecture_with_zeros_baked_in(fashion_small):
    (x, y), (x_test, _) = fashion_small
    original = small_cnn()
    model = tfprune.prune_low_magnitude(original, HALF)
    model.compile("adam", LOSS)
    model.fit(x[:256], y[:256], batch_size=64, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    stripped = tfprune.strip_pruning(model)
    assert [l.name for l in stripped.layers] == [l.name for l in original.layers]
    for before, after in zip(original.layers, stripped.layers):
        assert type(before) is type(after)
        assert before.get_config() == after.get_config()
    assert not any(isinstance(l, tfprune.MaskedWeightsWrapper) for l in stripped.layers)
    assert mask_math.sparsity_of(stripped.get_layer("conv2").kernel.numpy()) == pytest.approx(0.5, abs=0.01)
    np.testing.assert_allclose(stripped.predict(x_test[:64], verbose=0),
                               model.predict(x_test[:64], verbose=0), rtol=1e-5, atol=1e-5)
    # The input model is untouched and strip has no constraints left behind.
    assert mask_math.sparsity_of(original.get_layer("conv2").kernel.numpy()) == 0.0
    assert stripped.get_layer("conv2").kernel.constraint is None


def _sequence_model(layer, input_shape, dtype="float32"):
    inputs = keras.Input(input_shape, dtype=dtype)
    x = layer(inputs, inputs) if isinstance(layer, keras.layers.MultiHeadAttention) else layer(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


LAYER_CASES = [
    ("dense", lambda: keras.layers.Dense(8), (12,), "float32"),
    ("einsum_dense", lambda: keras.layers.EinsumDense("ab,bc->ac", output_shape=8), (12,), "float32"),
    ("conv1d", lambda: keras.layers.Conv1D(8, 3), (10, 4), "float32"),
    ("conv2d", lambda: keras.layers.Conv2D(8, 3), (8, 8, 4), "float32"),
    ("conv3d", lambda: keras.layers.Conv3D(4, 2), (4, 4, 4, 4), "float32"),
    ("conv2d_transpose", lambda: keras.layers.Conv2DTranspose(8, 3), (6, 6, 4), "float32"),
    ("depthwise", lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (8, 8, 4), "float32"),
    ("separable", lambda: keras.layers.SeparableConv2D(8, 3), (8, 8, 4), "float32"),
    ("embedding", lambda: keras.layers.Embedding(20, 8), (5,), "int32"),
    ("mha", lambda: keras.layers.MultiHeadAttention(2, 4), (5, 8), "float32"),
    ("lstm", lambda: keras.layers.LSTM(8), (5, 4), "float32"),
    ("gru", lambda: keras.layers.GRU(8), (5, 4), "float32"),
]


def test_ignored_layers_keep_their_weights(fashion_small):
    (x, y), _ = fashion_small
    original = small_cnn()
    model = tfprune.prune_low_magnitude(original, HALF,
                                        ignored_layers=["conv1", original.get_layer("logits")])
    wrapped = sorted(l.name for l in model.layers if isinstance(l, tfprune.PruneLowMagnitude))
    assert wrapped == ["prune_low_magnitude_conv2"]
    # Ignored layers are copies with the trained values, not re-initialized.
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(),
                                  original.get_layer("conv1").kernel.numpy())
    model.compile("adam", LOSS)
    model.fit(x[:256], y[:256], batch_size=64, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    stripped = tfprune.strip_pruning(model)
    assert mask_math.sparsity_of(stripped.get_layer("conv1").kernel.numpy()) == 0.0
    assert mask_math.sparsity_of(stripped.get_layer("conv2").kernel.numpy()) == pytest.approx(0.5, abs=0.01)


def test_global_pruning_meets_the_sparsity_in_total_with_one_threshold(tmp_path, fashion_small):
    (x, y), _ = fashion_small
    schedule = tfprune.ConstantSparsity(0.7, begin_step=1, frequency=1000)  # only at step 1
    model = tfprune.prune_low_magnitude(small_cnn(), schedule, global_pruning=True)
    before = {w.layer.name: w.layer.kernel.numpy() for w in model.layers
              if isinstance(w, tfprune.PruneLowMagnitude)}
    model.compile("sgd", LOSS)
    callback = tfprune.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_train_batch_begin(0)  # the masks of step 1, from the weights above
    pruned = pruned_weights(model)
    total = sum(m.size for pairs in pruned.values() for _, m in pairs)
    zeros = sum(int((m == 0).sum()) for pairs in pruned.values() for _, m in pairs)
    assert zeros == zeros_at(total, 0.7)
    # One threshold: every pruned magnitude is below every kept one, across layers.
    kept, dropped = [], []
    for name, pairs in pruned.items():
        _, mask = pairs[0]
        value = np.abs(before[name.removeprefix("prune_low_magnitude_")])
        kept.append(value[mask == 1])
        dropped.append(value[mask == 0])
    assert np.concatenate(dropped).max() <= np.concatenate(kept).min()
    per_layer = [float((m == 0).mean()) for pairs in pruned.values() for _, m in pairs]
    assert max(per_layer) - min(per_layer) > 0.05  # layers differ; the total is what is fixed
    # Training keeps the masks; the option survives saving.
    model.fit(x[:128], y[:128], batch_size=32, verbose=0, callbacks=[callback])
    path = tmp_path / "global.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert all(w.global_pruning for w in restored.layers if isinstance(w, tfprune.PruneLowMagnitude))
    for name, pairs in pruned_weights(restored).items():
        np.testing.assert_array_equal(pairs[0][1], pruned[name][0][1])


class LayerCoverageTest(parameterized.TestCase):
    @parameterized.named_parameters(*LAYER_CASES)
    def test_every_prunable_layer_reaches_target_and_strips(self, make_layer, shape, dtype):
        rng = np.random.default_rng(0)
        if dtype == "int32":
            x = rng.integers(0, 20, size=(64,) + shape).astype("int32")
        else:
            x = rng.normal(size=(64,) + shape).astype("float32")
        y = rng.integers(0, 3, size=64)
        model = tfprune.prune_low_magnitude(
            _sequence_model(make_layer(), shape, dtype), tfprune.ConstantSparsity(0.5, 0, frequency=1))
        model.compile("adam", LOSS)
        model.fit(x, y, batch_size=16, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
        wrappers = [l for l in model.layers if isinstance(l, tfprune.PruneLowMagnitude)]
        self.assertLen(wrappers, 2)
        for wrapper in wrappers:
            for weight, _ in wrapper.masked_weights:
                self.assertAlmostEqual(mask_math.sparsity_of(weight.numpy()), 0.5,
                                       delta=1.0 / np.prod(weight.shape))
        stripped = tfprune.strip_pruning(model)
        np.testing.assert_allclose(stripped.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0),
                                   rtol=1e-5, atol=1e-5)


def test_block_and_m_by_n_patterns_during_training(fashion_small):
    (x, y), _ = fashion_small
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(8, 3, name="stem")(inputs)
    h = keras.layers.Conv2D(16, 3, name="conv")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(32, name="hidden")(h)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))

    def clone(layer, names, **kwargs):
        if layer.name in names:
            return tfprune.prune_low_magnitude(layer.__class__.from_config(layer.get_config()), **kwargs)
        return layer.__class__.from_config(layer.get_config())

    nm = keras.models.clone_model(model, clone_function=lambda l: clone(
        l, ("conv", "hidden"), pruning_schedule=HALF, sparsity_m_by_n=(2, 4)))
    # Blocks need a matrix (as in tfmot): the Dense kernel, not the 3x3 convolution.
    blocks = keras.models.clone_model(model, clone_function=lambda l: clone(
        l, ("hidden",), pruning_schedule=HALF, block_size=(4, 4)))
    for pruned in (nm, blocks):
        pruned.compile("adam", LOSS)
        pruned.fit(x[:128], y[:128], batch_size=32, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    conv = nm.get_layer("prune_low_magnitude_conv").layer.kernel.numpy()  # (3, 3, 8, 16)
    groups = np.moveaxis(conv, 2, -1).reshape(-1, 4)
    assert ((groups != 0).sum(axis=1) == 2).all()
    dense = nm.get_layer("prune_low_magnitude_hidden").layer.kernel.numpy()  # (16, 32)
    assert ((np.moveaxis(dense, 0, -1).reshape(-1, 4) != 0).sum(axis=1) == 2).all()
    dense = blocks.get_layer("prune_low_magnitude_hidden").layer.kernel.numpy()
    per_block = (dense.reshape(4, 4, 8, 4) != 0).sum(axis=(1, 3))
    assert set(np.unique(per_block)) <= {0, 16}
    assert (per_block == 0).mean() == 0.5


class BadInputTest(parameterized.TestCase):
    def test_block_size_on_a_weight_that_is_not_a_matrix_names_layer(self):
        layer = keras.layers.Conv2D(6, 3, name="spatial")
        layer.build((None, 8, 8, 4))
        with self.assertRaisesRegex(ValueError, "spatial"):
            tfprune.prune_low_magnitude(layer, block_size=(2, 2))
        # As in tfmot, a block that does not divide a matrix is padded, not refused.
        narrow = keras.layers.Dense(6, name="narrow")
        narrow.build((None, 10))
        tfprune.prune_low_magnitude(narrow, block_size=(4, 4))

    def test_m_by_n_with_m_not_below_n_names_the_argument(self):
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="odd")])
        with self.assertRaisesRegex(ValueError, r"sparsity_m_by_n.*0 <= m < n.*\(4, 4\)"):
            tfprune.prune_low_magnitude(model, sparsity_m_by_n=(4, 4))
        tfprune.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))  # 6 inputs: the last group is padded

    def test_already_wrapped(self):
        wrapped = tfprune.prune_low_magnitude(keras.layers.Dense(4, name="twice"))
        with self.assertRaisesRegex(ValueError, "twice.*already wrapped"):
            tfprune.prune_low_magnitude(wrapped)
        # In a model, wrapped layers are kept as they are (as tfmot); see test_prune_inputs.
        model = tfprune.prune_low_magnitude(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
        again = tfprune.prune_low_magnitude(model)
        self.assertEqual([type(l) for l in again.layers], [tfprune.PruneLowMagnitude])

    def test_subclassed_model(self):
        class Net(keras.Model):
            def __init__(self):
                super().__init__(name="net")
                self.dense = keras.layers.Dense(2)

            def call(self, x):
                return self.dense(x)

        with self.assertRaisesRegex(ValueError, "subclassed.*functional"):
            tfprune.prune_low_magnitude(Net())

    def test_unknown_layer_with_weights_names_it_and_the_remedy(self):
        class Scale(keras.layers.Layer):
            def build(self, shape):
                self.scale = self.add_weight(shape=(shape[-1],))

            def call(self, x):
                return x * self.scale

        model = keras.Sequential([keras.Input((4,)), Scale(name="my_scale")])
        with self.assertRaisesRegex(ValueError, "my_scale.*PrunableLayer"):
            tfprune.prune_low_magnitude(model)

    def test_custom_layer_opts_in_with_prunable_layer(self):
        class Scale(keras.layers.Layer, tfprune.PrunableLayer):
            def build(self, shape):
                self.kernel = self.add_weight(shape=(shape[-1], 8))

            def call(self, x):
                return x @ self.kernel

            def get_prunable_weights(self):
                return [self.kernel]

        wrapped = tfprune.prune_low_magnitude(Scale(name="opt_in"), HALF)
        model = keras.Sequential([keras.Input((8,)), wrapped])
        model.compile("sgd", "mse")
        model.fit(np.ones((4, 8)), np.ones((4, 8)), verbose=0, callbacks=[tfprune.UpdatePruningStep()])
        self.assertEqual(mask_math.sparsity_of(wrapped.layer.kernel.numpy()), 0.5)

    def test_ignored_layers_that_are_not_there_or_not_a_model(self):
        with self.assertRaisesRegex(ValueError, r"does not have: \['conv9'\].*summary"):
            tfprune.prune_low_magnitude(small_cnn(), ignored_layers=["conv1", "conv9"])
        with self.assertRaisesRegex(ValueError, "ignored_layers.*applies when pruning a model"):
            tfprune.prune_low_magnitude(keras.layers.Dense(2), ignored_layers=["dense"])
        with self.assertRaisesRegex(ValueError, "layers or layer names.*int"):
            tfprune.prune_low_magnitude(small_cnn(), ignored_layers=[3])

    def test_global_pruning_with_a_pattern(self):
        with self.assertRaisesRegex(ValueError, "global_pruning.*block_size=\\(4, 4\\)"):
            tfprune.prune_low_magnitude(keras.layers.Dense(8), block_size=(4, 4),
                                        global_pruning=True)

    def test_bad_schedule_type(self):
        with self.assertRaisesRegex(ValueError, "pruning_schedule"):
            tfprune.prune_low_magnitude(keras.layers.Dense(2), pruning_schedule=0.5)


def test_pruning_summaries_write_sparsity_scalars(tmp_path, fashion_small):
    import tensorflow as tf

    (x, y), _ = fashion_small
    model = tfprune.prune_low_magnitude(small_cnn(), HALF)
    model.compile("adam", LOSS)
    model.fit(x[:128], y[:128], batch_size=32, verbose=0,
              callbacks=[tfprune.UpdatePruningStep(), tfprune.PruningSummaries(tmp_path)])
    tags = {}
    for root, _, files in os.walk(tmp_path):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                for value in event.summary.value:
                    tags[value.tag] = tf.make_ndarray(value.tensor)
    assert tags["prune_low_magnitude_conv2/kernel/sparsity"] == pytest.approx(0.5, abs=0.01)
    assert "prune_low_magnitude_logits/kernel/threshold" in tags


def test_mirrored_strategy_masks_identical_across_replicas():
    script = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf, keras, tfprune
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        (x, y), _ = tfprune.datasets.load_fashion_mnist()
        x = x[:512, ..., None].astype("float32") / 255.0
        with strategy.scope():
            inputs = keras.Input((28, 28, 1))
            h = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
            h = keras.layers.Flatten()(h)
            model = keras.Model(inputs, keras.layers.Dense(10)(h))
            model = tfprune.prune_low_magnitude(
                model, tfprune.PolynomialDecay(0.0, 0.7, 0, 12, frequency=3))
            model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y[:512], batch_size=32, epochs=1, verbose=0,
                  callbacks=[tfprune.UpdatePruningStep()])
        for layer in model.layers:
            if isinstance(layer, tfprune.PruneLowMagnitude):
                for weight, mask in layer.masked_weights:
                    masks = [v.numpy() for v in mask.value.values]
                    weights = [v.numpy() for v in weight.value.values]
                    assert len(masks) == 2, masks
                    np.testing.assert_array_equal(masks[0], masks[1])
                    np.testing.assert_array_equal(weights[0], weights[1])
                    assert abs((weights[0] == 0).mean() - 0.7) < 0.01, (weights[0] == 0).mean()
                    assert np.all(weights[0][masks[0] == 0] == 0)
        print("MIRRORED_OK")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert "MIRRORED_OK" in result.stdout, result.stderr[-3000:]


def test_importing_the_packages_does_not_import_tfmot_or_tf_keras():
    script = (
        "import sys, tfprune, tflite_export\n"
        "bad = [m for m in ('tensorflow_model_optimization', 'tf_keras') if m in sys.modules]\n"
        "assert not bad, bad\nprint('IMPORT_OK')\n"
    )
    # Importing tfmot elsewhere in this process sets TF_USE_LEGACY_KERAS=1; a user's
    # fresh process does not have it.
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, env=env)
    assert "IMPORT_OK" in result.stdout, result.stderr[-2000:]
