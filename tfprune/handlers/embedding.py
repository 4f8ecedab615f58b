"""Handler for Embedding: its output channels are the "out" slot."""

from tfprune.handlers.base import LayerHandler
from tfprune.handlers.dense import own_variable
from tfprune.handlers.layout import Layout


class EmbeddingHandler(LayerHandler):
    """Embedding: a table of `input_dim` rows of `output_dim` channels.

    Unstructured pruning masks the table (input axis: the channel axis, as
    tfmot); channel pruning removes output dimensions (columns), and
    `shrink` rewrites `output_dim`. A lookup costs no MACs.
    """

    def prunable_weights(self, layer):
        return [(layer.embeddings, -1)]

    def layout(self, layer):
        embeddings = own_variable(layer, layer.embeddings, "embeddings table")
        out = Layout({"out": embeddings.shape[1]}, [])
        out.add(embeddings, 1, "out", "producer")
        return out

    def link(self, ctx):
        # The input holds ids, not channels.
        ctx.link(ctx.tensor(ctx.outputs[0]), ctx.slot("out"))

    def shrink_config(self, layer, config, ctx):
        config["output_dim"] = ctx.kept("out")
        return config
