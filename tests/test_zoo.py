"""keras.applications coverage: prune 30% of channels one-shot, shrink, same outputs.

Representative set for CI (the whole zoo runs in benchmarks/zoo_table.py).
Small inputs (the minimum each model allows, or close) keep this under a few
minutes on 2 CPU cores; channel coupling does not depend on resolution.
"""

import keras
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
