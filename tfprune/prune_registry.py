"""Which Keras layers can be pruned, which of their weights, and along what axis.

Which weights a layer type holds is its handler's knowledge
(`tfprune.handlers`); this module holds the rules of acceptance, as tfmot's,
and the messages. `PruneLowMagnitude` talks to it through three functions:

- `is_prunable(layer)`: whether the wrapper may wrap `layer` (call it in the
  wrapper's constructor);
- `unsupported_layer_message(layer)`: the `ValueError` text when it may not;
- `prunable_weights(layer)`: once `layer` is built, the `(variable,
  input_axis)` pairs to prune, where `input_axis` is the axis of the weight
  that runs over input channels (the axis along which N:M patterns such as 2:4
  are laid out). It raises the same `ValueError` if building revealed weights
  that cannot be pruned.

What is accepted, as in tfmot:

- a layer that opts in, by subclassing `tfprune.PrunableLayer` or by simply
  defining a `get_prunable_weights()` method: those weights are pruned;
- a layer of the exact class a handler is registered for
  (`tfprune.handlers`): the weights its handler names are pruned;
- normalization layers and `PReLU`: wrapped with nothing pruned;
- a layer without weights (`Flatten`, `ReLU`, `MaxPooling2D`, ...): wrapped
  with nothing pruned. A custom layer that is not built yet is accepted on the
  same terms and checked again when it is built.

What is refused: a subclass of a built-in prunable layer that does not opt in
(its `call` may use the kernel differently, or it may add weights, so which
weights matter is its author's call), an RNN whose cell is neither a Keras cell
nor opted in, an already wrapped layer, and any other layer with weights.
"""

import keras

from tfprune import handlers
from tfprune.handlers.recurrent import opted_in_weights as _opted_in_weights
from tfprune.handlers.recurrent import opts_in as _opts_in
from tfprune.masked_wrapper import MaskedWeightsWrapper


def _builtin_handler(layer):
    """`(registered class, handler)` if the layer's handler prunes it, else `(None, None)`."""
    cls, handler = handlers.lookup(layer)
    if handler is None or type(handler).prunable_weights is handlers.LayerHandler.prunable_weights:
        return None, None
    return cls, handler


def _problem(layer):
    """Why `layer` cannot be wrapped for pruning (a message), or None if it can."""
    if not isinstance(layer, keras.layers.Layer):
        return (
            "Only Keras layers can be pruned; received an object of type "
            f"{type(layer).__name__}: {layer!r}. Pass a keras.layers.Layer, a list of "
            "them, or a Sequential or functional keras.Model."
        )
    if isinstance(layer, MaskedWeightsWrapper):
        return (
            f"Layer '{layer.name}' is already wrapped by {type(layer).__name__}; wrapping "
            "it again would stack masks. Prune the original layer or model, or call "
            "tfprune.strip_pruning first."
        )
    if _opts_in(layer):
        return None
    base, handler = _builtin_handler(layer)
    if base is type(layer) or (handler is not None and handler.prunes_nothing):
        return handler.unstructured_problem(layer)
    if base is not None:
        return (
            f"Layer '{layer.name}' of class {type(layer).__name__} subclasses "
            f"keras.layers.{base.__name__}, but tfprune (like tfmot) only prunes the "
            f"built-in {base.__name__} itself: a subclass may add weights or use them "
            "differently, so it must say which weights to prune. Opt in either way: "
            f"(1) also subclass tfprune.PrunableLayer (class {type(layer).__name__}("
            f"keras.layers.{base.__name__}, tfprune.PrunableLayer)) and implement "
            "get_prunable_weights(), or (2) just define a get_prunable_weights() method; "
            "it returns the variables to prune, e.g. [self.kernel]. To keep the layer "
            "dense instead, leave it out (ignored_layers=[...] when pruning a model)."
        )
    if isinstance(layer, keras.Model):
        return (
            f"'{layer.name}' is a keras.Model, not a layer to wrap. Pass the model to "
            "tfprune.prune_low_magnitude, which wraps its layers."
        )
    if layer.weights:
        return (
            f"Layer '{layer.name}' of type {type(layer).__name__} has weights but "
            "tfprune does not know which of them to prune. Either leave it out "
            "(ignored_layers=[...] when pruning a model, or choose the layers with "
            "keras.models.clone_model(model, clone_function=...)), or make it "
            "prunable by subclassing tfprune.PrunableLayer (or defining a "
            "get_prunable_weights() method) that returns the variables to prune."
        )
    return None


def is_prunable(layer):
    """Whether `PruneLowMagnitude` may wrap `layer`.

    True for layers that opt in, for built-in prunable layers, normalization
    layers and layers without weights (the last two are wrapped with nothing
    pruned, as in tfmot). A custom layer without weights that is not built
    yet is accepted; `prunable_weights` checks it again once built.

    Args:
      layer: Any object.

    Returns:
      A bool. When False, `unsupported_layer_message(layer)` says why.
    """
    return _problem(layer) is None


def passes_through(layer):
    """Whether `layer` stays unwrapped when a whole model is pruned.

    Layers with nothing to prune (normalization layers, layers without
    weights) are copied into the pruned model as they are, with their
    names; layers that opt in or that tfprune prunes are wrapped.

    Args:
      layer: A Keras layer.

    Returns:
      A bool. False too for layers that cannot be pruned at all (check
      `is_prunable`).
    """
    if _problem(layer) is not None or _opts_in(layer):
        return False
    _, handler = _builtin_handler(layer)
    return handler is None or handler.prunes_nothing


def prunable_weights(layer):
    """The `(variable, input_axis)` pairs to prune in a built layer.

    Args:
      layer: A built Keras layer for which `is_prunable(layer)` holds.

    Returns:
      A list of `(keras.Variable, int)` pairs; empty for layers without
      weights to prune.

    Raises:
      ValueError: If the layer cannot be pruned (e.g. building it created
        weights that tfprune does not know).
    """
    problem = _problem(layer)
    if problem is not None:
        raise ValueError(problem)
    if _opts_in(layer):
        return _opted_in_weights(layer)
    _, handler = _builtin_handler(layer)
    return (handler.prunable_weights(layer) or []) if handler is not None else []


def unsupported_layer_message(layer):
    """Why `layer` cannot be wrapped, and what to do instead.

    Args:
      layer: An object for which `is_prunable` is False.

    Returns:
      The message for a `ValueError` (it names the layer).
    """
    return _problem(layer) or f"Layer {getattr(layer, 'name', layer)!r} can be pruned."
