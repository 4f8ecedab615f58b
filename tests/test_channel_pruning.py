"""prune_channels: masks on a schedule, importance, options, training, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune.channel_pruning import kept_count

L = keras.layers


def _rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def small_cnn(ln=False, bn_scale=True, name="cnn"):
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(16, 3, padding="same", name="c1")(inp)
    x = L.BatchNormalization(scale=bn_scale, name="bn1")(x)
    x = L.ReLU()(x)
    y = L.Conv2D(24, 1, name="c2")(x)
    y = L.BatchNormalization(scale=bn_scale, name="bn2")(y)
    y = L.Activation("hard_sigmoid")(y)
    y = L.Conv2D(16, 3, padding="same", name="c3")(y)
    x = L.Add()([x, y])
    if ln:
        x = L.LayerNormalization(epsilon=1e-6, name="ln")(x)
    x = L.Conv2D(12, 3, strides=2, name="c4")(x)
    x = L.Flatten()(x)
    x = L.Dense(20, activation="relu", name="d1")(x)
    out = L.Dense(5, name="logits")(x)
    return keras.Model(inp, out, name=name)


def _wrapper(model, name):
    return [l for l in model.layers if isinstance(l, tfprune.PruneChannels)
            and l.layer.name == name][0]


def _x(n=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 3)).astype("float32")


@pytest.mark.parametrize("ln", [False, True])
def test_one_shot_prune_and_shrink_is_exact(ln):
    model = small_cnn(ln=ln)
    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.5, 0))
    small = tfprune.shrink(pruned)
    x = _x()
    assert _rel_err(pruned(x), small(x)) <= 1e-5
    assert small.count_params() < model.count_params()
    assert tfprune.count_macs(small) < tfprune.count_macs(model)
    assert small.output_shape == model.output_shape
    assert not any(isinstance(l, tfprune.PruneChannels) for l in small.layers)
    # Half of c1's 16 channels (shared with c3 through the Add) are gone.
    assert small.get_layer("c1").filters == 8 and small.get_layer("c3").filters == 8
    assert small.get_layer("c2").filters == 12 and small.get_layer("d1").units == 10
    # The original model is untouched.
    assert model.get_layer("c1").filters == 16
    assert np.count_nonzero(model.get_layer("c1").kernel.numpy()) == 3 * 3 * 3 * 16


def test_dead_channel_is_dead_on_both_sides():
    pruned = tfprune.prune_channels(small_cnn(bn_scale=False), tfprune.ConstantSparsity(0.5, 0))
    c2, bn2, c3 = (_wrapper(pruned, n) for n in ("c2", "bn2", "c3"))
    out_mask = c2.channel_masks()["out"]
    dead = np.nonzero(out_mask == 0)[0]
    assert dead.size == 12
    assert not c2.layer.kernel.numpy()[..., dead].any()
    assert not c2.layer.bias.numpy()[dead].any()
    assert not bn2.layer.beta.numpy()[dead].any()
    assert not c3.layer.kernel.numpy()[:, :, dead, :].any()


def test_round_to_and_no_group_emptied():
    assert kept_count(24, 0.5, 8) == 16 and kept_count(24, 0.9, 8) == 8
    assert kept_count(6, 0.5, 8) == 6 and kept_count(3, 0.99, 1) == 1
    pruned = tfprune.prune_channels(small_cnn(), tfprune.ConstantSparsity(0.6, 0), round_to=8)
    pruner = tfprune.get_channel_pruner(pruned)
    keep = pruner.graph.group_keep(pruner.current_keep())
    for group in pruner.groups:
        kept = int(keep[group.id].sum())
        assert kept >= 1 and (kept % 8 == 0 or kept == group.size)
    small = tfprune.shrink(pruned)
    assert small.get_layer("c2").filters == 8
    assert _rel_err(pruned(_x()), small(_x())) <= 1e-5


def test_global_pruning_ranks_across_groups():
    model = small_cnn()
    # Make 20 of c2's 24 filters tiny next to the other 4: ranked by score
    # over the group's mean, global ranking takes most channels there.
    c2 = model.get_layer("c2")
    kernel = c2.kernel.numpy()
    kernel[..., 4:] *= 1e-3
    c2.kernel.assign(kernel)
    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.3, 0), importance="l2",
                                    global_pruning=True)
    pruner = tfprune.get_channel_pruner(pruned)
    keep = pruner.graph.group_keep(pruner.current_keep())
    total = sum(g.size for g in pruner.groups)
    kept = sum(int(keep[g.id].sum()) for g in pruner.groups)
    assert abs((total - kept) / total - 0.3) < 0.05
    assert int(_wrapper(pruned, "c2").channel_masks()["out"].sum()) < 24 * 0.7


def test_importances_pick_the_expected_channels():
    model = small_cnn()
    c2 = model.get_layer("c2")
    kernel = np.ones(c2.kernel.shape, np.float32)
    kernel[..., :6] = 0.01  # weakest filters
    c2.kernel.assign(kernel)
    bn2 = model.get_layer("bn2")
    gamma = np.ones(24, np.float32)
    gamma[-6:] = 0.0  # least scaled channels
    bn2.gamma.assign(gamma)
    for importance, expected in (("l1", slice(0, 6)), ("l2", slice(0, 6)),
                                 ("bn_scale", slice(18, 24))):
        pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.25, 0),
                                        importance=importance)
        mask = _wrapper(pruned, "c2").channel_masks()["out"]
        assert not mask[expected].any(), importance

    def by_index(group):
        return -np.arange(group.size, dtype=float)  # keep the first channels

    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.5, 0), importance=by_index)
    mask = _wrapper(pruned, "c2").channel_masks()["out"]
    np.testing.assert_array_equal(mask, np.arange(24) < 12)


def test_bn_scale_without_gamma_falls_back_and_says_so():
    pruned = tfprune.prune_channels(small_cnn(bn_scale=False), tfprune.ConstantSparsity(0.5, 0),
                                    importance="bn_scale")
    text = tfprune.get_channel_pruner(pruned).summary()
    assert "bn_scale -> l2" in text and "scale=False" in text


def test_gradual_pruning_in_fit_then_exact_shrink(tmp_path):
    model = small_cnn(ln=True)
    schedule = tfprune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=6, frequency=2)
    pruned = tfprune.prune_channels(model, schedule, importance="taylor")
    pruned.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    x = _x(32, seed=1)
    y = np.random.default_rng(1).integers(0, 5, size=32)
    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    c2 = _wrapper(pruned, "c2")
    mask = c2.channel_masks()["out"]
    assert int(mask.sum()) == 12
    # The optimizer kept dead weights at zero (constraint), through Adam.
    assert not c2.layer.kernel.numpy()[..., mask == 0].any()
    small = tfprune.shrink(pruned)
    assert _rel_err(pruned(x), small(x)) <= 1e-5

    # Masks survive save/load and shrink the same.
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    assert _rel_err(small(x), tfprune.shrink(loaded)(x)) <= 1e-5


def test_taylor_probe_holds_the_mask_gradient():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    inp = keras.Input((5,))
    out = L.Dense(1, name="o")(L.Dense(6, name="d")(inp))
    model = keras.Model(inp, out)
    with tf.GradientTape() as tape:
        h = model.get_layer("d")(x)
        tape.watch(h)
        loss = keras.losses.MeanSquaredError()(y, model.get_layer("o")(h))
    expected = np.abs((h.numpy() * tape.gradient(loss, h).numpy()).sum(axis=0))
    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.5, begin_step=100),
                                    importance="taylor")
    pruned.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse", jit_compile=True)
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    wrapper = _wrapper(pruned, "d")
    # Step 2 accumulated step 1's |dL/dmask|; the probe holds step 2's.
    got = wrapper.taylor_scores() + np.abs(wrapper.taylor_probe.numpy())
    np.testing.assert_allclose(got, 2 * expected, rtol=1e-4)


def test_ignored_layers_and_outputs_are_kept():
    model = small_cnn()
    schedule = tfprune.ConstantSparsity(0.5, 0)
    small = tfprune.shrink(tfprune.prune_channels(model, schedule, ignored_layers=["c2"]))
    # c2 keeps its outputs and its inputs, so the group of c1 (and c3) stays too.
    assert small.get_layer("c2").filters == 24 and small.get_layer("c1").filters == 16
    assert small.get_layer("d1").units == 10 and small.get_layer("logits").units == 5
    small = tfprune.shrink(tfprune.prune_channels(model, schedule,
                                                  ignored_layers=[model.get_layer("d1")]))
    assert small.get_layer("d1").units == 20 and small.get_layer("c4").filters == 12
    assert small.get_layer("c2").filters == 12
    with pytest.raises(ValueError, match="'nope'"):
        tfprune.prune_channels(model, schedule, ignored_layers=["nope"])


def test_sequential_models_work():
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(8, 3), L.BatchNormalization(),
                              L.ReLU(), L.GlobalAveragePooling2D(), L.Dense(3)])
    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.5, 0))
    small = tfprune.shrink(pruned)
    assert _rel_err(pruned(_x()), small(_x())) <= 1e-5
    assert small.layers[1].filters == 4


def test_bad_input_is_rejected_clearly():
    class Sub(keras.Model):
        def call(self, x):
            return x

    schedule = tfprune.ConstantSparsity(0.5, 0)
    with pytest.raises(ValueError, match="subclassed"):
        tfprune.prune_channels(Sub(), schedule)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        tfprune.prune_channels(small_cnn(), tfprune.ConstantSparsity(1.5, 0))
    with pytest.raises(ValueError, match="PruningSchedule"):
        tfprune.prune_channels(small_cnn(), 0.5)
    with pytest.raises(ValueError, match="round_to"):
        tfprune.prune_channels(small_cnn(), schedule, round_to=0)
    with pytest.raises(ValueError, match="importance"):
        tfprune.prune_channels(small_cnn(), schedule, importance="l3")
    pruned = tfprune.prune_channels(small_cnn(), schedule)
    with pytest.raises(ValueError, match="already wrapped"):
        tfprune.prune_channels(pruned, schedule)
    with pytest.raises(ValueError, match="sparsity"):
        tfprune.get_channel_pruner(pruned).decide(1.0)


def test_shrink_strips_unstructured_wrappers_too():
    model = small_cnn()
    pruned = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5, 0))
    small = tfprune.shrink(pruned)
    stripped = tfprune.strip_pruning(pruned)
    assert small.count_params() == model.count_params()
    assert _rel_err(stripped(_x()), small(_x())) <= 1e-6


def test_channels_first_model_warns_that_nothing_can_be_pruned(caplog):
    import logging

    inputs = keras.Input((3, 8, 8))
    x = keras.layers.Conv2D(8, 3, data_format="channels_first", name="c1")(inputs)
    x = keras.layers.Conv2D(8, 3, data_format="channels_first", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(data_format="channels_first")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    with caplog.at_level(logging.WARNING):
        tfprune.prune_channels(model, tfprune.ConstantSparsity(0.5, 0))
    messages = [r.getMessage() for r in caplog.records if "no channel group" in r.getMessage()]
    assert len(messages) == 1 and "channels_first" in messages[0] and "'c1'" in messages[0]
