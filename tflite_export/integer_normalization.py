"""Normalization layers traced with ops that have INT8 kernels, so models convert to full integer.

Keras 3 computes its normalization layers with ops that the TFLite converter
keeps in float in a full-integer model, because TFLite has no INT8 kernel for
them:

- `LayerNormalization` and `GroupNormalization` compute
  `x * inv + (beta - mean * inv)`, whose `-mean` stays a float `NEG`
  (GroupNormalization's statistics also leave a float `SQUARE`);
- `RMSNormalization` (`x * rsqrt(mean(square(x)) + eps) * scale`) and
  `UnitNormalization` (`x * rsqrt(max(sum(square(x)), 1e-12))`) leave a
  float `SQUARE`.

Every transformer, and every model with those layers, then needed
`allow_float_fallback=True` and ran partly in float.

`integer_friendly_normalization(model)` is a context manager for the export
trace. While it is open, each such layer of the model (nested models and
layers inside custom blocks included) computes the same function from
SUB, MUL, MEAN, SUM, ADD, MAXIMUM and RSQRT, which all have INT8 kernels:
`d = x - mean(x)`, `var = mean(d * d)`, `d * (rsqrt(var + eps) * gamma) + beta`
(squares as products). When the context closes, each layer's own `call` is
back; weights and configs are never touched. Subclasses that define their
own `call` compute something else and are left alone, as is
LayerNormalization's deprecated `rms_scaling=True`.
"""

import contextlib

import keras

from tfprune.layer_walk import all_layers


def _axes(axis, ndims):
    return sorted(a % ndims for a in ([axis] if isinstance(axis, int) else axis))


def _broadcast(weight, x, axes):
    """`weight` (the normalized axes' shape) cast and reshaped to broadcast against `x`."""
    ops = keras.ops
    weight = ops.cast(weight, x.dtype)
    ndims = len(x.shape)
    if axes == [ndims - 1]:
        return weight
    shape = [1] * ndims
    for a in axes:
        shape[a] = x.shape[a]
    return ops.reshape(weight, shape)


def _centered(x, axes):
    """`(x - mean, variance)` over `axes`, with the square as a product."""
    ops = keras.ops
    centered = x - ops.mean(x, axis=axes, keepdims=True)
    return centered, ops.mean(centered * centered, axis=axes, keepdims=True)


def _compute(inputs):
    return keras.ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))


def _layer_norm_call(layer):
    def call(inputs):
        ops = keras.ops
        x = _compute(inputs)
        axes = _axes(layer.axis, len(x.shape))
        centered, variance = _centered(x, axes)
        inv = ops.rsqrt(variance + layer.epsilon)
        if layer.gamma is not None:
            inv = inv * _broadcast(layer.gamma, x, axes)
        outputs = centered * inv
        if layer.beta is not None:
            outputs = outputs + _broadcast(layer.beta, x, axes)
        return ops.cast(outputs, layer.compute_dtype)

    return call


def _group_norm_call(layer):
    def call(inputs):
        ops = keras.ops
        grouped = _compute(layer._reshape_into_groups(inputs))
        # Statistics over every axis but the batch and the group index (Keras's own choice).
        axes = list(range(1, len(grouped.shape)))
        axes.pop(-2 if layer.axis == -1 else layer.axis - 1)
        centered, variance = _centered(grouped, axes)
        inv = ops.rsqrt(variance + layer.epsilon)
        shape = layer._create_broadcast_shape(inputs.shape)
        if layer.scale:
            inv = inv * ops.cast(ops.reshape(layer.gamma, shape), grouped.dtype)
        outputs = centered * inv
        if layer.center:
            outputs = outputs + ops.cast(ops.reshape(layer.beta, shape), grouped.dtype)
        return ops.cast(ops.reshape(outputs, ops.shape(inputs)), layer.compute_dtype)

    return call


def _rms_norm_call(layer):
    def call(inputs):
        ops = keras.ops
        x = _compute(inputs)
        axes = _axes(layer.axis, len(x.shape))
        outputs = x * ops.rsqrt(ops.mean(x * x, axis=axes, keepdims=True) + layer.epsilon)
        if layer.scale is not None:
            outputs = outputs * _broadcast(layer.scale, x, axes)
        return ops.cast(outputs, layer.compute_dtype)

    return call


def _unit_norm_call(layer):
    def call(inputs):
        ops = keras.ops
        x = _compute(inputs)
        axes = _axes(layer.axis, len(x.shape))
        squares = ops.sum(x * x, axis=axes, keepdims=True)
        # Keras's `ops.normalize(..., order=2, epsilon=1e-12)`.
        outputs = x * ops.rsqrt(ops.maximum(squares, 1e-12))
        return ops.cast(outputs, layer.compute_dtype)

    return call


# Layer type -> the `call` it is traced with. Only types whose own `call` has a float op.
_CALLS = (
    (keras.layers.LayerNormalization, _layer_norm_call),
    (keras.layers.GroupNormalization, _group_norm_call),
    (keras.layers.RMSNormalization, _rms_norm_call),
    (keras.layers.UnitNormalization, _unit_norm_call),
)


def normalization_layers(model):
    """`[(layer, replacement call)]` for every layer of `model` this module retraces."""
    found = []
    for layer in all_layers(model):
        for layer_type, make_call in _CALLS:
            if type(layer).call is not layer_type.call:
                continue  # Not this type, or a subclass with its own call.
            if isinstance(layer, keras.layers.LayerNormalization) and layer.rms_scaling:
                continue  # Deprecated; its float ops are Keras's definition of it.
            found.append((layer, make_call(layer)))
    return found


@contextlib.contextmanager
def integer_friendly_normalization(model):
    """While open, `model`'s normalization layers compute with INT8-friendly ops (see above).

    Yields:
      The number of layers changed.
    """
    changed = normalization_layers(model)
    for layer, call in changed:
        layer.call = call
    try:
        yield len(changed)
    finally:
        for layer, _ in changed:
            # The instance attribute shadowed the class's `call`; removing it restores that.
            del layer.call
