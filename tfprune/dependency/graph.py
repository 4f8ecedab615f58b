"""`DependencyGraph`: which channels of a Keras model must be removed together.

The graph is built once from a model and only describes it. Every channel of
every tensor and every entry of every layer slot is an element; each layer's
handler (`tfprune.handlers`) links elements that must go together; a *channel* of the
model is a connected set of linked elements, and a *group* gathers the
channels that touch exactly the same tensors and slots (the 64 output
filters of a conv, with the matching BatchNormalization entries and the
input slices of every consumer, are one group of 64 channels).

A group is *blocked* (its channels are all kept) when any of its elements is
blocked: a model input or output, an operation whose channel semantics are
unknown, an ignored layer. `summary()` says which and why.
"""

import collections
import dataclasses

import keras
import numpy as np

from tfprune import handlers
from tfprune.dependency import components
from tfprune.dependency import trace as trace_lib
from tfprune.handlers.common import describe
from tfprune.handlers.layout import Unsupported

MODEL_INPUT = "model input"
MODEL_OUTPUT = "feeds model output"


@dataclasses.dataclass
class Member:
    """One weight axis of a group.

    Attributes:
      layer: The Keras layer (the wrapped layer, for tfprune wrappers).
      slot: Slot name in the layer's layout (`"in"`, `"out"`, `"channel"`, ...).
      variable: The weight.
      axis: The axis of `variable` that runs over the slot.
      role: `"producer"`, `"consumer"` or `"param"` (see `tfprune.handlers.Layout`).
      indices: Int array: positions along `axis` that belong to the group.
      channels: Int array, same length: the group channel each position is.
    """

    layer: object
    slot: str
    variable: object
    axis: int
    role: str
    indices: np.ndarray
    channels: np.ndarray


@dataclasses.dataclass
class Group:
    """Channels that are removed together.

    Attributes:
      id: Index of the group in `DependencyGraph.groups`.
      size: Number of channels.
      reasons: Why the group is blocked; empty if it can be pruned.
      layers: `(layer, slot)` pairs whose weights the group slices, in
        model order.
      members: `Member`s: every weight axis the group slices.
      via: Names of the weightless layers and operations its channels pass
        through (activations, adds, concatenations, ...).
    """

    id: int
    size: int
    reasons: list
    layers: list
    members: list
    via: list
    _components: np.ndarray = dataclasses.field(repr=False, default=None)

    @property
    def prunable(self):
        """Whether any of the group's channels may be removed."""
        return not self.reasons and self.size > 1

    def layer_names(self):
        """`name[slot]` for each layer slot of the group."""
        return [f"{layer.name}[{slot}]" for layer, slot in self.layers]


def _sorted_unique(values):
    """`np.unique` for large int arrays (sort-based; numpy's hash path is slower here)."""
    values = np.sort(values, kind="stable")
    if values.size == 0:
        return values
    return values[np.concatenate(([True], values[1:] != values[:-1]))]


def _unique_inverse(values):
    """`(first_index, inverse)` as `np.unique(..., return_index, return_inverse)` gives."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new = np.ones(values.size, dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    inverse = np.empty(values.size, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    return order[new], inverse


class _Builder:
    """Allocates elements for tensors and layer slots and collects links."""

    def __init__(self):
        self.size = 0
        self.owner_of = []  # (start, size, owner-key)
        self.tensor_base = {}
        self.slot_base = {}
        self.layouts = {}
        self.links = []
        self.blocks = []  # (element ids, reason)

    def _alloc(self, size, owner):
        start = self.size
        self.size += int(size)
        self.owner_of.append((start, int(size), owner))
        return start

    def tensor_elements(self, tensor):
        base = self.tensor_base.get(tensor.key)
        if base is None:
            base = self._alloc(tensor.channels, ("tensor", tensor.key))
            self.tensor_base[tensor.key] = base
        return np.arange(base, base + tensor.channels)

    def layout_of(self, layer, site=None):
        key = id(layer)
        if key not in self.layouts:
            layout = handlers.handler_for(layer).layout(layer)
            if layout is not None and None in layout.slots.values():
                # A LayerNormalization without gamma or beta: its slot is as
                # wide as its input.
                channels = site.inputs[0].channels if site is not None else None
                if channels is None:
                    raise Unsupported("unknown channel count")
                layout.slots = {k: channels if v is None else v for k, v in layout.slots.items()}
            self.layouts[key] = (layer, layout)
        return self.layouts[key][1]

    def slot_elements(self, layer, name, size):
        key = (id(layer), name)
        base = self.slot_base.get(key)
        if base is None:
            base = self._alloc(size, ("slot", id(layer), name))
            self.slot_base[key] = base
        return np.arange(base, base + size)

    def block(self, ids, reason):
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size:
            self.blocks.append((ids, reason))

    def site_elements(self, site):
        """Every element a call site touches (known-channel tensors and slots)."""
        ids = []
        for t in list(site.inputs) + list(site.outputs):
            if t.channels is not None and len(t.shape) >= 2:
                ids.append(self.tensor_elements(t))
        try:
            layout = self.layout_of(site.layer, site) if site.is_layer else None
        except Unsupported:
            layout = None
        if layout is not None:
            for name, size in layout.slots.items():
                ids.append(self.slot_elements(site.layer, name, size))
        return np.concatenate(ids) if ids else np.zeros((0,), np.int64)


def _normalize_ignored(ignored_layers, sites):
    """Maps ignored layers (objects or names) to a set of layer ids.

    Raises:
      ValueError: If a name or layer is not in the model.
    """
    if ignored_layers is None:
        return set()
    if isinstance(ignored_layers, (str, keras.layers.Layer)):
        ignored_layers = [ignored_layers]
    by_name = {}
    by_id = {}
    for site in sites:
        for obj in (site.operation, site.layer):
            if isinstance(obj, keras.layers.Layer):
                by_name.setdefault(obj.name, site.layer)
                by_id[id(obj)] = site.layer
    out = set()
    for item in ignored_layers:
        if isinstance(item, str):
            if item not in by_name:
                known = ", ".join(sorted(by_name)[:8])
                raise ValueError(
                    f"ignored_layers names a layer '{item}' that is not in the model. "
                    f"Pass layer objects or names of the model's layers (e.g. {known}, ...)."
                )
            out.add(id(by_name[item]))
        elif isinstance(item, keras.layers.Layer):
            if id(item) not in by_id:
                raise ValueError(
                    f"ignored_layers holds layer '{item.name}', which is not in the model. "
                    "Pass layers of this model (or their names)."
                )
            out.add(id(by_id[id(item)]))
        else:
            raise ValueError(
                "ignored_layers must hold Keras layers or layer names. "
                f"Received: {item!r}"
            )
    return out


class DependencyGraph:
    """The groups of coupled channels of a Sequential or functional Keras model.

    Walks `model.operations` (so `keras.ops` nodes such as the `Add` of
    `inputs + x` count), through nested models, and links channels with the
    handlers of `tfprune.handlers`. The model is not changed.

    Args:
      model: A Keras 3 Sequential or functional model (it may hold tfprune
        channel wrappers; they are seen through).
      ignored_layers: Layers, or layer names, whose channels must not change.

    Attributes:
      groups: List of `Group`s, in model order.
      trace: The flattened model (`trace.Trace`).

    Raises:
      ValueError: If the model is subclassed or an unbuilt Sequential, or an
        ignored layer is not in the model.
    """

    def __init__(self, model, ignored_layers=None):
        if not isinstance(model, keras.Model):
            raise ValueError(
                "DependencyGraph needs a keras.Model (Sequential or functional). "
                f"Received: {type(model).__name__}"
            )
        self.model = model
        self.trace = trace_lib.trace(model)
        self._ignored = _normalize_ignored(ignored_layers, self.trace.sites)
        self._build()

    # -- construction ----------------------------------------------------

    def _build(self):
        builder = _Builder()
        self._builder = builder
        self._apply_rules(builder)
        labels, count = self._label_channels(builder)
        blocked, comp_reasons = self._blocked_channels(builder, labels, count)
        self._make_groups(builder, labels, count, blocked, comp_reasons)

    def _apply_rules(self, builder):
        """Links elements call site by call site and records what blocks them."""
        for t in self.trace.inputs:
            if t.channels is not None and len(t.shape) >= 2:
                builder.block(builder.tensor_elements(t), MODEL_INPUT)
        self._site_reasons = {}
        for site in self.trace.sites:
            ctx = handlers.LinkContext(builder, site)
            try:
                handlers.handler_for(site.layer).link(ctx)
            except Unsupported as err:
                reason = f"{describe(site.layer)}: {err}"
                self._site_reasons[site.index] = reason
                builder.block(builder.site_elements(site), reason)
                continue
            # A rule's links only count if the whole site was understood.
            builder.links.extend(ctx.links)
            for ids, reason in ctx.blocks:
                builder.block(ids, reason)
            if id(site.layer) in self._ignored:
                builder.block(builder.site_elements(site), f"ignored layer '{site.layer.name}'")
        for t in self.trace.outputs:
            if t.channels is not None and len(t.shape) >= 2:
                builder.block(builder.tensor_elements(t), MODEL_OUTPUT)

    def _label_channels(self, builder):
        """Connected components of linked elements: the model's channels."""
        n = builder.size
        if builder.links:
            u = np.concatenate([a.ravel() for a, _ in builder.links])
            v = np.concatenate([b.ravel() for _, b in builder.links])
        else:
            u = v = np.zeros((0,), np.int64)
        labels, count = components.connected_components(n, u, v)
        self._labels = labels
        self.num_elements = n
        self.num_channels = count
        return labels, count

    @staticmethod
    def _blocked_channels(builder, labels, count):
        blocked = np.zeros(count, dtype=bool)
        comp_reasons = collections.defaultdict(set)
        for ids, reason in builder.blocks:
            comps = _sorted_unique(labels[ids])
            blocked[comps] = True
            for c in comps.tolist():
                comp_reasons[c].add(reason)
        return blocked, comp_reasons

    def _make_groups(self, builder, labels, count, blocked, comp_reasons):
        """Groups channels that touch the same tensors and slots (and are blocked alike)."""
        n_owners = len(builder.owner_of)
        owner = np.empty(builder.size, dtype=np.int64)
        for i, (start, size, _) in enumerate(builder.owner_of):
            owner[start:start + size] = i
        # A channel's signature: a random-weight hash of the set of owners it touches.
        rng = np.random.default_rng(0)
        weights = rng.integers(1, 2**62, size=n_owners, dtype=np.int64).astype(np.uint64)
        pairs = _sorted_unique(labels * n_owners + owner)
        pair_comp, pair_owner = pairs // n_owners, pairs % n_owners
        signature = np.zeros(count, dtype=np.uint64)
        np.add.at(signature, pair_comp, weights[pair_owner])
        signature = signature ^ (blocked.astype(np.uint64) << np.uint64(63))
        first_index, comp_group = _unique_inverse(signature)
        # Number groups in model order (by their first channel).
        order = np.argsort(first_index, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        comp_group = rank[comp_group]
        n_groups = order.size
        self._comp_group = comp_group
        comp_pos = np.zeros(count, dtype=np.int64)
        sort = np.argsort(comp_group, kind="stable")
        bounds = np.searchsorted(comp_group[sort], np.arange(n_groups + 1))
        group_components = []
        for g in range(n_groups):
            comps = sort[bounds[g]:bounds[g + 1]]
            comp_pos[comps] = np.arange(comps.size)
            group_components.append(comps)
        self._comp_pos = comp_pos

        group_pairs = _sorted_unique(comp_group[pair_comp] * n_owners + pair_owner)
        pair_group, pair_owner_sorted = group_pairs // n_owners, group_pairs % n_owners
        cuts = np.searchsorted(pair_group, np.arange(n_groups + 1))
        group_owners = {g: pair_owner_sorted[cuts[g]:cuts[g + 1]].tolist()
                        for g in range(n_groups)}
        self.groups = []
        for g, comps in enumerate(group_components):
            reasons = set()
            for c in comps.tolist():
                reasons |= comp_reasons.get(c, set())
            self.groups.append(Group(id=g, size=int(comps.size), reasons=sorted(reasons),
                                     layers=[], members=[], via=[], _components=comps))
        self._fill_members(group_owners)

    def _fill_members(self, group_owners):
        builder = self._builder
        tensor_sites = collections.defaultdict(list)
        for site in self.trace.sites:
            if site.index in self._site_reasons:
                continue
            for t in site.outputs:
                tensor_sites[t.key].append(site)
        for g, owners in group_owners.items():
            group = self.groups[g]
            seen_via = set()
            for o in owners:
                start, size, key = builder.owner_of[o]
                if key[0] == "tensor":
                    for site in tensor_sites.get(key[1], ()):
                        layout = builder.layouts.get(id(site.layer), (None, None))[1]
                        name = describe(site.layer) if layout is None else None
                        if name and name not in seen_via:
                            seen_via.add(name)
                            group.via.append(name)
                    continue
                _, layer_id, slot = key
                layer, layout = builder.layouts[layer_id]
                ids = np.arange(start, start + size)
                comps = self._labels[ids]
                inside = self._comp_group[comps] == g
                group.layers.append((layer, slot))
                indices = np.nonzero(inside)[0]
                channels = self._comp_pos[comps[inside]]
                for entry in layout.axes:
                    if entry.slot != slot:
                        continue
                    group.members.append(Member(
                        layer=layer, slot=slot, variable=entry.variable, axis=entry.axis,
                        role=entry.role, indices=entry.positions(indices, size),
                        channels=np.tile(channels, entry.blocks),
                    ))

    # -- queries -----------------------------------------------------------

    @property
    def prunable_groups(self):
        """Groups with at least one removable channel."""
        return [g for g in self.groups if g.prunable]

    def site_reason(self, index):
        """Why call site `index` keeps its channels, or None if the rules handled it."""
        return self._site_reasons.get(index)

    def layouts(self):
        """`(layer, Layout)` for every layer with channel slots, in model order."""
        return [(layer, layout) for layer, layout in self._builder.layouts.values()
                if layout is not None]

    def slot_elements(self, layer, slot):
        """Element ids of one layer slot (internal indexing for masks)."""
        base = self._builder.slot_base[(id(layer), slot)]
        size = self._builder.layouts[id(layer)][1].slots[slot]
        return np.arange(base, base + size)

    def tensor_elements(self, key):
        """Element ids of a traced tensor's channels, or None if it has none."""
        base = self._builder.tensor_base.get(key)
        if base is None:
            return None
        return np.arange(base, base + self.trace.tensors[key].channels)

    def channel_of(self, elements):
        """The global channel id of each element."""
        return self._labels[elements]

    def full_keep(self, keep=None):
        """A keep flag per global channel from `{group id: bool array}`.

        Args:
          keep: Dict from group id (or `Group`) to a boolean array of the
            group's size; missing groups keep all channels.

        Returns:
          A boolean array over all channels.

        Raises:
          ValueError: If an array has the wrong size, a blocked group loses a
            channel, or a group loses all its channels.
        """
        out = np.ones(self.num_channels, dtype=bool)
        for g, flags in (keep or {}).items():
            group = self.groups[g.id if isinstance(g, Group) else int(g)]
            flags = np.asarray(flags, dtype=bool).reshape(-1)
            if flags.size != group.size:
                raise ValueError(
                    f"Keep flags for group {group.id} ({', '.join(group.layer_names()[:3])}) "
                    f"must have {group.size} entries; received {flags.size}."
                )
            if not flags.all() and group.reasons:
                raise ValueError(
                    f"Group {group.id} ({', '.join(group.layer_names()[:3])}) cannot lose "
                    f"channels: {'; '.join(group.reasons)}."
                )
            if not flags.any():
                raise ValueError(
                    f"Group {group.id} ({', '.join(group.layer_names()[:3])}) would lose all "
                    f"its {group.size} channels; keep at least one."
                )
            out[group._components] = flags
        return out

    def site_groups(self, site):
        """Ids of the groups whose channels a call site reads, writes or holds.

        Args:
          site: A call site of `self.trace`.

        Returns:
          A sorted list of group ids.
        """
        elements = []
        for t in list(site.inputs) + list(site.outputs):
            ids = self.tensor_elements(t.key)
            if ids is not None:
                elements.append(ids)
        layout = self._builder.layouts.get(id(site.layer), (None, None))[1]
        if layout is not None:
            for slot in layout.slots:
                if (id(site.layer), slot) in self._builder.slot_base:
                    elements.append(self.slot_elements(site.layer, slot))
        if not elements:
            return []
        channels = self._labels[np.concatenate(elements)]
        return sorted(set(self._comp_group[channels].tolist()))

    def group_keep(self, full_keep):
        """`{group id: bool array}` from a keep flag per global channel."""
        return {g.id: np.asarray(full_keep)[g._components] for g in self.groups}

    def summary(self, print_fn=None, keep=None, max_layers=6):
        """A table: per group, its channels, layers and what blocks it.

        Args:
          print_fn: Called with the table; default returns it only.
          keep: Optional `{group id: bool array}` to show kept channels.
          max_layers: Layer slots listed per group before eliding.

        Returns:
          The table as a string.
        """
        rows = [("group", "channels", "status", "layers (slot)", "through")]
        for g in self.groups:
            if not g.layers and not g.reasons:
                continue
            channels = str(g.size)
            if keep is not None and g.id in keep:
                channels = f"{int(np.sum(keep[g.id]))}/{g.size}"
            if g.reasons:
                status = "kept: " + "; ".join(g.reasons)
            elif g.size <= 1:
                status = "kept: single channel"
            else:
                status = "prunable"
            names = g.layer_names()
            layers = ", ".join(names[:max_layers])
            if len(names) > max_layers:
                layers += f", ... (+{len(names) - max_layers})"
            via = ", ".join(g.via[:3]) + (", ..." if len(g.via) > 3 else "")
            rows.append((str(g.id), channels, status, layers, via))
        widths = [min(60, max(len(r[i]) for r in rows)) for i in range(5)]
        lines = []
        for r in rows:
            cells = [c if len(c) <= w else c[: w - 3] + "..." for c, w in zip(r, widths)]
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
        prunable = [g for g in self.groups if g.prunable]
        total = sum(g.size for g in self.groups if g.layers)
        lines.append(
            f"{len(self.groups)} groups, {len(prunable)} prunable; "
            f"{sum(g.size for g in prunable)} of {total} channels can be removed."
        )
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text
