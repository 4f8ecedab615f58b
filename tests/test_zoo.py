"""keras.applications and KerasHub coverage: prune 30% of channels one-shot,
shrink, same outputs.

Representative set for CI (the whole zoo runs in benchmarks/zoo_table.py).
Small inputs (the minimum each model allows, or close) keep this under a few
minutes on 2 CPU cores; channel coupling does not depend on resolution.
KerasHub backbones are built from small configs with random weights.
"""

import keras
import keras_hub
import numpy as np
import pytest

import tfprune

ZOO = [
    ("MobileNetV2", 64),
    ("MobileNetV3Small", 64),
    ("ResNet50", 64),
    ("EfficientNetB0", 64),
    ("DenseNet121", 64),
    ("ConvNeXtTiny", 64),
    ("InceptionV3", 75),
    ("Xception", 71),
    ("NASNetMobile", 96),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,size", ZOO, ids=[z[0] for z in ZOO])
def test_zoo_prunes_30_percent_and_shrinks_exactly(name, size):
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(size, size, 3), classifier_activation=None
    )
    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.3, 0))
    pruner = tfprune.get_channel_pruner(pruned)
    channels = sum(g.size for g in pruner.graph.groups if g.layers)
    prunable = sum(g.size for g in pruner.groups)
    assert prunable / channels > 0.8, pruner.summary()
    small = tfprune.shrink(pruned)
    x = np.random.default_rng(0).uniform(0, 255, size=(2, size, size, 3)).astype("float32")
    expected, got = np.asarray(pruned(x)), np.asarray(small(x))
    error = np.abs(expected - got).max() / np.abs(expected).max()
    assert error <= 1e-5
    assert small.count_params() < 0.7 * model.count_params()
    assert tfprune.count_macs(small) < 0.7 * tfprune.count_macs(model)
    assert small.output_shape == model.output_shape


@pytest.mark.slow
def test_mobilenet_v3_without_fixed_input_size():
    # MobileNetV3's default input is (None, None, 3): channels are known, sizes are not.
    model = keras.applications.MobileNetV3Small(weights=None, classifier_activation=None)
    assert model.input_shape == (None, None, None, 3)
    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.3, 0))
    small = tfprune.shrink(pruned)
    x = np.random.default_rng(0).uniform(0, 255, size=(1, 80, 80, 3)).astype("float32")
    expected, got = np.asarray(pruned(x)), np.asarray(small(x))
    assert np.abs(expected - got).max() / np.abs(expected).max() <= 1e-5
    assert small.count_params() < 0.7 * model.count_params()
    with pytest.raises(ValueError, match="fixed input shape"):
        tfprune.count_macs(small)


def _bert():
    """A small BertBackbone, run again on inputs of fixed length (MACs need one)."""
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=100, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=64,
        max_sequence_length=16)
    inputs = {name: keras.Input((16,), dtype="int32", name=name)
              for name in ("token_ids", "segment_ids", "padding_mask")}
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(0, 100, (2, 16)).astype("int32"),
         "segment_ids": rng.integers(0, 2, (2, 16)).astype("int32"),
         "padding_mask": np.ones((2, 16), "int32")}
    return keras.Model(inputs, backbone.call(inputs)), x


def _mobilenet():
    """A small MobileNetV3-style backbone (KerasHub's own test layout, with SE)."""
    model = keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[16, 24], [48, 48]], stackwise_num_blocks=[2, 2],
        stackwise_num_filters=[[16, 16], [24, 24]], stackwise_kernel_size=[[3, 3], [5, 5]],
        stackwise_num_strides=[[2, 1], [2, 1]], stackwise_se_ratio=[[None, 0.25], [0.25, 0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1, 1], [2, 2]], output_num_filters=64, depthwise_filters=16,
        depthwise_stride=2, depthwise_residual=False, last_layer_filter=64,
        squeeze_and_excite=0.5, image_shape=(32, 32, 3), input_activation="hard_swish",
        output_activation="hard_swish", input_num_filters=16)
    return model, np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")


def _vit():
    model = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
        mlp_dim=64)
    return model, np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")


KERAS_HUB = {"BertBackbone": _bert, "ViTBackbone": _vit, "MobileNetBackbone": _mobilenet}


@pytest.mark.parametrize("name", list(KERAS_HUB))
def test_keras_hub_prunes_30_percent_and_shrinks_exactly(name):
    keras.utils.set_random_seed(0)
    model, x = KERAS_HUB[name]()
    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.3, 0))
    assert tfprune.get_channel_pruner(pruned).groups
    small = tfprune.shrink(pruned)
    for expected, got in zip(keras.tree.flatten(pruned(x)), keras.tree.flatten(small(x))):
        expected, got = np.asarray(expected), np.asarray(got)
        assert np.abs(expected - got).max() / np.abs(expected).max() <= 1e-5
    assert small.count_params() < model.count_params()
    assert tfprune.count_macs(small) < tfprune.count_macs(model)
    assert small.output_shape == model.output_shape
