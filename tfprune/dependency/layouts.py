"""Which axes of a layer's weights run over which of its channel *slots*.

A slot is one channel axis of a layer's parameters: a Conv2D has an `"in"`
slot (its kernel's input-channel axis) and an `"out"` slot (the kernel's
output-channel axis and the bias); a BatchNormalization has one `"channel"`
slot shared by gamma, beta and the moving statistics. The dependency graph
joins slots to the tensors a layer reads and writes; masking and shrinking
slice weights along the axes listed here.

Roles say what a weight axis means for importance and masking:

- `"producer"`: slicing this axis removes a filter that produces a channel
  (kernel output axes, depthwise kernels). Norms of these are "l1"/"l2"
  importance.
- `"consumer"`: this axis reads input channels (kernel input axes).
- `"param"`: a per-channel parameter (bias, gamma, beta, statistics).

`maskable` is False for weights that the optimizer does not update (moving
statistics): a constraint-based mask would not hold on them, and masking
gamma and beta already makes a dead channel's output zero.
"""

import dataclasses

import keras

_L = keras.layers
CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
CONV_TRANSPOSE = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)


class Unsupported(Exception):
    """A layer or operation whose channels cannot be changed; the message says why."""


@dataclasses.dataclass(frozen=True)
class WeightAxis:
    """One axis of one weight that runs over a slot.

    Attributes:
      variable: The layer's `keras.Variable`.
      axis: The axis (non-negative) of `variable` along the slot.
      slot: The slot name.
      role: `"producer"`, `"consumer"` or `"param"`.
      maskable: Whether the weight can be held at zero by a mask.
    """

    variable: object
    axis: int
    slot: str
    role: str
    maskable: bool = True


@dataclasses.dataclass
class Layout:
    """The channel slots of a built layer and the weight axes along them.

    Attributes:
      slots: Slot name -> size.
      axes: `WeightAxis` entries.
    """

    slots: dict
    axes: list

    def add(self, variable, axis, slot, role, maskable=True):
        if variable is None:
            return
        axis = axis % len(variable.shape)
        self.axes.append(WeightAxis(variable, axis, slot, role, maskable))

    def masked_variables(self):
        """Variables with at least one maskable slot axis, in layout order."""
        seen, out = set(), []
        for entry in self.axes:
            if entry.maskable and id(entry.variable) not in seen:
                seen.add(id(entry.variable))
                out.append(entry.variable)
        return out


def _channels_last(layer):
    data_format = getattr(layer, "data_format", "channels_last")
    if data_format not in (None, "channels_last"):
        raise Unsupported(f"data_format={data_format!r} (channels are not the last axis)")


def conv_groups(layer, in_channels):
    """`(groups, in_per_group, out_per_group)` of a Conv layer."""
    groups = int(getattr(layer, "groups", 1) or 1)
    return groups, in_channels // groups, layer.filters // groups


def _is_layer_scale(layer):
    # ConvNeXt's LayerScale is not exported; recognise it by its shape.
    return type(layer).__name__ == "LayerScale" and hasattr(layer, "projection_dim")


def layout(layer):
    """The slot layout of a built layer, or None for layers without channel weights.

    Args:
      layer: A built Keras layer.

    Returns:
      A `Layout`, or None if the layer has no per-channel weights known here.

    Raises:
      Unsupported: If the layer holds per-channel weights in a layout that
        cannot be sliced (e.g. channels-first convolutions).
    """
    if isinstance(layer, SEPARABLE):
        _channels_last(layer)
        depthwise = layer.depthwise_kernel
        c_in, mult = depthwise.shape[-2], depthwise.shape[-1]
        out = Layout({"in": c_in, "mid": c_in * mult, "out": layer.filters}, [])
        out.add(depthwise, -2, "in", "consumer")
        out.add(layer.pointwise_kernel, -2, "mid", "consumer")
        out.add(layer.pointwise_kernel, -1, "out", "producer")
        out.add(layer.bias, 0, "out", "param")
        return out
    if isinstance(layer, DEPTHWISE):
        _channels_last(layer)
        kernel = layer.kernel
        c_in, mult = kernel.shape[-2], kernel.shape[-1]
        out = Layout({"in": c_in, "out": c_in * mult}, [])
        out.add(kernel, -2, "in", "producer")
        out.add(layer.bias, 0, "out", "param")
        return out
    if isinstance(layer, CONV_TRANSPOSE):
        _channels_last(layer)
        kernel = layer.kernel  # (*spatial, out, in)
        out = Layout({"in": kernel.shape[-1], "out": kernel.shape[-2]}, [])
        out.add(kernel, -1, "in", "consumer")
        out.add(kernel, -2, "out", "producer")
        out.add(layer.bias, 0, "out", "param")
        return out
    if isinstance(layer, CONV):
        _channels_last(layer)
        kernel = layer.kernel  # (*spatial, in / groups, out)
        per_group_in = kernel.shape[-2]
        groups = int(getattr(layer, "groups", 1) or 1)
        slots = {"out": kernel.shape[-1]}
        out = Layout(slots, [])
        if groups == 1 or per_group_in > 1:
            slots["in"] = per_group_in
            out.add(kernel, -2, "in", "consumer")
        out.add(kernel, -1, "out", "producer")
        out.add(layer.bias, 0, "out", "param")
        return out
    if isinstance(layer, _L.Dense):
        kernel = layer.kernel
        out = Layout({"in": kernel.shape[0], "out": kernel.shape[1]}, [])
        out.add(kernel, 0, "in", "consumer")
        out.add(kernel, 1, "out", "producer")
        out.add(layer.bias, 0, "out", "param")
        return out
    if isinstance(layer, _L.BatchNormalization):
        size = layer.moving_mean.shape[0]
        out = Layout({"channel": size}, [])
        out.add(layer.gamma, 0, "channel", "param")
        out.add(layer.beta, 0, "channel", "param")
        out.add(layer.moving_mean, 0, "channel", "param", maskable=False)
        out.add(layer.moving_variance, 0, "channel", "param", maskable=False)
        return out
    if isinstance(layer, _L.LayerNormalization):
        if len(layer.axis) != 1:
            raise Unsupported(f"LayerNormalization over axes {layer.axis}")
        weight = layer.gamma if layer.gamma is not None else layer.beta
        size = None if weight is None else weight.shape[0]
        out = Layout({"channel": size}, [])
        out.add(layer.gamma, 0, "channel", "param")
        out.add(layer.beta, 0, "channel", "param")
        return out
    if _is_layer_scale(layer):
        out = Layout({"channel": layer.projection_dim}, [])
        out.add(layer.gamma, 0, "channel", "param")
        return out
    if isinstance(layer, _L.PReLU):
        alpha = layer.alpha
        if alpha.shape[-1] == 1:
            return None  # One slope shared by all channels.
        out = Layout({"channel": alpha.shape[-1]}, [])
        out.add(alpha, -1, "channel", "param")
        return out
    if isinstance(layer, _L.Embedding):
        embeddings = layer.embeddings
        out = Layout({"out": embeddings.shape[1]}, [])
        out.add(embeddings, 1, "out", "producer")
        return out
    return None
