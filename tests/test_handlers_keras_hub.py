"""KerasHub handlers: BertBackbone, ViTBackbone and MobileNetBackbone prune and shrink.

Backbones are built from small configs with random weights (nothing is
downloaded). The law: `shrink(masked)(x) == masked(x)` (relative error <=
1e-5 on every output) for random keep flags on every prunable group; the
thinner model has fewer parameters and MACs, and saves to `.keras` and loads
back computing the same.
"""

import os
import sys

import keras
import keras_hub
import numpy as np
import pytest
from keras import layers as L

import tfprune

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
import keras_hub_layouts  # noqa: E402  benchmarks/keras_hub_layouts.py

DIM, HEADS, FFN, SEQ, VOCAB = 32, 4, 64, 16, 100


def _rel_err(a, b):
    """Largest relative error over the outputs of two (nested) structures."""
    worst = 0.0
    for x, y in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
        x, y = np.asarray(x), np.asarray(y)
        worst = max(worst, float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-12)))
    return worst


def _flags(size, kept, rng):
    flags = np.zeros(size, dtype=bool)
    flags[rng.permutation(size)[:kept]] = True
    return flags


def _random_keep(groups, fraction, seed=0):
    """Removes `fraction` of the channels of every group, at random."""
    rng = np.random.default_rng(seed)
    return {g.id: _flags(g.size, max(1, round(g.size * (1 - fraction))), rng)
            for g in groups}


def _group(graph, layer_name, slot):
    """The group holding `layer_name[slot]`."""
    return next(g for g in graph.groups if f"{layer_name}[{slot}]" in g.layer_names())


def _prune(model, keep_for):
    """`prune_channels` with masks from `keep_for(prunable groups)`; `(pruned, keep)`."""
    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.0, 0))
    pruner = tfprune.get_channel_pruner(pruned)
    keep = keep_for(pruner.graph.prunable_groups)
    pruner.set_keep(keep)
    return pruned, keep


def _reloaded(model, tmp_path, custom_objects=None):
    path = str(tmp_path / f"{model.name}.keras")
    model.save(path)
    return keras.saving.load_model(path, custom_objects=custom_objects)


# -- BERT -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert():
    """A two-layer BertBackbone, and its graph re-run on inputs of fixed length.

    `BertBackbone` takes sequences of any length; MACs need a fixed one, so
    the fixed model runs the backbone's layers on `(SEQ,)` inputs.
    """
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=HEADS, hidden_dim=DIM,
        intermediate_dim=FFN, max_sequence_length=SEQ)
    inputs = {name: keras.Input((SEQ,), dtype="int32", name=name)
              for name in ("token_ids", "segment_ids", "padding_mask")}
    fixed = keras.Model(inputs, backbone.call(inputs), name="bert_fixed")
    rng = np.random.default_rng(0)
    padding = np.ones((2, SEQ), "int32")
    padding[1, SEQ // 2:] = 0
    x = {"token_ids": rng.integers(0, VOCAB, (2, SEQ)).astype("int32"),
         "segment_ids": rng.integers(0, 2, (2, SEQ)).astype("int32"),
         "padding_mask": padding}
    return backbone, fixed, x


def test_bert_groups(bert):
    backbone, _, _ = bert
    graph = tfprune.DependencyGraph(backbone)
    prunable = graph.prunable_groups
    assert sorted(g.layer_names() for g in prunable) == [
        ["transformer_layer_0[ffn]"], ["transformer_layer_1[ffn]"]]
    assert all(g.size == FFN for g in prunable)
    for i in range(2):
        heads = _group(graph, f"transformer_layer_{i}", "heads")
        assert heads.size == HEADS and "key_dim = hidden_dim // num_heads" in heads.reasons[0]
    stream = _group(graph, "transformer_layer_0", "model")
    names = stream.layer_names()
    # The embeddings, both encoders and the pooler's input ([CLS] through
    # x[:, 0, :]) are one residual stream; it feeds the model output.
    for name in ("token_embedding[embedding]", "position_embedding[out]",
                 "segment_embedding[out]",
                 "embeddings_layer_norm[channel]", "transformer_layer_1[model]",
                 "pooled_dense[in]"):
        assert name in names
    assert "feeds model output" in stream.reasons
    assert not any("unknown channel semantics" in r for g in graph.groups for r in g.reasons)


def test_bert_macs(bert):
    _, fixed, _ = bert
    attention = SEQ * 4 * DIM * DIM + SEQ * SEQ * HEADS * 2 * (DIM // HEADS)
    feedforward = SEQ * 2 * DIM * FFN
    assert tfprune.count_macs(fixed) == 2 * (attention + feedforward) + DIM * DIM


def test_bert_prunes_ffn_and_shrinks_exactly(bert, tmp_path):
    _, fixed, x = bert
    pruned, _ = _prune(fixed, lambda groups: _random_keep(groups, 0.5))
    small = tfprune.shrink(pruned)
    assert _rel_err(pruned(x), small(x)) <= 1e-5
    for i in range(2):
        assert small.get_layer(f"transformer_layer_{i}").intermediate_dim == FFN // 2
    assert small.count_params() < fixed.count_params()
    assert tfprune.count_macs(small) < tfprune.count_macs(fixed)
    assert _rel_err(small(x), _reloaded(small, tmp_path)(x)) <= 1e-6


def test_bert_unstructured_pruning_wraps_the_encoders(bert):
    backbone, _, _ = bert
    pruned = tfprune.prune_low_magnitude(backbone, pruning_schedule=tfprune.ConstantSparsity(0.5, 0))
    wrapper = pruned.get_layer("prune_low_magnitude_transformer_layer_0")
    names = sorted(w.path.split("/", 1)[1] for w, _ in wrapper.masked_weights)
    assert names == sorted([
        "self_attention_layer/query/kernel", "self_attention_layer/key/kernel",
        "self_attention_layer/value/kernel", "self_attention_layer/attention_output/kernel",
        "feedforward_intermediate_dense/kernel", "feedforward_output_dense/kernel"])


# -- ViT --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vit():
    keras.utils.set_random_seed(0)
    model = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=HEADS,
        hidden_dim=DIM, mlp_dim=FFN)
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    return model, x


def test_vit_groups(vit):
    model, _ = vit
    graph = tfprune.DependencyGraph(model)
    (mlp,) = graph.prunable_groups
    # One `mlp_dim` sizes every block: unit j of each block goes together.
    assert mlp.layer_names() == ["vit_encoder[mlp_0]", "vit_encoder[mlp_1]"]
    assert mlp.size == FFN
    for slot in ("heads_0", "heads_1", "model"):
        assert "key_dim" in _group(graph, "vit_encoder", slot).reasons[0]
    assert "vit_patching_and_embedding[out]" in _group(graph, "vit_encoder", "model").layer_names()


def test_vit_macs(vit):
    model, _ = vit
    tokens, patches = 17, 16  # 4 x 4 patches of 8 x 8, and the class token
    attention = tokens * 4 * DIM * DIM + tokens * tokens * HEADS * 2 * (DIM // HEADS)
    mlp = tokens * 2 * DIM * FFN
    assert tfprune.count_macs(model) == patches * 8 * 8 * 3 * DIM + 2 * (attention + mlp)


def test_vit_mlp_shrinks_exactly(vit, tmp_path):
    # KerasHub 0.32's ViTPatchingAndEmbedding writes `num_patches` and
    # `num_positions` into its config, which its constructor refuses: its
    # handler re-creates it (and makes the copy's config round-trip), so the
    # shrunk model also saves and loads.
    model, x = vit
    pruned, keep = _prune(model, lambda groups: _random_keep(groups, 0.5))
    small = tfprune.shrink(pruned)
    assert _rel_err(pruned(x), small(x)) <= 1e-5
    assert small.get_layer("vit_encoder").mlp_dim == FFN // 2
    assert small.count_params() < model.count_params()
    assert tfprune.count_macs(small) < tfprune.count_macs(model)
    loaded = _reloaded(small, tmp_path)
    assert _rel_err(small(x), loaded(x)) <= 1e-6


# -- MobileNet -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mobilenet():
    """A MobileNetV3-style backbone: a depthwise block with SE, inverted residual
    blocks with and without SE and residual (block_2_0: stride 1, 16 -> 24
    channels, no residual), and the final ConvBnAct block."""
    keras.utils.set_random_seed(0)
    model = keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[16, 24], [48, 48]], stackwise_num_blocks=[2, 2],
        stackwise_num_filters=[[16, 16], [24, 24]], stackwise_kernel_size=[[3, 3], [5, 5]],
        stackwise_num_strides=[[2, 1], [1, 1]], stackwise_se_ratio=[[None, 0.25], [0.25, 0.25]],
        stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1, 1], [2, 2]], output_num_filters=64, depthwise_filters=16,
        depthwise_stride=2, depthwise_residual=False, last_layer_filter=64,
        squeeze_and_excite=0.5, image_shape=(32, 32, 3), input_activation="hard_swish",
        output_activation="hard_swish", input_num_filters=16)
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    return model, x


def test_mobilenet_groups(mobilenet):
    model, _ = mobilenet
    graph = tfprune.DependencyGraph(model)
    # Residual connections tie a stage's block outputs.
    stage = _group(graph, "block_1_0", "out")
    assert stage.layer_names() == ["block_1_0[out]", "block_1_1[in]", "block_1_1[out]",
                                   "block_2_0[in]"]
    assert _group(graph, "block_2_0", "out").layer_names() == [
        "block_2_0[out]", "block_2_1[in]", "block_2_1[out]", "block_3_0[in]"]
    assert _group(graph, "input_conv", "out").layer_names() == [
        "input_conv[out]", "input_batch_norm[channel]", "block_0_0[in]"]
    # Expanded and squeeze-and-excite widths go in runs of 8.
    for name, expanded in (("block_1_0", 16), ("block_1_1", 24), ("block_2_0", 48)):
        assert _group(graph, name, "expanded").size == expanded // 8
    assert _group(graph, "block_2_0", "squeeze").size == 2
    assert _group(graph, "block_3_0", "out").reasons == ["feeds model output"]
    assert all(g.prunable for g in graph.groups if g.size > 1 and not g.reasons)
    assert not any("unknown channel semantics" in r for g in graph.groups for r in g.reasons)


def test_mobilenet_macs_match_keras_applications():
    # MobileNetV3-Small 1.0 in KerasHub's blocks, and keras.applications'.
    hub = keras_hub_layouts.mobilenet_v3_small(64)
    apps = keras.applications.MobileNetV3Small(
        weights=None, input_shape=(64, 64, 3), include_top=False, include_preprocessing=False)
    assert hub.count_params() == apps.count_params()
    assert tfprune.count_macs(hub) == tfprune.count_macs(apps)


def test_mobilenet_prunes_and_shrinks_exactly(mobilenet, tmp_path):
    model, x = mobilenet
    pruned, _ = _prune(model, lambda groups: _random_keep(groups, 0.5))
    small = tfprune.shrink(pruned)
    assert _rel_err(pruned(x), small(x)) <= 1e-5
    config = small.get_layer("block_2_0").get_config()
    assert config["expansion"] == 24 and config["filters"] == 12
    assert small.count_params() < 0.6 * model.count_params()
    assert tfprune.count_macs(small) < 0.6 * tfprune.count_macs(model)
    assert _rel_err(small(x), _reloaded(small, tmp_path)(x)) <= 1e-6


def test_mobilenet_block_keeps_no_residual_when_widths_meet(mobilenet):
    # block_2_0 has stride 1 and no residual (16 -> 24 channels); keeping 12
    # of each side must not give its thinner copy a residual connection.
    model, x = mobilenet

    def keep_for(groups):
        rng = np.random.default_rng(1)
        ids = {_group(tfprune.DependencyGraph(model), "block_2_0", s).id for s in ("in", "out")}
        return {g.id: _flags(g.size, 12, rng) for g in groups if g.id in ids}

    pruned, _ = _prune(model, keep_for)
    small = tfprune.shrink(pruned)
    block = small.get_layer("block_2_0")
    assert block.conv1.kernel.shape[-2] == block.filters == 12
    assert _rel_err(pruned(x), small(x)) <= 1e-5


def test_mobilenet_gradual_taylor_pruning_shrinks_exactly(mobilenet):
    # Taylor scores of the slots inside the blocks (expanded, squeeze) come
    # from probes on the blocks' weights; masks change between steps.
    model, x = mobilenet
    keras.utils.set_random_seed(0)
    pruned = tfprune.prune_channels(
        model, tfprune.PolynomialDecay(0.0, 0.5, 0, 2, frequency=1), importance="taylor")
    pruned.compile(optimizer="sgd", loss="mse")
    target = np.random.default_rng(1).normal(size=(2,) + model.output_shape[1:])
    pruned.fit(x, target, epochs=3, batch_size=2, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    small = tfprune.shrink(pruned)
    assert small.count_params() < 0.7 * model.count_params()
    assert _rel_err(pruned(x), small(x)) <= 1e-5


# -- embeddings and slicing -------------------------------------------------------------


@pytest.mark.parametrize("tie_weights", [True, False])
def test_reversible_embedding_projects_back(tie_weights):
    keras.utils.set_random_seed(0)
    ids = keras.Input((SEQ,), dtype="int32")
    embedding = keras_hub.layers.ReversibleEmbedding(VOCAB, DIM, tie_weights=tie_weights,
                                                     name="embedding")
    h = L.Dense(DIM, activation="relu", name="mix")(embedding(ids))
    model = keras.Model(ids, embedding(h, reverse=True))
    graph = tfprune.DependencyGraph(model)
    width = _group(graph, "embedding", "embedding")
    assert width.prunable and width.layer_names() == ["embedding[embedding]", "mix[in]",
                                                      "mix[out]"]
    pruned, _ = _prune(model, lambda groups: _random_keep(groups, 0.5))
    small = tfprune.shrink(pruned)
    x = np.random.default_rng(0).integers(0, VOCAB, (2, SEQ)).astype("int32")
    assert _rel_err(pruned(x), small(x)) <= 1e-5
    assert small.get_layer("embedding").output_dim == DIM // 2
    assert tfprune.count_macs(small) < tfprune.count_macs(model)


def test_token_and_position_embedding_and_encoder():
    keras.utils.set_random_seed(0)
    ids = keras.Input((SEQ,), dtype="int32")
    x = keras_hub.layers.TokenAndPositionEmbedding(VOCAB, SEQ, DIM, name="embed")(ids)
    x = L.Dense(DIM, name="project")(x)
    x = keras_hub.layers.TransformerEncoder(FFN, HEADS, name="encoder")(x)
    x = L.GlobalAveragePooling1D()(x)
    model = keras.Model(ids, L.Dense(2, name="logits")(x))
    graph = tfprune.DependencyGraph(model)
    assert _group(graph, "embed", "out").prunable
    assert _group(graph, "encoder", "ffn").prunable
    assert not _group(graph, "encoder", "model").prunable
    pruned, _ = _prune(model, lambda groups: _random_keep(groups, 0.5))
    small = tfprune.shrink(pruned)
    x = np.random.default_rng(0).integers(0, VOCAB, (2, SEQ)).astype("int32")
    assert _rel_err(pruned(x), small(x)) <= 1e-5
    assert small.get_layer("embed").embedding_dim == DIM // 2
    assert small.get_layer("encoder").intermediate_dim == FFN // 2


def test_transformer_encoder_with_a_channel_mixing_activation_keeps_its_units():
    inp = keras.Input((SEQ, DIM))
    out = keras_hub.layers.TransformerEncoder(FFN, HEADS, activation="softmax", name="encoder")(inp)
    graph = tfprune.DependencyGraph(keras.Model(inp, L.GlobalAveragePooling1D()(out)))
    assert "activation softmax" in _group(graph, "encoder", "ffn").reasons[0]


@pytest.mark.parametrize("index, prunable", [
    (lambda x: x[:, 0, :], True),
    (lambda x: x[:, 0], True),
    (lambda x: x[..., 1:3, :], True),
    (lambda x: x[..., :4], False),
    (lambda x: x[:, :, 0], False),
    (lambda x: x[..., None], False),
])
def test_get_item_keeps_channels_when_the_channel_axis_is_whole(index, prunable):
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 8))
    h = L.Dense(16, name="producer")(inp)
    y = index(h)
    model = keras.Model(inp, L.Dense(4, name="consumer")(L.Flatten()(y) if y.ndim > 2 else y))
    graph = tfprune.DependencyGraph(model)
    assert _group(graph, "producer", "out").prunable is prunable
    if prunable:
        pruned, _ = _prune(model, lambda groups: _random_keep(groups, 0.5))
        x = np.random.default_rng(0).uniform(size=(2, 6, 8)).astype("float32")
        assert _rel_err(pruned(x), tfprune.shrink(pruned)(x)) <= 1e-5
