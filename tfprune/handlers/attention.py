"""Handler for MultiHeadAttention: whole heads, and the model dimension.

A `keras.layers.MultiHeadAttention` projects its query, key and value inputs
into `num_heads` heads (EinsumDense kernels of shape `(dim, heads, head_dim)`),
attends within each head, and projects the heads back (kernel
`(heads, value_dim, out)`). Its channel slots:

- `"query"`, `"key"`, `"value"`: the input channels each projection reads
  (kernel axis 0);
- `"heads"`: one entry per head, running over axis 1 of the query, key, value
  (and gate) kernels, axis 0 of their biases and axis 0 of the output kernel;
  nothing outside the layer sees heads, so they form a group of their own;
- `"out"`: the output channels (output kernel axis 2, output bias). Without
  an explicit `output_shape` the output is as wide as the query, so `"out"`
  and `"query"` are linked: the residual stream of a transformer goes through
  both, and through every LayerNormalization and Dense over it, as one group.

A removed head has zero query, key and value projections, so it attends
uniformly to zero values and adds nothing through its zeroed output rows:
the masked layer computes what the layer with `num_heads` reduced computes.
"""

import math

from tfprune.handlers import common
from tfprune.handlers.base import LayerHandler
from tfprune.handlers.dense import EinsumDenseHandler
from tfprune.handlers.layout import Layout, Unsupported
from tfprune.handlers.link_context import call_argument

_EINSUM = EinsumDenseHandler()


def _projections(layer):
    parts = [layer._query_dense, layer._key_dense, layer._value_dense]
    if getattr(layer, "_use_gate", False):
        parts.append(layer._gate_dense)
    return parts


class MultiHeadAttentionHandler(LayerHandler):
    """MultiHeadAttention: heads, model dimension, MACs."""

    def prunable_weights(self, layer):
        # As tfmot: the query, key, value and output projections.
        parts = (layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense)
        return [pair for part in parts for pair in _EINSUM.prunable_weights(part)]

    def layout(self, layer):
        output_shape = layer._output_shape
        if output_shape and len(output_shape) != 1:
            raise Unsupported(f"output_shape={tuple(output_shape)} has several axes")
        query, key, value = layer._query_dense, layer._key_dense, layer._value_dense
        output = layer._output_dense
        if len(query.kernel.shape) != 3 or len(output.kernel.shape) != 3:
            raise Unsupported("projection kernels of unexpected rank")
        out = Layout({
            "query": query.kernel.shape[0],
            "key": key.kernel.shape[0],
            "value": value.kernel.shape[0],
            "heads": layer._num_heads,
            "out": output.kernel.shape[-1],
        }, [])
        slots = {id(query): "query", id(key): "key", id(value): "value"}
        for part in _projections(layer):
            out.add(part.kernel, 0, slots.get(id(part), "query"), "consumer")
            out.add(part.kernel, 1, "heads", "producer")
            out.add(part.bias, 0, "heads", "param")
        out.add(output.kernel, 0, "heads", "consumer")
        out.add(output.kernel, -1, "out", "producer")
        out.add(output.bias, 0, "out", "param")
        return out

    def link(self, ctx):
        layer = ctx.layer
        if len(ctx.outputs) != 1:
            raise Unsupported("return_attention_scores=True (the scores have a heads axis)")
        query = ctx.argument("query", 0)
        value = ctx.argument("value", 1)
        key = ctx.argument("key", 2) or value
        if query is None or value is None:
            raise Unsupported("query or value is not a tensor of the model")
        ctx.link(ctx.tensor(query), ctx.slot("query"))
        ctx.link(ctx.tensor(value), ctx.slot("value"))
        ctx.link(ctx.tensor(key), ctx.slot("key"))
        ctx.link(ctx.tensor(ctx.outputs[0]), ctx.slot("out"))
        if not layer._output_shape:
            # The output projection is built as wide as the query.
            ctx.link(ctx.slot("query"), ctx.slot("out"))
        ctx.slot("heads")

    def shrink_config(self, layer, config, ctx):
        config["num_heads"] = ctx.kept("heads")
        if layer._output_shape:
            config["output_shape"] = (ctx.kept("out"),)
        return config

    def macs(self, layer, site):
        """Projections, scores and the weighted sum of values (batch size 1)."""
        query, value = call_argument(site, "query", 0), call_argument(site, "value", 1)
        t_q, t_k = common.positions(query, layer), common.positions(value, layer)
        heads = layer._num_heads
        key_dim, value_dim = layer._key_dim, layer._value_dim
        total = t_q * math.prod(layer._query_dense.kernel.shape)
        total += t_k * math.prod(layer._key_dense.kernel.shape)
        total += t_k * math.prod(layer._value_dense.kernel.shape)
        if getattr(layer, "_use_gate", False):
            total += t_q * math.prod(layer._gate_dense.kernel.shape)
        total += t_q * t_k * heads * (key_dim + value_dim)
        total += t_q * math.prod(layer._output_dense.kernel.shape)
        return int(total)
