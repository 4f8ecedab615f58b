"""Handlers for `keras.ops` operations recorded in functional models
(the `Add` of `inputs + x`, `keras.ops.mean(x, axis=1)`, ...).

Operations hold no weights; they only link channels. Unary and binary
operations that act on each value alone and stay finite link channel i of
every operand (a removed channel carries a finite constant, and finite
constants are cancelled by the consumers' masks; log, sqrt, reciprocal, ...
are left out: inf * 0 would leak NaNs).
"""

import numbers

from keras import tree

from tfprune.dependency.trace import TensorRef
from tfprune.handlers import reshaping
from tfprune.handlers.base import LayerHandler
from tfprune.handlers.layout import Unsupported

UNARY = frozenset({
    "Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "Swish", "HardSilu", "HardSwish",
    "Gelu", "Elu", "Selu", "Celu", "Softplus", "Softsign", "LeakyRelu", "Mish",
    "LogSigmoid", "SparsePlus", "SparseSigmoid", "Squareplus", "HardTanh", "TanhShrink",
    "SoftShrink", "HardShrink", "Threshold", "Tanh", "Abs", "Absolute", "Negative", "Square",
    "Exp", "Clip", "Cast", "Erf", "Sin", "Cos", "Sign", "Floor", "Ceil", "Round",
    "StopGradient", "Identity",
})
BINARY = frozenset({"Add", "Subtract", "Multiply", "Maximum", "Minimum"})
DIVISION = frozenset({"Divide", "TrueDivide"})
REDUCE = frozenset({"Mean", "Sum", "Max", "Min", "Amax", "Amin", "Prod"})


def constants(site):
    """The non-tensor operands of a call (numbers, arrays)."""
    flat = tree.flatten((site.args, site.kwargs))
    return [x for x in flat if not isinstance(x, TensorRef) and x is not None
            and not isinstance(x, (str, bool))]


class ElementwiseOperation(LayerHandler):
    """Unary and binary elementwise operations."""

    def link(self, ctx):
        reshaping.link_elementwise(ctx, constants(ctx.site))


class DivideOperation(LayerHandler):
    """Division by constants; division by a tensor would divide by a removed zero."""

    def link(self, ctx):
        divisor = ctx.site.args[1] if len(ctx.site.args) > 1 else None
        if isinstance(divisor, TensorRef):
            raise Unsupported("division by a tensor (a removed channel would divide by zero)")
        reshaping.link_elementwise(ctx, constants(ctx.site))


class ReduceOperation(LayerHandler):
    """Reductions over axes other than the channel axis."""

    def link(self, ctx):
        axis = getattr(ctx.layer, "axis", None)
        rank = len(ctx.inputs[0].shape)
        axes = list(axis) if isinstance(axis, (list, tuple)) else ([] if axis is None else [axis])
        if axis is None or any(a % rank == rank - 1 for a in axes):
            raise Unsupported("reduces over the channel axis")
        ctx.only_input()
        ctx.identity()


class SqueezeOperation(LayerHandler):
    """`expand_dims` / `squeeze` that leave the channel axis last."""

    def link(self, ctx):
        if ctx.channels(ctx.inputs[0]) != ctx.channels(ctx.outputs[0]):
            raise Unsupported("moves the channel axis")
        ctx.only_input()
        ctx.identity()


class ReshapeOperation(LayerHandler):
    """`keras.ops.reshape`: its `newshape` follows the kept channels."""

    def link(self, ctx):
        reshaping.link_reshape(ctx)

    def shrink_operation(self, operation, ctx):
        """Sets the copied operation's new shape (operations have no config to edit)."""
        operation.newshape = ctx.target_shape(with_batch=True)


class ConcatenateOperation(LayerHandler):
    """`keras.ops.concatenate`."""

    def link(self, ctx):
        reshaping.link_concat(ctx, ctx.layer.axis)


def _is_full_slice(key):
    return isinstance(key, slice) and key.start is None and key.stop is None and key.step in (None, 1)


class GetItemOperation(LayerHandler):
    """`x[...]` with constant indices that leave the channel axis whole and last
    (BERT's `x[:, 0, :]` takes the [CLS] position of every channel)."""

    def link(self, ctx):
        ctx.only_input()
        key = ctx.site.args[1] if len(ctx.site.args) > 1 else None
        key = key if isinstance(key, tuple) else (key,)
        if not all(k is None or k is Ellipsis or isinstance(k, (numbers.Integral, slice))
                   for k in key):
            raise Unsupported("indexing with tensors or arrays")
        rank = len(ctx.inputs[0].shape)
        named = sum(1 for k in key if k is not None and k is not Ellipsis)
        if key.count(Ellipsis) > 1 or named > rank:
            raise Unsupported(f"index {key!r} does not fit a tensor of rank {rank}")
        # Spell out every axis: the key's last entry then indexes the channel
        # axis, unless it is None (a new axis after the channels).
        fill = (slice(None),) * (rank - named)
        if Ellipsis in key:
            at = key.index(Ellipsis)
            key = key[:at] + fill + key[at + 1:]
        else:
            key = key + fill
        if not _is_full_slice(key[-1]):
            raise Unsupported(f"index {key[-1]!r} on the channel axis")
        ctx.identity()
