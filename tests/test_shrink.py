"""Shrink from explicit channel masks: the thinner model computes the masked one."""

import keras
import numpy as np
import pytest

from tfprune import surgery
from tfprune.dependency import DependencyGraph, count_macs

L = keras.layers


def zero_masked(graph, keep):
    """Zeroes the weights that channel masks would zero (no LayerNormalization)."""
    full = graph.full_keep(keep)
    for layer, layout in graph.layouts():
        values = {id(v): np.array(v.numpy()) for v in layer.weights}
        for entry in layout.axes:
            if not entry.maskable:
                continue
            flags = full[graph.channel_of(graph.slot_elements(layer, entry.slot))]
            shape = [1] * values[id(entry.variable)].ndim
            shape[entry.axis] = -1
            values[id(entry.variable)] *= flags.astype(np.float32).reshape(shape)
        for v in layer.weights:
            v.assign(values[id(v)])


def random_keep(graph, rng, fraction=0.5):
    keep = {}
    for group in graph.prunable_groups:
        flags = rng.random(group.size) > fraction
        flags[rng.integers(group.size)] = True
        keep[group.id] = flags
    return keep


def assert_equivalent(model, x, seed=0):
    graph = DependencyGraph(model)
    keep = random_keep(graph, np.random.default_rng(seed))
    assert keep, "nothing to prune"
    zero_masked(graph, keep)
    small = surgery.rebuild(graph, keep)
    expected, got = np.asarray(model(x)), np.asarray(small(x))
    scale = max(float(np.abs(expected).max()), 1e-12)
    assert float(np.abs(expected - got).max()) / scale <= 1e-5
    assert small.count_params() < model.count_params()
    return small


def _x(shape, seed=1):
    return np.random.default_rng(seed).normal(size=(2,) + shape).astype("float32")


def test_conv_bn_residual_concat_se_flatten():
    inp = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, padding="same")(inp)
    x = L.BatchNormalization()(x)
    y = L.ReLU()(x)
    y = L.Conv2D(8, 3, padding="same")(y)
    x = x + y
    z = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    x = L.Concatenate()([x, z])
    x = L.Conv2D(6, 1)(x)
    x = L.SeparableConv2D(6, 3, depth_multiplier=2)(x)
    x = L.Conv2D(12, 3, groups=3)(x)
    x = L.Conv2D(12, 3, groups=12)(x)
    s = L.GlobalAveragePooling2D()(x)
    s = L.Reshape((1, 1, 12))(s)
    s = L.Conv2D(12, 1, activation="sigmoid")(s)
    x = L.Multiply()([x, s])
    x = L.Flatten()(x)
    out = L.Dense(5)(x)
    model = keras.Model(inp, out)
    small = assert_equivalent(model, _x((12, 12, 3)))
    assert count_macs(small) < count_macs(model)


def test_bn_without_scale_leaks_nothing():
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(6, 1)(inp)
    x = L.BatchNormalization(scale=False, beta_initializer="ones")(x)
    x = L.Activation("hard_sigmoid")(x)  # a removed channel carries a constant here
    out = L.Conv2D(2, 1)(x)
    assert_equivalent(keras.Model(inp, out), _x((6, 6, 3)))


def test_1d_3d_transpose_and_pass_through_layers():
    inp = keras.Input((10, 4))
    x = L.Conv1D(6, 3, padding="same")(inp)
    x = L.PReLU(shared_axes=[1])(x)
    x = L.ZeroPadding1D(1)(x)
    x = L.Cropping1D(1)(x)
    x = L.UpSampling1D(2)(x)
    x = L.SeparableConv1D(6, 3, padding="same")(x)
    x = L.DepthwiseConv1D(3, padding="same")(x)
    x = L.Conv1DTranspose(5, 3, strides=2)(x)
    x = L.Dropout(0.5)(x)
    x = L.Dense(7)(x)  # Dense on a sequence: last axis
    x = L.GlobalMaxPooling1D()(x)
    out = L.Dense(2)(x)
    assert_equivalent(keras.Model(inp, out), _x((10, 4)))

    inp = keras.Input((4, 4, 4, 2))
    x = L.Conv3D(5, 2, padding="same")(inp)
    x = L.Activation("gelu")(x)
    x = L.AveragePooling3D(2)(x)
    x = L.Conv3D(4, 1)(x)
    x = L.GlobalAveragePooling3D()(x)
    out = L.Dense(2)(x)
    assert_equivalent(keras.Model(inp, out), _x((4, 4, 4, 2)))

    inp = keras.Input((5, 5, 3))
    x = L.Conv2DTranspose(6, 3, strides=2)(inp)
    x = L.ELU()(x)
    x = L.MaxPooling2D()(x)
    out = L.Conv2D(2, 1)(x)
    assert_equivalent(keras.Model(inp, out), _x((5, 5, 3)))


def test_merges_ops_and_constants():
    inp = keras.Input((6, 6, 3))
    a = L.Conv2D(6, 1)(inp)
    b = L.Conv2D(6, 1)(inp)
    c = L.Conv2D(6, 1)(inp)
    x = L.Subtract()([a, b])
    x = L.Maximum()([x, c])
    x = L.Average()([x, a])
    x = L.Minimum()([x, b])
    x = keras.ops.relu6(x + 3.0) * (1.0 / 6.0)
    x = x / 2.0
    x = L.Concatenate(axis=1)([x, a])  # not the channel axis: operands coupled
    out = L.Conv2D(2, 1)(x)
    small = assert_equivalent(keras.Model(inp, out), _x((6, 6, 3)))
    assert any(not isinstance(op, L.Layer) for op in small.operations)


def test_embedding_and_nested_models_are_flattened():
    inner_in = keras.Input((5,))
    inner_out = L.Dense(3, name="inner_dense")(L.Dense(8, name="inner_a")(inner_in))
    inner = keras.Model(inner_in, inner_out, name="inner")
    inp = keras.Input((4,), dtype="int32")
    x = L.Embedding(10, 6)(inp)
    x = L.Dense(5)(x)
    x = L.GlobalAveragePooling1D()(x)
    out = inner(x)
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).integers(0, 10, size=(3, 4)).astype("int32")
    small = assert_equivalent(model, x)
    assert "inner_a" in [layer.name for layer in small.layers]


def test_invalid_keep_is_rejected():
    inp = keras.Input((4, 4, 3))
    x = L.Conv2D(4, 1, name="a")(inp)
    out = L.Conv2D(2, 1, name="head")(x)
    graph = DependencyGraph(keras.Model(inp, out))
    group = graph.prunable_groups[0]
    with pytest.raises(ValueError, match="lose all"):
        surgery.rebuild(graph, {group.id: np.zeros(group.size, bool)})
    with pytest.raises(ValueError, match="entries"):
        surgery.rebuild(graph, {group.id: np.ones(group.size + 1, bool)})
    blocked = [g for g in graph.groups if g.reasons and g.layers][0]
    with pytest.raises(ValueError, match="cannot lose"):
        surgery.rebuild(graph, {blocked.id: np.arange(blocked.size) > 0})
