"""Entry points: wrap a model's layers for pruning, and strip the wrappers off."""

import keras

from tfprune import prune_registry
from tfprune.masked_wrapper import MaskedWeightsWrapper
from tfprune.pruning_wrapper import PruneLowMagnitude

_SUBCLASSED_MODEL = (
    "Model '{name}' is a subclassed keras.Model, whose layers cannot be found "
    "from outside its call(). Prune its layers instead (pass them, or a list "
    "of them, to {api}), or rebuild it as a functional or Sequential model."
)


def is_graph_model(model):
    """Whether `model` is a Sequential or functional Keras model."""
    from keras.src.models.functional import Functional

    return isinstance(model, (keras.Sequential, Functional))


def check_graph_model(model, api):
    """Raises a `ValueError` naming `api` if `model` is subclassed.

    Raises:
      ValueError: If `model` is a subclassed `keras.Model`.
    """
    if isinstance(model, keras.Model) and not is_graph_model(model):
        raise ValueError(_SUBCLASSED_MODEL.format(name=model.name, api=api))


def copy_layer(layer):
    """A new, built layer with `layer`'s config and weight values."""
    clone = layer.__class__.from_config(layer.get_config())
    if layer.built:
        build_config = layer.get_build_config()
        if build_config:
            clone.build_from_config(build_config)
        clone.set_weights(layer.get_weights())
    return clone


def _clone_graph_model(model, clone_layer):
    """Rebuilds a Sequential/functional model, mapping each layer through `clone_layer`.

    Non-layer operations (e.g. `keras.ops.add` nodes from `x + y`) are kept.
    Nested models are rebuilt recursively.
    """

    def clone_function(operation):
        if not isinstance(operation, keras.layers.Layer) or isinstance(
            operation, keras.layers.InputLayer
        ):
            return operation
        return clone_layer(operation)

    input_tensors = None
    if not isinstance(model, keras.Sequential):
        # clone_model would name new inputs after their tensors ("keras_tensor");
        # keep the original input layer names instead.
        input_tensors = keras.tree.map_structure(
            lambda x: keras.Input(
                batch_shape=x.shape, dtype=x.dtype, name=x._keras_history.operation.name
            ),
            model.input,
        )
    return keras.models.clone_model(
        model, input_tensors=input_tensors, clone_function=clone_function, recursive=True
    )


def prune_low_magnitude(
    to_prune,
    pruning_schedule=None,
    block_size=(1, 1),
    block_pooling_type="AVG",
    sparsity_m_by_n=None,
    global_pruning=False,
    ignored_layers=None,
    **kwargs,
):
    """Wraps layers so that their weights are pruned by magnitude during training.

    The same call as `tfmot.sparsity.keras.prune_low_magnitude`, for Keras 3.
    Train the result with `callbacks=[tfprune.UpdatePruningStep()]`, then call
    `tfprune.strip_pruning` before export.

    Args:
      to_prune: A Keras 3 Sequential or functional model, a layer, or a list
        of layers. In a model, every prunable layer is wrapped (the model's
        weights are copied; the original is left untouched); layers without
        weights and normalization layers pass through. To prune only some
        layers, apply this function to them from the `clone_function` of
        `keras.models.clone_model`.
      pruning_schedule: A `tfprune.PruningSchedule`; default
        `ConstantSparsity(0.5, begin_step=0)`.
      block_size: `(rows, cols)` of the blocks pruned together.
      block_pooling_type: `"AVG"` or `"MAX"`.
      sparsity_m_by_n: `(m, n)` to zero m of every n consecutive input-channel
        weights (e.g. `(2, 4)`), or `None`.
      global_pruning: Rank the weights of all wrapped layers together (one
        magnitude threshold), so the schedule's sparsity holds for the model
        in total and each layer's sparsity follows from its weights: large,
        redundant layers give up more. Single-weight pruning only.
      ignored_layers: Only with a model: layers (or their names, nested
        models' layers included) that keep all their weights. The first
        convolution is the usual one: it holds few weights and every later
        layer depends on them.
      **kwargs: Passed to each `PruneLowMagnitude` wrapper.

    Returns:
      A model, a `PruneLowMagnitude` layer, or a list of layers, matching
      `to_prune`.

    Raises:
      ValueError: If `to_prune` is a subclassed model, already wrapped, holds a
        layer with weights that tfprune cannot prune, an ignored layer is not
        in the model, or an argument is invalid.
    """
    ignored = ignored_layer_names(ignored_layers)
    if ignored and not isinstance(to_prune, keras.Model):
        raise ValueError(
            "`ignored_layers` applies when pruning a model; to prune some layers of a "
            f"{type(to_prune).__name__}, pass only those. Received: ignored_layers={ignored}"
        )
    params = dict(
        pruning_schedule=pruning_schedule,
        block_size=block_size,
        block_pooling_type=block_pooling_type,
        sparsity_m_by_n=sparsity_m_by_n,
        global_pruning=global_pruning,
        **kwargs,
    )

    def wrap(layer, copy):
        if isinstance(layer, MaskedWeightsWrapper):
            raise ValueError(
                f"Layer '{layer.name}' is already wrapped by {type(layer).__name__}. "
                "Strip the model first (tfprune.strip_pruning) or prune the original."
            )
        if isinstance(layer, keras.Model):
            check_graph_model(layer, "tfprune.prune_low_magnitude")
            return _clone_graph_model(layer, lambda inner: wrap(inner, copy=True))
        if prune_registry.passes_through(layer) or layer.name in ignored:
            return copy_layer(layer) if copy else layer
        if not prune_registry.is_prunable(layer):
            raise ValueError(prune_registry.unsupported_layer_message(layer))
        return PruneLowMagnitude(copy_layer(layer) if copy else layer, **params)

    if isinstance(to_prune, keras.Model):
        check_graph_model(to_prune, "tfprune.prune_low_magnitude")
        if ignored:
            _check_ignored_exist(to_prune, ignored)
        return wrap(to_prune, copy=True)
    if isinstance(to_prune, (list, tuple)):
        return [wrap(layer, copy=False) for layer in to_prune]
    if isinstance(to_prune, keras.layers.Layer):
        if isinstance(to_prune, MaskedWeightsWrapper):
            return wrap(to_prune, copy=False)
        if not prune_registry.is_prunable(to_prune):
            raise ValueError(prune_registry.unsupported_layer_message(to_prune))
        return PruneLowMagnitude(to_prune, **params)
    raise ValueError(
        "`to_prune` must be a keras.Model, a keras layer or a list of layers. "
        f"Received: {type(to_prune).__name__}"
    )


def ignored_layer_names(ignored_layers):
    """Names from `ignored_layers`: a layer, a name, or a list of either (or None).

    Raises:
      ValueError: On an entry that is neither a layer nor a string.
    """
    if ignored_layers is None:
        return []
    if isinstance(ignored_layers, (str, keras.layers.Layer)):
        ignored_layers = [ignored_layers]
    names = []
    for entry in ignored_layers:
        if isinstance(entry, keras.layers.Layer):
            names.append(entry.name)
        elif isinstance(entry, str):
            names.append(entry)
        else:
            raise ValueError(
                "`ignored_layers` must hold layers or layer names. "
                f"Received an entry of type {type(entry).__name__}: {entry!r}"
            )
    return names


def _all_layer_names(model):
    names = set()
    for layer in model.layers:
        names.add(layer.name)
        if isinstance(layer, keras.Model):
            names |= _all_layer_names(layer)
    return names


def _check_ignored_exist(model, ignored):
    missing = sorted(set(ignored) - _all_layer_names(model))
    if missing:
        raise ValueError(
            f"`ignored_layers` names layers that model '{model.name}' does not have: "
            f"{missing}. Check the names with model.summary()."
        )


def strip_layer(layer):
    """A plain copy of a wrapper's inner layer with its masks baked in."""
    inner = layer.layer
    clone = inner.__class__.from_config(inner.get_config())
    build_config = inner.get_build_config()
    if build_config:
        clone.build_from_config(build_config)
    clone.set_weights(layer.baked_weights())
    return clone


def strip_pruning(model):
    """Removes pruning wrappers, baking the masks into the weights.

    Args:
      model: A Sequential or functional model with tfprune wrappers (or
        without; then it is copied), or a single wrapper layer.

    Returns:
      A plain Keras 3 model with the original architecture, layer names and
      layer configs, whose pruned weights are zero. The input is unchanged.

    Raises:
      ValueError: If `model` is a subclassed model.
    """
    if isinstance(model, MaskedWeightsWrapper):
        return strip_layer(model)
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a keras.Model or a tfprune wrapper. Received: {type(model).__name__}"
        )
    check_graph_model(model, "tfprune.strip_pruning")

    def strip(layer):
        if isinstance(layer, MaskedWeightsWrapper):
            return strip_layer(layer)
        return copy_layer(layer)

    return _clone_graph_model(model, strip)
