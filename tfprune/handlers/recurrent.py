"""Handlers for recurrent layers: RNN/LSTM/GRU/SimpleRNN and ConvLSTM."""

import keras

from tfprune.handlers.base import LayerHandler
from tfprune.prunable_layer import PrunableLayer

_layers = keras.layers
_KERAS_CELLS = (_layers.SimpleRNNCell, _layers.LSTMCell, _layers.GRUCell)


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
    """RNN layers with Keras cells (or cells that opt in): input and recurrent kernels."""

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


class ConvLSTMHandler(LayerHandler):
    """ConvLSTM1D/2D/3D: not in tfmot's registry; pruned like LSTM."""

    def prunable_weights(self, layer):
        # Input and recurrent kernels, laid out (*spatial, in, 4 * filters).
        return [(layer.cell.kernel, -2), (layer.cell.recurrent_kernel, -2)]
