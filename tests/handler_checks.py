"""Checks shared by the handler test files: random weights, random keep
flags, and the law `shrink(masked)(x) == masked(x)`."""

import numpy as np

import tfprune


def rel_err(a, b):
    """max |a - b| / max |a|."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-12))


def randomize(model, rng):
    """Random weights (positive variances) in every layer of `model`."""
    for layer in model.layers:
        values = []
        for w in layer.weights:
            value = rng.normal(0.0, 0.5, w.shape).astype("float32")
            values.append(np.abs(value) + 0.5 if "variance" in w.path else value)
        if values:
            layer.set_weights(values)


def random_prune(model, seed):
    """A `prune_channels` copy with random weights and random keep flags.

    Returns:
      `(pruned, pruner, keep)`.
    """
    rng = np.random.default_rng(seed)
    randomize(model, rng)
    pruned = tfprune.prune_channels(model, tfprune.ConstantSparsity(0.5, begin_step=10**6))
    pruner = tfprune.get_channel_pruner(pruned)
    keep = {}
    for group in pruner.groups:
        flags = np.zeros(group.size, bool)
        flags[rng.choice(group.size, rng.integers(1, group.size), replace=False)] = True
        keep[group.id] = flags
    pruner.set_keep(keep)
    return pruned, pruner, keep


def prune_and_shrink(model, x, seed=0):
    """Random weights and keep flags; checks shrink(masked) == masked.

    Returns:
      `(pruner, keep, small)`.
    """
    pruned, pruner, keep = random_prune(model, seed)
    small = tfprune.shrink(pruned)
    assert rel_err(pruned(x), small(x)) <= 1e-5
    return pruner, keep, small


def group_of(graph, layer_name, slot):
    """The group holding `layer_name[slot]`."""
    for group in graph.groups:
        if any(layer.name == layer_name and s == slot for layer, s in group.layers):
            return group
    raise AssertionError(f"no group holds {layer_name}[{slot}]")
