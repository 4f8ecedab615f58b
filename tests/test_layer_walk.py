"""`tfprune.layer_walk.all_layers`: every layer at any depth, each once."""

import keras

import tfprune
from tfprune.layer_walk import all_layers


class Block(keras.layers.Layer):
    """Holds its sublayers as attributes, as KerasHub's encoder blocks do."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.LayerNormalization(name="block_norm")
        self.dense = keras.layers.Dense(4, name="block_dense")

    def call(self, x):
        return self.dense(self.norm(x))


def test_nested_models_custom_blocks_and_wrappers_are_walked_once():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(4, name="inner_dense")(inner_in),
                        name="inner")
    inputs = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    x = shared(Block(name="block")(inner(inputs)))
    model = keras.Model(inputs, shared(x), name="outer")
    names = [layer.name for layer in all_layers(model)]
    assert names[0] == "outer"
    assert {"inner", "inner_dense", "block", "block_norm", "block_dense", "shared"} <= set(names)
    assert len(names) == len(set(names))  # "shared" is called twice, listed once

    pruned = tfprune.prune_low_magnitude(keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="wrapped_dense")]))
    found = all_layers(pruned)
    assert any(layer.name == "wrapped_dense" and isinstance(layer, keras.layers.Dense)
               for layer in found)
    assert any(isinstance(layer, tfprune.PruneLowMagnitude) for layer in found)
