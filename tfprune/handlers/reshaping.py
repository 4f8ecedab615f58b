"""Handlers for weightless layers: per-channel and spatial layers, activations,
merges, concatenation and reshapes. They hold no weights, so unstructured
pruning wraps them with nothing pruned (as tfmot) and `shrink` copies them
(a `Reshape` gets its new target shape)."""

import numpy as np

from tfprune.handlers import common
from tfprune.handlers.base import LayerHandler
from tfprune.handlers.layout import Unsupported


class WeightlessHandler(LayerHandler):
    """Base of the weightless handlers: nothing to prune, wrapped as is."""

    prunes_nothing = True

    def prunable_weights(self, layer):
        return []


class IdentityHandler(WeightlessHandler):
    """Per-channel layers (ReLU, Dropout, ...): input channel i is output channel i."""

    def link(self, ctx):
        ctx.only_input()
        ctx.identity()


class SpatialHandler(IdentityHandler):
    """Pooling, padding, cropping, resizing: per channel when channels are last."""

    def link(self, ctx):
        common.channels_last(ctx.layer)
        super().link(ctx)


class ActivationHandler(IdentityHandler):
    """`Activation`: elementwise ones link channels; softmax and the like mix them."""

    def link(self, ctx):
        name = common.activation_name(ctx.layer)
        if name not in common.ELEMENTWISE_ACTIVATIONS:
            raise Unsupported(f"activation {name or 'custom'!s} mixes channels or is unknown")
        super().link(ctx)


class RescalingHandler(IdentityHandler):
    """Rescaling with one scale and offset for all channels."""

    def link(self, ctx):
        for value in (ctx.layer.scale, ctx.layer.offset):
            if np.size(value) > 1:
                raise Unsupported("per-channel scale or offset constants")
        super().link(ctx)


def link_elementwise(ctx, constants=()):
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


class MergeHandler(WeightlessHandler):
    """Add, Subtract, Multiply, Average, Maximum, Minimum: channel i of every operand.

    Also InceptionResNetV2's CustomScaleLayer (`inputs[0] + inputs[1] * scale`).
    """

    def link(self, ctx):
        link_elementwise(ctx)


def link_concat(ctx, axis):
    """Channel-axis concatenation shifts each operand by the widths before it."""
    out = ctx.outputs[0]
    out_ids = ctx.tensor(out)
    if not common.is_last_axis(axis, len(out.shape)):
        # Joining along another axis: every operand has the output's channels.
        for t in ctx.inputs:
            ctx.link(ctx.tensor(t), out_ids)
        return
    offset = 0
    for t in ctx.inputs:
        ids = ctx.tensor(t)
        ctx.link(ids, out_ids[offset:offset + ids.size])
        offset += ids.size
    if offset != out_ids.size:
        raise Unsupported(f"operands hold {offset} channels, output {out_ids.size}")


class ConcatenateHandler(WeightlessHandler):
    """`Concatenate` layers."""

    def link(self, ctx):
        link_concat(ctx, ctx.layer.axis)


def link_reshape(ctx):
    """Reshapes that keep each value's channel recoverable from its last index."""
    ctx.only_input()
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


class ReshapeHandler(WeightlessHandler):
    """`Reshape`: its `target_shape` follows the kept channels."""

    def link(self, ctx):
        link_reshape(ctx)

    def shrink_config(self, layer, config, ctx):
        config["target_shape"] = ctx.target_shape()
        return config


class FlattenHandler(WeightlessHandler):
    """Flatten of channels-last data: output j holds input channel j % C."""

    def link(self, ctx):
        common.channels_last(ctx.layer)
        link_reshape(ctx)


class PermuteHandler(IdentityHandler):
    """Permute that leaves the channel axis last."""

    def link(self, ctx):
        dims = tuple(ctx.layer.dims)
        if dims[-1] != len(dims):
            raise Unsupported(f"Permute{dims} moves the channel axis")
        super().link(ctx)


class LambdaHandler(LayerHandler):
    """`Lambda`: its channel semantics are unknown, but it can be copied.

    Keras refuses to deserialize a `Lambda`'s Python function in safe mode,
    which is right for files and wrong for a layer already in memory: a copy
    is re-created around the same function object and arguments.
    """

    def from_config(self, layer, config):
        kwargs = {k: config[k] for k in ("name", "trainable", "dtype") if k in config}
        return type(layer)(
            layer.function,
            output_shape=layer._output_shape,
            mask=layer.mask,
            arguments=dict(layer.arguments),
            **kwargs,
        )
