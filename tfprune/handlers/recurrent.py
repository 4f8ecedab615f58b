"""Handlers for recurrent layers: RNN/LSTM/GRU/SimpleRNN and ConvLSTM.

Channel pruning removes units of an RNN layer with one Keras cell. A unit is
one column of each gate (LSTM 4, GRU 3, SimpleRNN 1) in the input and the
recurrent kernels, one row of the recurrent kernel, and one bias entry per
gate. With its columns and bias masked, a unit's gate pre-activations are
zero: from a zero state, an LSTM unit's cell state and output stay 0
(`c = 0.5 * c + 0.5 * tanh(0)`), a GRU unit's state stays 0
(`h = 0.5 * h + 0.5 * tanh(0)`), a SimpleRNN unit outputs `activation(0)`.
Whatever a removed unit holds (from a non-zero initial state) reaches no
other unit, as its recurrent-kernel row is masked, and no later layer, as
the outputs and initial states are linked to the units and their readers
mask them.
"""

import math

import keras

from tfprune.dependency.trace import TensorRef
from tfprune.handlers import common
from tfprune.handlers.base import LayerHandler
from tfprune.handlers.layout import Layout, Unsupported
from tfprune.prunable_layer import PrunableLayer

_layers = keras.layers
_KERAS_CELLS = (_layers.SimpleRNNCell, _layers.LSTMCell, _layers.GRUCell)
# Gates laid end to end along the kernels' columns, in the cells' split order.
_GATES = {_layers.SimpleRNNCell: 1, _layers.LSTMCell: 4, _layers.GRUCell: 3}


def rnn_cells(layer):
    """The cells of an RNN layer, with `StackedRNNCells` (nested too) flattened."""
    cells, pending = [], [layer.cell]
    while pending:
        cell = pending.pop(0)
        if isinstance(cell, _layers.StackedRNNCells):
            pending = list(cell.cells) + pending
        else:
            cells.append(cell)
    return cells


def opts_in(layer):
    """Whether `layer` says itself which weights to prune (tfmot's duck typing)."""
    return isinstance(layer, PrunableLayer) or callable(
        getattr(layer, "get_prunable_weights", None)
    )


def opted_in_weights(layer):
    """`(weight, input_axis)` for a layer's own `get_prunable_weights()`.

    The input axis is a matrix's rows, or axis -2 of a convolution kernel.
    """
    return [(w, -2 if len(w.shape) > 2 else 0) for w in layer.get_prunable_weights()]


class RNNHandler(LayerHandler):
    """RNN layers with Keras cells (or cells that opt in).

    Unstructured pruning masks the input and recurrent kernels. Channel
    pruning removes units of layers with one SimpleRNNCell, LSTMCell or
    GRUCell (SimpleRNN, LSTM, GRU, or `keras.layers.RNN(cell)`): the slots
    are `"in"` (the input's channels) and `"units"` (the outputs', and the
    initial states').
    """

    def prunable_weights(self, layer):
        weights = []
        for cell in rnn_cells(layer):
            if opts_in(cell):
                weights.extend(opted_in_weights(cell))
            else:
                # Kernels are (input, units * gates): input channels are rows.
                weights.extend([(cell.kernel, 0), (cell.recurrent_kernel, 0)])
        return weights

    def unstructured_problem(self, layer):
        for cell in rnn_cells(layer):
            if type(cell) not in _KERAS_CELLS and not opts_in(cell):
                return (
                    f"RNN layer '{layer.name}' ({type(layer).__name__}) has cell "
                    f"'{cell.name}' of type {type(cell).__name__}, which tfprune cannot "
                    "prune. Use keras.layers.SimpleRNNCell, LSTMCell or GRUCell (or "
                    "StackedRNNCells of them), or make the cell prunable by subclassing "
                    "tfprune.PrunableLayer (or defining get_prunable_weights())."
                )
        return None

    # -- channels --------------------------------------------------------------

    def layout(self, layer):
        """Slots `"in"` (kernel rows) and `"units"` (gate columns, recurrent rows, bias)."""
        cell, gates = single_cell(layer)
        kernel, recurrent = cell.kernel, cell.recurrent_kernel
        out = Layout({"in": kernel.shape[0], "units": cell.units}, [])
        out.add(kernel, 0, "in", "consumer")
        out.add(kernel, 1, "units", "producer", blocks=gates)
        out.add(recurrent, 1, "units", "producer", blocks=gates)
        out.add(recurrent, 0, "units", "consumer")
        # GRU(reset_after=True) has a (2, 3 * units) bias: input and recurrent.
        out.add(cell.bias, -1, "units", "param", blocks=gates)
        return out

    def link(self, ctx):
        layer = ctx.layer
        if getattr(layer, "stateful", False):
            raise Unsupported("stateful=True keeps the units' states between batches")
        cell, _ = single_cell(layer)
        for name in ("activation", "recurrent_activation"):
            function = getattr(cell, name, None)
            if function is not None and _activation_name(function) not in \
                    common.ELEMENTWISE_ACTIVATIONS:
                raise Unsupported(f"the cell's {name} mixes units or is unknown")
        sequences = ctx.argument("sequences", 0)
        states = _tensor_keys(_argument(ctx.site, "initial_state", 1))
        mask = _tensor_keys(_argument(ctx.site, "mask", 2))
        if sequences is None:
            raise Unsupported("the sequences are not a tensor of the model")
        for tensor in ctx.inputs:
            if tensor.key in mask or tensor.key == sequences.key:
                continue
            if tensor.key not in states:
                raise Unsupported("called with tensors other than sequences, initial "
                                  "states and a mask")
        ctx.link(ctx.tensor(sequences), ctx.slot("in"))
        units = ctx.slot("units")
        for tensor in ctx.inputs:
            if tensor.key in states:
                ctx.link(ctx.tensor(tensor), units)
        for tensor in ctx.outputs:
            ctx.link(ctx.tensor(tensor), units)

    def shrink_config(self, layer, config, ctx):
        if "units" in config:
            config["units"] = ctx.kept("units")
        else:  # keras.layers.RNN(cell): the cell's config holds the units.
            cell = dict(config["cell"])
            cell["config"] = dict(cell["config"], units=ctx.kept("units"))
            cell.pop("build_config", None)  # Built again from the new input.
            config["cell"] = cell
        return config

    def macs(self, layer, site):
        """Input and recurrent kernels of every cell at every step (batch size 1)."""
        per_step = 0
        for cell in rnn_cells(layer):
            for name in ("kernel", "recurrent_kernel"):
                weight = getattr(cell, name, None)
                if weight is not None:
                    per_step += math.prod(weight.shape)
        shape = site.inputs[0].shape
        if per_step and shape[1] is None:
            raise ValueError(
                f"Layer '{layer.name}' sees sequences of shape {shape} with unknown length, "
                "so its MACs are not defined. Build the model with a fixed sequence length "
                "(e.g. keras.Input((20, 8)))."
            )
        return int(shape[1] or 0) * per_step


def single_cell(layer):
    """`(cell, gates)` of an RNN layer with one Keras cell.

    Raises:
      Unsupported: For stacked cells, or a cell that is not a Keras
        SimpleRNNCell, LSTMCell or GRUCell.
    """
    cell = getattr(layer, "cell", None)
    gates = _GATES.get(type(cell))
    if gates is None:
        kind = type(cell).__name__
        raise Unsupported(f"cell of type {kind}: units are known for one SimpleRNNCell, "
                          "LSTMCell or GRUCell only")
    return cell, gates


def _activation_name(function):
    """The Keras name of a built-in activation function, or None if custom."""
    if not getattr(function, "__module__", "").startswith("keras."):
        return None
    return getattr(function, "__name__", None)


def _argument(site, name, position):
    """A call argument by name or position (any structure), or None."""
    if name in site.kwargs:
        return site.kwargs[name]
    return site.args[position] if len(site.args) > position else None


def _tensor_keys(structure):
    """Keys of the traced tensors in a call argument's structure."""
    if isinstance(structure, TensorRef):
        return {structure.key}
    if isinstance(structure, (list, tuple)):
        return set().union(*(_tensor_keys(x) for x in structure)) if structure else set()
    if isinstance(structure, dict):
        return _tensor_keys(list(structure.values()))
    return set()


class ConvLSTMHandler(LayerHandler):
    """ConvLSTM1D/2D/3D: not in tfmot's registry; pruned like LSTM."""

    def prunable_weights(self, layer):
        # Input and recurrent kernels, laid out (*spatial, in, 4 * filters).
        return [(layer.cell.kernel, -2), (layer.cell.recurrent_kernel, -2)]
