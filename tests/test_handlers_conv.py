"""Convolution handlers on sequence models: Conv1D (causal, dilated, strided),
SeparableConv1D and DepthwiseConv1D, with BatchNormalization and pooling."""

import math

import keras
import numpy as np
import pytest

import tfprune
from handler_checks import group_of, prune_and_shrink
from tfprune import surgery
from tfprune.dependency import DependencyGraph
from tfprune.dependency.macs import site_macs
from tfprune.dependency.trace import trace

L = keras.layers


def _conv_macs(site):
    """Output positions (batch 1) times the weights each position reads."""
    layer = site.layer
    positions = math.prod(site.outputs[0].shape[1:-1])
    if isinstance(layer, L.SeparableConv1D):
        return positions * (math.prod(layer.depthwise_kernel.shape)
                            + math.prod(layer.pointwise_kernel.shape))
    return positions * math.prod(layer.kernel.shape)


def _sequence_model():
    inp = keras.Input((24, 5))
    x = L.Conv1D(8, 3, padding="causal", dilation_rate=2, name="causal")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    x = L.MaxPooling1D(2)(x)
    x = L.Conv1D(10, 3, padding="same", dilation_rate=3, activation="relu", name="dilated")(x)
    x = L.SeparableConv1D(6, 3, padding="same", depth_multiplier=2, name="separable")(x)
    x = L.DepthwiseConv1D(3, strides=2, padding="valid", name="depthwise")(x)
    x = L.Conv1D(7, 2, strides=2, name="strided")(x)
    x = L.AveragePooling1D(2, padding="same")(x)
    x = L.GlobalAveragePooling1D()(x)
    x = L.Dense(6, activation="relu", name="fc")(x)
    return keras.Model(inp, L.Dense(3, name="head")(x))


def test_sequence_model_groups():
    graph = DependencyGraph(_sequence_model())
    causal = group_of(graph, "causal", "out")
    assert {"causal[out]", "bn[channel]", "dilated[in]"} <= set(causal.layer_names())
    assert causal.prunable and causal.size == 8
    separable = group_of(graph, "dilated", "out")
    # The separable conv's depthwise half ("mid", 2 per input channel) goes with its input.
    assert separable is group_of(graph, "separable", "mid")
    mid = [m for m in separable.members if m.slot == "mid"][0]
    np.testing.assert_array_equal(np.sort(mid.channels), np.repeat(np.arange(10), 2))
    # Depthwise: the separable conv's outputs, the depthwise in and out are one group.
    depthwise = group_of(graph, "separable", "out")
    assert depthwise is group_of(graph, "depthwise", "out")
    assert depthwise is group_of(graph, "strided", "in")
    assert "kept: feeds model output" in graph.summary()


def test_sequence_model_prunes_and_shrinks_exactly_with_fewer_macs():
    model = _sequence_model()
    x = np.random.default_rng(1).normal(size=(2, 24, 5)).astype("float32")
    pruner, keep, small = prune_and_shrink(model, x)
    kept = {name: int(keep[group_of(pruner.graph, name, "out").id].sum())
            for name in ("causal", "dilated", "separable", "strided")}
    assert small.get_layer("causal").kernel.shape == (3, 5, kept["causal"])
    assert small.get_layer("bn").moving_mean.shape == (kept["causal"],)
    assert small.get_layer("separable").depthwise_kernel.shape == (3, kept["dilated"], 2)
    assert small.get_layer("separable").pointwise_kernel.shape == (
        1, 2 * kept["dilated"], kept["separable"])
    assert small.get_layer("depthwise").kernel.shape == (3, kept["separable"], 1)
    assert small.get_layer("causal").padding == "causal"
    assert small.get_layer("dilated").dilation_rate == (3,)
    for m in (model, small):
        for site in trace(m).sites:
            if isinstance(site.layer, (L.Conv1D, L.SeparableConv1D, L.DepthwiseConv1D)):
                assert site_macs(site) == _conv_macs(site)
    assert tfprune.count_macs(small) < tfprune.count_macs(model)


def test_grouped_conv1d_keeps_groups_even():
    inp = keras.Input((12, 4))
    x = L.Conv1D(9, 3, padding="same", name="a")(inp)
    x = L.Conv1D(6, 3, groups=3, padding="causal", name="grouped")(x)
    x = L.GlobalMaxPooling1D()(x)
    model = keras.Model(inp, L.Dense(2)(x))
    graph = DependencyGraph(model)
    assert group_of(graph, "a", "out").size == 3  # index j of each of 3 groups
    assert group_of(graph, "grouped", "out").size == 2
    x = np.random.default_rng(3).normal(size=(2, 12, 4)).astype("float32")
    _, _, small = prune_and_shrink(model, x, seed=3)
    assert small.get_layer("grouped").groups == 3


def test_channel_mixing_activation_and_channels_first_are_blocked():
    inp = keras.Input((10, 4))
    x = L.Conv1D(6, 3, name="feed")(inp)
    x = L.Conv1D(5, 3, activation="softmax", name="soft")(x)
    y = L.Conv1D(5, 1, data_format="channels_first", name="first")(x)
    model = keras.Model(inp, L.Dense(2)(L.Flatten()(y)))
    graph = DependencyGraph(model)
    soft = group_of(graph, "soft", "out")
    assert not soft.prunable
    assert any("activation softmax mixes output channels" in r for r in soft.reasons)
    assert any("data_format='channels_first'" in r for r in soft.reasons)
    # The softmax conv's input channels are still its kernel's to drop.
    assert group_of(graph, "feed", "out").prunable
    assert any(r.startswith("Conv1D 'first'") for r in soft.reasons)
    with pytest.raises(ValueError, match="cannot lose"):
        surgery.rebuild(graph, {soft.id: np.arange(soft.size) > 0})
