"""Multiply-accumulate counts of convolution and dense layers.

MACs are what channel pruning removes and what dense CPU kernels spend their
time on; elementwise work (activations, BatchNormalization, which TFLite
folds) is not counted.
"""

import math

from tfprune.dependency import layouts
from tfprune.dependency import trace as trace_lib


def _spatial(tensor, layer):
    dims = tensor.shape[1:-1]
    if any(d is None for d in dims):
        raise ValueError(
            f"Layer '{layer.name}' sees a tensor of shape {tensor.shape} with unknown "
            "spatial size, so its MACs are not defined. Build the model with a fixed "
            "input shape (e.g. input_shape=(224, 224, 3))."
        )
    return math.prod(dims)


def _einsum_macs(layer, tensor):
    """One MAC per combination of all the equation's indices (batch size 1)."""
    inputs, _ = layer.equation.split("->")
    input_letters, kernel_letters = inputs.split(",")
    shape = (1,) + tuple(tensor.shape)[1:]
    if any(d is None for d in shape):
        raise ValueError(
            f"Layer '{layer.name}' sees a tensor of shape {tensor.shape} with an unknown "
            "dimension, so its MACs are not defined. Build the model with a fixed input shape."
        )
    sizes = dict(zip(input_letters[-len(shape):], shape))
    sizes.update(zip(kernel_letters, tuple(layer.kernel.shape)))
    return math.prod(int(size) for size in sizes.values())


def site_macs(site):
    """MACs of one call site (0 for layers without a kernel)."""
    import keras

    layer = site.layer
    if not isinstance(layer, keras.layers.Layer) or not layer.built:
        return 0
    if isinstance(layer, layouts.SEPARABLE):
        positions = _spatial(site.outputs[0], layer)
        return positions * (math.prod(layer.depthwise_kernel.shape)
                            + math.prod(layer.pointwise_kernel.shape))
    if isinstance(layer, layouts.CONV_TRANSPOSE):
        return _spatial(site.inputs[0], layer) * math.prod(layer.kernel.shape)
    if isinstance(layer, keras.layers.EinsumDense):
        return _einsum_macs(layer, site.inputs[0])
    if isinstance(layer, layouts.DEPTHWISE + layouts.CONV + (keras.layers.Dense,)):
        return _spatial(site.outputs[0], layer) * math.prod(layer.kernel.shape)
    return 0


def count_macs(model):
    """Multiply-accumulates of one forward pass of one example.

    Args:
      model: A Sequential or functional Keras model with a fixed input shape.

    Returns:
      An int: MACs of convolution, depthwise, separable, transposed, Dense and
      EinsumDense layers (each call of a shared layer counts).

    Raises:
      ValueError: If the model is subclassed or a layer's spatial size is unknown.
    """
    return sum(site_macs(site) for site in trace_lib.trace(model).sites)
