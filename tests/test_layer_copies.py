"""Copying live layers: a Lambda layer's function is re-used, never deserialized."""

import keras
import numpy as np

import tfprune
from tfprune import layer_copies


def lambda_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="c1")(inputs)
    x = keras.layers.Lambda(lambda t, scale: t * scale, arguments={"scale": 2.0}, name="double")(x)
    x = keras.layers.Conv2D(8, 3, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x))


def test_a_lambda_copy_keeps_its_function_and_arguments():
    layer = keras.layers.Lambda(lambda t, scale: t * scale, arguments={"scale": 3.0}, name="triple")
    copy = layer_copies.copy_layer(layer)
    assert copy is not layer and copy.name == "triple" and copy.function is layer.function
    np.testing.assert_allclose(copy(np.ones((1, 2), "float32")), 3.0)
    renamed = layer_copies.from_config(layer, {**layer.get_config(), "name": "other"})
    assert renamed.name == "other"


def test_models_with_lambda_layers_prune_strip_and_shrink():
    model = lambda_model()
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    pruned = tfprune.prune_low_magnitude(model)
    assert pruned.get_layer("double").function is model.get_layer("double").function
    np.testing.assert_allclose(tfprune.strip_pruning(pruned)(x), model(x), rtol=1e-5, atol=1e-5)
    channels = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.5, 0))
    shrunk = tfprune.shrink(channels)
    np.testing.assert_allclose(shrunk(x), channels(x), rtol=1e-4, atol=1e-5)
