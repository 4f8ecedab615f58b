"""MultiHeadAttention handler: whole heads, the residual stream, MACs, Taylor.

The law: `shrink(masked)(x) == masked(x)` (relative error <= 1e-5) with 50%
of heads, 50% of FFN units and 25% of the model dimension removed from a
ViT-style classifier and a BERT-style encoder.
"""

import keras
import numpy as np
import pytest
from keras import layers as L

import tfprune

DIM, HEADS, FFN = 32, 4, 64


def _rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def _block(x, name, gate=False):
    h = L.LayerNormalization(epsilon=1e-6, name=f"{name}_ln1")(x)
    h = L.MultiHeadAttention(HEADS, DIM // HEADS, use_gate=gate, name=f"{name}_mha")(h, h)
    x = L.Add()([x, h])
    h = L.LayerNormalization(epsilon=1e-6, name=f"{name}_ln2")(x)
    h = L.Dense(FFN, activation="gelu", name=f"{name}_ffn1")(h)
    h = L.Dense(DIM, name=f"{name}_ffn2")(h)
    return L.Add()([x, h])


def vit_style(gate=False):
    """Patch-embedding Conv2D, two pre-norm MHA + MLP blocks, pooling, classifier."""
    inp = keras.Input((32, 32, 3))
    x = L.Conv2D(DIM, 8, strides=8, name="patches")(inp)
    x = L.Reshape((16, DIM))(x)
    for i in range(2):
        x = _block(x, f"b{i}", gate=gate)
    x = L.LayerNormalization(name="final_ln")(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(10, name="logits")(x), name="vit_style")


def bert_style():
    """Token + position Embeddings, LayerNorm, two post-norm MHA + FFN blocks, pooled head."""
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    positions = keras.Input((12,), dtype="int32", name="positions")
    x = L.Add()([L.Embedding(50, DIM, name="tok_emb")(tokens),
                 L.Embedding(12, DIM, name="pos_emb")(positions)])
    x = L.LayerNormalization(name="emb_ln")(x)
    for i in range(2):
        h = L.MultiHeadAttention(HEADS, DIM // HEADS, name=f"b{i}_mha")(x, x)
        x = L.LayerNormalization(name=f"b{i}_ln1")(L.Add()([x, h]))
        h = L.Dense(FFN, activation="gelu", name=f"b{i}_ffn1")(x)
        h = L.Dense(DIM, name=f"b{i}_ffn2")(h)
        x = L.LayerNormalization(name=f"b{i}_ln2")(L.Add()([x, h]))
    x = L.GlobalAveragePooling1D()(x)
    x = L.Dense(DIM, activation="tanh", name="pooler")(x)
    return keras.Model([tokens, positions], L.Dense(2, name="cls")(x), name="bert_style")


def _kind(group):
    slots = {slot for _, slot in group.layers}
    if "heads" in slots:
        return "heads"
    if any(layer.name.endswith("_mha") and slot == "query" for layer, slot in group.layers):
        return "model"
    return "ffn" if group.size == FFN else "other"


def _random_keep(graph, fractions, seed=0):
    rng = np.random.default_rng(seed)
    keep, kinds = {}, {}
    for group in graph.prunable_groups:
        kind = _kind(group)
        kinds[group.id] = kind
        if kind not in fractions:
            continue
        kept = max(1, int(round(group.size * (1 - fractions[kind]))))
        flags = np.zeros(group.size, bool)
        flags[rng.choice(group.size, kept, replace=False)] = True
        keep[group.id] = flags
    return keep, kinds


FRACTIONS = {"heads": 0.5, "ffn": 0.5, "model": 0.25}


def _inputs(model, seed=1):
    rng = np.random.default_rng(seed)
    if model.name == "bert_style":
        return [rng.integers(0, 50, size=(3, 12)).astype("int32"),
                np.tile(np.arange(12, dtype="int32"), (3, 1))]
    return rng.normal(size=(3, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize("make", [vit_style, bert_style, lambda: vit_style(gate=True)],
                         ids=["vit", "bert", "vit_gated"])
def test_heads_ffn_and_model_dim_shrink_exactly(make):
    keras.utils.set_random_seed(3)
    model = make()
    graph = tfprune.DependencyGraph(model)
    keep, kinds = _random_keep(graph, FRACTIONS)
    assert sorted(kinds.values()).count("heads") == 2
    assert sorted(kinds.values()).count("ffn") == 2
    assert sorted(kinds.values()).count("model") == 1, graph.summary()
    model_group = next(g for g in graph.groups if kinds.get(g.id) == "model")
    names = {layer.name for layer, _ in model_group.layers}
    # One coupled residual stream: every MHA's query/value/out, every LN, the FFN ends.
    assert {"b0_mha", "b1_mha", "b0_ffn1", "b1_ffn2"} <= names
    assert any(n.endswith("ln1") for n in names)

    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.0, 0))
    tfprune.get_channel_pruner(pruned).set_keep(keep)
    small = tfprune.shrink(pruned)
    x = _inputs(model)
    assert _rel_err(pruned(x), small(x)) <= 1e-5
    mha = small.get_layer("b0_mha")
    assert mha.num_heads == HEADS // 2 and mha.key_dim == DIM // HEADS
    assert small.get_layer("b0_ffn1").units == FFN // 2
    assert small.count_params() < 0.6 * model.count_params()
    assert tfprune.count_macs(small) < 0.6 * tfprune.count_macs(model)


def test_mha_macs_count_projections_scores_and_values():
    inp = keras.Input((10, 24))
    ctx = keras.Input((6, 16))
    out = L.MultiHeadAttention(3, 5, value_dim=7, output_shape=20)(inp, ctx)
    model = keras.Model([inp, ctx], out)
    expected = (10 * 24 * 3 * 5          # query projection
                + 6 * 16 * 3 * 5         # key projection
                + 6 * 16 * 3 * 7         # value projection
                + 10 * 6 * 3 * (5 + 7)   # scores and weighted values
                + 10 * 3 * 7 * 20)       # output projection
    assert tfprune.count_macs(model) == expected


def test_cross_attention_slots_are_separate_groups_and_output_shape_is_rewritten():
    keras.utils.set_random_seed(0)
    q_in = keras.Input((10, 24))
    kv_in = keras.Input((6, 16))
    q = L.Dense(24, name="q_proj")(q_in)
    kv = L.Dense(16, name="kv_proj")(kv_in)
    h = L.MultiHeadAttention(4, 6, output_shape=20, name="cross")(q, kv)
    out = L.Dense(3, name="head")(L.Dense(20, name="mix")(h))
    model = keras.Model([q_in, kv_in], out)
    graph = tfprune.DependencyGraph(model)
    sizes = sorted(g.size for g in graph.prunable_groups)
    assert sizes == [4, 16, 20, 20, 24], graph.summary()
    rng = np.random.default_rng(0)
    keep = {g.id: rng.random(g.size) < 0.6 for g in graph.prunable_groups}
    for flags in keep.values():
        flags[0] = True
    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.0, 0))
    tfprune.get_channel_pruner(pruned).set_keep(keep)
    small = tfprune.shrink(pruned)
    x = [rng.normal(size=(2, 10, 24)).astype("float32"),
         rng.normal(size=(2, 6, 16)).astype("float32")]
    assert _rel_err(pruned(x), small(x)) <= 1e-5
    out_group = next(g for g in graph.groups if (model.get_layer("cross"), "out") in g.layers)
    assert small.get_layer("cross").get_config()["output_shape"] == (int(keep[out_group.id].sum()),)


def test_attention_scores_output_keeps_the_layer_whole():
    inp = keras.Input((8, 16))
    h = L.Dense(16)(inp)
    out, scores = L.MultiHeadAttention(2, 8, name="att")(h, h, return_attention_scores=True)
    model = keras.Model(inp, [L.Dense(4)(out), scores])
    graph = tfprune.DependencyGraph(model)
    text = graph.summary()
    assert "return_attention_scores" in text
    assert not any(slot == "heads" for g in graph.prunable_groups for _, slot in g.layers)


def test_round_to_counts_heads():
    keras.utils.set_random_seed(0)
    pruned = tfprune.prune_channels(vit_style(), tfprune.ConstantSparsity(0.5, 0), round_to=2)
    pruner = tfprune.get_channel_pruner(pruned)
    keep = pruner.graph.group_keep(pruner.current_keep())
    heads = [g for g in pruner.groups if any(s == "heads" for _, s in g.layers)]
    assert len(heads) == 2 and all(int(keep[g.id].sum()) == 2 for g in heads)
    small = tfprune.shrink(pruned)
    x = _inputs(small)
    assert _rel_err(pruned(x), small(x)) <= 1e-5


def test_head_importance_from_weights_and_taylor():
    keras.utils.set_random_seed(0)
    model = vit_style()
    mha = model.get_layer("b0_mha")
    # Head 2's value and output weights are tiny: l2 ranks it last.
    value = mha._value_dense.kernel.numpy()
    value[:, 2, :] *= 1e-3
    mha._value_dense.kernel.assign(value)
    query = mha._query_dense.kernel.numpy()
    query[:, 2, :] *= 1e-3
    mha._query_dense.kernel.assign(query)
    key = mha._key_dense.kernel.numpy()
    key[:, 2, :] *= 1e-3
    mha._key_dense.kernel.assign(key)
    graph = tfprune.DependencyGraph(model)
    group = next(g for g in graph.groups if (mha, "heads") in g.layers)
    scores = tfprune.importance.get("l2")(group)
    assert int(np.argmin(scores)) == 2

    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.5, 3), importance="taylor")
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(32,))
    pruned.fit(x, y, batch_size=8, epochs=1, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    pruner = tfprune.get_channel_pruner(pruned)
    heads = [g for g in pruner.groups if any(s == "heads" for _, s in g.layers)]
    assert heads and not any(g.id in pruner.notes for g in heads), pruner.notes
    keep = pruner.graph.group_keep(pruner.current_keep())
    assert all(int(keep[g.id].sum()) == 2 for g in heads)
    small = tfprune.shrink(pruned)
    assert _rel_err(pruned(x[:4]), small(x[:4])) <= 1e-5
