"""`LayerHandler`: everything tfprune knows about one layer type.

One handler per layer type answers every question tfprune asks of a layer:

| question | method | asked by |
|---|---|---|
| which weights does unstructured pruning mask? | `prunable_weights` | `prune_low_magnitude` |
| which weight axes run over which channel slots? | `layout` | the dependency graph, masks, `shrink` |
| how do the channels of its inputs, slots and outputs go together? | `link` | the dependency graph |
| what is its config with fewer channels? | `shrink_config` | `shrink` |
| what are its weights with fewer channels? | `shrink_weights` | `shrink` |
| what does it compute while channels are masked? | `masked_call` | `PruneChannels` |
| how many multiply-accumulates does one call cost? | `macs` | `count_macs` |

Subclass `LayerHandler`, override what applies to your layer, and register it
with `tfprune.register_handler(MyLayer, MyHandler())`.
"""

import numpy as np

from tfprune.handlers.layout import Unsupported


class LayerHandler:
    """Base class of layer handlers: by default a layer is opaque.

    The defaults say "tfprune knows nothing": no weights to prune, no channel
    slots, channels blocked at every call, no MACs. Override the methods that
    apply; handlers hold no per-layer state (one instance serves every layer
    of its type).

    Attributes:
      prunes_nothing: True for handlers of layers that unstructured pruning
        leaves whole (normalization and weightless layers): a whole-model
        `prune_low_magnitude` copies them unwrapped, and accepts their
        subclasses. False by default: then only the registered class itself
        is pruned, as tfmot; a subclass may use its weights differently, so
        it must opt in (`tfprune.PrunableLayer`).
    """

    prunes_nothing = False

    # -- unstructured pruning ------------------------------------------------

    def prunable_weights(self, layer):
        """The weights unstructured pruning masks, with their input axes.

        Args:
          layer: A built layer of the handler's type.

        Returns:
          A list of `(keras.Variable, input_axis)` pairs, where `input_axis`
          runs over input channels (N:M patterns such as 2:4 are laid out
          along it); `[]` if the layer may be wrapped but nothing is pruned;
          None if the layer type does not take part in unstructured pruning.
        """
        return None

    def unstructured_problem(self, layer):
        """Why `layer` cannot be wrapped by `prune_low_magnitude`, or None.

        Called before the layer is built; return a message that names the
        layer and says what to do.
        """
        return None

    # -- channels --------------------------------------------------------------

    def layout(self, layer):
        """The channel slots of a built layer and the weight axes along them.

        Returns:
          A `tfprune.handlers.Layout`, or None if the layer holds no
          per-channel weights.

        Raises:
          Unsupported: If its channels cannot be sliced (the message says why).
        """
        return None

    def link(self, ctx):
        """Links the channel elements of one call site (see `LinkContext`).

        Raises:
          Unsupported: If the call cannot be reasoned about; every channel the
            call touches is then kept, and the message is shown as the reason.
        """
        raise Unsupported("layer type with unknown channel semantics")

    # -- copies ----------------------------------------------------------------

    def from_config(self, layer, config):
        """A new, unbuilt layer of `layer`'s class from `config`.

        Every model copy in tfprune (wrapping, shrinking) re-creates layers
        through this. The default is `type(layer).from_config(config)`;
        override it for layers whose config does not round-trip.
        """
        return type(layer).from_config(config)

    # -- shrink ----------------------------------------------------------------

    def shrink_config(self, layer, config, ctx):
        """The layer's config for the thinner model.

        Args:
          layer: The original layer.
          config: A copy of `layer.get_config()` to edit and return.
          ctx: Offers `ctx.kept(slot)` (kept entries of a slot),
            `ctx.slot_keep(slot)` (their flags), `ctx.tensor_kept(tensor)`
            (kept channels of a traced tensor), `ctx.site` (the first call
            site) and `ctx.target_shape()` (the output's kept shape).

        Returns:
          The new config.
        """
        return config

    def shrink_weights(self, layer, values, ctx):
        """The layer's weights for the thinner model (in `layer.weights` order).

        The default slices every weight along its layout axes (see `layout`),
        which suits layers whose new weights have the old order and rank.
        """
        layout = ctx.layout
        if layout is None:
            return values
        by_var = {}
        for entry in layout.axes:
            by_var.setdefault(id(entry.variable), []).append(entry)
        out = []
        for variable, value in zip(layer.weights, values):
            for entry in by_var.get(id(variable), ()):
                flags = ctx.slot_keep(entry.slot)
                index = np.nonzero(entry.expand(flags))[0]
                value = np.take(value, index, axis=entry.axis)
            out.append(value)
        return out

    def shrink_operation(self, operation, ctx):
        """Adjusts a copied `keras.ops` operation for the thinner model (in place).

        Operations have no config to rewrite; the default changes nothing.
        """

    # -- masked forward pass -------------------------------------------------

    def masked_call(self, layer, slot_masks, inputs, *args, **kwargs):
        """What the layer computes while some channels are masked.

        Masked weights alone give the thinner layer's output for most layers,
        and then this returns `NotImplemented` (the default). Layers that
        compute statistics over channels (LayerNormalization, RMS and group
        normalization) override it, so that the masked layer computes what
        the thinner one will.

        Args:
          layer: The wrapped layer.
          slot_masks: `{slot: 0/1 tensor}` of the layer's channel masks.
          inputs: The layer's first call argument.
          *args: Its other positional call arguments.
          **kwargs: Its keyword call arguments (with `training` if it takes one).
        """
        return NotImplemented

    # -- cost ------------------------------------------------------------------

    def macs(self, layer, site):
        """Multiply-accumulates of one call (batch size 1); 0 by default."""
        return 0
