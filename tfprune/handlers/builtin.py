"""The handlers tfprune ships for Keras layers and `keras.ops` operations.

One table: each built-in layer type is registered once, here. Layers of
`keras.applications` that Keras does not export are registered by import
path.
"""

import keras

from tfprune.handlers import attention
from tfprune.handlers import conv
from tfprune.handlers import dense
from tfprune.handlers import embedding
from tfprune.handlers import keras_hub
from tfprune.handlers import normalization
from tfprune.handlers import operations
from tfprune.handlers import recurrent
from tfprune.handlers import reshaping
from tfprune.handlers.registry import register_handler, register_operation_handler

_L = keras.layers

# Exact classes here; subclasses get the same handler for channels, and
# unstructured pruning requires them to opt in (`prunes_subclasses`).
LAYERS = {
    _L.Dense: dense.DenseHandler(),
    _L.EinsumDense: dense.EinsumDenseHandler(),
    **dict.fromkeys((_L.Conv1D, _L.Conv2D, _L.Conv3D), conv.ConvHandler()),
    **dict.fromkeys((_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose),
                    conv.ConvTransposeHandler()),
    **dict.fromkeys((_L.DepthwiseConv1D, _L.DepthwiseConv2D), conv.DepthwiseHandler()),
    **dict.fromkeys((_L.SeparableConv1D, _L.SeparableConv2D), conv.SeparableHandler()),
    _L.Embedding: embedding.EmbeddingHandler(),
    _L.MultiHeadAttention: attention.MultiHeadAttentionHandler(),
    **dict.fromkeys((_L.RNN, _L.LSTM, _L.GRU, _L.SimpleRNN), recurrent.RNNHandler()),
    **dict.fromkeys((_L.ConvLSTM1D, _L.ConvLSTM2D, _L.ConvLSTM3D), recurrent.ConvLSTMHandler()),
    _L.BatchNormalization: normalization.BatchNormalizationHandler(),
    _L.LayerNormalization: normalization.LayerNormalizationHandler(),
    _L.PReLU: normalization.PReLUHandler(),
    _L.RMSNormalization: normalization.RMSNormalizationHandler(),
    _L.GroupNormalization: normalization.GroupNormalizationHandler(),
    _L.UnitNormalization: normalization.UnitNormalizationHandler(),
    _L.Normalization: normalization.FixedChannelsHandler(),
    **dict.fromkeys((
        _L.ReLU, _L.LeakyReLU, _L.ELU, _L.Dropout, _L.SpatialDropout1D, _L.SpatialDropout2D,
        _L.SpatialDropout3D, _L.GaussianNoise, _L.GaussianDropout, _L.AlphaDropout,
        _L.ActivityRegularization, _L.Identity, _L.RepeatVector,
    ), reshaping.IdentityHandler()),
    **dict.fromkeys((
        _L.MaxPooling1D, _L.MaxPooling2D, _L.MaxPooling3D, _L.AveragePooling1D,
        _L.AveragePooling2D, _L.AveragePooling3D, _L.GlobalAveragePooling1D,
        _L.GlobalAveragePooling2D, _L.GlobalAveragePooling3D, _L.GlobalMaxPooling1D,
        _L.GlobalMaxPooling2D, _L.GlobalMaxPooling3D, _L.ZeroPadding1D, _L.ZeroPadding2D,
        _L.ZeroPadding3D, _L.Cropping1D, _L.Cropping2D, _L.Cropping3D, _L.UpSampling1D,
        _L.UpSampling2D, _L.UpSampling3D, _L.Resizing, _L.CenterCrop, _L.RandomFlip,
        _L.RandomRotation, _L.RandomTranslation, _L.RandomZoom, _L.RandomCrop,
    ), reshaping.SpatialHandler()),
    _L.Activation: reshaping.ActivationHandler(),
    _L.Rescaling: reshaping.RescalingHandler(),
    _L.Flatten: reshaping.FlattenHandler(),
    _L.Reshape: reshaping.ReshapeHandler(),
    _L.Permute: reshaping.PermuteHandler(),
    _L.Concatenate: reshaping.ConcatenateHandler(),
    _L.Lambda: reshaping.LambdaHandler(),
    **dict.fromkeys((_L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Maximum, _L.Minimum),
                    reshaping.MergeHandler()),
}

# keras.applications layers that Keras does not export, and KerasHub layers
# (keras_hub is optional: never imported).
PATHS = {
    "keras.src.applications.convnext.LayerScale": normalization.LayerScaleHandler(),
    "keras.src.applications.inception_resnet_v2.CustomScaleLayer": reshaping.MergeHandler(),
    **keras_hub.PATHS,
}

OPERATIONS = {
    **dict.fromkeys(operations.UNARY | operations.BINARY, operations.ElementwiseOperation()),
    **dict.fromkeys(operations.DIVISION, operations.DivideOperation()),
    **dict.fromkeys(operations.REDUCE, operations.ReduceOperation()),
    **dict.fromkeys(("ExpandDims", "Squeeze"), operations.SqueezeOperation()),
    "Reshape": operations.ReshapeOperation(),
    "Concatenate": operations.ConcatenateOperation(),
    "GetItem": operations.GetItemOperation(),
}


def register_builtins():
    """Registers every handler above (called once, on import of `tfprune.handlers`)."""
    for cls, handler in LAYERS.items():
        register_handler(cls, handler)
    for path, handler in PATHS.items():
        register_handler(path, handler)
    for name, handler in OPERATIONS.items():
        register_operation_handler(name, handler)
