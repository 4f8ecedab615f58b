"""Handlers for per-channel parameter layers: batch and layer normalization,
PReLU, ConvNeXt's LayerScale, and normalization layers whose channels stay."""

import keras

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
        ops = keras.ops
        x = ops.cast(inputs, "float32")
        mask = ops.cast(slot_masks["channel"], "float32")
        count = ops.maximum(ops.sum(mask), 1.0)
        if layer.rms_scaling:
            # x * rsqrt(mean(x^2) + eps) * gamma, the mean over kept channels.
            mean_square = ops.sum(ops.square(x * mask), axis=-1, keepdims=True) / count
            outputs = x * ops.rsqrt(mean_square + layer.epsilon)
            if layer.gamma is not None:
                outputs = outputs * ops.cast(layer.gamma, "float32")
            return ops.cast(outputs * mask, layer.compute_dtype)
        mean = ops.sum(x * mask, axis=-1, keepdims=True) / count
        centered = (x - mean) * mask
        variance = ops.sum(ops.square(centered), axis=-1, keepdims=True) / count
        outputs = centered * ops.rsqrt(variance + layer.epsilon)
        if layer.gamma is not None:
            outputs = outputs * ops.cast(layer.gamma, "float32")
        if layer.beta is not None:
            outputs = outputs + ops.cast(layer.beta, "float32")
        return ops.cast(outputs * mask, layer.compute_dtype)


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
    """Normalization layers whose channels are never removed.

    `Normalization` holds per-channel mean and variance constants;
    `GroupNormalization` and `UnitNormalization` compute statistics across
    channels. They may sit in a pruned model and be wrapped (nothing is
    pruned), but their channels stay.
    """

    def link(self, ctx):
        if isinstance(ctx.layer, keras.layers.Normalization):
            raise Unsupported("holds per-channel mean and variance constants")
        raise Unsupported("computes statistics across channels")
