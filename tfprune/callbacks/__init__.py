"""Keras callbacks that drive pruning during training, one per file."""

from tfprune.callbacks.pruning_summaries import PruningSummaries
from tfprune.callbacks.update_pruning_step import UpdatePruningStep
from tfprune.masked_wrapper import collect_wrappers
