"""Handlers for KerasHub layers (the optional `keras-hub` package).

KerasHub backbones are functional models built from layers that hold other
layers: a `TransformerEncoder` holds a MultiHeadAttention, two
LayerNormalizations and two Dense layers; a MobileNet `InvertedResidualBlock`
holds three convolutions, three BatchNormalizations and a squeeze-and-excite
block. The handler of such a layer lays out the sublayers' weights as the
sublayers' own handlers do, under the composite's slot names (`_adopt`),
links the slots to the tensors of its call, and rewrites the config fields
that size the sublayers; `shrink` slices the weights along those axes and
sets them in `layer.weights` order, which a layer rebuilt from the new config
keeps.

tfprune never imports `keras_hub`: the handlers are registered by import path
(`PATHS`) and read the layers' attributes.

What can be removed is what a KerasHub config can express:

- `TransformerEncoder`: feedforward units of each layer. Its heads and its
  model dimension stay: KerasHub builds the attention with
  `key_dim = hidden_dim // num_heads` from its input, so a layer with fewer
  heads (or a narrower input) would have another head size.
- `ViTEncoder` (every block of a ViT in one layer): MLP units, the same
  indices in every block (one `mlp_dim` sizes all blocks); heads and the
  model dimension stay, as above.
- `ViTPatchingAndEmbedding`, `PositionEmbedding`, `TokenAndPositionEmbedding`
  and `ReversibleEmbedding`: their embedding width follows the channels
  that consume it.
- MobileNet's `DepthwiseConvBlock`, `InvertedResidualBlock` and
  `ConvBnActBlock`: input and output channels (linked through residual
  connections), expanded and squeeze-and-excite channels in runs of 8
  (KerasHub rounds those widths to multiples of 8).
"""

import functools
import math
import types

import numpy as np

from tfprune.dependency.trace import TensorRef
from tfprune.handlers import common
from tfprune.handlers.base import LayerHandler
from tfprune.handlers.layout import Layout, Unsupported
from tfprune.handlers.registry import handler_for

# KerasHub rounds the expanded and squeeze-and-excite widths of MobileNet
# blocks to multiples of this (`keras_hub.src.models.mobilenet.util.adjust_channels`).
MOBILENET_DIVISOR = 8

# Activations KerasHub defines itself that act on each value alone.
_KERAS_HUB_ELEMENTWISE = frozenset({"gelu_approximate"})


def _elementwise(activation):
    """Whether an activation (a name or a function) acts on each value alone."""
    if activation is None:
        return True
    if isinstance(activation, str):
        return activation in common.ELEMENTWISE_ACTIVATIONS
    name = getattr(activation, "__name__", None)
    module = getattr(activation, "__module__", "") or ""
    if module.startswith("keras."):
        return name in common.ELEMENTWISE_ACTIVATIONS
    return module.startswith("keras_hub.") and name in _KERAS_HUB_ELEMENTWISE


def _adopt(layout, sublayer, slots):
    """Adds a sublayer's weight axes (as its own handler lays them out) to `layout`.

    Args:
      layout: The composite layer's `Layout`.
      sublayer: A built sublayer, or None (absent: nothing is added).
      slots: `{sublayer slot: composite slot}`; every slot of the sublayer
        must be named.

    Raises:
      Unsupported: If the sublayer has a slot that `slots` does not name, or
        its width differs from the composite slot's.
    """
    if sublayer is None:
        return
    inner = handler_for(sublayer).layout(sublayer)
    if inner is None:
        return
    for name, size in inner.slots.items():
        if name not in slots:
            raise Unsupported(
                f"{common.describe(sublayer)} has a channel slot '{name}' that tfprune "
                "does not expect here")
        if size is not None and size != layout.slots[slots[name]]:
            raise Unsupported(
                f"{common.describe(sublayer)}: slot '{name}' has {size} entries, "
                f"{layout.slots[slots[name]]} expected")
    for entry in inner.axes:
        layout.add(entry.variable, entry.axis, slots[entry.slot], entry.role, entry.maskable,
                   entry.blocks)


def _prunable(*sublayers):
    """The weights unstructured pruning masks in each sublayer, by its handler."""
    out = []
    for sublayer in sublayers:
        if sublayer is not None:
            out.extend(handler_for(sublayer).prunable_weights(sublayer) or [])
    return out


def _tie_runs(ctx, slot, width):
    """Links the entries of `slot` in consecutive runs of `width`: they go together."""
    ids = ctx.slot(slot)
    if ids.size % width:
        raise Unsupported(f"slot '{slot}' of {ids.size} entries is not in runs of {width}")
    ctx.link(ids, ids[np.arange(ids.size) // width * width])


def _self_attention_macs(mha, tensor):
    """MACs of a MultiHeadAttention attending `tensor` to itself (its handler's count)."""
    ref = TensorRef(tensor.key)
    site = types.SimpleNamespace(args=(ref, ref), kwargs={}, inputs=[tensor])
    return handler_for(mha).macs(mha, site)


def _main_input(ctx):
    """The tensor a composite layer is called on (its first argument)."""
    tensor = ctx.argument("inputs", 0)
    if tensor is None:
        raise Unsupported("its input is not a tensor of the model")
    return tensor


# -- embeddings -----------------------------------------------------------------


def _reverse(site):
    value = site.kwargs.get("reverse")
    if value is None and len(site.args) > 1:
        value = site.args[1]
    return bool(value)


class ReversibleEmbeddingHandler(LayerHandler):
    """ReversibleEmbedding (Keras, and KerasHub's subclass): an Embedding that
    can also project hidden states back onto the vocabulary (`reverse=True`).

    The `"embedding"` slot is the embedding width: columns of `embeddings`,
    and rows of `reverse_embeddings` when the weights are not tied. A forward
    call writes it (as an Embedding's output); a reverse call reads it as its
    input channels, and its output runs over the vocabulary, which nothing
    removes. (Not `"out"`: that name promises the layer's output channels,
    which a reverse call does not have.)
    """

    def prunable_weights(self, layer):
        out = [(layer.embeddings, -1)]
        if not layer.tie_weights:
            out.append((layer.reverse_embeddings, 0))
        return out

    def layout(self, layer):
        if layer.quantization_mode is not None:
            raise Unsupported(f"quantized ({layer.quantization_mode})")
        if getattr(layer, "lora_enabled", False):
            raise Unsupported("LoRA is enabled (its table is a sum, not a variable)")
        embeddings = layer.embeddings
        out = Layout({"embedding": embeddings.shape[1]}, [])
        out.add(embeddings, 1, "embedding", "producer")
        if not layer.tie_weights:
            out.add(layer.reverse_embeddings, 0, "embedding", "consumer")
        return out

    def link(self, ctx):
        ctx.only_input()
        width = ctx.slot("embedding")
        if _reverse(ctx.site):
            ctx.link(ctx.tensor(ctx.inputs[0]), width)
        else:
            ctx.link(ctx.tensor(ctx.outputs[0]), width)

    def shrink_config(self, layer, config, ctx):
        config["output_dim"] = ctx.kept("embedding")
        return config

    def macs(self, layer, site):
        """A reverse call is a projection onto the vocabulary; a lookup costs none."""
        if not _reverse(site):
            return 0
        return common.positions(site.inputs[0], layer) * math.prod(layer.embeddings.shape)


class PositionEmbeddingHandler(LayerHandler):
    """KerasHub PositionEmbedding: one learned vector per position, as wide as its input.

    It is built from its input's width, so input, table columns and output
    go together (the input's values are not read).
    """

    def prunable_weights(self, layer):
        return [(layer.position_embeddings, -1)]

    def layout(self, layer):
        table = layer.position_embeddings
        out = Layout({"out": table.shape[1]}, [])
        out.add(table, 1, "out", "producer")
        return out

    def link(self, ctx):
        out = ctx.slot("out")
        ctx.link(ctx.tensor(_main_input(ctx)), out)
        ctx.link(ctx.tensor(ctx.outputs[0]), out)


class TokenAndPositionEmbeddingHandler(LayerHandler):
    """KerasHub TokenAndPositionEmbedding: token plus position embeddings."""

    def prunable_weights(self, layer):
        return _prunable(layer.token_embedding, layer.position_embedding)

    def layout(self, layer):
        out = Layout({"out": layer.embedding_dim}, [])
        _adopt(out, layer.token_embedding, {"embedding": "out"})
        _adopt(out, layer.position_embedding, {"out": "out"})
        return out

    def link(self, ctx):
        # The input holds token ids, not channels.
        ctx.link(ctx.tensor(ctx.outputs[0]), ctx.slot("out"))

    def shrink_config(self, layer, config, ctx):
        config["embedding_dim"] = ctx.kept("out")
        return config


# -- transformers -----------------------------------------------------------------

_HEAD_SIZE = (
    "KerasHub sizes its attention heads from the model width (key_dim = hidden_dim // "
    "num_heads), so it cannot be rebuilt with fewer heads or a narrower model dimension"
)


def _block_heads_and_width(ctx, head_slots):
    reason = f"{common.describe(ctx.layer)}: {_HEAD_SIZE}"
    ctx.block(ctx.slot("model"), reason)
    for slot in head_slots:
        ctx.block(ctx.slot(slot), reason)


class TransformerEncoderHandler(LayerHandler):
    """KerasHub TransformerEncoder: self-attention and a feedforward network.

    Slots: `"model"` (the residual stream: the attention's input and output
    channels, both LayerNormalizations, the feedforward's input and output),
    `"heads"` and `"ffn"` (the feedforward's intermediate units). Only
    `"ffn"` can lose entries (see the module docstring); a removed unit has a
    zero column in the intermediate Dense and a zero row in the output Dense.
    """

    def prunable_weights(self, layer):
        return _prunable(layer._self_attention_layer, layer._feedforward_intermediate_dense,
                         layer._feedforward_output_dense)

    def layout(self, layer):
        mha = layer._self_attention_layer
        inner, outer = layer._feedforward_intermediate_dense, layer._feedforward_output_dense
        out = Layout({"model": outer.kernel.shape[1], "heads": mha._num_heads,
                      "ffn": inner.kernel.shape[1]}, [])
        _adopt(out, mha, {"query": "model", "key": "model", "value": "model",
                          "heads": "heads", "out": "model"})
        _adopt(out, layer._self_attention_layer_norm, {"channel": "model"})
        _adopt(out, layer._feedforward_layer_norm, {"channel": "model"})
        _adopt(out, inner, {"in": "model", "out": "ffn"})
        _adopt(out, outer, {"in": "ffn", "out": "model"})
        return out

    def link(self, ctx):
        if len(ctx.outputs) != 1:
            raise Unsupported("return_attention_scores=True (the scores have a heads axis)")
        model = ctx.slot("model")
        ctx.link(ctx.tensor(_main_input(ctx)), model)
        ctx.link(ctx.tensor(ctx.outputs[0]), model)
        _block_heads_and_width(ctx, ["heads"])
        ffn = ctx.slot("ffn")  # Nothing outside the layer sees these units.
        activation = ctx.layer.activation
        if not _elementwise(activation):
            name = getattr(activation, "__name__", "custom")
            ctx.block(ffn, f"{common.describe(ctx.layer)}: activation {name} mixes channels "
                           "or is unknown")

    def shrink_config(self, layer, config, ctx):
        config["intermediate_dim"] = ctx.kept("ffn")
        return config

    def macs(self, layer, site):
        """The self-attention and the feedforward network (batch size 1)."""
        tensor = site.inputs[0]
        return (_self_attention_macs(layer._self_attention_layer, tensor)
                + common.kernel_macs(layer._feedforward_intermediate_dense, tensor)
                + common.kernel_macs(layer._feedforward_output_dense, tensor))


class ViTEncoderHandler(LayerHandler):
    """KerasHub ViTEncoder: every transformer block of a ViT, and the final LayerNormalization.

    Slots: `"model"` (the residual stream through all blocks), and for block
    `i` (from 0), `"heads_i"` and `"mlp_i"` (its MLP's hidden units). One
    `mlp_dim` sizes every block, so unit `j` of every block's MLP goes
    together; heads and the model dimension stay (see the module docstring).
    """

    def prunable_weights(self, layer):
        parts = []
        for block in layer.encoder_layers:
            parts += [block.mha, block.mlp.dense_1, block.mlp.dense_2]
        return _prunable(*parts)

    def layout(self, layer):
        blocks = layer.encoder_layers
        slots = {"model": layer.hidden_dim}
        for i, block in enumerate(blocks):
            slots[f"heads_{i}"] = block.mha._num_heads
            slots[f"mlp_{i}"] = block.mlp.dense_1.kernel.shape[1]
        out = Layout(slots, [])
        for i, block in enumerate(blocks):
            _adopt(out, block.layer_norm_1, {"channel": "model"})
            _adopt(out, block.mha, {"query": "model", "key": "model", "value": "model",
                                    "heads": f"heads_{i}", "out": "model"})
            _adopt(out, block.layer_norm_2, {"channel": "model"})
            _adopt(out, block.mlp.dense_1, {"in": "model", "out": f"mlp_{i}"})
            _adopt(out, block.mlp.dense_2, {"in": f"mlp_{i}", "out": "model"})
        _adopt(out, layer.layer_norm, {"channel": "model"})
        return out

    def link(self, ctx):
        ctx.only_input()
        model = ctx.slot("model")
        ctx.link(ctx.tensor(ctx.inputs[0]), model)
        ctx.link(ctx.tensor(ctx.outputs[0]), model)
        count = len(ctx.layer.encoder_layers)
        _block_heads_and_width(ctx, [f"heads_{i}" for i in range(count)])
        first = ctx.slot("mlp_0")
        for i in range(1, count):
            ctx.link(first, ctx.slot(f"mlp_{i}"))
        for block in ctx.layer.encoder_layers:
            name = common.activation_name(block.mlp.dense_1)
            if name not in common.ELEMENTWISE_ACTIVATIONS:
                ctx.block(first, f"{common.describe(ctx.layer)}: MLP activation "
                                 f"{name or 'custom'} mixes channels or is unknown")

    def shrink_config(self, layer, config, ctx):
        config["mlp_dim"] = ctx.kept("mlp_0")
        return config

    def macs(self, layer, site):
        """Self-attention and MLP of every block (batch size 1)."""
        tensor = site.inputs[0]
        return sum(_self_attention_macs(block.mha, tensor)
                   + common.kernel_macs(block.mlp.dense_1, tensor)
                   + common.kernel_macs(block.mlp.dense_2, tensor)
                   for block in layer.encoder_layers)


class ViTPatchingAndEmbeddingHandler(LayerHandler):
    """KerasHub ViTPatchingAndEmbedding: a strided Conv2D over patches, a class
    token and position embeddings, all `hidden_dim` wide (the "out" slot)."""

    def prunable_weights(self, layer):
        return _prunable(layer.patch_embedding, layer.position_embedding)

    def layout(self, layer):
        common.channels_last(layer)
        conv = layer.patch_embedding
        out = Layout({"in": conv.kernel.shape[-2], "out": layer.hidden_dim}, [])
        _adopt(out, conv, {"in": "in", "out": "out"})
        if layer.use_class_token:
            out.add(layer.class_token, 2, "out", "param")
        _adopt(out, layer.position_embedding, {"out": "out"})
        return out

    def link(self, ctx):
        ctx.only_input()
        ctx.link(ctx.tensor(ctx.inputs[0]), ctx.slot("in"))
        ctx.link(ctx.tensor(ctx.outputs[0]), ctx.slot("out"))

    def shrink_config(self, layer, config, ctx):
        config["hidden_dim"] = ctx.kept("out")
        return config

    def from_config(self, layer, config):
        # KerasHub's get_config writes two derived sizes its constructor does
        # not take, and leaves out two arguments it does.
        config = dict(config)
        config.pop("num_patches", None)
        config.pop("num_positions", None)
        config.setdefault("use_patch_bias", layer.use_patch_bias)
        config.setdefault("data_format", layer.data_format)
        new = type(layer).from_config(config)
        # The copy's own get_config would write the two sizes again, and the
        # saved model would not load: this copy writes what its class takes.
        new.get_config = functools.partial(_round_trip_config, new, type(new).get_config)
        return new

    def macs(self, layer, site):
        """The patch convolution (batch size 1)."""
        conv = layer.patch_embedding
        return layer.num_patches * math.prod(conv.kernel.shape)


# -- MobileNet ------------------------------------------------------------------


def _round_trip_config(layer, get_config):
    config = get_config(layer)
    config.pop("num_patches", None)
    config.pop("num_positions", None)
    config.setdefault("use_patch_bias", layer.use_patch_bias)
    config.setdefault("data_format", layer.data_format)
    return config


def _conv_macs(conv, positions):
    return positions * math.prod(conv.kernel.shape)


def _se_macs(se):
    """A squeeze-and-excite block runs its convolutions on one pooled position."""
    if se is None:
        return 0
    return _conv_macs(se.conv_reduce, 1) + _conv_macs(se.conv_expand, 1)


def _adopt_se(layout, se, channels):
    """Lays out a MobileNet SqueezeAndExcite2D over `channels` ("squeeze": its bottleneck)."""
    if se is None:
        return
    _adopt(layout, se.conv_reduce, {"in": channels, "out": "squeeze"})
    _adopt(layout, se.conv_expand, {"in": "squeeze", "out": channels})


def _squeeze_ratio(ctx, channels):
    """The SE ratio that gives the kept bottleneck over the kept channels.

    KerasHub sizes the bottleneck as `adjust_channels(channels * ratio)`,
    which gives back a kept width that is a multiple of 8.
    """
    return ctx.kept("squeeze") / ctx.kept(channels)


def _link_block(ctx, residual):
    """Links a MobileNet block's input and output to its "in" and "out" slots."""
    ctx.only_input()
    common.channels_last(ctx.layer)
    ctx.link(ctx.tensor(ctx.inputs[0]), ctx.slot("in"))
    ctx.link(ctx.tensor(ctx.outputs[0]), ctx.slot("out"))
    if residual:
        ctx.link(ctx.slot("in"), ctx.slot("out"))
    if ctx.has_slot("squeeze"):
        _tie_runs(ctx, "squeeze", MOBILENET_DIVISOR)


class DepthwiseConvBlockHandler(LayerHandler):
    """MobileNet DepthwiseConvBlock: depthwise conv, BN, ReLU, optional SE,
    pointwise conv, BN, optional residual.

    Slots: `"in"` (the input channels, which the depthwise part keeps one by
    one), `"squeeze"` (the SE bottleneck, in runs of 8) and `"out"`.
    """

    def prunable_weights(self, layer):
        return _prunable(layer.conv1, layer.conv2)

    def layout(self, layer):
        se = getattr(layer, "se_layer", None) if layer.squeeze_excite_ratio else None
        slots = {"in": layer.conv1.kernel.shape[-1], "out": layer.conv2.kernel.shape[-1]}
        if se is not None:
            slots["squeeze"] = se.conv_reduce.kernel.shape[-1]
        out = Layout(slots, [])
        _adopt(out, layer.conv1, {"out": "in"})
        _adopt(out, layer.batch_normalization1, {"channel": "in"})
        _adopt_se(out, se, "in")
        _adopt(out, layer.conv2, {"in": "in", "out": "out"})
        _adopt(out, layer.batch_normalization2, {"channel": "out"})
        return out

    def link(self, ctx):
        _link_block(ctx, ctx.layer.residual)

    def shrink_config(self, layer, config, ctx):
        config["infilters"] = ctx.kept("in")
        config["filters"] = ctx.kept("out")
        if "squeeze" in ctx.layout.slots:
            config["squeeze_excite_ratio"] = _squeeze_ratio(ctx, "in")
        return config

    def macs(self, layer, site):
        """Depthwise and pointwise convolutions and the SE block (batch size 1)."""
        positions = common.positions(site.outputs[0], layer)
        se = getattr(layer, "se_layer", None) if layer.squeeze_excite_ratio else None
        return (_conv_macs(layer.conv1, positions) + _se_macs(se)
                + _conv_macs(layer.conv2, positions))


class InvertedResidualBlockHandler(LayerHandler):
    """MobileNet InvertedResidualBlock: expand (1x1 conv, BN, activation),
    depthwise conv, BN, activation, optional SE, project (1x1 conv, BN),
    residual when the stride is 1 and the widths match.

    Slots: `"in"`, `"expanded"` (in runs of 8), `"squeeze"` (the SE
    bottleneck, in runs of 8) and `"out"`.
    """

    def prunable_weights(self, layer):
        return _prunable(layer.conv1, layer.conv2, layer.conv3)

    @staticmethod
    def _residual(layer):
        return layer.stride == 1 and layer.infilters == layer.filters

    def layout(self, layer):
        se = layer.squeeze_excite
        slots = {"in": layer.conv1.kernel.shape[-2], "expanded": layer.conv1.kernel.shape[-1],
                 "out": layer.conv3.kernel.shape[-1]}
        if se is not None:
            slots["squeeze"] = se.conv_reduce.kernel.shape[-1]
        out = Layout(slots, [])
        _adopt(out, layer.conv1, {"in": "in", "out": "expanded"})
        _adopt(out, layer.batch_normalization1, {"channel": "expanded"})
        _adopt(out, layer.conv2, {"out": "expanded"})
        _adopt(out, layer.batch_normalization2, {"channel": "expanded"})
        _adopt_se(out, se, "expanded")
        _adopt(out, layer.conv3, {"in": "expanded", "out": "out"})
        _adopt(out, layer.batch_normalization3, {"channel": "out"})
        return out

    def link(self, ctx):
        layer = ctx.layer
        _link_block(ctx, self._residual(layer))
        if not _elementwise(layer.activation):
            ctx.block(ctx.slot("expanded"), f"{common.describe(layer)}: activation "
                                            f"{layer.activation!r} mixes channels or is unknown")
        _tie_runs(ctx, "expanded", MOBILENET_DIVISOR)

    def shrink_config(self, layer, config, ctx):
        kept_in, kept_out = ctx.kept("in"), ctx.kept("out")
        config["expansion"] = ctx.kept("expanded")
        config["filters"] = kept_out
        # `infilters` only decides the residual connection (the convolutions
        # are built from the input): it must not create one the block lacks.
        if self._residual(layer) or layer.stride != 1 or kept_in != kept_out:
            config["infilters"] = kept_in
        else:
            config["infilters"] = 0
        if "squeeze" in ctx.layout.slots:
            config["squeeze_excite_ratio"] = _squeeze_ratio(ctx, "expanded")
        return config

    def macs(self, layer, site):
        """The three convolutions and the SE block (batch size 1)."""
        inside = common.positions(site.inputs[0], layer)
        outside = common.positions(site.outputs[0], layer)
        return (_conv_macs(layer.conv1, inside) + _conv_macs(layer.conv2, outside)
                + _se_macs(layer.squeeze_excite) + _conv_macs(layer.conv3, outside))


class ConvBnActBlockHandler(LayerHandler):
    """MobileNet ConvBnActBlock: 1x1 conv, BN, activation."""

    def prunable_weights(self, layer):
        return _prunable(layer.conv)

    def layout(self, layer):
        kernel = layer.conv.kernel
        out = Layout({"in": kernel.shape[-2], "out": kernel.shape[-1]}, [])
        _adopt(out, layer.conv, {"in": "in", "out": "out"})
        _adopt(out, layer.batch_normalization, {"channel": "out"})
        return out

    def link(self, ctx):
        _link_block(ctx, residual=False)
        if not _elementwise(ctx.layer.activation):
            ctx.block(ctx.slot("out"), f"{common.describe(ctx.layer)}: activation "
                                       f"{ctx.layer.activation!r} mixes channels or is unknown")

    def shrink_config(self, layer, config, ctx):
        config["filter"] = ctx.kept("out")
        return config

    def macs(self, layer, site):
        return _conv_macs(layer.conv, common.positions(site.outputs[0], layer))


_HUB = "keras_hub.src"

PATHS = {
    "keras.src.layers.core.reversible_embedding.ReversibleEmbedding":
        ReversibleEmbeddingHandler(),
    f"{_HUB}.layers.modeling.reversible_embedding.ReversibleEmbedding":
        ReversibleEmbeddingHandler(),
    f"{_HUB}.layers.modeling.position_embedding.PositionEmbedding": PositionEmbeddingHandler(),
    f"{_HUB}.layers.modeling.token_and_position_embedding.TokenAndPositionEmbedding":
        TokenAndPositionEmbeddingHandler(),
    f"{_HUB}.layers.modeling.transformer_encoder.TransformerEncoder":
        TransformerEncoderHandler(),
    f"{_HUB}.models.vit.vit_layers.ViTPatchingAndEmbedding": ViTPatchingAndEmbeddingHandler(),
    f"{_HUB}.models.vit.vit_layers.ViTEncoder": ViTEncoderHandler(),
    f"{_HUB}.models.mobilenet.mobilenet_backbone.DepthwiseConvBlock":
        DepthwiseConvBlockHandler(),
    f"{_HUB}.models.mobilenet.mobilenet_backbone.InvertedResidualBlock":
        InvertedResidualBlockHandler(),
    f"{_HUB}.models.mobilenet.mobilenet_backbone.ConvBnActBlock": ConvBnActBlockHandler(),
}
