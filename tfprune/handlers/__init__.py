"""Layer handlers: one per layer type, everything tfprune knows about it.

A handler (`LayerHandler`) says which weights of a layer unstructured pruning
masks, which weight axes run over which channel slots (`Layout`), how the
layer links the channels of its inputs and outputs (`LinkContext`), how
`shrink` rewrites its config and slices its weights, what it computes while
channels are masked, and its MACs. `register_handler` teaches tfprune a new
layer type; the handlers tfprune ships are in `tfprune.handlers.builtin`.
"""

from tfprune.handlers.base import LayerHandler
from tfprune.handlers.layout import Layout, Unsupported, WeightAxis
from tfprune.handlers.link_context import LinkContext
from tfprune.handlers.registry import (
    handler_for,
    is_known,
    lookup,
    register_handler,
    register_operation_handler,
    unregister_handler,
)
from tfprune.handlers import builtin as _builtin

_builtin.register_builtins()
