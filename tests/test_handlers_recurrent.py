"""Recurrent handlers: LSTM, GRU and SimpleRNN units are channels (all gates of
a unit together), with initial states and returned states linked to them."""

import math

import keras
import numpy as np
import pytest

import tfprune
from handler_checks import group_of, prune_and_shrink, random_prune
from tfprune.dependency import DependencyGraph
from tfprune.dependency.macs import site_macs
from tfprune.dependency.trace import trace
from tfprune.handlers import handler_for

L = keras.layers
GATES = {L.LSTM: 4, L.GRU: 3, L.SimpleRNN: 1}


def _sequences(seed=1, steps=6, channels=4):
    return np.random.default_rng(seed).normal(size=(3, steps, channels)).astype("float32")


def _stack(cls):
    inp = keras.Input((6, 4))
    x = L.Dense(6, name="embed")(inp)
    x = cls(7, return_sequences=True, name="rnn1")(x)
    x = L.LayerNormalization(name="norm")(x)
    x = cls(5, name="rnn2")(x)
    return keras.Model(inp, L.Dense(3, name="head")(x))


def _rnn_macs(site):
    cell = site.layer.cell
    steps = site.inputs[0].shape[1]
    return steps * (math.prod(cell.kernel.shape) + math.prod(cell.recurrent_kernel.shape))


@pytest.mark.parametrize("cls", [L.LSTM, L.GRU, L.SimpleRNN])
def test_units_prune_and_shrink_exactly(cls):
    model = _stack(cls)
    graph = DependencyGraph(model)
    units = group_of(graph, "rnn1", "units")
    assert {"rnn1[units]", "norm[channel]", "rnn2[in]"} <= set(units.layer_names())
    assert units.size == 7 and units.prunable
    assert group_of(graph, "embed", "out") is group_of(graph, "rnn1", "in")
    # The kernel's columns hold every gate of a unit: unit j is j + k * units.
    gates = GATES[cls]
    kernel = [m for m in units.members
              if m.layer.name == "rnn1" and m.variable.name == "kernel" and m.axis == 1][0]
    for j in range(7):
        np.testing.assert_array_equal(np.sort(kernel.indices[kernel.channels == j]),
                                      j + 7 * np.arange(gates))
    recurrent = [m.axis for m in units.members
                 if m.layer.name == "rnn1" and m.variable.name == "recurrent_kernel"]
    assert sorted(recurrent) == [0, 1]

    pruner, keep, small = prune_and_shrink(model, _sequences())
    kept1 = int(keep[units.id].sum())
    kept2 = int(keep[group_of(pruner.graph, "rnn2", "units").id].sum())
    kept_in = int(keep[group_of(pruner.graph, "embed", "out").id].sum())
    rnn1 = small.get_layer("rnn1")
    assert rnn1.units == kept1
    assert rnn1.cell.kernel.shape == (kept_in, gates * kept1)
    assert rnn1.cell.recurrent_kernel.shape == (kept1, gates * kept1)
    assert small.get_layer("rnn2").cell.kernel.shape == (kept1, gates * kept2)
    for m in (model, small):
        for site in trace(m).sites:
            if isinstance(site.layer, cls):
                assert site_macs(site) == _rnn_macs(site) > 0
    assert tfprune.count_macs(small) < tfprune.count_macs(model)


@pytest.mark.parametrize("cls", [L.LSTM, L.GRU, L.SimpleRNN])
def test_a_masked_unit_outputs_exact_zeros(cls):
    # Zero gate pre-activations: an LSTM's cell state stays 0 (so h = 0), a
    # GRU's state stays 0 from a zero initial state, a SimpleRNN's is tanh(0).
    model = _stack(cls)
    pruned, pruner, keep = random_prune(model, seed=5)
    flags = keep[group_of(pruner.graph, "rnn1", "units").id]
    assert not flags.all()
    probe = keras.Model(pruned.input, pruned.get_layer("prune_channels_rnn1").output)
    states = np.asarray(probe(_sequences()))
    assert np.all(states[..., ~flags] == 0.0)
    assert np.all(np.abs(states[..., flags]).max(axis=(0, 1)) > 0)


def test_gru_reset_after_bias_and_generic_rnn_cells():
    inp = keras.Input((6, 4))
    x = L.Dense(5, name="embed")(inp)
    x = L.GRU(6, return_sequences=True, reset_after=True, name="after")(x)
    x = L.RNN(L.GRUCell(4, reset_after=False), return_sequences=True, name="before")(x)
    x = L.RNN(L.LSTMCell(5, use_bias=False), name="plain")(x)
    model = keras.Model(inp, L.Dense(2, name="head")(x))
    graph = DependencyGraph(model)
    after = group_of(graph, "after", "units")
    bias = [m for m in after.members if m.variable.name == "bias"][0]
    assert bias.variable.shape == (2, 18) and bias.axis == 1
    pruner, keep, small = prune_and_shrink(model, _sequences(2))
    kept = int(keep[group_of(pruner.graph, "after", "units").id].sum())
    assert small.get_layer("after").cell.bias.shape == (2, 3 * kept)
    kept = int(keep[group_of(pruner.graph, "before", "units").id].sum())
    assert small.get_layer("before").cell.bias.shape == (3 * kept,)
    assert small.get_layer("plain").cell.units == int(
        keep[group_of(pruner.graph, "plain", "units").id].sum())


def test_initial_and_returned_states_are_linked_to_units():
    inp = keras.Input((6, 4))
    summary = L.GlobalAveragePooling1D()(inp)
    h0 = L.Dense(6, name="h0")(summary)
    c0 = L.Dense(6, activation="tanh", name="c0")(summary)
    seq, h, c = L.LSTM(6, return_sequences=True, return_state=True, name="lstm")(
        L.Dense(5, name="embed")(inp), initial_state=[h0, c0])
    features = L.Concatenate()([L.GlobalMaxPooling1D()(seq), h, c])
    model = keras.Model(inp, L.Dense(2, name="head")(features))
    graph = DependencyGraph(model)
    units = group_of(graph, "lstm", "units")
    assert units is group_of(graph, "h0", "out") and units is group_of(graph, "c0", "out")
    assert units.prunable
    for seed in range(2):
        prune_and_shrink(model, _sequences(3), seed=seed)

    # A state that comes from the model's input cannot lose units.
    inp = keras.Input((6, 4))
    state = keras.Input((6,))
    out = L.GRU(6, name="gru")(inp, initial_state=state)
    graph = DependencyGraph(keras.Model([inp, state], L.Dense(2)(out)))
    units = group_of(graph, "gru", "units")
    assert not units.prunable and "model input" in units.reasons


def test_what_it_cannot_reason_about_keeps_units():
    inp = keras.Input((6, 4))
    x = L.Dense(5, name="a")(inp)
    x = L.Bidirectional(L.LSTM(3, return_sequences=True), name="bi")(x)
    x = L.Dense(5, name="b")(x)
    x = L.RNN([L.LSTMCell(3), L.GRUCell(2)], return_sequences=True, name="stacked")(x)
    x = L.Dense(5, name="c")(x)
    x = L.SimpleRNN(4, activation="softmax", name="soft")(x)
    model = keras.Model(inp, L.Dense(2)(x))
    graph = DependencyGraph(model)
    reasons = {name: group_of(graph, name, "out").reasons for name in ("a", "b", "c")}
    assert any("Bidirectional 'bi'" in r for r in reasons["a"])
    assert any("RNN 'stacked': cell of type StackedRNNCells" in r for r in reasons["b"])
    assert any("SimpleRNN 'soft': the cell's activation mixes units" in r
               for r in reasons["c"])
    assert "kept: " in graph.summary()

    stateful = L.LSTM(3, stateful=True, name="stateful")
    inp = keras.Input(batch_shape=(2, 6, 4))
    graph = DependencyGraph(keras.Model(inp, L.Dense(2)(stateful(L.Dense(5, name="d")(inp)))))
    assert any("stateful=True" in r for r in group_of(graph, "d", "out").reasons)


def test_unstructured_pruning_weights_are_unchanged():
    layer = L.GRU(4)
    layer.build((None, 6, 3))
    pairs = handler_for(layer).prunable_weights(layer)
    assert [(w.path, axis) for w, axis in pairs] == [
        (layer.cell.kernel.path, 0), (layer.cell.recurrent_kernel.path, 0)]
