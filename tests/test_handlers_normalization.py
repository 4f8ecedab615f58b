"""Normalization handlers: group, layer (centred and rms_scaling), RMS and unit
normalization compute their statistics over kept channels only, so the masked
model is what the thinner one computes."""

import keras
import numpy as np
import pytest

from handler_checks import group_of, prune_and_shrink
from tfprune.dependency import DependencyGraph
from tfprune.handlers import handler_for

L = keras.layers
# Keras 3 deprecates LayerNormalization(rms_scaling=True) (it divides by the
# standard deviation, not the RMS) but still runs it; tfprune must match it.
pytestmark = pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`:UserWarning")


def _rms_layer_norm(**kwargs):
    return L.LayerNormalization(rms_scaling=True, **kwargs)


def _image(seed=1):
    return np.random.default_rng(seed).normal(size=(2, 6, 6, 3)).astype("float32")


def _group_norm_model():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(12, 3, padding="same", name="c1")(inp)
    x = L.GroupNormalization(groups=3, name="gn3")(x)
    x = L.Conv2D(8, 1, name="c2")(x)
    x = L.GroupNormalization(groups=-1, name="instance")(x)  # one channel per group
    x = L.Conv2D(6, 1, name="c3")(x)
    x = L.GroupNormalization(groups=1, center=False, name="gn1")(x)
    x = L.Conv2D(6, 1, name="c4")(x)
    # A removed channel carries a constant here: statistics must skip it.
    x = L.Activation("hard_sigmoid")(x)
    x = L.GroupNormalization(groups=2, scale=False, center=False, name="bare")(x)
    return keras.Model(inp, L.Conv2D(2, 1, name="head")(x))


def test_group_normalization_links_channel_j_of_every_group():
    graph = DependencyGraph(_group_norm_model())
    gn3 = group_of(graph, "c1", "out")
    assert gn3 is group_of(graph, "gn3", "channel") and gn3.size == 4
    member = [m for m in gn3.members if m.layer.name == "gn3" and m.variable.name == "gamma"][0]
    # Group channel k is within-group index k of all 3 groups of 4.
    for k in range(4):
        np.testing.assert_array_equal(np.sort(member.indices[member.channels == k]),
                                      [k, k + 4, k + 8])
    assert group_of(graph, "instance", "channel").size == 8
    assert group_of(graph, "gn1", "channel").size == 6
    assert group_of(graph, "bare", "channel").size == 3
    assert "gn3[channel]" in graph.summary()


def test_group_normalization_prunes_and_shrinks_exactly():
    model = _group_norm_model()
    pruner, keep, small = prune_and_shrink(model, _image())
    kept = {name: int(keep[group_of(pruner.graph, name, "channel").id].sum())
            for name in ("gn3", "instance", "gn1", "bare")}
    assert small.get_layer("gn3").groups == 3
    assert small.get_layer("gn3").gamma.shape == (3 * kept["gn3"],)
    assert small.get_layer("instance").groups == kept["instance"]
    assert small.get_layer("gn1").groups == 1
    assert small.get_layer("bare").groups == 2
    assert small.get_layer("c4").kernel.shape[-1] == 2 * kept["bare"]
    assert small.count_params() < model.count_params()


def test_masked_calls_match_keras_with_every_channel_kept():
    rng = np.random.default_rng(4)
    x = rng.normal(1.0, 3.0, size=(2, 5, 5, 6)).astype("float32")
    for layer in (L.GroupNormalization(groups=3), _rms_layer_norm(), L.LayerNormalization(),
                  L.RMSNormalization(), L.UnitNormalization()):
        layer.build(x.shape)
        if layer.weights:
            layer.set_weights([rng.normal(size=w.shape).astype("float32")
                               for w in layer.weights])
        masks = {"channel": np.ones(6, "float32")}
        got = handler_for(layer).masked_call(layer, masks, x)
        np.testing.assert_allclose(np.asarray(got), np.asarray(layer(x)), rtol=1e-5,
                                   atol=1e-5, err_msg=type(layer).__name__)


def test_rms_scaled_layer_norm_in_residual_streams():
    inp = keras.Input((5, 4))
    stream = L.Dense(8, name="embed")(inp)
    for i in range(2):
        h = _rms_layer_norm(name=f"norm{i}")(stream)
        h = L.Dense(16, activation="gelu", name=f"up{i}")(h)
        h = L.Dense(8, name=f"down{i}")(h)
        stream = L.Add()([stream, h])
    x = L.RMSNormalization(name="rms")(stream)
    x = L.UnitNormalization(name="unit")(L.Dense(6, name="proj")(x))
    x = _rms_layer_norm(scale=False, name="bare")(x)
    model = keras.Model(inp, L.Dense(2, name="head")(L.GlobalAveragePooling1D()(x)))
    graph = DependencyGraph(model)
    stream_group = group_of(graph, "embed", "out")
    assert {"norm0[channel]", "down0[out]", "norm1[channel]", "down1[out]", "rms[channel]",
            "proj[in]"} <= set(stream_group.layer_names())
    assert group_of(graph, "proj", "out") is group_of(graph, "bare", "channel")
    x = np.random.default_rng(2).normal(size=(3, 5, 4)).astype("float32")
    for seed in range(3):
        pruner, keep, small = prune_and_shrink(model, x, seed=seed)
        width = int(keep[group_of(pruner.graph, "embed", "out").id].sum())
        assert small.get_layer("norm1").gamma.shape == (width,)
        assert small.get_layer("norm1").rms_scaling
        assert small.get_layer("rms").scale.shape == (width,)


def test_statistics_over_other_axes_and_constants_keep_channels():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(6, 1, name="a")(inp)
    x = L.GroupNormalization(groups=3, axis=1, name="rows")(x)
    y = L.Conv2D(4, 1, name="b")(inp)
    norm = L.Normalization(name="norm")
    norm.build((None, 6, 6, 4))
    y = norm(y)
    out = L.Concatenate()([L.Conv2D(2, 1)(x), L.Conv2D(2, 1)(y)])
    graph = DependencyGraph(keras.Model(inp, out))
    rows = group_of(graph, "a", "out")
    assert not rows.prunable
    assert any("GroupNormalization 'rows': normalizes over axis 1" in r for r in rows.reasons)
    constants = group_of(graph, "b", "out")
    assert any("holds per-channel mean and variance constants" in r
               for r in constants.reasons)
    with pytest.raises(ValueError, match="cannot lose"):
        graph.full_keep({constants.id: np.arange(constants.size) > 0})
