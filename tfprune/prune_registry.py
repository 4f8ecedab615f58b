"""Which Keras layers can be pruned, which of their weights, and along what axis.

The registry is the single place that knows layer types. `PruneLowMagnitude`
talks to it through three functions:

- `is_prunable(layer)`: whether the wrapper may wrap `layer` (call it in the
  wrapper's constructor);
- `unsupported_layer_message(layer)`: the `ValueError` text when it may not;
- `prunable_weights(layer)`: once `layer` is built, the `(variable,
  input_axis)` pairs to prune, where `input_axis` is the axis of the weight
  that runs over input channels (the axis along which N:M patterns such as 2:4
  are laid out). It raises the same `ValueError` if building revealed weights
  that cannot be pruned.

What is accepted, as in tfmot:

- a layer that opts in, by subclassing `tfprune.PrunableLayer` or by simply
  defining a `get_prunable_weights()` method: those weights are pruned;
- a built-in Keras layer of an exact class listed below (`_BUILTIN`): the
  weights that hold its connections are pruned;
- normalization layers and `PReLU`: wrapped with nothing pruned;
- a layer without weights (`Flatten`, `ReLU`, `MaxPooling2D`, ...): wrapped
  with nothing pruned. A custom layer that is not built yet is accepted on the
  same terms and checked again when it is built.

What is refused: a subclass of a built-in prunable layer that does not opt in
(its `call` may use the kernel differently, or it may add weights, so which
weights matter is its author's call), an RNN whose cell is neither a Keras cell
nor opted in, an already wrapped layer, and any other layer with weights.
"""

import keras

from tfprune.masked_wrapper import MaskedWeightsWrapper
from tfprune.prunable_layer import PrunableLayer

_layers = keras.layers

# Layers whose weights are never pruned, but which may be wrapped or sit in a
# pruned model: they hold per-channel statistics or scales, not connections.
_KEEP_WEIGHTS = (
    _layers.BatchNormalization,
    _layers.LayerNormalization,
    _layers.GroupNormalization,
    _layers.UnitNormalization,
    _layers.Normalization,
    _layers.PReLU,
)

_RNN = (_layers.RNN, _layers.LSTM, _layers.GRU, _layers.SimpleRNN)
_RNN_CELLS = (_layers.SimpleRNNCell, _layers.LSTMCell, _layers.GRUCell)
_CONV_LSTM = (_layers.ConvLSTM1D, _layers.ConvLSTM2D, _layers.ConvLSTM3D)


def _einsum_input_axis(layer):
    """The last contracted axis of an EinsumDense kernel (its input channels)."""
    inputs_and_kernel, output = layer.equation.split("->")
    kernel_spec = inputs_and_kernel.split(",")[1]
    contracted = [i for i, c in enumerate(kernel_spec) if c not in output]
    return contracted[-1] if contracted else 0


def _default_axis(weight):
    """Input axis of an opted-in weight: rows of a matrix, `-2` of a conv kernel."""
    return -2 if len(weight.shape) > 2 else 0


def _opted_in_weights(layer):
    return [(w, _default_axis(w)) for w in layer.get_prunable_weights()]


def _rnn_cells(layer):
    """The cells of an RNN layer, with `StackedRNNCells` (nested too) flattened."""
    cells, pending = [], [layer.cell]
    while pending:
        cell = pending.pop(0)
        if isinstance(cell, _layers.StackedRNNCells):
            pending = list(cell.cells) + pending
        else:
            cells.append(cell)
    return cells


def _rnn_weights(layer):
    weights = []
    for cell in _rnn_cells(layer):
        if _opts_in(cell):
            weights.extend(_opted_in_weights(cell))
        else:
            # Kernels are (input, units * gates): input channels are rows.
            weights.extend([(cell.kernel, 0), (cell.recurrent_kernel, 0)])
    return weights


def _mha_weights(layer):
    # As tfmot: the query, key, value and output projections.
    parts = (layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense)
    return [(p.kernel, _einsum_input_axis(p)) for p in parts]


def _kernel(axis):
    return lambda layer: [(layer.kernel, axis)]


def _pointwise(layer):
    # As tfmot: the pointwise kernel holds nearly all connections; the
    # depthwise one is tiny and pruning it costs accuracy for nothing.
    return [(layer.pointwise_kernel, -2)]


def _conv_lstm(layer):
    # Not in tfmot's registry; pruned like LSTM: input and recurrent kernels,
    # laid out (*spatial, in, 4 * filters).
    return [(layer.cell.kernel, -2), (layer.cell.recurrent_kernel, -2)]


# Exact class -> function of the built layer returning (variable, input_axis)
# pairs. Exact classes, as tfmot: a subclass must opt in.
_BUILTIN = {
    _layers.Dense: _kernel(0),
    _layers.EinsumDense: lambda layer: [(layer.kernel, _einsum_input_axis(layer))],
    _layers.Conv1D: _kernel(-2),
    _layers.Conv2D: _kernel(-2),
    _layers.Conv3D: _kernel(-2),
    # Transposed kernels are laid out (*spatial, out, in).
    _layers.Conv1DTranspose: _kernel(-1),
    _layers.Conv2DTranspose: _kernel(-1),
    _layers.Conv3DTranspose: _kernel(-1),
    # tfmot leaves depthwise kernels dense; tfprune prunes them (a choice the
    # README states).
    _layers.DepthwiseConv1D: _kernel(-2),
    _layers.DepthwiseConv2D: _kernel(-2),
    _layers.SeparableConv1D: _pointwise,
    _layers.SeparableConv2D: _pointwise,
    _layers.Embedding: lambda layer: [(layer.embeddings, -1)],
    _layers.MultiHeadAttention: _mha_weights,
    **{cls: _rnn_weights for cls in _RNN},
    **{cls: _conv_lstm for cls in _CONV_LSTM},
}


def _opts_in(layer):
    """Whether `layer` says itself which weights to prune (tfmot's duck typing)."""
    return isinstance(layer, PrunableLayer) or callable(
        getattr(layer, "get_prunable_weights", None)
    )


def _builtin_base(layer):
    """The first built-in prunable class `layer` subclasses, if any."""
    return next((cls for cls in type(layer).__mro__[1:] if cls in _BUILTIN), None)


def _problem(layer):
    """Why `layer` cannot be wrapped for pruning (a message), or None if it can."""
    if not isinstance(layer, keras.layers.Layer):
        return (
            "Only Keras layers can be pruned; received an object of type "
            f"{type(layer).__name__}: {layer!r}. Pass a keras.layers.Layer, a list of "
            "them, or a Sequential or functional keras.Model."
        )
    if isinstance(layer, MaskedWeightsWrapper):
        return (
            f"Layer '{layer.name}' is already wrapped by {type(layer).__name__}; wrapping "
            "it again would stack masks. Prune the original layer or model, or call "
            "tfprune.strip_pruning first."
        )
    if _opts_in(layer):
        return None
    if type(layer) in _BUILTIN:
        return _rnn_cell_problem(layer) if type(layer) in _RNN else None
    base = _builtin_base(layer)
    if base is not None:
        return (
            f"Layer '{layer.name}' of class {type(layer).__name__} subclasses "
            f"keras.layers.{base.__name__}, but tfprune (like tfmot) only prunes the "
            f"built-in {base.__name__} itself: a subclass may add weights or use them "
            "differently, so it must say which weights to prune. Opt in either way: "
            f"(1) also subclass tfprune.PrunableLayer (class {type(layer).__name__}("
            f"keras.layers.{base.__name__}, tfprune.PrunableLayer)) and implement "
            "get_prunable_weights(), or (2) just define a get_prunable_weights() method; "
            "it returns the variables to prune, e.g. [self.kernel]. To keep the layer "
            "dense instead, leave it out (ignored_layers=[...] when pruning a model)."
        )
    if isinstance(layer, _KEEP_WEIGHTS):
        return None
    if isinstance(layer, keras.Model):
        return (
            f"'{layer.name}' is a keras.Model, not a layer to wrap. Pass the model to "
            "tfprune.prune_low_magnitude, which wraps its layers."
        )
    if layer.weights:
        return (
            f"Layer '{layer.name}' of type {type(layer).__name__} has weights but "
            "tfprune does not know which of them to prune. Either leave it out "
            "(ignored_layers=[...] when pruning a model, or choose the layers with "
            "keras.models.clone_model(model, clone_function=...)), or make it "
            "prunable by subclassing tfprune.PrunableLayer (or defining a "
            "get_prunable_weights() method) that returns the variables to prune."
        )
    return None


def _rnn_cell_problem(layer):
    for cell in _rnn_cells(layer):
        if type(cell) not in _RNN_CELLS and not _opts_in(cell):
            return (
                f"RNN layer '{layer.name}' ({type(layer).__name__}) has cell "
                f"'{cell.name}' of type {type(cell).__name__}, which tfprune cannot "
                "prune. Use keras.layers.SimpleRNNCell, LSTMCell or GRUCell (or "
                "StackedRNNCells of them), or make the cell prunable by subclassing "
                "tfprune.PrunableLayer (or defining get_prunable_weights())."
            )
    return None


def is_prunable(layer):
    """Whether `PruneLowMagnitude` may wrap `layer`.

    True for layers that opt in, for built-in prunable layers, normalization
    layers and layers without weights (the last two are wrapped with nothing
    pruned, as in tfmot). A custom layer without weights that is not built
    yet is accepted; `prunable_weights` checks it again once built.

    Args:
      layer: Any object.

    Returns:
      A bool. When False, `unsupported_layer_message(layer)` says why.
    """
    return _problem(layer) is None


def passes_through(layer):
    """Whether `layer` stays unwrapped when a whole model is pruned.

    Layers with nothing to prune (normalization layers, layers without
    weights) are copied into the pruned model as they are, with their
    names; layers that opt in or that tfprune prunes are wrapped.

    Args:
      layer: A Keras layer.

    Returns:
      A bool. False too for layers that cannot be pruned at all (check
      `is_prunable`).
    """
    return _problem(layer) is None and not _opts_in(layer) and type(layer) not in _BUILTIN


def prunable_weights(layer):
    """The `(variable, input_axis)` pairs to prune in a built layer.

    Args:
      layer: A built Keras layer for which `is_prunable(layer)` holds.

    Returns:
      A list of `(keras.Variable, int)` pairs; empty for layers without
      weights to prune.

    Raises:
      ValueError: If the layer cannot be pruned (e.g. building it created
        weights that tfprune does not know).
    """
    problem = _problem(layer)
    if problem is not None:
        raise ValueError(problem)
    if _opts_in(layer):
        return _opted_in_weights(layer)
    spec = _BUILTIN.get(type(layer))
    return spec(layer) if spec is not None else []


def unsupported_layer_message(layer):
    """Why `layer` cannot be wrapped, and what to do instead.

    Args:
      layer: An object for which `is_prunable` is False.

    Returns:
      The message for a `ValueError` (it names the layer).
    """
    return _problem(layer) or f"Layer {getattr(layer, 'name', layer)!r} can be pruned."
