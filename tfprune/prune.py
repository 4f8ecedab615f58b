"""Entry points: wrap a model's layers for pruning, and strip the wrappers off."""

import keras
from absl import logging

from tfprune import layer_copies
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


def prune_scope():
    """A scope in which tfprune's layers and schedules deserialize by class name.

    tfmot needs `with prune_scope(): keras.models.load_model(path)` to load
    pruned models. tfprune does not: its wrappers and schedules are
    registered with Keras (package `"tfprune"`), so `keras.models.load_model`
    and `keras.models.model_from_json` find them without a scope or
    `custom_objects`. The scope is kept so that code moving from tfmot runs
    unchanged, and it still helps with configs that name tfprune's classes
    without their registered name (e.g. `{"class_name":
    "PruneLowMagnitude", ...}` written by hand or by other tools).

    Example:

    ```python
    with tfprune.prune_scope():
        model = keras.models.load_model("pruned.keras")  # the scope is optional
    ```

    Returns:
      A `keras.saving.CustomObjectScope` mapping the class names of every
      registered tfprune object (`PruneLowMagnitude`, `PruneChannels`,
      `ConstantSparsity`, `PolynomialDecay`, ...) to the classes.
    """
    objects = {
        name.split(">", 1)[1]: obj
        for name, obj in keras.saving.get_custom_objects().items()
        if name.startswith("tfprune>")
    }
    return keras.saving.custom_object_scope(objects)


def prune_low_magnitude(
    to_prune,
    pruning_schedule=None,
    block_size=(1, 1),
    block_pooling_type="AVG",
    pruning_policy=None,
    sparsity_m_by_n=None,
    global_pruning=False,
    ignored_layers=None,
    **kwargs,
):
    """Wraps layers so that their weights are pruned by magnitude during training.

    The same call as `tfmot.sparsity.keras.prune_low_magnitude` (same
    arguments, in the same order), for Keras 3. Train the result with
    `callbacks=[tfprune.UpdatePruningStep()]`, then call
    `tfprune.strip_pruning` before export.

    What is wrapped, as in tfmot: built-in layers that hold connections
    (`Dense`, convolutions, `Embedding`, `MultiHeadAttention`, RNNs and their
    cells, ...), and layers that opt in by subclassing `tfprune.PrunableLayer`
    or by defining a `get_prunable_weights()` method. A layer passed by
    itself or in a list may also be one without weights (`Flatten`, `ReLU`,
    `Dropout`, ...) or a normalization layer: it is wrapped with nothing to
    prune. Refused, as in tfmot, with a `ValueError` naming the layer: a
    subclass of a built-in prunable layer that does not opt in (e.g.
    `class MyDense(keras.layers.Dense)`), and any other layer with weights.

    Args:
      to_prune: A Keras 3 Sequential or functional model, a layer, or a list
        of layers. In a model, every prunable layer is wrapped (the model's
        weights are copied; the original is left untouched); layers without
        weights and normalization layers stay unwrapped, with their names.
        Layers that are already wrapped (in a model or a list) are kept as
        they are, with their own settings. To choose the layers yourself,
        use `ignored_layers`, a `pruning_policy`, or this function in the
        `clone_function` of `keras.models.clone_model`.
      pruning_schedule: A `tfprune.PruningSchedule`; default
        `ConstantSparsity(0.5, begin_step=0)`.
      block_size: `(rows, cols)` of the blocks pruned together.
      block_pooling_type: `"AVG"` or `"MAX"`.
      pruning_policy: Only with a model: a `PruningPolicy` (from
        `tfprune.pruning_policy`) that first checks the model
        (`ensure_model_supports_pruning`) and then picks the layers to wrap
        (`allow_pruning`), e.g. `PruneForLatencyOnXNNPack()`. Layers it does
        not allow stay dense and unwrapped.
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
      ValueError: If `to_prune` is a subclassed model or an already wrapped
        layer, holds a layer that tfprune cannot prune, the pruning policy
        refuses the model, an ignored layer is not in the model,
        `ignored_layers` or `pruning_policy` is given without a model, or an
        argument is invalid.
    """
    ignored = ignored_layer_names(ignored_layers)
    if not isinstance(to_prune, keras.Model):
        for name, given in (("ignored_layers", ignored or None), ("pruning_policy", pruning_policy)):
            if given is not None:
                raise ValueError(
                    f"`{name}` applies when pruning a model; to prune some layers of a "
                    f"{type(to_prune).__name__}, pass only those. Received: {name}={given!r}"
                )
    if pruning_policy is not None:
        _check_policy(pruning_policy)
    params = dict(
        pruning_schedule=pruning_schedule,
        block_size=block_size,
        block_pooling_type=block_pooling_type,
        sparsity_m_by_n=sparsity_m_by_n,
        global_pruning=global_pruning,
        **kwargs,
    )

    def keep(layer, copy):
        return layer_copies.copy_layer(layer) if copy else layer

    def wrap(layer, copy):
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        if isinstance(layer, MaskedWeightsWrapper):
            # As tfmot: a wrapped layer keeps its wrapper and settings.
            logging.info("Layer '%s' is already wrapped; kept as it is.", layer.name)
            return keep(layer, copy)
        if isinstance(layer, keras.Model):
            check_graph_model(layer, "tfprune.prune_low_magnitude")
            return _clone_graph_model(layer, lambda inner: wrap(inner, copy=True))
        if layer.name in ignored or (
            pruning_policy is not None and not pruning_policy.allow_pruning(layer)
        ):
            return keep(layer, copy)
        if prune_registry.passes_through(layer):
            return keep(layer, copy)
        return _new_wrapper(layer if not copy else layer_copies.copy_layer(layer), params)

    if isinstance(to_prune, keras.Model):
        check_graph_model(to_prune, "tfprune.prune_low_magnitude")
        if ignored:
            _check_ignored_exist(to_prune, ignored)
        if pruning_policy is not None:
            pruning_policy.ensure_model_supports_pruning(to_prune)
        return wrap(to_prune, copy=True)
    if isinstance(to_prune, (list, tuple)):
        # As tfmot: every listed layer is wrapped, those without weights too,
        # except input layers and layers that are already wrapped.
        return [
            wrap(layer, copy=False)
            if isinstance(layer, (MaskedWeightsWrapper, keras.Model, keras.layers.InputLayer))
            else _new_wrapper(layer, params)
            for layer in to_prune
        ]
    if isinstance(to_prune, keras.layers.Layer):
        return _new_wrapper(to_prune, params)
    raise ValueError(
        "`to_prune` must be a keras.Model, a keras layer or a list of layers. "
        f"Received: {type(to_prune).__name__}"
    )


def _new_wrapper(layer, params):
    """`PruneLowMagnitude(layer)`, or the registry's `ValueError` if it cannot be."""
    if not prune_registry.is_prunable(layer):
        raise ValueError(prune_registry.unsupported_layer_message(layer))
    return PruneLowMagnitude(layer, **params)


def _check_policy(policy):
    missing = [
        method for method in ("allow_pruning", "ensure_model_supports_pruning")
        if not callable(getattr(policy, method, None))
    ]
    if missing:
        raise ValueError(
            "`pruning_policy` must be a tfprune.pruning_policy.PruningPolicy, such as "
            "tfprune.pruning_policy.PruneForLatencyOnXNNPack(); received "
            f"{policy!r}, which has no {' or '.join(missing)} method."
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
        if isinstance(layer, MaskedWeightsWrapper):
            names.add(layer.layer.name)
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
    clone = layer_copies.from_config(inner)
    build_config = inner.get_build_config()
    if build_config:
        clone.build_from_config(build_config)
    clone.set_weights(layer.baked_weights())
    return clone


def strip_pruning(model):
    """Removes pruning wrappers, baking the masks into the weights.

    Each wrapper is replaced by a new copy of the layer it wraps, whose
    pruned weights are zero. Every other layer is taken over as it is, the
    same object, as tfmot does: nothing is rebuilt from its config, so custom
    layers whose config does not round-trip strip too.

    Shared weights: the stripped model therefore shares its unwrapped layers
    (e.g. `BatchNormalization`, layers left dense by `ignored_layers` or a
    pruning policy) and their variables with `model`; training or changing
    one changes the other. The pruned layers are copies, so `model` keeps
    its wrappers, masks and weights and can go on training. Clone the result
    (`keras.models.clone_model`, then `set_weights`) if you need a fully
    independent model.

    Args:
      model: A Sequential or functional model with tfprune wrappers (or
        without; then the result shares all its layers), or a single wrapper
        layer.

    Returns:
      A plain Keras 3 model with the original architecture, layer names and
      layer configs, whose pruned weights are zero; or, for a wrapper, a copy
      of its layer. The input's wrappers are unchanged.

    Raises:
      ValueError: If `model` is a subclassed model, or neither a model nor a
        wrapper.
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
        return layer

    return _clone_graph_model(model, strip)
