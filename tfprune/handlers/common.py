"""Helpers that several handler families share (naming, activations, axes)."""

import math
import re

import keras

from tfprune.handlers.layout import Unsupported

# Activations that act on each value alone. softmax, log_softmax, sparsemax
# and glu mix channels, so a removed channel would change the others.
ELEMENTWISE_ACTIVATIONS = frozenset({
    "celu", "elu", "exponential", "gelu", "hard_shrink", "hard_sigmoid", "hard_silu",
    "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "mish", "relu",
    "relu6", "selu", "sigmoid", "silu", "soft_shrink", "softplus", "softsign",
    "sparse_plus", "sparse_sigmoid", "squareplus", "swish", "tanh", "tanh_shrink",
    "threshold",
})


def op_display_name(operation):
    """`keras.ops.add` for a `keras.ops` Add operation."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", type(operation).__name__).lower()
    return f"keras.ops.{snake}"


def describe(layer):
    """How a call site is named in reasons and summaries."""
    if isinstance(layer, keras.layers.Layer):
        return f"{type(layer).__name__} '{layer.name}'"
    return op_display_name(layer)


def activation_name(layer):
    """The Keras name of a layer's built-in activation, or None if custom."""
    fn = getattr(layer, "activation", None)
    if fn is None or not getattr(fn, "__module__", "").startswith("keras."):
        return None
    return getattr(fn, "__name__", None)


def check_activation(ctx, slot="out"):
    """A channel-mixing activation keeps a weighted layer's output channels.

    Its input channels stay removable: the kernel's input slice is masked.
    """
    layer = ctx.layer
    if getattr(layer, "activation", None) is None:
        return
    name = activation_name(layer)
    if name not in ELEMENTWISE_ACTIVATIONS:
        ctx.block(
            ctx.slot(slot),
            f"{describe(layer)}: activation {name or 'custom'!s} mixes output channels "
            "or is unknown",
        )


def is_last_axis(axis, rank):
    """Whether `axis` (an int or a one-element list) is the last of `rank` axes."""
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return axis is not None and axis % rank == rank - 1


def channels_last(layer):
    """Raises `Unsupported` unless the layer keeps channels on the last axis."""
    data_format = getattr(layer, "data_format", "channels_last")
    if data_format not in (None, "channels_last"):
        raise Unsupported(f"data_format={data_format!r} (channels are not the last axis)")


def positions(tensor, layer):
    """Number of spatial positions of a channels-last tensor (batch size 1).

    Raises:
      ValueError: If a spatial size is unknown (MACs are then undefined).
    """
    dims = tensor.shape[1:-1]
    if any(d is None for d in dims):
        raise ValueError(
            f"Layer '{layer.name}' sees a tensor of shape {tensor.shape} with unknown "
            "spatial size, so its MACs are not defined. Build the model with a fixed "
            "input shape (e.g. input_shape=(224, 224, 3))."
        )
    return math.prod(dims)


def link_in_out(ctx):
    """A one-input layer with a kernel: input channels are its `"in"` slot,
    output channels its `"out"` slot (Dense, transposed convolutions, ...)."""
    ctx.only_input()
    check_activation(ctx)
    ctx.link(ctx.tensor(ctx.inputs[0]), ctx.slot("in"))
    ctx.link(ctx.tensor(ctx.outputs[0]), ctx.slot("out"))


def kernel_macs(layer, tensor, kernel=None):
    """Every weight of `kernel` (default `layer.kernel`) once per position of `tensor`."""
    kernel = layer.kernel if kernel is None else kernel
    return positions(tensor, layer) * math.prod(kernel.shape)
