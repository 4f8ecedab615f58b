"""Cost models: what a model costs as a function of each group's kept channels.

A `CostModel` adds up one `SiteCost` per costly call site (convolutions,
Dense, attention, ...): the site's cost measured on a grid of its groups'
kept counts, interpolated multilinearly in between (exact for MACs and
parameters, which are bilinear in a layer's input and output widths; a
measured fit for latency). The same structure serves every budget: MACs and
parameters are counted on one-layer models (`count_site_costs`), latency is
measured by timing them in a runtime (`tflite_export.latency_table`), which
also calibrates `base` and `scale` against whole-model timings.
"""

import itertools

import numpy as np

from tfprune import handlers
from tfprune import surgery
from tfprune.planning.channel_plan import group_key


def grid_levels(size, round_to=1, levels=3):
    """Kept counts at which a group's costs are sampled: from a quarter up to all.

    Args:
      size: Channels in the group.
      round_to: Counts are multiples of this (and at least `round_to`).
      levels: How many counts (at most; fewer for narrow groups).

    Returns:
      A sorted list of distinct ints ending with `size`.
    """
    if size <= round_to or levels < 2:
        return [int(size)]
    out = set()
    for fraction in np.linspace(0.25, 1.0, levels):
        kept = int(round(size * fraction / round_to)) * round_to
        out.add(int(min(size, max(round_to, kept))))
    out.add(int(size))
    return sorted(out)


class SiteCost:
    """The cost of one call site on a grid of its groups' kept counts.

    Args:
      name: The site's layer name (for reports).
      groups: Group keys (see `group_key`) of the grid's axes.
      levels: One sorted list of kept counts per group.
      values: Costs, an array of shape `[len(l) for l in levels]`.
    """

    def __init__(self, name, groups, levels, values):
        self.name = name
        self.groups = list(groups)
        self.levels = [np.asarray(l, dtype=np.float64) for l in levels]
        self.values = np.asarray(values, dtype=np.float64).reshape(
            [len(l) for l in self.levels])

    def __call__(self, counts):
        """The interpolated cost for `counts` (`{group key: kept}`; missing groups: all kept)."""
        value = self.values
        for axis, (key, grid) in enumerate(zip(self.groups, self.levels)):
            x = float(counts.get(key, grid[-1]))
            value = _interpolate_axis(value, grid, x)
        return float(value)

    def get_config(self):
        return {"name": self.name, "groups": self.groups,
                "levels": [l.astype(int).tolist() for l in self.levels],
                "values": self.values.tolist()}

    @classmethod
    def from_config(cls, config):
        return cls(config["name"], config["groups"], config["levels"], config["values"])


def _interpolate_axis(values, grid, x):
    """Linear interpolation along axis 0 (extrapolated linearly below the grid)."""
    if len(grid) == 1:
        return values[0]
    i = int(np.clip(np.searchsorted(grid, x) - 1, 0, len(grid) - 2))
    t = (x - grid[i]) / (grid[i + 1] - grid[i])
    return values[i] * (1.0 - t) + values[i + 1] * t


class CostModel:
    """`base + scale * sum(site costs)` for a plan's kept counts.

    Args:
      sites: `SiteCost`s.
      base: Cost outside the sites (e.g. the runtime's fixed overhead).
      scale: Multiplies the sites' sum (whole-model calibration).
      kind: What is counted: `"latency"`, `"macs"`, `"params"`.
      unit: Its unit (`"ms"`, `"MACs"`, ...).
      info: Facts about how it was made (device, precision, threads, ...).
    """

    def __init__(self, sites, base=0.0, scale=1.0, kind="latency", unit="ms", info=None):
        self.sites = list(sites)
        self.base = float(base)
        self.scale = float(scale)
        self.kind = kind
        self.unit = unit
        self.info = dict(info or {})
        self._by_group = {}
        for index, site in enumerate(self.sites):
            for key in site.groups:
                self._by_group.setdefault(key, []).append(index)

    def sites_sum(self, counts):
        """The sum of the sites' costs (before `base` and `scale`)."""
        return sum(site(counts) for site in self.sites)

    def __call__(self, counts):
        """The predicted cost of a plan's counts (`{group key: kept}`)."""
        return self.base + self.scale * self.sites_sum(counts)

    def sites_of(self, key):
        """Indices of the sites whose cost depends on group `key`."""
        return self._by_group.get(key, [])

    def get_config(self):
        return {"kind": self.kind, "unit": self.unit, "base": self.base, "scale": self.scale,
                "info": dict(self.info), "sites": [s.get_config() for s in self.sites]}

    @classmethod
    def from_config(cls, config):
        return cls([SiteCost.from_config(s) for s in config["sites"]], base=config["base"],
                   scale=config["scale"], kind=config["kind"], unit=config["unit"],
                   info=config.get("info"))


def costly_sites(graph):
    """Call sites worth measuring: layers with weights whose handler counts MACs."""
    out = []
    for site in graph.trace.sites:
        layer = site.layer
        if not site.is_layer or not layer.weights:
            continue
        if handlers.handler_for(layer).macs(layer, site) > 0:
            out.append(site)
    return out


def site_grids(graph, round_to=1, levels=3):
    """`[(site, [(group, levels), ...])]`: each costly site and the grid of its prunable groups."""
    out = []
    for site in costly_sites(graph):
        axes = []
        for gid in graph.site_groups(site):
            group = graph.groups[gid]
            if group.prunable:
                axes.append((group, grid_levels(group.size, round_to, levels)))
        out.append((site, axes))
    return out


def grid_keep(graph, assignment):
    """A keep array with the first `kept` channels of each `(group, kept)` kept."""
    keep = np.ones(graph.num_channels, dtype=bool)
    for group, kept in assignment:
        flags = np.zeros(group.size, dtype=bool)
        flags[:kept] = True
        keep[group._components] = flags
    return keep


def measure_sites(graph, measure, round_to=1, levels=3, progress=None, kind="latency",
                  unit="ms", info=None):
    """A `CostModel` from measuring one-layer models on each site's grid.

    Args:
      graph: A `DependencyGraph` of a model with a fixed input shape.
      measure: `fn(keras_model) -> float`: the cost of a one-layer model.
        Identical one-layer models (same config and shapes) are measured once.
      round_to: Grid counts are multiples of this.
      levels: Grid points per group.
      progress: Optional `fn(done, total, site_name)`.
      kind: See `CostModel`.
      unit: See `CostModel`.
      info: See `CostModel`.

    Returns:
      A `CostModel` with base 0 and scale 1.
    """
    grids = site_grids(graph, round_to, levels)
    total = sum(int(np.prod([len(l) for _, l in axes])) for _, axes in grids)
    done = 0
    cache = {}
    sites = []
    for site, axes in grids:
        values = []
        for point in itertools.product(*[l for _, l in axes]):
            keep = grid_keep(graph, [(g, k) for (g, _), k in zip(axes, point)])
            model = surgery.site_model(graph, site, keep)
            signature = _signature(model)
            if signature not in cache:
                cache[signature] = float(measure(model))
            values.append(cache[signature])
            done += 1
            if progress is not None:
                progress(done, total, site.layer.name)
        sites.append(SiteCost(site.layer.name, [group_key(g) for g, _ in axes],
                              [l for _, l in axes], values))
    return CostModel(sites, kind=kind, unit=unit, info=info)


def _signature(model):
    layer = model.layers[-1]
    config = dict(layer.get_config())
    config.pop("name", None)
    shapes = tuple(tuple(x.shape) for x in model.inputs)
    return repr((type(layer).__name__, sorted(config.items(), key=lambda kv: kv[0]), shapes))


def count_site_costs(graph, kind="macs", round_to=1, levels=3):
    """A `CostModel` of MACs (`kind="macs"`) or parameters (`"params"`), counted exactly.

    Multilinear interpolation is exact for both: they are bilinear in a
    layer's input and output widths. Parameters of layers without MACs
    (BatchNormalization, LayerNormalization, ...) are left out.
    """
    from tfprune.dependency.macs import count_macs

    if kind == "macs":
        measure, unit = count_macs, "MACs"
    elif kind == "params":
        measure, unit = (lambda model: model.count_params()), "parameters"
    else:
        raise ValueError(f"kind must be 'macs' or 'params'. Received: kind={kind!r}")
    return measure_sites(graph, measure, round_to=round_to, levels=levels, kind=kind, unit=unit)
