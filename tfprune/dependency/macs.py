"""Multiply-accumulate counts of a model, summed over its call sites.

Each layer's handler (`tfprune.handlers`) owns its MAC formula. MACs are
what channel pruning removes and what dense CPU kernels spend their time on;
elementwise work (activations, BatchNormalization, which TFLite folds) is not
counted.
"""

import keras

from tfprune import handlers
from tfprune.dependency import trace as trace_lib


def site_macs(site):
    """MACs of one call site (0 for layers without a kernel)."""
    layer = site.layer
    if not isinstance(layer, keras.layers.Layer) or not layer.built:
        return 0
    return handlers.handler_for(layer).macs(layer, site)


def count_macs(model):
    """Multiply-accumulates of one forward pass of one example.

    Args:
      model: A Sequential or functional Keras model with a fixed input shape.

    Returns:
      An int: the MACs of every call site, as each layer's handler counts
      them (convolutions, Dense, EinsumDense, MultiHeadAttention, ...; each
      call of a shared layer counts).

    Raises:
      ValueError: If the model is subclassed or a layer's spatial size is unknown.
    """
    return sum(site_macs(site) for site in trace_lib.trace(model).sites)
