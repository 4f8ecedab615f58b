"""Handlers for per-channel parameter layers: batch, layer, RMS, unit and group
normalization, PReLU, ConvNeXt's LayerScale, and `Normalization`, whose
channels stay."""

import keras
import numpy as np

from tfprune.handlers import common
from tfprune.handlers.base import LayerHandler
from tfprune.handlers.layout import Layout, Unsupported


class ChannelParamHandler(LayerHandler):
    """Layers with per-channel parameters that keep the channel count.

    Nothing of them is pruned by unstructured pruning (as tfmot: they hold
    scales and statistics, not connections), and they are wrapped as they are.
    Input channel i, parameter i and output channel i go together.
    """

    prunes_nothing = True

    def prunable_weights(self, layer):
        return []

    def link(self, ctx):
        ctx.only_input()
        axis = getattr(ctx.layer, "axis", -1)
        if not common.is_last_axis(axis, len(ctx.inputs[0].shape)):
            raise Unsupported(f"normalizes over axis {axis}, not the channel axis")
        ctx.identity()
        if ctx.has_slot("channel"):
            ctx.link(ctx.tensor(ctx.inputs[0]), ctx.slot("channel"))


class BatchNormalizationHandler(ChannelParamHandler):
    """BatchNormalization: gamma, beta and the moving statistics per channel."""

    def layout(self, layer):
        out = Layout({"channel": layer.moving_mean.shape[0]}, [])
        out.add(layer.gamma, 0, "channel", "param")
        out.add(layer.beta, 0, "channel", "param")
        out.add(layer.moving_mean, 0, "channel", "param", maskable=False)
        out.add(layer.moving_variance, 0, "channel", "param", maskable=False)
        return out


class LayerNormalizationHandler(ChannelParamHandler):
    """LayerNormalization over the channel axis, centred or RMS (`rms_scaling`).

    Its statistics run over the channels, so a masked layer computes them over
    the kept channels only (`masked_call`): the thinner layer then computes
    the same numbers.
    """

    def layout(self, layer):
        if len(layer.axis) != 1:
            raise Unsupported(f"LayerNormalization over axes {layer.axis}")
        weight = layer.gamma if layer.gamma is not None else layer.beta
        out = Layout({"channel": None if weight is None else weight.shape[0]}, [])
        out.add(layer.gamma, 0, "channel", "param")
        out.add(layer.beta, 0, "channel", "param")
        return out

    def masked_call(self, layer, slot_masks, inputs, *args, **kwargs):
        """LayerNormalization with its statistics over the kept channels only.

        With `rms_scaling=True` Keras 3 computes `x * rsqrt(var(x) + eps) *
        gamma`: the variance is centred but `x` is not, and there is no beta.
        """
        ops = keras.ops
        x = ops.cast(inputs, "float32")
        mask = ops.cast(slot_masks["channel"], "float32")
        count = ops.maximum(ops.sum(mask), 1.0)
        mean = ops.sum(x * mask, axis=-1, keepdims=True) / count
        centered = (x - mean) * mask
        variance = ops.sum(ops.square(centered), axis=-1, keepdims=True) / count
        inv = ops.rsqrt(variance + layer.epsilon)
        outputs = x * mask * inv if layer.rms_scaling else centered * inv
        if layer.gamma is not None:
            outputs = outputs * ops.cast(layer.gamma, "float32")
        if layer.beta is not None:
            outputs = outputs + ops.cast(layer.beta, "float32")
        return ops.cast(outputs * mask, layer.compute_dtype)


class RMSNormalizationHandler(ChannelParamHandler):
    """RMSNormalization over the channel axis: `x * rsqrt(mean(x^2) + eps) * scale`.

    The mean runs over the kept channels only while channels are masked.
    """

    def layout(self, layer):
        if len(layer.axis) != 1:
            raise Unsupported(f"RMSNormalization over axes {layer.axis}")
        out = Layout({"channel": layer.scale.shape[0]}, [])
        out.add(layer.scale, 0, "channel", "param")
        return out

    def masked_call(self, layer, slot_masks, inputs, *args, **kwargs):
        """RMS normalization with the mean of squares over the kept channels."""
        ops = keras.ops
        x = ops.cast(inputs, "float32")
        mask = ops.cast(slot_masks["channel"], "float32")
        count = ops.maximum(ops.sum(mask), 1.0)
        mean_square = ops.sum(ops.square(x * mask), axis=-1, keepdims=True) / count
        epsilon = keras.config.epsilon() if layer.epsilon is None else layer.epsilon
        outputs = x * mask * ops.rsqrt(mean_square + epsilon)
        outputs = outputs * ops.cast(layer.scale, "float32")
        return ops.cast(outputs, layer.compute_dtype)


class UnitNormalizationHandler(ChannelParamHandler):
    """UnitNormalization over the channel axis: the L2 norm runs over kept channels."""

    def layout(self, layer):
        return Layout({"channel": None}, [])

    def masked_call(self, layer, slot_masks, inputs, *args, **kwargs):
        """`x / ||x||` with the norm over the kept channels (as `ops.normalize`)."""
        ops = keras.ops
        mask = ops.cast(slot_masks["channel"], "float32")
        x = ops.cast(inputs, "float32") * mask
        inv_norm = ops.rsqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))
        outputs = x * ops.minimum(inv_norm, 1e12)
        return ops.cast(outputs, layer.compute_dtype)


class GroupNormalizationHandler(ChannelParamHandler):
    """GroupNormalization over the channel axis, `groups` groups of equal width.

    Statistics run over each group's channels (and all positions). Channel j
    of every group goes together, so the thinner layer keeps `groups` groups
    of equal width; a masked layer computes each group's statistics over its
    kept channels only (`masked_call`), as the thinner layer will. With one
    channel per group (`groups` = channels) channels go one by one and
    `groups` follows the kept count.
    """

    def layout(self, layer):
        weight = layer.gamma if layer.gamma is not None else layer.beta
        out = Layout({"channel": None if weight is None else weight.shape[0]}, [])
        out.add(layer.gamma, 0, "channel", "param")
        out.add(layer.beta, 0, "channel", "param")
        return out

    def link(self, ctx):
        super().link(ctx)
        slot = ctx.slot("channel")
        per_group = slot.size // ctx.layer.groups
        if per_group > 1:
            ctx.link(slot, slot[np.arange(slot.size) % per_group])

    def shrink_config(self, layer, config, ctx):
        if ctx.layout.slots["channel"] == layer.groups:
            config["groups"] = ctx.kept("channel")
        return config

    def masked_call(self, layer, slot_masks, inputs, *args, **kwargs):
        """Group normalization with each group's statistics over its kept channels."""
        ops = keras.ops
        x = ops.cast(inputs, "float32")
        rank = len(x.shape)
        channels, groups = x.shape[-1], layer.groups
        dynamic = ops.shape(x)
        group_shape = [-1] + [dynamic[i] if d is None else d
                              for i, d in enumerate(x.shape) if 0 < i < rank - 1]
        group_shape += [groups, channels // groups]
        x = ops.reshape(x, group_shape)
        mask = ops.reshape(ops.cast(slot_masks["channel"], "float32"), (groups, -1))
        axes = list(range(1, rank - 1)) + [rank]  # positions and channels of a group
        count = ops.maximum(ops.sum(ops.ones_like(x) * mask, axis=axes, keepdims=True), 1.0)
        mean = ops.sum(x * mask, axis=axes, keepdims=True) / count
        centered = (x - mean) * mask
        variance = ops.sum(ops.square(centered), axis=axes, keepdims=True) / count
        outputs = centered * ops.rsqrt(variance + layer.epsilon)
        if layer.gamma is not None:
            outputs = outputs * ops.reshape(ops.cast(layer.gamma, "float32"), (groups, -1))
        if layer.beta is not None:
            outputs = outputs + ops.reshape(ops.cast(layer.beta, "float32"), (groups, -1))
        outputs = ops.reshape(outputs * mask, ops.shape(inputs))
        return ops.cast(outputs, layer.compute_dtype)


class PReLUHandler(ChannelParamHandler):
    """PReLU with one slope per channel (a shared slope has no slot)."""

    def layout(self, layer):
        alpha = layer.alpha
        if alpha.shape[-1] == 1:
            return None  # One slope shared by all channels.
        out = Layout({"channel": alpha.shape[-1]}, [])
        out.add(alpha, -1, "channel", "param")
        return out


class LayerScaleHandler(ChannelParamHandler):
    """ConvNeXt's LayerScale (`keras.applications`): a per-channel gamma."""

    def layout(self, layer):
        out = Layout({"channel": layer.projection_dim}, [])
        out.add(layer.gamma, 0, "channel", "param")
        return out

    def shrink_config(self, layer, config, ctx):
        config["projection_dim"] = ctx.kept("channel")
        return config


class FixedChannelsHandler(ChannelParamHandler):
    """`Normalization`: its channels are never removed.

    It holds per-channel mean and variance constants. It may sit in a pruned
    model and be wrapped (nothing is pruned), but its channels stay.
    """

    def link(self, ctx):
        raise Unsupported("holds per-channel mean and variance constants")
