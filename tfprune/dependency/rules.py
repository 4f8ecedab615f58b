"""Channel rules: how each layer or operation relates its input and output channels.

Every tensor's last axis holds channels; every channel of every tensor, and
every entry of every layer slot (see `layouts`), is an *element*. A rule
looks at one call site and *links* elements that must be removed together:
a BatchNormalization links channel i of its input, its slot and its output;
a Conv2D links its input to its `"in"` slot and its output to its `"out"`
slot (but not in to out, which is what makes output channels removable);
an `Add` links channel i of every operand; a `Concatenate` links input k's
channel i to output channel `offset_k + i`.

A rule that meets something it cannot reason about raises
`layouts.Unsupported` with the reason; the graph then keeps every channel the
call site touches. Rules only describe; they never change the model.
"""

import re

import keras
import numpy as np
from keras import tree

from tfprune.dependency import layouts
from tfprune.dependency.layouts import Unsupported
from tfprune.dependency.trace import TensorRef

_L = keras.layers

# Layers that act on each channel alone and keep the channel count.
_PER_CHANNEL_LAYERS = (
    _L.ReLU,
    _L.LeakyReLU,
    _L.ELU,
    _L.Dropout,
    _L.SpatialDropout1D,
    _L.SpatialDropout2D,
    _L.SpatialDropout3D,
    _L.GaussianNoise,
    _L.GaussianDropout,
    _L.AlphaDropout,
    _L.ActivityRegularization,
    _L.Identity,
    _L.RepeatVector,
)
# Spatial layers: per channel, but only when channels are last.
_SPATIAL_LAYERS = (
    _L.MaxPooling1D,
    _L.MaxPooling2D,
    _L.MaxPooling3D,
    _L.AveragePooling1D,
    _L.AveragePooling2D,
    _L.AveragePooling3D,
    _L.GlobalAveragePooling1D,
    _L.GlobalAveragePooling2D,
    _L.GlobalAveragePooling3D,
    _L.GlobalMaxPooling1D,
    _L.GlobalMaxPooling2D,
    _L.GlobalMaxPooling3D,
    _L.ZeroPadding1D,
    _L.ZeroPadding2D,
    _L.ZeroPadding3D,
    _L.Cropping1D,
    _L.Cropping2D,
    _L.Cropping3D,
    _L.UpSampling1D,
    _L.UpSampling2D,
    _L.UpSampling3D,
    _L.Resizing,
    _L.CenterCrop,
    _L.RandomFlip,
    _L.RandomRotation,
    _L.RandomTranslation,
    _L.RandomZoom,
    _L.RandomCrop,
)
_ELEMENTWISE_MERGE = (_L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Maximum, _L.Minimum)

# Activations that act on each value alone. softmax, log_softmax, sparsemax
# and glu mix channels, so a removed channel would change the others.
_ELEMENTWISE_ACTIVATIONS = {
    "celu", "elu", "exponential", "gelu", "hard_shrink", "hard_sigmoid", "hard_silu",
    "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "mish", "relu",
    "relu6", "selu", "sigmoid", "silu", "soft_shrink", "softplus", "softsign",
    "sparse_plus", "sparse_sigmoid", "squareplus", "swish", "tanh", "tanh_shrink",
    "threshold",
}

# keras.ops operations (by class name) that act on each value alone and are
# finite wherever their input is: a removed channel carries a finite
# constant, and finite constants are cancelled by the consumers' masks.
# (log, sqrt, reciprocal, ... are left out: inf * 0 would leak NaNs.)
_UNARY_OPS = {
    "Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "Swish", "HardSilu", "HardSwish",
    "Gelu", "Elu", "Selu", "Celu", "Softplus", "Softsign", "LeakyRelu", "Mish",
    "LogSigmoid", "SparsePlus", "SparseSigmoid", "Squareplus", "HardTanh", "TanhShrink",
    "SoftShrink", "HardShrink", "Threshold", "Tanh", "Abs", "Absolute", "Negative", "Square",
    "Exp", "Clip", "Cast", "Erf", "Sin", "Cos", "Sign", "Floor", "Ceil", "Round",
    "StopGradient", "Identity",
}
_BINARY_OPS = {"Add", "Subtract", "Multiply", "Maximum", "Minimum"}
_DIVISION_OPS = {"Divide", "TrueDivide"}
_REDUCE_OPS = {"Mean", "Sum", "Max", "Min", "Amax", "Amin", "Prod"}


def op_display_name(operation):
    """`keras.ops.add` for a `keras.ops` Add operation."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", type(operation).__name__).lower()
    return f"keras.ops.{snake}"


def describe(layer):
    """How a call site is named in reasons and summaries."""
    if isinstance(layer, keras.layers.Layer):
        return f"{type(layer).__name__} '{layer.name}'"
    return op_display_name(layer)


def _activation_name(layer):
    """The Keras name of a layer's built-in activation, or None if custom."""
    fn = getattr(layer, "activation", None)
    if fn is None or not getattr(fn, "__module__", "").startswith("keras."):
        return None
    return getattr(fn, "__name__", None)


def _check_weight_activation(ctx, slot="out"):
    """A channel-mixing activation keeps a weighted layer's output channels.

    Its input channels stay removable: the kernel's input slice is masked.
    """
    layer = ctx.layer
    if getattr(layer, "activation", None) is None:
        return
    name = _activation_name(layer)
    if name not in _ELEMENTWISE_ACTIVATIONS:
        ctx.block(
            ctx.slot(slot),
            f"{describe(layer)}: activation {name or 'custom'!s} mixes output channels "
            "or is unknown",
        )


def _last_axis(axis, rank):
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return axis is not None and axis % rank == rank - 1


class Context:
    """What a rule sees of one call site, and how it links elements.

    Created by the graph builder; see `DependencyGraph`.
    """

    def __init__(self, builder, site):
        self._builder = builder
        self.site = site
        self.layer = site.layer
        self.links = []
        self.blocks = []

    @property
    def inputs(self):
        return self.site.inputs

    @property
    def outputs(self):
        return self.site.outputs

    def channels(self, tensor):
        c = tensor.channels
        if c is None or len(tensor.shape) < 2:
            raise Unsupported(f"tensor of shape {tensor.shape} has no known channel axis")
        return c

    def tensor(self, tensor):
        """Element ids of a tensor's channels."""
        self.channels(tensor)
        return self._builder.tensor_elements(tensor)

    def slot(self, name):
        """Element ids of a slot of this site's layer."""
        return self._builder.slot_elements(self.layer, name, self._layout_size(name))

    def _layout_size(self, name):
        layout = self._builder.layout_of(self.layer, self.site)
        return layout.slots[name]

    def link(self, a, b):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise Unsupported(f"cannot align {a.size} channels with {b.size}")
        self.links.append((a, b))

    def block(self, ids, reason):
        """Keeps these elements (and everything linked to them), for `reason`."""
        self.blocks.append((np.asarray(ids), reason))

    def identity(self, src=0, dst=0):
        """Links input `src` channel i with output `dst` channel i."""
        self.link(self.tensor(self.inputs[src]), self.tensor(self.outputs[dst]))


def _only_input(ctx):
    if len(ctx.inputs) != 1 or len(ctx.outputs) != 1:
        raise Unsupported(f"expected one input and one output, got {len(ctx.inputs)} and "
                          f"{len(ctx.outputs)}")


def rule_identity(ctx):
    """Per-channel layers: input channel i is output channel i."""
    _only_input(ctx)
    ctx.identity()


def rule_spatial(ctx):
    """Pooling, padding, cropping, resizing: per channel when channels are last."""
    layouts._channels_last(ctx.layer)
    rule_identity(ctx)


def rule_elementwise(ctx, constants=()):
    """Operands broadcast along channels: size-C operands are linked, size-1 ones are not."""
    if len(ctx.outputs) != 1:
        raise Unsupported("expected one output")
    out = ctx.outputs[0]
    c_out = ctx.channels(out)
    out_ids = ctx.tensor(out)
    for t in ctx.inputs:
        if len(t.shape) == 0 or t.channels == 1 and c_out != 1:
            continue
        if t.channels != c_out:
            raise Unsupported(f"operand of shape {t.shape} does not broadcast over channels")
        ctx.link(ctx.tensor(t), out_ids)
    for value in constants:
        shape = np.shape(value)
        if shape and int(np.prod(shape)) > 1 and shape[-1] == c_out:
            raise Unsupported(f"constant operand with per-channel values (shape {shape})")


def _constants(site):
    flat = tree.flatten((site.args, site.kwargs))
    return [x for x in flat if not isinstance(x, TensorRef) and x is not None
            and not isinstance(x, (str, bool))]


def rule_concat(ctx, axis):
    """Channel-axis concatenation shifts each operand by the widths before it."""
    out = ctx.outputs[0]
    rank = len(out.shape)
    if not _last_axis(axis, rank):
        # Joining along another axis: every operand has the output's channels.
        out_ids = ctx.tensor(out)
        for t in ctx.inputs:
            ctx.link(ctx.tensor(t), out_ids)
        return
    out_ids = ctx.tensor(out)
    offset = 0
    for t in ctx.inputs:
        ids = ctx.tensor(t)
        ctx.link(ids, out_ids[offset:offset + ids.size])
        offset += ids.size
    if offset != out_ids.size:
        raise Unsupported(f"operands hold {offset} channels, output {out_ids.size}")


def rule_reshape(ctx):
    """Reshapes that keep each value's channel recoverable from its last index."""
    _only_input(ctx)
    src, dst = ctx.inputs[0], ctx.outputs[0]
    c, d = ctx.channels(src), ctx.channels(dst)
    src_ids, dst_ids = ctx.tensor(src), ctx.tensor(dst)
    if d % c == 0:
        # Output index j holds input channel j % c (row-major order, channels last).
        ctx.link(src_ids[np.arange(d) % c], dst_ids)
    elif c % d == 0:
        ctx.link(src_ids, dst_ids[np.arange(c) % d])
    else:
        raise Unsupported(f"reshape from {src.shape} to {dst.shape} splits channels")
    if sum(1 for x in dst.shape[1:] if x is None) > 1:
        raise Unsupported(f"output shape {dst.shape} has several unknown dimensions")


def rule_flatten(ctx):
    """Flatten of channels-last data: output j holds input channel j % C."""
    layouts._channels_last(ctx.layer)
    rule_reshape(ctx)


def rule_permute(ctx):
    """Permute that leaves the channel axis last."""
    dims = tuple(ctx.layer.dims)
    if dims[-1] != len(dims):
        raise Unsupported(f"Permute{dims} moves the channel axis")
    rule_identity(ctx)


def rule_activation(ctx):
    """Elementwise activations; channel-mixing ones (softmax, ...) are unsupported."""
    name = _activation_name(ctx.layer)
    if name not in _ELEMENTWISE_ACTIVATIONS:
        raise Unsupported(f"activation {name or 'custom'!s} mixes channels or is unknown")
    rule_identity(ctx)


def rule_rescaling(ctx):
    """Rescaling with one scale and offset for all channels."""
    for value in (ctx.layer.scale, ctx.layer.offset):
        if np.size(value) > 1:
            raise Unsupported("per-channel scale or offset constants")
    rule_identity(ctx)


def rule_normalization(ctx):
    """Normalization layers hold constants per input channel: never pruned."""
    raise Unsupported("holds per-channel mean and variance constants")


def rule_dense(ctx):
    """Dense: input -> "in" slot (kernel rows), output -> "out" slot."""
    _only_input(ctx)
    _check_weight_activation(ctx)
    ctx.link(ctx.tensor(ctx.inputs[0]), ctx.slot("in"))
    ctx.link(ctx.tensor(ctx.outputs[0]), ctx.slot("out"))


def rule_conv(ctx):
    """Conv1D/2D/3D, plain, grouped or depthwise-style (groups == input channels)."""
    _only_input(ctx)
    layer = ctx.layer
    _check_weight_activation(ctx)
    src, dst = ctx.inputs[0], ctx.outputs[0]
    groups, per_in, per_out = layouts.conv_groups(layer, ctx.channels(src))
    src_ids, out_slot = ctx.tensor(src), ctx.slot("out")
    ctx.link(ctx.tensor(dst), out_slot)
    if groups == 1:
        ctx.link(src_ids, ctx.slot("in"))
        return
    group_of_out = np.arange(groups * per_out) // per_out
    if per_in == 1:
        # Depthwise-style: input channel k feeds only group k's outputs, so
        # they go together and `groups` follows the kept count.
        ctx.link(src_ids[group_of_out], out_slot)
        return
    # Grouped: keep every group the same width by removing within-group
    # index j from all groups at once, on the input and on the output side.
    in_slot = ctx.slot("in")
    ctx.link(src_ids, in_slot[np.arange(groups * per_in) % per_in])
    ctx.link(out_slot, out_slot[np.arange(groups * per_out) % per_out])


def rule_conv_transpose(ctx):
    """Transposed convolutions (kernel laid out (*spatial, out, in))."""
    _only_input(ctx)
    _check_weight_activation(ctx)
    ctx.link(ctx.tensor(ctx.inputs[0]), ctx.slot("in"))
    ctx.link(ctx.tensor(ctx.outputs[0]), ctx.slot("out"))


def rule_depthwise(ctx):
    """Depthwise: input channel k feeds outputs k*m .. k*m+m-1 (m = depth_multiplier)."""
    _only_input(ctx)
    _check_weight_activation(ctx)
    in_slot, out_slot = ctx.slot("in"), ctx.slot("out")
    mult = out_slot.size // in_slot.size
    ctx.link(ctx.tensor(ctx.inputs[0]), in_slot)
    ctx.link(in_slot[np.arange(out_slot.size) // mult], out_slot)
    ctx.link(ctx.tensor(ctx.outputs[0]), out_slot)


def rule_separable(ctx):
    """Separable: depthwise ("in", "mid" = in x multiplier) then pointwise ("out")."""
    _only_input(ctx)
    _check_weight_activation(ctx)
    in_slot, mid_slot = ctx.slot("in"), ctx.slot("mid")
    mult = mid_slot.size // in_slot.size
    ctx.link(ctx.tensor(ctx.inputs[0]), in_slot)
    ctx.link(in_slot[np.arange(mid_slot.size) // mult], mid_slot)
    ctx.link(ctx.tensor(ctx.outputs[0]), ctx.slot("out"))


def rule_channel_param(ctx):
    """Layers with one per-channel parameter vector (BN, LN, LayerScale, PReLU)."""
    _only_input(ctx)
    src, dst = ctx.inputs[0], ctx.outputs[0]
    rank = len(src.shape)
    layer = ctx.layer
    if isinstance(layer, (_L.BatchNormalization, _L.LayerNormalization)):
        if not _last_axis(layer.axis, rank):
            raise Unsupported(f"normalizes over axis {layer.axis}, not the channel axis")
    ctx.link(ctx.tensor(src), ctx.tensor(dst))
    if ctx._builder.layout_of(layer, ctx.site) is not None:
        ctx.link(ctx.tensor(src), ctx.slot("channel"))


def rule_embedding(ctx):
    """Embedding: its output channels are the "out" slot (the input holds ids)."""
    ctx.link(ctx.tensor(ctx.outputs[0]), ctx.slot("out"))


def _is_custom_scale_layer(layer):
    # InceptionResNetV2's residual: inputs[0] + inputs[1] * scale.
    return type(layer).__name__ == "CustomScaleLayer" and hasattr(layer, "scale")


def layer_rule(layer):
    """The rule for a Keras layer, or None if its channel semantics are unknown."""
    if isinstance(layer, layouts.SEPARABLE):
        return rule_separable
    if isinstance(layer, layouts.DEPTHWISE):
        return rule_depthwise
    if isinstance(layer, layouts.CONV_TRANSPOSE):
        return rule_conv_transpose
    if isinstance(layer, layouts.CONV):
        return rule_conv
    if isinstance(layer, _L.Dense):
        return rule_dense
    if isinstance(layer, (_L.BatchNormalization, _L.LayerNormalization, _L.PReLU)):
        return rule_channel_param
    if layouts._is_layer_scale(layer):
        return rule_channel_param
    if isinstance(layer, _L.Embedding):
        return rule_embedding
    if isinstance(layer, _PER_CHANNEL_LAYERS):
        return rule_identity
    if isinstance(layer, _SPATIAL_LAYERS):
        return rule_spatial
    if isinstance(layer, _L.Activation):
        return rule_activation
    if isinstance(layer, _L.Rescaling):
        return rule_rescaling
    if isinstance(layer, _L.Normalization):
        return rule_normalization
    if isinstance(layer, _L.Flatten):
        return rule_flatten
    if isinstance(layer, _L.Reshape):
        return rule_reshape
    if isinstance(layer, _L.Permute):
        return rule_permute
    if isinstance(layer, _L.Concatenate):
        return lambda ctx: rule_concat(ctx, layer.axis)
    if isinstance(layer, _ELEMENTWISE_MERGE) or _is_custom_scale_layer(layer):
        return rule_elementwise
    return None


def op_rule(operation):
    """The rule for a `keras.ops` operation, or None if unknown."""
    name = type(operation).__name__
    module = type(operation).__module__
    if not module.startswith("keras."):
        return None
    if name in _UNARY_OPS:
        return lambda ctx: rule_elementwise(ctx, _constants(ctx.site))
    if name in _BINARY_OPS:
        return lambda ctx: rule_elementwise(ctx, _constants(ctx.site))
    if name in _DIVISION_OPS:
        def divide(ctx):
            divisor = ctx.site.args[1] if len(ctx.site.args) > 1 else None
            if isinstance(divisor, TensorRef):
                raise Unsupported("division by a tensor (a removed channel would divide by zero)")
            rule_elementwise(ctx, _constants(ctx.site))
        return divide
    if name in _REDUCE_OPS:
        def reduce(ctx):
            axis = getattr(operation, "axis", None)
            rank = len(ctx.inputs[0].shape)
            if isinstance(axis, (list, tuple)):
                axes = list(axis)
            else:
                axes = [] if axis is None else [axis]
            if axis is None or any(a % rank == rank - 1 for a in axes):
                raise Unsupported("reduces over the channel axis")
            rule_identity(ctx)
        return reduce
    if name in ("ExpandDims", "Squeeze"):
        def squeeze(ctx):
            if ctx.channels(ctx.inputs[0]) != ctx.channels(ctx.outputs[0]):
                raise Unsupported("moves the channel axis")
            rule_identity(ctx)
        return squeeze
    if name == "Reshape":
        return rule_reshape
    if name == "Concatenate":
        return lambda ctx: rule_concat(ctx, operation.axis)
    return None


def rule_for(site):
    """The rule for a call site.

    Raises:
      Unsupported: If the layer or operation has unknown channel semantics.
    """
    layer = site.layer
    if isinstance(layer, keras.layers.Layer):
        rule = layer_rule(layer)
        if rule is None:
            raise Unsupported("layer type with unknown channel semantics")
        return rule
    rule = op_rule(layer)
    if rule is None:
        raise Unsupported("operation with unknown channel semantics")
    return rule
