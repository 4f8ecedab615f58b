"""Re-creating a live layer from its config, as every model copy in tfprune does.

Keras refuses to deserialize a `Lambda` layer's Python function in safe mode,
which is right for files and wrong for a layer that is already in memory:
tfprune copies layers of the user's own model, and loads nothing. So a
`Lambda` is re-created around the same function object (and the same
arguments), and every other layer from its config.
"""

import keras


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
    if isinstance(layer, keras.layers.Lambda):
        kwargs = {k: config[k] for k in ("name", "trainable", "dtype") if k in config}
        return type(layer)(
            layer.function,
            output_shape=layer._output_shape,
            mask=layer.mask,
            arguments=dict(layer.arguments),
            **kwargs,
        )
    return type(layer).from_config(config)


def copy_layer(layer):
    """A new layer with `layer`'s config and, if it is built, its weight values."""
    clone = from_config(layer)
    if layer.built:
        build_config = layer.get_build_config()
        if build_config:
            clone.build_from_config(build_config)
        clone.set_weights(layer.get_weights())
    return clone
