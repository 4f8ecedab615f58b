"""DependencyGraph: groups of coupled channels on hand-built models."""

import keras
import numpy as np
import pytest

from tfprune.dependency import DependencyGraph, count_macs

L = keras.layers


def _group_of(graph, layer_name, slot="out"):
    for group in graph.groups:
        for layer, s in group.layers:
            if layer.name == layer_name and s == slot:
                return group
    raise AssertionError(f"no group holds {layer_name}[{slot}]")


def _names(group):
    return set(group.layer_names())


def test_residual_add_couples_both_branches():
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(6, 3, padding="same", name="a")(inp)
    b = L.Conv2D(6, 1, name="b")(a)
    b = L.BatchNormalization(name="bn")(b)
    x = a + b  # a keras.ops node, not a layer
    out = L.Conv2D(2, 1, name="head")(x)
    graph = DependencyGraph(keras.Model(inp, out))
    group = _group_of(graph, "a")
    assert group is _group_of(graph, "b")
    assert {"a[out]", "b[in]", "b[out]", "bn[channel]", "head[in]"} <= _names(group)
    assert group.prunable and group.size == 6
    assert "keras.ops.add" in group.via


def test_concatenate_shifts_offsets_and_keeps_branches_apart():
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 1, name="a")(inp)
    b = L.Conv2D(5, 1, name="b")(inp)
    x = L.Concatenate(name="cat")([a, b])
    out = L.Conv2D(2, 1, name="head")(x)
    graph = DependencyGraph(keras.Model(inp, out))
    ga, gb = _group_of(graph, "a"), _group_of(graph, "b")
    assert ga is not gb and (ga.size, gb.size) == (4, 5)
    head_a = [m for m in ga.members if m.layer.name == "head"][0]
    head_b = [m for m in gb.members if m.layer.name == "head"][0]
    np.testing.assert_array_equal(head_a.indices, np.arange(4))
    np.testing.assert_array_equal(head_b.indices, np.arange(4, 9))


def test_depthwise_ties_input_to_output_and_grouped_conv_keeps_groups_even():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 1, name="pw")(inp)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.Conv2D(8, 3, groups=2, padding="same", name="grouped")(x)
    out = L.Conv2D(2, 1, name="head")(x)
    graph = DependencyGraph(keras.Model(inp, out))
    pw = _group_of(graph, "pw")
    assert pw is _group_of(graph, "dw", "in") and pw is _group_of(graph, "dw", "out")
    # Grouped conv: within-group input index j is removed from both groups at once.
    assert pw is _group_of(graph, "grouped", "in")
    assert pw.size == 4
    grouped_out = _group_of(graph, "grouped", "out")
    assert grouped_out.size == 4


def test_squeeze_excitation_gate_couples_with_features():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 1, name="feat")(inp)
    s = L.GlobalAveragePooling2D()(x)
    s = L.Reshape((1, 1, 6))(s)
    s = L.Conv2D(2, 1, activation="relu", name="squeeze")(s)
    s = L.Conv2D(6, 1, activation="sigmoid", name="excite")(s)
    x = L.Multiply()([x, s])
    out = L.Conv2D(2, 1, name="head")(x)
    graph = DependencyGraph(keras.Model(inp, out))
    group = _group_of(graph, "feat")
    assert group is _group_of(graph, "excite")
    assert "squeeze[in]" in _names(group)


def test_flatten_dense_rows_belong_to_their_channel():
    inp = keras.Input((2, 2, 3))
    x = L.Conv2D(4, 1, name="c")(inp)
    x = L.Flatten()(x)
    out = L.Dense(2, name="d")(x)
    graph = DependencyGraph(keras.Model(inp, out))
    group = _group_of(graph, "c")
    rows = [m for m in group.members if m.layer.name == "d"][0]
    assert rows.indices.size == 16
    np.testing.assert_array_equal(rows.channels, np.arange(16) % 4)


def test_nested_sequential_is_walked_through():
    stem = keras.Sequential([L.Conv2D(6, 2, strides=2, name="stem_conv"),
                             L.LayerNormalization(epsilon=1e-6, name="stem_ln")], name="stem")
    inp = keras.Input((8, 8, 3))
    x = stem(inp)
    x = L.Conv2D(5, 1, name="after")(x)
    out = L.Conv2D(2, 1, name="head")(x)
    graph = DependencyGraph(keras.Model(inp, out))
    group = _group_of(graph, "stem_conv")
    assert {"stem_ln[channel]", "after[in]"} <= _names(group)
    assert group.prunable


def test_shared_layer_couples_its_call_sites():
    shared = L.Conv2D(4, 1, name="shared")
    a, b = keras.Input((4, 4, 3)), keras.Input((4, 4, 3))
    x = L.Conv2D(3, 1, name="pa")(a)
    y = L.Conv2D(3, 1, name="pb")(b)
    x, y = shared(x), shared(y)
    out = L.Conv2D(2, 1, name="head")(L.Concatenate()([x, y]))
    graph = DependencyGraph(keras.Model([a, b], out))
    assert _group_of(graph, "pa") is _group_of(graph, "pb")  # both feed shared[in]
    group = _group_of(graph, "shared")
    head = [m for m in group.members if m.layer.name == "head"][0]
    assert head.indices.size == 8  # both call sites' outputs


def test_blocked_groups_say_why():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 1, name="a")(inp)
    x = keras.ops.softmax(x)  # mixes channels
    x = L.Conv2D(4, 1, name="b")(x)
    out = L.Conv2D(3, 1, name="head")(x)
    graph = DependencyGraph(keras.Model(inp, out))
    assert any("keras.ops.softmax" in r for r in _group_of(graph, "a").reasons)
    assert any("model output" in r for r in _group_of(graph, "head").reasons)
    assert any("model input" in r for r in _group_of(graph, "a", "in").reasons)
    assert _group_of(graph, "b").prunable
    table = graph.summary()
    assert "keras.ops.softmax" in table and "prunable" in table


def test_custom_layer_and_division_block():
    class Mystery(L.Layer):
        def call(self, x):
            return x * 2.0

    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 1, name="a")(inp)
    x = Mystery(name="mystery")(x)
    y = L.Conv2D(4, 1, name="b")(x)
    z = L.Conv2D(4, 1, name="c")(x)
    x = y / z
    out = L.Conv2D(3, 1, name="head")(x)
    graph = DependencyGraph(keras.Model(inp, out))
    assert any("Mystery 'mystery'" in r for r in _group_of(graph, "a").reasons)
    assert any("division" in r for r in _group_of(graph, "b").reasons)


def test_channel_mixing_activation_keeps_outputs_only():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 1, name="a")(inp)
    x = L.Conv2D(5, 1, activation="softmax", name="soft")(x)
    out = L.Conv2D(2, 1, name="head")(x)
    graph = DependencyGraph(keras.Model(inp, out))
    assert _group_of(graph, "a").prunable  # soft's input side is fine
    assert any("softmax" in r for r in _group_of(graph, "soft").reasons)


def test_ignored_layers_by_name_and_object_and_unknown_name():
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 1, name="a")
    x = a(inp)
    x = L.Conv2D(4, 1, name="b")(x)
    out = L.Conv2D(2, 1, name="head")(x)
    model = keras.Model(inp, out)
    graph = DependencyGraph(model, ignored_layers=["b"])
    assert any("ignored layer 'b'" in r for r in _group_of(graph, "b").reasons)
    assert any("ignored layer 'b'" in r for r in _group_of(graph, "a").reasons)
    graph = DependencyGraph(model, ignored_layers=[a])
    assert not _group_of(graph, "a").prunable
    with pytest.raises(ValueError, match="'nope'"):
        DependencyGraph(model, ignored_layers=["nope"])


def test_subclassed_and_unbuilt_models_are_rejected():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        DependencyGraph(Sub())
    with pytest.raises(ValueError, match="no input shape"):
        DependencyGraph(keras.Sequential([L.Dense(3)]))


def test_sequential_and_macs():
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3), L.Flatten(), L.Dense(2)])
    graph = DependencyGraph(model)
    assert len(graph.prunable_groups) == 1
    assert count_macs(model) == 6 * 6 * 3 * 3 * 3 * 4 + 144 * 2
