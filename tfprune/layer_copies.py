"""Re-creating a live layer from its config, as every model copy in tfprune does.

How a layer type is re-created is its handler's knowledge
(`LayerHandler.from_config`): most layers round-trip through their config; a
`Lambda` is re-created around the same function object (Keras refuses to
deserialize its code in safe mode, which is right for files and wrong for a
layer already in memory); a few KerasHub layers need their config repaired.
"""

from tfprune import handlers


def from_config(layer, config=None):
    """A new, unbuilt layer of `layer`'s class with `config` (default: its own).

    Args:
      layer: A live Keras layer.
      config: The config to build from, e.g. the layer's config with another
        name or fewer channels.

    Returns:
      The new layer.
    """
    config = layer.get_config() if config is None else dict(config)
    return handlers.handler_for(layer).from_config(layer, config)


def copy_layer(layer):
    """A new layer with `layer`'s config and, if it is built, its weight values."""
    clone = from_config(layer)
    if layer.built:
        build_config = layer.get_build_config()
        if build_config:
            clone.build_from_config(build_config)
        clone.set_weights(layer.get_weights())
    return clone
