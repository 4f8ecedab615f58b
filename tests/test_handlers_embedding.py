"""Embedding handler: output dimensions are channels (table columns)."""

import keras
import numpy as np
import pytest

import tfprune
from handler_checks import group_of, prune_and_shrink
from tfprune.dependency import DependencyGraph
from tfprune.handlers import Unsupported, handler_for

L = keras.layers


def _ids(seed=1, shape=(3, 7), vocabulary=20):
    return np.random.default_rng(seed).integers(0, vocabulary, size=shape).astype("int32")


def _token_model():
    inp = keras.Input((7,), dtype="int32")
    stream = L.Embedding(20, 8, name="embed")(inp)
    h = L.LayerNormalization(name="norm")(stream)
    h = L.Dense(12, activation="relu", name="up")(h)
    h = L.Dense(8, name="down")(h)
    stream = L.Add(name="residual")([stream, h])
    x = L.LayerNormalization(name="final")(stream)
    x = L.Dense(5, name="proj")(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(3, name="head")(x))


def test_embedding_columns_join_the_residual_stream():
    graph = DependencyGraph(_token_model())
    stream = group_of(graph, "embed", "out")
    assert {"embed[out]", "norm[channel]", "up[in]", "down[out]", "final[channel]",
            "proj[in]"} <= set(stream.layer_names())
    assert stream.prunable and stream.size == 8
    table = [m for m in stream.members if m.layer.name == "embed"][0]
    assert table.axis == 1 and table.role == "producer"
    assert "Add 'residual'" in stream.via
    assert "embed[out]" in graph.summary()


def test_embedding_output_dim_prunes_and_shrinks_exactly():
    model = _token_model()
    for seed in range(3):
        pruner, keep, small = prune_and_shrink(model, _ids(), seed=seed)
        width = int(keep[group_of(pruner.graph, "embed", "out").id].sum())
        assert small.get_layer("embed").output_dim == width
        assert small.get_layer("embed").embeddings.shape == (20, width)
        assert small.get_layer("final").gamma.shape == (width,)
        # A lookup costs nothing; the Dense layers' MACs follow the width.
        up = int(keep[group_of(pruner.graph, "up", "out").id].sum())
        proj = int(keep[group_of(pruner.graph, "proj", "out").id].sum())
        assert tfprune.count_macs(small) == 7 * (2 * width * up + width * proj) + proj * 3


def test_embedding_into_dense_and_pooling():
    inp = keras.Input((5,), dtype="int32")
    x = L.Embedding(11, 6, name="embed")(inp)
    x = L.Dense(4, activation="tanh", name="dense")(x)
    x = L.Flatten()(x)
    model = keras.Model(inp, L.Dense(2, name="head")(x))
    pruner, keep, small = prune_and_shrink(model, _ids(shape=(4, 5), vocabulary=11))
    width = int(keep[group_of(pruner.graph, "embed", "out").id].sum())
    assert small.get_layer("dense").kernel.shape[0] == width


def test_embedding_that_feeds_the_output_or_uses_lora_keeps_its_columns():
    inp = keras.Input((5,), dtype="int32")
    out = L.Embedding(11, 6, name="embed")(inp)
    graph = DependencyGraph(keras.Model(inp, out))
    group = group_of(graph, "embed", "out")
    assert not group.prunable and group.reasons == ["feeds model output"]
    with pytest.raises(ValueError, match="cannot lose"):
        graph.full_keep({group.id: np.arange(6) > 0})

    layer = L.Embedding(11, 6)
    layer.build((None, 5))
    layer.enable_lora(2)
    with pytest.raises(Unsupported, match="LoRA"):
        handler_for(layer).layout(layer)
