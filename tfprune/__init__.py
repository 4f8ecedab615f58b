"""tfprune: scheduled weight and channel pruning for Keras 3.

Wrap a model (`prune_low_magnitude`, `prune_channels`), train it with the
`UpdatePruningStep` callback, then `strip_pruning` (masks baked in) or
`shrink` (masked channels removed) before export with `tflite_export`.
"""

from tfprune import datasets
from tfprune import handlers
from tfprune import multi_worker
from tfprune import pruning_policy
from tfprune.callbacks import PruningSummaries, UpdatePruningStep
from tfprune.handlers import LayerHandler, register_handler
from tfprune.masked_wrapper import MaskedWeightsWrapper
from tfprune.prunable_layer import PrunableLayer
from tfprune.prune import prune_low_magnitude, prune_scope, strip_pruning
from tfprune.pruning_policy import PruneForLatencyOnXNNPack, PruningPolicy
from tfprune.pruning_wrapper import PruneLowMagnitude
from tfprune.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule

# --- channel pruning API (begin) ---
from tfprune import importance
from tfprune.channel_pruning import (
    ChannelPruner,
    PruneChannels,
    get_channel_pruner,
    prune_channels,
)
from tfprune.dependency import DependencyGraph, count_macs
from tfprune.surgery import shrink
# --- channel pruning API (end) ---

__version__ = "0.1.0"
