"""Dense and EinsumDense handlers: channels, shrink and MACs on small models."""

import math

import keras
import numpy as np
import pytest

import tfprune
from handler_checks import group_of, prune_and_shrink
from tfprune.dependency import DependencyGraph
from tfprune.dependency.macs import site_macs
from tfprune.dependency.trace import trace
from tfprune.handlers import Unsupported, handler_for

L = keras.layers


def _einsum_macs(site):
    """Free input axes (batch 1) times the kernel: every index combination once."""
    layer = site.layer
    letters = layer.equation.split(",")[0].replace("...", "")
    shape = (1,) + tuple(site.inputs[0].shape)[1:]
    named = dict(zip(letters, shape[len(shape) - len(letters):]))
    elided = shape[:len(shape) - len(letters)]
    kernel_letters = layer.equation.split(",")[1].split("->")[0]
    free = [size for letter, size in named.items() if letter not in kernel_letters]
    return math.prod(elided) * math.prod(free) * math.prod(layer.kernel.shape)


def _einsum_chain():
    inp = keras.Input((5, 4))
    x = L.EinsumDense("abc,cd->abd", output_shape=(5, 8), bias_axes="d", activation="relu",
                      name="proj")(inp)
    x = L.EinsumDense("abc,cde->abde", output_shape=(5, 2, 6), bias_axes="de",
                      name="heads")(x)
    x = L.EinsumDense("abcd,cde->abe", output_shape=(5, 7), bias_axes="e", name="merge")(x)
    x = L.EinsumDense("...b,bc->...c", output_shape=6, name="elided")(x)
    x = L.EinsumDense("abc,cde->abde", output_shape=(5, 3, 5), bias_axes="d",
                      name="split")(x)
    x = L.Reshape((5, 15))(x)
    x = L.Dense(9, activation="gelu", name="dense")(x)
    x = L.GlobalAveragePooling1D()(x)
    x = L.EinsumDense("ab,bc->ac", output_shape=4, name="plain")(x)
    return keras.Model(inp, L.Dense(2, name="head")(x))


def test_einsum_equations_link_in_and_out_channels():
    graph = DependencyGraph(_einsum_chain())
    pairs = [("proj", "heads"), ("heads", "merge"), ("merge", "elided"), ("elided", "split"),
             ("dense", "plain"), ("plain", "head")]
    for producer, consumer in pairs:
        group = group_of(graph, producer, "out")
        assert group is group_of(graph, consumer, "in") and group.prunable
    # "abc,cde->abde": e is the channel axis, d (2 heads) is not.
    assert group_of(graph, "heads", "out").size == 6
    # "abcd,cde->abe" reads the input's last axis d through kernel axis 1.
    merge_in = [m for m in group_of(graph, "heads", "out").members
                if m.layer.name == "merge"]
    assert [m.axis for m in merge_in] == [1]
    # Reshape((5, 15)) merges split's (3, 5): its 5 channels repeat 3 times.
    split = group_of(graph, "split", "out")
    assert split.size == 5 and group_of(graph, "dense", "in") is split
    assert "kept: model input" in graph.summary()


def test_einsum_prune_and_shrink_is_exact_and_rewrites_output_shape():
    model = _einsum_chain()
    x = np.random.default_rng(1).normal(size=(3, 5, 4)).astype("float32")
    pruner, keep, small = prune_and_shrink(model, x)
    graph = pruner.graph
    kept = {name: int(keep[group_of(graph, name, "out").id].sum())
            for name in ("proj", "heads", "merge", "elided", "split", "plain")}
    assert small.get_layer("proj").kernel.shape == (4, kept["proj"])
    assert small.get_layer("heads").kernel.shape == (kept["proj"], 2, kept["heads"])
    assert small.get_layer("heads").bias.shape == (2, kept["heads"])
    assert small.get_layer("merge").kernel.shape == (2, kept["heads"], kept["merge"])
    assert small.get_layer("split").bias.shape == (3, 1)  # bias over d only
    assert small.get_layer("split").get_config()["output_shape"][-1] == kept["split"]
    assert small.get_layer("plain").get_config()["output_shape"][-1] == kept["plain"]
    assert small.get_layer("dense").kernel.shape[0] == 3 * kept["split"]
    # MACs: every einsum site counts free input axes times its kernel.
    for m in (model, small):
        sites = [s for s in trace(m).sites if isinstance(s.layer, L.EinsumDense)]
        assert len(sites) == 6
        for site in sites:
            assert site_macs(site) == _einsum_macs(site)
    assert tfprune.count_macs(small) < tfprune.count_macs(model)


def test_einsum_macs_count_elided_axes():
    inp = keras.Input((3, 4, 5))
    out = L.EinsumDense("...b,bc->...c", output_shape=6)(inp)
    site = trace(keras.Model(inp, out)).sites[0]
    assert site_macs(site) == 3 * 4 * 5 * 6 == _einsum_macs(site)


def test_dense_on_sequences_shrinks_with_macs():
    inp = keras.Input((6, 5))
    x = L.Dense(8, activation="relu", name="a")(inp)
    x = L.Dense(7, name="b")(x)
    out = L.Dense(3, name="head")(L.Flatten()(x))
    model = keras.Model(inp, out)
    x = np.random.default_rng(2).normal(size=(2, 6, 5)).astype("float32")
    pruner, keep, small = prune_and_shrink(model, x)
    kept_a = int(keep[group_of(pruner.graph, "a", "out").id].sum())
    kept_b = int(keep[group_of(pruner.graph, "b", "out").id].sum())
    assert small.get_layer("b").kernel.shape == (kept_a, kept_b)
    assert tfprune.count_macs(small) == 6 * (5 * kept_a + kept_a * kept_b) + 6 * kept_b * 3


@pytest.mark.parametrize("equation, output_shape, reason", [
    # The output's last axis is an input axis: channels move to another axis.
    ("abc,cd->adb", (4, 5), "output's last axis 'b' is not a kernel axis of its own"),
    # An ellipsis on the right: the input's last axis is not named.
    ("ab...,bc->ac...", (4,), "only 'abc,cd->abd' and '...b,bc->...c' forms"),
])
def test_einsum_equations_it_cannot_reason_about_keep_their_channels(
        equation, output_shape, reason):
    inp = keras.Input((5, 3))
    x = L.Dense(4, name="feed")(inp)
    x = L.EinsumDense(equation, output_shape=output_shape, name="odd")(x)
    model = keras.Model(inp, L.Dense(2)(L.Flatten()(x)))
    graph = DependencyGraph(model)
    group = group_of(graph, "feed", "out")
    assert not group.prunable
    assert any(reason in r and "EinsumDense 'odd'" in r for r in group.reasons)
    layer = model.get_layer("odd")
    with pytest.raises(Unsupported, match="not a kernel axis|forms"):
        handler_for(layer).layout(layer)


def test_einsum_softmax_keeps_output_channels_and_lora_keeps_all():
    inp = keras.Input((4,))
    x = L.Dense(6, name="feed")(inp)
    x = L.EinsumDense("ab,bc->ac", output_shape=5, activation="softmax", name="soft")(x)
    out = L.Dense(2)(x)
    graph = DependencyGraph(keras.Model(inp, out))
    assert group_of(graph, "feed", "out").prunable  # input channels still go
    soft = group_of(graph, "soft", "out")
    assert any("activation softmax mixes output channels" in r for r in soft.reasons)

    layer = L.EinsumDense("ab,bc->ac", output_shape=5)
    layer.build((None, 4))
    layer.enable_lora(2)
    with pytest.raises(Unsupported, match="LoRA"):
        handler_for(layer).layout(layer)
