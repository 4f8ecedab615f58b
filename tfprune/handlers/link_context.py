"""`LinkContext`: what a handler's `link` sees of one call site.

Every tensor's last axis holds channels; every channel of every tensor, and
every entry of every layer slot (see `Layout`), is an *element*. A handler
looks at one call site and *links* elements that must be removed together:
a BatchNormalization links channel i of its input, its slot and its output;
a Conv2D links its input to its `"in"` slot and its output to its `"out"`
slot (but not in to out, which is what makes output channels removable);
an `Add` links channel i of every operand. Elements that nothing links to a
tensor (a MultiHeadAttention's `"heads"` slot) form a group of their own.
"""

import numpy as np

from tfprune.dependency.trace import TensorRef
from tfprune.handlers.layout import Unsupported


def call_argument(site, name, position):
    """The `TensorInfo` a call site passed as argument `name` (or positional
    `position`), or None if it was not passed or is not a tensor."""
    value = site.kwargs.get(name)
    if value is None and len(site.args) > position:
        value = site.args[position]
    if not isinstance(value, TensorRef):
        return None
    return next((t for t in site.inputs if t.key == value.key), None)


class LinkContext:
    """One call site, and how its handler links channel elements.

    Created by the dependency graph for each call site; a handler's `link`
    calls `tensor`, `slot`, `link`, `identity` and `block`.

    Attributes:
      site: The call site (`tfprune.dependency.trace.CallSite`).
      layer: The layer (or `keras.ops` operation) called.
    """

    def __init__(self, builder, site):
        self._builder = builder
        self.site = site
        self.layer = site.layer
        self.links = []
        self.blocks = []

    @property
    def inputs(self):
        """The site's input tensors (`TensorInfo`), in call order."""
        return self.site.inputs

    @property
    def outputs(self):
        """The site's output tensors (`TensorInfo`)."""
        return self.site.outputs

    def argument(self, name, position):
        """The tensor passed as argument `name` (or positional `position`), or None."""
        return call_argument(self.site, name, position)

    def channels(self, tensor):
        """Channels (last-axis size) of a tensor.

        Raises:
          Unsupported: If the tensor has no known channel axis.
        """
        c = tensor.channels
        if c is None or len(tensor.shape) < 2:
            raise Unsupported(f"tensor of shape {tensor.shape} has no known channel axis")
        return c

    def tensor(self, tensor):
        """Element ids of a tensor's channels."""
        self.channels(tensor)
        return self._builder.tensor_elements(tensor)

    def slot(self, name):
        """Element ids of a slot of this site's layer."""
        layout = self._builder.layout_of(self.layer, self.site)
        if layout is None or name not in layout.slots:
            raise Unsupported(f"the layer has no channel slot '{name}'")
        return self._builder.slot_elements(self.layer, name, layout.slots[name])

    def has_slot(self, name):
        """Whether this site's layer has a channel slot `name`."""
        layout = self._builder.layout_of(self.layer, self.site)
        return layout is not None and name in layout.slots

    def link(self, a, b):
        """Links element arrays `a` and `b` entry by entry (same shapes)."""
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise Unsupported(f"cannot align {a.size} channels with {b.size}")
        self.links.append((a, b))

    def block(self, ids, reason):
        """Keeps these elements (and everything linked to them), for `reason`."""
        self.blocks.append((np.asarray(ids), reason))

    def identity(self, src=0, dst=0):
        """Links input `src` channel i with output `dst` channel i."""
        self.link(self.tensor(self.inputs[src]), self.tensor(self.outputs[dst]))

    def only_input(self):
        """Raises `Unsupported` unless the site has one input and one output."""
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise Unsupported(f"expected one input and one output, got {len(self.inputs)} and "
                              f"{len(self.outputs)}")
