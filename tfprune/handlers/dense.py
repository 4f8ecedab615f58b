"""Handlers for Dense and EinsumDense."""

import dataclasses
import math
import re

import keras

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
        common.link_in_out(ctx)

    def shrink_config(self, layer, config, ctx):
        config["units"] = ctx.kept("out")
        return config

    def macs(self, layer, site):
        return common.kernel_macs(layer, site.outputs[0])


def einsum_parts(layer):
    """`(input letters, kernel letters, output letters)` of an EinsumDense equation."""
    inputs, output = layer.equation.split("->")
    input_letters, kernel_letters = inputs.split(",")
    return input_letters, kernel_letters, output


_EQUATION = re.compile(r"(\.\.\.)?([a-zA-Z]+),([a-zA-Z]+)->(\.\.\.)?([a-zA-Z]+)")


@dataclasses.dataclass(frozen=True)
class EinsumSpec:
    """An EinsumDense equation of one of the forms Keras builds.

    `"abc,cd->abd"` (every axis named) or `"...b,bc->...c"` (leading axes
    elided on both sides).

    Attributes:
      inputs: The input's letters (without the ellipsis).
      kernel: The kernel's letters.
      output: The output's letters (without the ellipsis).
      elided: Whether the equation starts with `...`.
    """

    inputs: str
    kernel: str
    output: str
    elided: bool

    @classmethod
    def parse(cls, equation):
        """Parses an equation.

        Raises:
          Unsupported: If it is not of a form above, or repeats a letter
            within an operand.
        """
        match = _EQUATION.fullmatch(equation.replace(" ", ""))
        if match is None:
            raise Unsupported(
                f"equation {equation!r}: only 'abc,cd->abd' and '...b,bc->...c' forms are "
                "understood (an ellipsis on the right keeps the input's last axis unnamed)"
            )
        left, inputs, kernel, right, output = match.groups()
        if bool(left) != bool(right):
            raise Unsupported(f"equation {equation!r} elides axes on one side only")
        for letters in (inputs, kernel, output):
            if len(set(letters)) != len(letters):
                raise Unsupported(f"equation {equation!r} repeats a letter within an operand")
        return cls(inputs, kernel, output, bool(left))

    def channel_axes(self):
        """`(in_axis, out_axis)`: the kernel axes over input and output channels.

        The input's last axis must be contracted with a kernel axis, and the
        output's last axis must come from the kernel alone; other kernel
        axes (heads of a `"abc,cde->abde"` projection) are not channels.

        Raises:
          Unsupported: If the channels do not run through the kernel so.
        """
        equation = f"{self.inputs},{self.kernel}->{self.output}"
        first, last = self.inputs[-1], self.output[-1]
        if first not in self.kernel or first in self.output:
            raise Unsupported(
                f"equation {equation!r}: the input's last axis '{first}' is not contracted "
                "with the kernel"
            )
        if last not in self.kernel or last in self.inputs:
            raise Unsupported(
                f"equation {equation!r}: the output's last axis '{last}' is not a kernel "
                "axis of its own"
            )
        return self.kernel.index(first), self.kernel.index(last)


def own_variable(layer, value, what):
    """`value` if it is a float variable of the layer (not LoRA or quantized).

    Raises:
      Unsupported: If the layer is quantized or `value` is computed (a LoRA
        sum): slicing it would not slice what the layer computes with.
    """
    if getattr(layer, "quantization_mode", None) is not None:
        raise Unsupported(f"quantized ({layer.quantization_mode}): its {what} has scales")
    if not isinstance(value, keras.Variable):
        raise Unsupported(f"its {what} is computed (LoRA enabled), not a variable")
    return value


class EinsumDenseHandler(LayerHandler):
    """EinsumDense: input channels are the kernel axis contracted with the
    input's last axis ("in"); output channels the kernel axis that is the
    output's last axis ("out"), e.g. `"abc,cde->abde"` (heads x dim: `e` is
    "out", `d` is not a channel axis) or `"abcd,cde->abe"` (`d` is "in")."""

    def prunable_weights(self, layer):
        _, kernel_letters, output = einsum_parts(layer)
        contracted = [i for i, c in enumerate(kernel_letters) if c not in output]
        return [(layer.kernel, contracted[-1] if contracted else 0)]

    def layout(self, layer):
        spec = EinsumSpec.parse(layer.equation)
        in_axis, out_axis = spec.channel_axes()
        kernel = own_variable(layer, layer.kernel, "kernel")
        out = Layout({"in": kernel.shape[in_axis], "out": kernel.shape[out_axis]}, [])
        out.add(kernel, in_axis, "in", "consumer")
        out.add(kernel, out_axis, "out", "producer")
        if layer.bias is not None and spec.output[-1] in (layer.bias_axes or ""):
            # The bias spans the output's axes from its first biased one to the
            # last (axes without bias are 1): the output's last axis is its last.
            out.add(layer.bias, -1, "out", "param")
        return out

    def link(self, ctx):
        common.link_in_out(ctx)

    def shrink_config(self, layer, config, ctx):
        output_shape = list(config["output_shape"])
        output_shape[-1] = ctx.kept("out")
        config["output_shape"] = output_shape
        return config

    def macs(self, layer, site):
        """One MAC per combination of all the equation's indices (batch size 1).

        Axes the equation elides (`...`) run alongside: each multiplies the
        count by its size.
        """
        input_letters, kernel_letters, _ = einsum_parts(layer)
        letters = input_letters.replace("...", "")
        tensor = site.inputs[0]
        shape = (1,) + tuple(tensor.shape)[1:]
        if any(d is None for d in shape):
            raise ValueError(
                f"Layer '{layer.name}' sees a tensor of shape {tensor.shape} with an unknown "
                "dimension, so its MACs are not defined. Build the model with a fixed input "
                "shape."
            )
        if input_letters.startswith("..."):
            split = len(shape) - len(letters)
            elided, named = shape[:split], shape[split:]
        elif input_letters.endswith("..."):
            named, elided = shape[:len(letters)], shape[len(letters):]
        else:
            named, elided = shape, ()
        sizes = dict(zip(letters, named))
        sizes.update(zip(kernel_letters, tuple(layer.kernel.shape)))
        return math.prod(int(size) for size in sizes.values()) * math.prod(elided)
