"""The handler registry: the one place that maps layer types to handlers.

A handler is registered for a class, or for a class named by its import
path (`"keras_hub.src.layers.modeling.transformer_encoder.TransformerEncoder"`)
so that optional libraries need not be imported to register their layers. A
layer gets the handler of the first class of its method resolution order that
has one: a subclass of `Dense` is seen as a `Dense` unless its own class is
registered. `keras.ops` operations are looked up by class name among the
handlers registered with `register_operation_handler`.
"""

import keras

from tfprune.handlers.base import LayerHandler
from tfprune.handlers.layout import Unsupported

_BY_CLASS = {}
_BY_PATH = {}
_OPERATIONS = {}


class _OpaqueOperation(LayerHandler):
    def link(self, ctx):
        raise Unsupported("operation with unknown channel semantics")


_OPAQUE = LayerHandler()
_OPAQUE_OPERATION = _OpaqueOperation()


def _path(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def register_handler(layer_class, handler):
    """Teaches tfprune a layer type: how to prune, link, shrink and count it.

    Args:
      layer_class: A `keras.layers.Layer` subclass, or its import path as a
        string (`"my_package.layers.ChannelScale"`), for classes whose module
        should not be imported just to register them.
      handler: A `tfprune.LayerHandler` instance.

    Returns:
      The handler registered before for this class, or None.

    Raises:
      ValueError: If `layer_class` is not a layer class or a dotted path, or
        `handler` is not a `LayerHandler`.
    """
    if not isinstance(handler, LayerHandler):
        raise ValueError(
            "register_handler needs a tfprune.LayerHandler instance (subclass it and "
            f"override what applies). Received: {handler!r}"
        )
    if isinstance(layer_class, str):
        if "." not in layer_class:
            raise ValueError(
                "A layer class given by name must be its full import path, e.g. "
                f"'my_package.layers.ChannelScale'. Received: {layer_class!r}"
            )
        previous = _BY_PATH.get(layer_class)
        _BY_PATH[layer_class] = handler
        return previous
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise ValueError(
            "register_handler needs a keras.layers.Layer subclass (or its import path as a "
            f"string). Received: {layer_class!r}"
        )
    previous = _BY_CLASS.get(layer_class)
    _BY_CLASS[layer_class] = handler
    return previous


def unregister_handler(layer_class):
    """Removes the handler registered for `layer_class` (a class or its path).

    Returns:
      The removed handler, or None if there was none.
    """
    if isinstance(layer_class, str):
        return _BY_PATH.pop(layer_class, None)
    return _BY_CLASS.pop(layer_class, None)


def register_operation_handler(name, handler):
    """Registers the handler of a `keras.ops` operation class by class name."""
    _OPERATIONS[name] = handler


def lookup(layer):
    """`(registered class, handler)` for a layer, or `(None, None)`.

    The registered class is the first class of `type(layer).__mro__` that
    has a handler; callers that must see exact classes (unstructured
    pruning, as tfmot) compare it with `type(layer)`.
    """
    for cls in type(layer).__mro__:
        handler = _BY_CLASS.get(cls)
        if handler is None and cls.__module__ is not None:
            handler = _BY_PATH.get(_path(cls))
        if handler is not None:
            return cls, handler
        if cls is keras.layers.Layer:
            break
    return None, None


def handler_for(operation):
    """The handler of a layer or `keras.ops` operation (an opaque one if unknown)."""
    if isinstance(operation, keras.layers.Layer):
        return lookup(operation)[1] or _OPAQUE
    if type(operation).__module__.startswith("keras."):
        handler = _OPERATIONS.get(type(operation).__name__)
        if handler is not None:
            return handler
    return _OPAQUE_OPERATION


def is_known(operation):
    """Whether a handler is registered for this layer or operation."""
    return handler_for(operation) not in (_OPAQUE, _OPAQUE_OPERATION)
