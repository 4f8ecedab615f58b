"""Which Keras layers can be pruned, which of their weights, and along what axis.

The registry is the single place that knows layer types. It answers, for a
built layer, the list of `(variable, input_axis)` pairs to prune, where
`input_axis` is the axis of the weight that runs over input channels (the axis
along which N:M patterns such as 2:4 are laid out).
"""

import keras

from tfprune.prunable_layer import PrunableLayer

_layers = keras.layers

# Layers whose weights are never pruned, but which may sit in a pruned model:
# they hold per-channel statistics or scales, not connections.
_KEEP_WEIGHTS = (
    _layers.BatchNormalization,
    _layers.LayerNormalization,
    _layers.GroupNormalization,
    _layers.UnitNormalization,
    _layers.Normalization,
    _layers.PReLU,
)

_CONV = (_layers.Conv1D, _layers.Conv2D, _layers.Conv3D)
_CONV_TRANSPOSE = (_layers.Conv1DTranspose, _layers.Conv2DTranspose, _layers.Conv3DTranspose)
_RNN = (_layers.LSTM, _layers.GRU, _layers.SimpleRNN)


def _einsum_input_axis(layer):
    """The last contracted axis of an EinsumDense kernel (its input channels)."""
    inputs_and_kernel, output = layer.equation.split("->")
    kernel_spec = inputs_and_kernel.split(",")[1]
    contracted = [i for i, c in enumerate(kernel_spec) if c not in output]
    return contracted[-1] if contracted else 0


def is_prunable(layer):
    """Whether `prune_low_magnitude` knows how to prune `layer`."""
    return isinstance(layer, PrunableLayer) or isinstance(
        layer,
        (_layers.Dense, _layers.EinsumDense, _layers.DepthwiseConv2D, _layers.SeparableConv2D,
         _layers.Embedding, _layers.MultiHeadAttention) + _CONV + _CONV_TRANSPOSE + _RNN,
    )


def passes_through(layer):
    """Whether `layer` stays unwrapped when a whole model is pruned."""
    if is_prunable(layer):
        return False
    if isinstance(layer, _KEEP_WEIGHTS):
        return True
    return not layer.weights


def prunable_weights(layer):
    """The `(variable, input_axis)` pairs to prune in a built layer.

    Args:
      layer: A built Keras layer for which `is_prunable(layer)` holds.

    Returns:
      A list of `(keras.Variable, int)` pairs.

    Raises:
      ValueError: If the layer is not prunable.
    """
    if isinstance(layer, PrunableLayer):
        return [(w, -2 if len(w.shape) > 2 else 0) for w in layer.get_prunable_weights()]
    if isinstance(layer, _layers.SeparableConv2D):
        # As tfmot does: the pointwise kernel holds nearly all connections;
        # the depthwise one is tiny and pruning it costs accuracy for nothing.
        return [(layer.pointwise_kernel, -2)]
    if isinstance(layer, _layers.DepthwiseConv2D):
        return [(layer.kernel, -2)]
    if isinstance(layer, _CONV_TRANSPOSE):
        # Transposed kernels are laid out (*spatial, out, in).
        return [(layer.kernel, -1)]
    if isinstance(layer, _CONV):
        return [(layer.kernel, -2)]
    if isinstance(layer, _layers.Dense):
        return [(layer.kernel, 0)]
    if isinstance(layer, _layers.EinsumDense):
        return [(layer.kernel, _einsum_input_axis(layer))]
    if isinstance(layer, _layers.Embedding):
        return [(layer.embeddings, -1)]
    if isinstance(layer, _layers.MultiHeadAttention):
        parts = (layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense)
        return [(p.kernel, _einsum_input_axis(p)) for p in parts]
    if isinstance(layer, _RNN):
        return [(layer.cell.kernel, 0), (layer.cell.recurrent_kernel, 0)]
    raise ValueError(unsupported_layer_message(layer))


def unsupported_layer_message(layer):
    return (
        f"Layer '{layer.name}' of type {type(layer).__name__} has weights but "
        "tfprune does not know which of them to prune. Either leave it out "
        "(prune selected layers with keras.models.clone_model(model, "
        "clone_function=...)), or make it prunable by subclassing "
        "tfprune.PrunableLayer and implementing get_prunable_weights()."
    )
