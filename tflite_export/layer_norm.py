"""LayerNormalization without a float `NEG`, so transformers convert to full integer.

Keras computes `LayerNormalization` as `x * inv + (beta - mean * inv)` with
`inv = rsqrt(variance + epsilon) * gamma`. The TFLite converter keeps the
`-mean` of that expression as a `NEG` op, which has no INT8 kernel: every
transformer then needed `allow_float_fallback=True` and ran partly in float.

`integer_friendly_layer_norms(model)` is a context manager for the export
trace: while it is open, each `LayerNormalization` of the model (nested
models and layers inside custom blocks included) computes the same function
as `(x - mean) * inv + beta`, which converts to MEAN, SQUARED_DIFFERENCE,
ADD, RSQRT, SUB and MUL, all of which have INT8 kernels. The layers' own
`call` is back when the context closes; weights and configs are untouched.
RMS scaling (`rms_scaling=True`) has no `NEG` and is left as it is, as are
subclasses that define their own `call`.
"""

import contextlib

import keras

from tfprune.layer_walk import all_layers


def layer_norms(model):
    """Every `LayerNormalization` layer of `model`, at any depth, each once."""
    return [layer for layer in all_layers(model)
            if isinstance(layer, keras.layers.LayerNormalization)]


def _subtract_mean_call(layer):
    """`call` for `layer` computing `(x - mean) * rsqrt(var + eps) * gamma + beta`."""
    ops = keras.ops

    def call(inputs):
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        ndims = len(x.shape)
        axes = sorted(a % ndims for a in ([layer.axis] if isinstance(layer.axis, int)
                                          else layer.axis))
        shape = [1] * ndims
        for a in axes:
            shape[a] = x.shape[a]

        def broadcast(weight):
            weight = ops.cast(weight, x.dtype)
            return weight if axes == [ndims - 1] else ops.reshape(weight, shape)

        mean, variance = ops.moments(x, axes=axes, keepdims=True)
        inv = ops.rsqrt(variance + layer.epsilon)
        if layer.gamma is not None:
            inv = inv * broadcast(layer.gamma)
        outputs = (x - mean) * inv
        if layer.beta is not None:
            outputs = outputs + broadcast(layer.beta)
        return ops.cast(outputs, layer.compute_dtype)

    return call


@contextlib.contextmanager
def integer_friendly_layer_norms(model):
    """While open, `model`'s LayerNormalization layers compute without `NEG` (see above).

    Yields:
      The number of layers changed.
    """
    # Subclasses with a `call` of their own compute something else: left alone.
    changed = [layer for layer in layer_norms(model)
               if type(layer).call is keras.layers.LayerNormalization.call
               and not layer.rms_scaling]
    for layer in changed:
        layer.call = _subtract_mean_call(layer)
    try:
        yield len(changed)
    finally:
        for layer in changed:
            # The instance attribute shadowed the class's `call`; removing it restores that.
            del layer.call
