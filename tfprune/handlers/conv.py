"""Handlers for convolutions: Conv1D/2D/3D (grouped too), transposed,
depthwise and separable convolutions, all channels-last."""

import math

import numpy as np

from tfprune.handlers import common
from tfprune.handlers.base import LayerHandler
from tfprune.handlers.layout import Layout


def conv_groups(layer, in_channels):
    """`(groups, in_per_group, out_per_group)` of a Conv layer."""
    groups = int(getattr(layer, "groups", 1) or 1)
    return groups, in_channels // groups, layer.filters // groups


class ConvHandler(LayerHandler):
    """Conv1D/2D/3D, plain, grouped or depthwise-style (groups == input channels)."""

    def prunable_weights(self, layer):
        return [(layer.kernel, -2)]

    def layout(self, layer):
        common.channels_last(layer)
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

    def link(self, ctx):
        ctx.only_input()
        common.check_activation(ctx)
        src, dst = ctx.inputs[0], ctx.outputs[0]
        groups, per_in, per_out = conv_groups(ctx.layer, ctx.channels(src))
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

    def shrink_config(self, layer, config, ctx):
        config["filters"] = ctx.kept("out")
        groups = int(config.get("groups", 1) or 1)
        if groups > 1 and "in" not in ctx.layout.slots:
            # Depthwise-style grouping follows the kept input channels.
            config["groups"] = ctx.tensor_kept(ctx.site.inputs[0])
        return config

    def macs(self, layer, site):
        return common.kernel_macs(layer, site.outputs[0])


class ConvTransposeHandler(LayerHandler):
    """Conv1D/2D/3DTranspose (kernel laid out (*spatial, out, in))."""

    def prunable_weights(self, layer):
        return [(layer.kernel, -1)]

    def layout(self, layer):
        common.channels_last(layer)
        kernel = layer.kernel
        out = Layout({"in": kernel.shape[-1], "out": kernel.shape[-2]}, [])
        out.add(kernel, -1, "in", "consumer")
        out.add(kernel, -2, "out", "producer")
        out.add(layer.bias, 0, "out", "param")
        return out

    def link(self, ctx):
        common.link_in_out(ctx)

    def shrink_config(self, layer, config, ctx):
        config["filters"] = ctx.kept("out")
        return config

    def macs(self, layer, site):
        return common.kernel_macs(layer, site.inputs[0])


class DepthwiseHandler(LayerHandler):
    """DepthwiseConv1D/2D: input channel k feeds outputs k*m .. k*m+m-1.

    Unlike tfmot, which leaves depthwise kernels dense, unstructured pruning
    prunes them (the README states the difference).
    """

    def prunable_weights(self, layer):
        return [(layer.kernel, -2)]

    def layout(self, layer):
        common.channels_last(layer)
        kernel = layer.kernel
        c_in, mult = kernel.shape[-2], kernel.shape[-1]
        out = Layout({"in": c_in, "out": c_in * mult}, [])
        out.add(kernel, -2, "in", "producer")
        out.add(layer.bias, 0, "out", "param")
        return out

    def link(self, ctx):
        ctx.only_input()
        common.check_activation(ctx)
        in_slot, out_slot = ctx.slot("in"), ctx.slot("out")
        mult = out_slot.size // in_slot.size
        ctx.link(ctx.tensor(ctx.inputs[0]), in_slot)
        ctx.link(in_slot[np.arange(out_slot.size) // mult], out_slot)
        ctx.link(ctx.tensor(ctx.outputs[0]), out_slot)

    def macs(self, layer, site):
        return common.kernel_macs(layer, site.outputs[0])


class SeparableHandler(LayerHandler):
    """SeparableConv1D/2D: depthwise ("in", "mid" = in x multiplier), then pointwise ("out")."""

    def prunable_weights(self, layer):
        # As tfmot: the pointwise kernel holds nearly all connections; the
        # depthwise one is tiny and pruning it costs accuracy for nothing.
        return [(layer.pointwise_kernel, -2)]

    def layout(self, layer):
        common.channels_last(layer)
        depthwise = layer.depthwise_kernel
        c_in, mult = depthwise.shape[-2], depthwise.shape[-1]
        out = Layout({"in": c_in, "mid": c_in * mult, "out": layer.filters}, [])
        out.add(depthwise, -2, "in", "consumer")
        out.add(layer.pointwise_kernel, -2, "mid", "consumer")
        out.add(layer.pointwise_kernel, -1, "out", "producer")
        out.add(layer.bias, 0, "out", "param")
        return out

    def link(self, ctx):
        ctx.only_input()
        common.check_activation(ctx)
        in_slot, mid_slot = ctx.slot("in"), ctx.slot("mid")
        mult = mid_slot.size // in_slot.size
        ctx.link(ctx.tensor(ctx.inputs[0]), in_slot)
        ctx.link(in_slot[np.arange(mid_slot.size) // mult], mid_slot)
        ctx.link(ctx.tensor(ctx.outputs[0]), ctx.slot("out"))

    def shrink_config(self, layer, config, ctx):
        config["filters"] = ctx.kept("out")
        return config

    def macs(self, layer, site):
        return common.positions(site.outputs[0], layer) * (
            math.prod(layer.depthwise_kernel.shape) + math.prod(layer.pointwise_kernel.shape))
