"""Model surgery: rebuild a Keras model with channels physically removed.

`shrink(model)` turns a model pruned with `tfprune.prune_channels` into a
plain, thinner functional model that computes what the masked model
computed. The rebuild replays the model graph call site by call site
(`replay`): each layer is re-created from its config with fewer
filters/units (and `groups`, `projection_dim`, `target_shape` adjusted) and
given sliced weights, as its handler (`tfprune.handlers`) says; each
`keras.ops` operation is applied again to the new tensors. Nested models are flattened into the new model: their layers
become layers of the result, with their names.
"""

import keras
import numpy as np
from absl import logging
from keras import tree

from tfprune import handlers
from tfprune import layer_copies
from tfprune.dependency import graph as graph_lib
from tfprune.dependency import trace as trace_lib
from tfprune.dependency.trace import TensorRef
from tfprune.masked_wrapper import MaskedWeightsWrapper, collect_wrappers


def _fill(structure, tensors):
    return tree.map_structure(
        lambda x: tensors[x.key] if isinstance(x, TensorRef) else x, structure
    )


def _unique_name(name, used):
    candidate, k = name, 1
    while candidate in used:
        candidate = f"{name}_{k}"
        k += 1
    used.add(candidate)
    return candidate


def copy_operation(operation):
    """A fresh `keras.ops` operation with the same configuration, or the same one.

    Operations hold no weights, so re-using one is harmless; a copy keeps the
    new model from sharing graph nodes with the old one.
    """
    try:
        config = operation.get_config()
        config.pop("name", None)
        return type(operation).from_config(config)
    except Exception:  # Operations without a usable config are stateless: share.
        return operation


def replay(trace, make_operation, name=None):
    """Rebuilds a functional model from a trace, one call site at a time.

    Args:
      trace: A `tfprune.dependency.trace.Trace`.
      make_operation: `fn(site, used_names) -> (callable, after_call)`: the
        operation to call at a site (called once per distinct layer: shared
        layers stay shared), and a function called with the new operation
        after its first call (e.g. to set weights), or None.
      name: Name of the new model; default the traced model's.

    Returns:
      A functional `keras.Model` with the traced model's inputs and outputs.
    """
    tensors = {}
    used = set()
    new_inputs = []
    for t, input_name in zip(trace.inputs, trace.input_names):
        x = keras.Input(batch_shape=t.shape, dtype=t.dtype, name=_unique_name(input_name, used))
        tensors[t.key] = x
        new_inputs.append(x)
    made = {}
    for site in trace.sites:
        key = id(site.operation)
        first = key not in made
        if first:
            made[key] = make_operation(site, used)
        operation, after_call = made[key]
        args = _fill(site.args, tensors)
        kwargs = _fill(site.kwargs, tensors)
        outputs = tree.flatten(operation(*args, **kwargs))
        if first and after_call is not None:
            after_call(operation)
        for t, y in zip(site.outputs, outputs):
            tensors[t.key] = y
    by_key = {t.key: x for t, x in zip(trace.inputs, new_inputs)}
    inputs = tree.map_structure(lambda r: by_key[r.key], trace.input_structure)
    outputs = _fill(trace.output_structure, tensors)
    return keras.Model(inputs=inputs, outputs=outputs, name=name or trace.model.name)


class _Shrinker:
    """Kept channels of a graph, as the handlers' `shrink_config` and
    `shrink_weights` ask for them (see `tfprune.LayerHandler`)."""

    def __init__(self, graph, keep):
        self.graph = graph
        self.keep = keep
        self.layouts = {id(layer): layout for layer, layout in graph.layouts()}

    def slot_keep(self, layer, slot):
        elements = self.graph.slot_elements(layer, slot)
        return self.keep[self.graph.channel_of(elements)]

    def tensor_kept(self, tensor):
        elements = self.graph.tensor_elements(tensor.key)
        if elements is None:
            return tensor.channels
        return int(self.keep[self.graph.channel_of(elements)].sum())

    def for_site(self, site):
        return _ShrinkContext(self, site)


class _ShrinkContext:
    """What a handler sees of the first call site of a layer being shrunk."""

    def __init__(self, shrinker, site):
        self._shrinker = shrinker
        self.site = site
        self.layout = shrinker.layouts.get(id(site.layer))

    def slot_keep(self, slot):
        """Kept flags of a slot of the layer."""
        return self._shrinker.slot_keep(self.site.layer, slot)

    def kept(self, slot):
        """Kept entries of a slot of the layer."""
        return int(self.slot_keep(slot).sum())

    def tensor_kept(self, tensor):
        """Kept channels of a traced tensor."""
        return self._shrinker.tensor_kept(tensor)

    def target_shape(self, with_batch=False):
        """The site's output shape with kept channels (None dims as -1)."""
        out = self.site.outputs[0]
        dims = list(out.shape if with_batch else out.shape[1:])
        dims[-1] = self.tensor_kept(out)
        return tuple(-1 if d is None else d for d in dims)


def rebuild(graph, keep=None, name=None):
    """Rebuilds the graph's model without the channels that `keep` drops.

    Args:
      graph: A `DependencyGraph` of a model without tfprune wrappers, or
        with `PruneChannels` wrappers only (their masked weights are used).
      keep: `{group id: bool array}` (see `DependencyGraph.full_keep`) or a
        bool array over all channels; None keeps everything (a plain copy).
      name: Name of the new model.

    Returns:
      A functional `keras.Model` with sliced layers.

    Raises:
      ValueError: On invalid keep flags (wrong size, a blocked group
        changed, a group emptied).
    """
    if keep is None or isinstance(keep, dict):
        keep = graph.full_keep(keep)
    keep = np.asarray(keep, dtype=bool)
    shrinker = _Shrinker(graph, keep)

    def make_operation(site, used):
        layer = site.layer
        handler = handlers.handler_for(layer)
        ctx = shrinker.for_site(site)
        # A call the handler could not link keeps all its channels: nothing
        # of it changes unless it has weights sliced by a coupled group.
        rewrite = graph.site_reason(site.index) is None or ctx.layout is not None
        if not isinstance(layer, keras.layers.Layer):
            operation = copy_operation(layer)
            if rewrite:
                handler.shrink_operation(operation, ctx)
            return operation, None
        if isinstance(site.operation, MaskedWeightsWrapper):
            if not hasattr(site.operation, "channel_masks"):
                raise ValueError(
                    f"Layer '{site.operation.name}' is wrapped by "
                    f"{type(site.operation).__name__}; strip it first "
                    "(tfprune.shrink does this for you)."
                )
            # Masks are baked by the optimizer constraint; bake again in case
            # weights were assigned since.
            values = [np.asarray(v) for v in site.operation.baked_weights()]
        else:
            values = [np.asarray(v) for v in layer.get_weights()]
        config = layer.get_config()
        if rewrite:
            config = handler.shrink_config(layer, config, ctx)
        config["name"] = _unique_name(layer.name, used)
        try:
            new_layer = layer_copies.from_config(layer, config)
        except Exception as err:
            if layer.weights and id(layer) in shrinker.layouts:
                raise
            logging.warning("Re-using layer '%s' (cannot re-create it from its config: %s).",
                            layer.name, err)
            return layer, None
        sliced = handler.shrink_weights(layer, values, ctx)

        def set_weights(new):
            if sliced:
                new.set_weights(sliced)

        return new_layer, set_weights

    return replay(graph.trace, make_operation, name=name)


def site_model(graph, site, keep):
    """A one-layer model: the call site's layer with only the kept channels.

    Used to measure what one layer costs at a given width (latency on a
    device, MACs, parameters). Inputs have batch size 1; weights are fresh
    (initialised from the config), not the model's.

    Args:
      graph: A `DependencyGraph`.
      site: A call site of `graph.trace` whose layer is a Keras layer.
      keep: A bool array over all of the graph's channels.

    Returns:
      A functional `keras.Model`.

    Raises:
      ValueError: If an input of the site has an unknown dimension.
    """
    shrinker = _Shrinker(graph, np.asarray(keep, dtype=bool))
    ctx = shrinker.for_site(site)
    tensors = {}
    inputs = []
    for t in site.inputs:
        dims = list(t.shape[1:])
        if any(d is None for d in dims):
            raise ValueError(
                f"Layer '{site.layer.name}' reads a tensor of shape {t.shape} with an unknown "
                "dimension; build the model with a fixed input shape to measure its layers."
            )
        dims[-1] = shrinker.tensor_kept(t)
        x = keras.Input(batch_shape=(1, *dims), dtype=t.dtype)
        tensors[t.key] = x
        inputs.append(x)
    layer = site.layer
    config = handlers.handler_for(layer).shrink_config(layer, layer.get_config(), ctx)
    new_layer = layer_copies.from_config(layer, config)
    outputs = new_layer(*_fill(site.args, tensors), **_fill(site.kwargs, tensors))
    return keras.Model(inputs, outputs, name=f"site_{layer.name}")


def _channel_wrappers_by_site(model):
    """`{site index: wrapper}` for the tfprune channel wrappers of `model`."""
    out = {}
    for site in trace_lib.trace(model).sites:
        if hasattr(site.operation, "channel_masks"):
            out[site.index] = site.operation
    return out


def keep_from_wrappers(graph, wrappers_by_site):
    """Kept channels from channel wrappers' slot masks.

    Args:
      graph: `DependencyGraph` of the model (stripped or not) with the same
        call sites as the wrapped model.
      wrappers_by_site: `{site index: channel wrapper}`.

    Returns:
      A bool array over the graph's channels.

    Raises:
      ValueError: If two masks disagree about a channel, or a mask removes a
        channel the graph says must stay.
    """
    dead = np.zeros(graph.num_channels, dtype=bool)
    alive = np.zeros(graph.num_channels, dtype=bool)
    layouts_by_id = {id(layer): layout for layer, layout in graph.layouts()}
    for index, wrapper in wrappers_by_site.items():
        layer = graph.trace.sites[index].layer
        if id(layer) not in layouts_by_id:
            continue
        for slot, mask in wrapper.channel_masks().items():
            if slot not in layouts_by_id[id(layer)].slots:
                continue
            channels = graph.channel_of(graph.slot_elements(layer, slot))
            mask = np.asarray(mask) > 0.5
            dead[channels[~mask]] = True
            alive[channels[mask]] = True
    if np.any(dead & alive):
        raise ValueError(
            "Channel masks disagree: a channel is removed in one layer and kept in a "
            "coupled one. Masks must come from tfprune.prune_channels; do not edit them."
        )
    keep = ~dead
    for group in graph.groups:
        flags = keep[group._components]
        if group.reasons and not flags.all():
            raise ValueError(
                f"Group {group.id} ({', '.join(group.layer_names()[:3])}) has removed "
                f"channels but must keep them all: {'; '.join(group.reasons)}."
            )
        if group.size and not flags.any():
            raise ValueError(
                f"Group {group.id} ({', '.join(group.layer_names()[:3])}) has all "
                "channels removed; at least one must stay."
            )
    return keep


def shrink(model, name=None):
    """Removes masked channels: returns a plain, thinner functional model.

    Reads the channel masks of the `tfprune.prune_channels` wrappers, strips
    all tfprune wrappers (unstructured masks are baked into the weights, as
    `tfprune.strip_pruning` does), and rebuilds the model with fewer
    filters/units: kernels, biases, depthwise kernels, BatchNormalization
    statistics, LayerNormalization parameters and the rows of a `Dense` after
    `Flatten` or global pooling are sliced. The result computes what the
    masked model computes (to float round-off). Nested models are flattened
    into the result; a Sequential comes back functional.

    Args:
      model: A Sequential or functional model, usually from
        `tfprune.prune_channels` (without channel wrappers it is copied).
      name: Name of the new model; default the input's.

    Returns:
      A functional `keras.Model` without tfprune wrappers.

    Raises:
      ValueError: If the model is subclassed, or its masks are inconsistent.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"tfprune.shrink needs a keras.Model. Received: {type(model).__name__}"
        )
    wrappers = _channel_wrappers_by_site(model)
    others = [w for w in collect_wrappers(model) if not hasattr(w, "channel_masks")]
    if not others:
        # Channel wrappers are seen through by the graph; no copy needed.
        graph = graph_lib.DependencyGraph(model)
        return rebuild(graph, keep_from_wrappers(graph, wrappers), name=name)
    from tfprune.prune import strip_pruning  # Lazy: tfprune.prune imports this package.

    base = strip_pruning(model)
    graph = graph_lib.DependencyGraph(base)
    sites = graph.trace.sites
    for index, wrapper in wrappers.items():
        if index >= len(sites) or sites[index].layer.name != wrapper.layer.name:
            raise ValueError(
                f"Could not match channel wrapper '{wrapper.name}' to its layer after "
                "stripping. Call tfprune.strip_pruning only after tfprune.shrink, or "
                "shrink a model without tfprune.prune_low_magnitude wrappers."
            )
    return rebuild(graph, keep_from_wrappers(graph, wrappers), name=name)
