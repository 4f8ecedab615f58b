"""Flattens a Sequential or functional Keras model into a list of call sites.

Keras records a functional model as `Node`s (one per call of an operation)
joined by `KerasTensor`s. Channel analysis and model rebuilding both want
one flat, topologically ordered list of call sites in which:

- `keras.ops` calls such as the `Add` of `inputs + x` are call sites like
  layers (they are operations of the model, not layers);
- a nested model used as a layer is walked through, so its layers appear as
  call sites of the outer graph with the nested model's inputs and outputs
  joined to the outer tensors;
- a layer called at several places appears once per call, with the same
  layer object, so that callers can see it is shared;
- a tfprune wrapper is seen through: the call site's `layer` is the wrapped
  layer, and `operation` the wrapper.

Tracing only reads the model.
"""

import dataclasses

import keras
from keras import tree

from tfprune.masked_wrapper import MaskedWeightsWrapper

_SUBCLASSED = (
    "Model '{name}' is a subclassed keras.Model: its graph is hidden in Python "
    "code, so its channels cannot be analysed. Rebuild it with the functional "
    "API (keras.Model(inputs, outputs)) or as a keras.Sequential."
)
_UNBUILT = (
    "Sequential model '{name}' has no input shape yet, so it has no graph to "
    "analyse. Start it with keras.Input(shape=...) or call model.build(input_shape)."
)


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor of the traced graph.

    Attributes:
      key: Integer id, unique in the trace.
      shape: The static shape, batch axis included (entries may be None).
      dtype: The dtype name.
    """

    key: int
    shape: tuple
    dtype: str

    @property
    def channels(self):
        """Size of the last (channel) axis, or None if unknown or rank 0."""
        if not self.shape:
            return None
        return self.shape[-1]


class TensorRef:
    """Placeholder for a traced tensor inside a call site's argument structure."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key

    def __repr__(self):
        return f"TensorRef({self.key})"


@dataclasses.dataclass
class CallSite:
    """One call of an operation in the flattened graph.

    Attributes:
      index: Position in topological order.
      operation: The operation object called (a layer, a tfprune wrapper, or
        a `keras.ops` operation).
      layer: `operation`, or the layer a tfprune wrapper wraps.
      args: Positional arguments, with `TensorRef`s in place of tensors.
      kwargs: Keyword arguments, likewise.
      inputs: `TensorInfo` of every tensor argument, in flattening order.
      outputs: `TensorInfo` of every output, in flattening order.
      output_structure: The call's output structure, with `TensorRef`s.
      scope: Names of the nested models this call is inside, outermost first.
    """

    index: int
    operation: object
    layer: object
    args: tuple
    kwargs: dict
    inputs: list
    outputs: list
    output_structure: object
    scope: tuple

    @property
    def name(self):
        """The layer's (or operation's) name."""
        return self.layer.name

    @property
    def is_layer(self):
        return isinstance(self.layer, keras.layers.Layer)


@dataclasses.dataclass
class Trace:
    """A flattened model.

    Attributes:
      model: The traced model.
      sites: `CallSite`s in topological order.
      inputs: `TensorInfo` of the model inputs, in `model.inputs` order.
      outputs: `TensorInfo` of the model outputs, in `model.outputs` order.
      input_structure: `model.input`'s structure with `TensorRef`s.
      output_structure: `model.output`'s structure with `TensorRef`s.
      input_names: Names of the model's input layers.
      tensors: `TensorInfo` by key.
    """

    model: object
    sites: list
    inputs: list
    outputs: list
    input_structure: object
    output_structure: object
    input_names: list
    tensors: dict


def graph_model(model):
    """The functional graph behind a Sequential or functional model.

    Args:
      model: A `keras.Model`.

    Returns:
      The `Functional` model that holds the graph (`model` itself unless it
      is a `Sequential`).

    Raises:
      ValueError: If `model` is subclassed or an unbuilt Sequential.
    """
    from keras.src.models.functional import Functional

    if isinstance(model, keras.Sequential):
        functional = getattr(model, "_functional", None)
        if functional is None:
            raise ValueError(_UNBUILT.format(name=model.name))
        return functional
    if isinstance(model, Functional):
        return model
    raise ValueError(_SUBCLASSED.format(name=getattr(model, "name", type(model).__name__)))


def is_graph_model(operation):
    """Whether a call site's operation is a nested model that can be walked."""
    from keras.src.models.functional import Functional

    if isinstance(operation, keras.Sequential):
        return getattr(operation, "_functional", None) is not None
    return isinstance(operation, Functional)


def resolve_layer(operation):
    """The layer that does the work: the wrapped layer for tfprune wrappers."""
    if isinstance(operation, MaskedWeightsWrapper):
        return operation.layer
    return operation


def _nodes_in_order(functional):
    """The model's non-input nodes, producers before consumers."""
    by_depth = functional._nodes_by_depth
    ordered = []
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            ordered.append(node)
    return ordered


def _to_refs(structure, alias):
    """Replaces KerasTensors by `TensorRef`s in nested lists, tuples and dicts.

    (A hand-written walk: `keras.tree` costs more than the whole trace on
    deep models.)
    """
    if isinstance(structure, keras.KerasTensor):
        return TensorRef(alias[id(structure)])
    if isinstance(structure, (list, tuple)):
        items = [_to_refs(x, alias) for x in structure]
        return type(structure)(items) if type(structure) in (list, tuple) else items
    if isinstance(structure, dict):
        return {k: _to_refs(v, alias) for k, v in structure.items()}
    return structure


class _Tracer:
    def __init__(self):
        self.sites = []
        self.tensors = {}
        self._next_key = 0

    def new_tensor(self, kt):
        key = self._next_key
        self._next_key += 1
        shape = tuple(kt.shape)
        info = TensorInfo(key=key, shape=shape, dtype=str(kt.dtype))
        self.tensors[key] = info
        return info

    def walk(self, functional, input_keys, scope):
        """Adds `functional`'s call sites; returns the keys of its outputs."""
        alias = {id(kt): key for kt, key in zip(functional.inputs, input_keys)}
        available = set(alias)
        for node in _nodes_in_order(functional):
            tensors = node.arguments.keras_tensors
            if any(id(kt) not in available for kt in tensors):
                # Keras skips nodes not computable from the inputs; so do we.
                continue
            operation = node.operation
            in_keys = [alias[id(kt)] for kt in tensors]
            if is_graph_model(operation):
                inner = graph_model(operation)
                out_keys = self.walk(inner, in_keys, scope + (operation.name,))
                for kt, key in zip(node.outputs, out_keys):
                    alias[id(kt)] = key
                    available.add(id(kt))
                continue
            outputs = []
            for kt in node.outputs:
                info = self.new_tensor(kt)
                alias[id(kt)] = info.key
                available.add(id(kt))
                outputs.append(info)

            args = _to_refs(node.arguments.args, alias)
            kwargs = _to_refs(node.arguments.kwargs, alias)
            self.sites.append(
                CallSite(
                    index=len(self.sites),
                    operation=operation,
                    layer=resolve_layer(operation),
                    args=args,
                    kwargs=kwargs,
                    inputs=[self.tensors[k] for k in in_keys],
                    outputs=outputs,
                    output_structure=[TensorRef(o.key) for o in outputs],
                    scope=scope,
                )
            )
        return [alias[id(kt)] for kt in functional.outputs]


def trace(model):
    """Flattens `model` into call sites.

    Args:
      model: A Sequential or functional `keras.Model`.

    Returns:
      A `Trace`.

    Raises:
      ValueError: If the model is subclassed or an unbuilt Sequential.
    """
    functional = graph_model(model)
    tracer = _Tracer()
    inputs = [tracer.new_tensor(kt) for kt in functional.inputs]
    out_keys = tracer.walk(functional, [t.key for t in inputs], scope=())
    by_id = {id(kt): TensorRef(t.key) for kt, t in zip(functional.inputs, inputs)}
    input_structure = tree.map_structure(lambda kt: by_id[id(kt)], functional._inputs_struct)
    flat_outputs = [TensorRef(k) for k in out_keys]
    output_structure = tree.pack_sequence_as(functional._outputs_struct, flat_outputs)
    input_names = [kt._keras_history.operation.name for kt in functional.inputs]
    return Trace(
        model=model,
        sites=tracer.sites,
        inputs=inputs,
        outputs=[tracer.tensors[k] for k in out_keys],
        input_structure=input_structure,
        output_structure=output_structure,
        input_names=input_names,
        tensors=tracer.tensors,
    )
