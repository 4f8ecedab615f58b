"""Handlers for Dense and EinsumDense."""

import math

from tfprune.handlers import common
from tfprune.handlers.base import LayerHandler
from tfprune.handlers.layout import Layout, Unsupported


class DenseHandler(LayerHandler):
    """Dense: input -> "in" slot (kernel rows), output -> "out" slot."""

    def prunable_weights(self, layer):
        return [(layer.kernel, 0)]

    def layout(self, layer):
        kernel = layer.kernel
        out = Layout({"in": kernel.shape[0], "out": kernel.shape[1]}, [])
        out.add(kernel, 0, "in", "consumer")
        out.add(kernel, 1, "out", "producer")
        out.add(layer.bias, 0, "out", "param")
        return out

    def link(self, ctx):
        ctx.only_input()
        common.check_activation(ctx)
        ctx.link(ctx.tensor(ctx.inputs[0]), ctx.slot("in"))
        ctx.link(ctx.tensor(ctx.outputs[0]), ctx.slot("out"))

    def shrink_config(self, layer, config, ctx):
        config["units"] = ctx.kept("out")
        return config

    def macs(self, layer, site):
        return common.positions(site.outputs[0], layer) * math.prod(layer.kernel.shape)


def einsum_parts(layer):
    """`(input letters, kernel letters, output letters)` of an EinsumDense equation."""
    inputs, output = layer.equation.split("->")
    input_letters, kernel_letters = inputs.split(",")
    return input_letters, kernel_letters, output


class EinsumDenseHandler(LayerHandler):
    """EinsumDense: the kernel's last contracted axis reads input channels."""

    def prunable_weights(self, layer):
        _, kernel_letters, output = einsum_parts(layer)
        contracted = [i for i, c in enumerate(kernel_letters) if c not in output]
        return [(layer.kernel, contracted[-1] if contracted else 0)]

    def link(self, ctx):
        raise Unsupported("layer type with unknown channel semantics")

    def macs(self, layer, site):
        """One MAC per combination of all the equation's indices (batch size 1)."""
        input_letters, kernel_letters, _ = einsum_parts(layer)
        tensor = site.inputs[0]
        shape = (1,) + tuple(tensor.shape)[1:]
        if any(d is None for d in shape):
            raise ValueError(
                f"Layer '{layer.name}' sees a tensor of shape {tensor.shape} with an unknown "
                "dimension, so its MACs are not defined. Build the model with a fixed input "
                "shape."
            )
        sizes = dict(zip(input_letters[-len(shape):], shape))
        sizes.update(zip(kernel_letters, tuple(layer.kernel.shape)))
        return math.prod(int(size) for size in sizes.values())
