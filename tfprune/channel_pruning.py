"""Structured channel pruning: channel masks on a schedule, then `shrink`.

`prune_channels(model, schedule)` analyses the model (`DependencyGraph`),
wraps every layer whose channels may go in a `PruneChannels` wrapper, and
attaches one model-level `ChannelPruner`. During `model.fit` with
`tfprune.UpdatePruningStep`, the pruner scores each group's channels
(`tfprune.importance`) whenever the schedule says so and masks the least
important ones in every coupled layer at once:

- producer side: the kernel's output slice, the bias, and the following
  BatchNormalization's gamma and beta, so a dead channel outputs zero;
- consumer side: the input slice of every kernel that reads the channel
  (Dense rows after Flatten included), so a dead channel that still carries
  a constant (after hard_sigmoid, or BN with scale=False) adds nothing;
- LayerNormalization over channels normalizes over the kept channels only.

So `tfprune.shrink` can remove masked channels and compute exactly what the
masked model computed.
"""

import keras
import numpy as np
from absl import logging

from tfprune import backends
from tfprune import handlers
from tfprune import importance as importance_lib
from tfprune import layer_copies
from tfprune import schedules as schedules_lib
from tfprune import surgery
from tfprune.prune import ignored_layer_names
from tfprune.dependency import graph as graph_lib
from tfprune.dependency import trace as trace_lib
from tfprune.masked_wrapper import MaskedWeightsWrapper


def kept_count(size, sparsity, round_to=1):
    """How many of `size` channels a group keeps at `sparsity`.

    The count is the nearest multiple of `round_to` to `size * (1 - sparsity)`,
    at least `round_to` and at most `size`; a group narrower than `round_to`
    keeps all its channels.

    Args:
      size: Channels in the group.
      sparsity: Fraction to remove, in [0, 1).
      round_to: Kept counts are multiples of this.

    Returns:
      An int in [1, size].
    """
    if size <= round_to:
        return size
    target = size * (1.0 - sparsity)
    kept = int(round(target / round_to)) * round_to
    return int(min(size, max(round_to, kept)))


@keras.saving.register_keras_serializable(package="tfprune")
class PruneChannels(MaskedWeightsWrapper):
    """Masks whole channels of a layer, as decided by the model's `ChannelPruner`.

    Created by `tfprune.prune_channels`; not meant to wrap layers by hand
    (channels are coupled across layers, so one layer's masks are decided
    for the whole model).

    Each channel slot of the layer (`"in"`, `"out"`, `"channel"`, ...; see
    `tfprune.handlers.Layout`) has a 0/1 channel mask variable; the weight
    masks are their outer products along the weight axes. A wrapped layer
    whose handler defines `masked_call` (LayerNormalization: statistics over
    the kept channels only) computes what its thinner copy will.

    Args:
      layer: The layer to wrap (Conv, Dense, BatchNormalization, ...).
      pruning_schedule: A `tfprune.PruningSchedule`.
      importance: `"l1"`, `"l2"`, `"bn_scale"`, `"taylor"` or a callable
        (callables are not serialized).
      round_to: Kept channels per group are a multiple of this.
      global_pruning: Rank channels across groups instead of per group.
      ignored_layers: Names of layers whose channels never change.
      plan: A channel plan's config (see `prune_channels`), or None.
      **kwargs: Passed to `keras.layers.Layer`.

    Raises:
      ValueError: If `layer` has no channel slots or an argument is invalid.
    """

    def __init__(self, layer, pruning_schedule=None, importance="l2", round_to=1,
                 global_pruning=False, ignored_layers=None, plan=None, **kwargs):
        if pruning_schedule is None:
            pruning_schedule = schedules_lib.ConstantSparsity(0.5, 0)
        kwargs.setdefault("name", f"prune_channels_{layer.name}")
        super().__init__(layer, **kwargs)
        self.pruning_schedule = _check_schedule(schedules_lib.deserialize(pruning_schedule))
        importance_lib.validate(importance)
        self.importance = importance
        self.round_to = _check_round_to(round_to)
        self.global_pruning = bool(global_pruning)
        self.ignored_layers = list(ignored_layers or [])
        self.plan = None if plan is None else _check_plan(plan, self.global_pruning).get_config()
        self._layout = None
        self._channel_masks = {}
        self._handler = None
        self._masked_call = False
        self.taylor_probe = None
        self.taylor_score = None
        self._weight_probes = {}
        self._channel_pruner = None

    # -- state ---------------------------------------------------------------

    def build(self, input_shape=None):
        """Builds the wrapped layer, its weight masks and one mask per channel slot.

        Args:
          input_shape: The input shape Keras passes.

        Raises:
          ValueError: If the wrapped layer has no channel weights to mask.
        """
        if not self.layer.built:
            self.layer.build(input_shape)
        self._handler = handlers.handler_for(self.layer)
        layout = self._handler.layout(self.layer)
        if layout is None:
            raise ValueError(
                f"Layer '{self.layer.name}' ({type(self.layer).__name__}) has no channel "
                "weights for PruneChannels to mask. Use tfprune.prune_channels(model, ...), "
                "which wraps only layers with removable channels."
            )
        if None in layout.slots.values():
            channels = input_shape[-1]
            layout.slots = {k: channels if v is None else v for k, v in layout.slots.items()}
        self._layout = layout
        self._build_masks()
        for slot, size in layout.slots.items():
            self._channel_masks[slot] = self.add_weight(
                name=f"{slot}_channel_mask", shape=(size,), initializer="ones",
                trainable=False, aggregation="only_first_replica",
            )
        self._masked_call = (
            type(self._handler).masked_call is not handlers.LayerHandler.masked_call)
        if self.importance == "taylor" and "out" in layout.slots:
            size = layout.slots["out"]
            # The probe multiplies the output by (1 + p - stop_gradient(p)),
            # which is 1, so the forward pass is unchanged; its gradient is
            # dL/dmask per channel, and the optimizer writes that gradient
            # into the variable (overwrite_with_gradient) after every step.
            self.taylor_probe = self.add_weight(
                name="taylor_probe", shape=(size,), initializer="zeros", trainable=True,
            )
            self.taylor_probe.overwrite_with_gradient = True
            self.taylor_score = self.add_weight(
                # Every replica adds the same synchronized probe value: "mean"
                # keeps the replicas (and workers) in agreement.
                name="taylor_score", shape=(size,), initializer="zeros", trainable=False,
                aggregation="mean",
            )
        self._weight_probes = {}
        if self.importance == "taylor":
            for slot in self._probed_slots(layout):
                size = layout.slots[slot]
                # Probes on the weights: every maskable weight along the slot
                # is read as w * (1 + p - stop_gradient(p)) (still w), so
                # dL/dp is dL/dmask of the slot's entries (e.g. heads).
                probe = self.add_weight(name=f"{slot}_taylor_probe", shape=(size,),
                                        initializer="zeros", trainable=True)
                probe.overwrite_with_gradient = True
                score = self.add_weight(name=f"{slot}_taylor_score", shape=(size,),
                                        initializer="zeros", trainable=False, aggregation="mean")
                self._weight_probes[slot] = (probe, score)
        self.built = True

    @staticmethod
    def _probed_slots(layout):
        """Slots that produce channels but are not the layer's output channels.

        The `"out"` slot is probed on the output; `"in"` slots only read
        channels that their producers score. The others (attention heads,
        FFN units inside a block, recurrent units) are probed on the weights.
        """
        producing = {entry.slot for entry in layout.axes if entry.role == "producer"}
        return [slot for slot in layout.slots if slot in producing and slot not in ("out", "in")]

    def _call_with_weight_probes(self, inputs, *args, **kwargs):
        """Runs the layer with every probed slot's weights read through its probe."""
        ops = keras.ops
        factors = {slot: 1.0 + probe - ops.stop_gradient(probe)
                   for slot, (probe, _) in self._weight_probes.items()}
        scaled = {}
        for entry in self._layout.axes:
            if entry.slot not in factors or not entry.maskable:
                continue
            variable = entry.variable
            value = scaled.get(id(variable), (variable, variable.value))[1]
            factor = ops.cast(factors[entry.slot], value.dtype)
            if entry.blocks > 1:
                factor = ops.tile(factor, (entry.blocks,))
            shape = [1] * len(value.shape)
            shape[entry.axis] = -1
            scaled[id(variable)] = (variable, value * ops.reshape(factor, shape))
        # Assignments in the block (moving statistics, dropout seeds) still count.
        with backends.reading(list(scaled.values()), self.layer.variables):
            return self.layer(inputs, *args, **kwargs)

    def get_masked_weights(self):
        return self._layout.masked_variables()

    @property
    def layout(self):
        """The wrapped layer's `tfprune.handlers.Layout`."""
        return self._layout

    def channel_masks(self):
        """`{slot: 0/1 numpy array}` of the current channel masks."""
        return {slot: np.asarray(v.numpy()) for slot, v in self._channel_masks.items()}

    def set_channel_masks(self, masks):
        """Sets slot masks and the weight masks they imply (weights are zeroed).

        Args:
          masks: `{slot: bool or 0/1 array of the slot's size}`; slots left out
            keep their current mask.

        Raises:
          ValueError: On an unknown slot or a wrong size.
        """
        current = self.channel_masks()
        for slot, value in masks.items():
            if slot not in current:
                raise ValueError(
                    f"Layer '{self.layer.name}' has channel slots {sorted(current)}; "
                    f"received a mask for '{slot}'."
                )
            value = np.asarray(value, dtype=np.float32).reshape(-1)
            if value.size != current[slot].size:
                raise ValueError(
                    f"Mask for slot '{slot}' of layer '{self.layer.name}' must have "
                    f"{current[slot].size} entries; received {value.size}."
                )
            current[slot] = value
        weight_masks = []
        for variable in self.get_masked_weights():
            mask = np.ones(tuple(variable.shape), dtype=np.float32)
            for entry in self._layout.axes:
                if entry.variable is variable and entry.maskable:
                    shape = [1] * mask.ndim
                    shape[entry.axis] = -1
                    mask = mask * entry.expand(current[entry.slot]).reshape(shape)
            weight_masks.append(mask)
        self.set_masks(weight_masks)
        for slot, value in current.items():
            self._channel_masks[slot].assign(value)

    def taylor_scores(self, slot="out"):
        """Accumulated |dL/dmask| of a slot's entries (default the output channels), or None."""
        score = self.taylor_score if slot == "out" else self._weight_probes.get(slot, (0, None))[1]
        if score is None:
            return None
        return np.asarray(score.numpy())

    def reset_taylor_scores(self):
        """Sets the accumulated Taylor scores (see `taylor_scores`) back to zero."""
        scores = [score for _, score in self._weight_probes.values()]
        if self.taylor_score is not None:
            scores.append(self.taylor_score)
        for score in scores:
            score.assign(np.zeros(score.shape, np.float32))

    @classmethod
    def make_controllers(cls, model, wrappers):
        pruners, seen, orphans = [], set(), []
        for wrapper in wrappers:
            pruner = wrapper._channel_pruner
            if pruner is None:
                orphans.append(wrapper)
            elif id(pruner) not in seen:
                seen.add(id(pruner))
                pruners.append(pruner)
        if orphans:
            # Wrappers restored from a saved model: rebuild their pruner.
            pruner = ChannelPruner.from_wrappers(model, orphans)
            pruners.append(pruner)
        return pruners

    # -- forward -------------------------------------------------------------

    def compute_output_spec(self, *args, **kwargs):
        """The wrapped layer's output spec: masks do not change the output shape."""
        # Masks and probes keep the wrapped layer's output shape. Asking the
        # layer (rather than tracing call) also works where Keras marks a
        # symbolic tensor sparse (e.g. after `x * (1 / 6)`).
        kwargs.pop("training", None)
        return self.layer.compute_output_spec(*args, **kwargs)

    def call(self, inputs, *args, training=None, **kwargs):
        """Runs the wrapped layer; its masked channels output zero.

        Layers whose handler defines `masked_call` (LayerNormalization
        computes its statistics over the kept channels only) run that; with
        `importance="taylor"`, training also accumulates the gradient scores
        of the output channels.
        """
        if not self._masked_call and self.taylor_probe is None and not self._weight_probes:
            return super().call(inputs, *args, training=training, **kwargs)
        self.begin_training_step(training)
        if self.layer._call_has_training_arg:
            kwargs["training"] = training
        with self.masked_weights_scope():
            outputs = self._masked_forward(inputs, args, kwargs, training)
        if self.taylor_probe is not None:
            probe = keras.ops.cast(self.taylor_probe, outputs.dtype)
            if training:
                self.taylor_score.assign_add(keras.ops.abs(self.taylor_probe))
            outputs = outputs * (1.0 + probe - keras.ops.stop_gradient(probe))
        return outputs

    def _masked_forward(self, inputs, args, kwargs, training):
        outputs = NotImplemented
        if self._masked_call:
            outputs = self._handler.masked_call(
                self.layer, self._channel_masks, inputs, *args, **kwargs)
        if outputs is NotImplemented and self._weight_probes:
            outputs = self._call_with_weight_probes(inputs, *args, **kwargs)
            if training:
                for probe, score in self._weight_probes.values():
                    score.assign_add(keras.ops.abs(probe))
        if outputs is NotImplemented:
            outputs = self.layer(inputs, *args, **kwargs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update({
            "pruning_schedule": keras.saving.serialize_keras_object(self.pruning_schedule),
            "importance": self.importance if isinstance(self.importance, str) else "l2",
            "round_to": self.round_to,
            "global_pruning": self.global_pruning,
            "ignored_layers": list(self.ignored_layers),
            "plan": self.plan,
        })
        return config


def _check_schedule(schedule):
    if not isinstance(schedule, schedules_lib.PruningSchedule):
        raise ValueError(
            "`pruning_schedule` must be a tfprune.PruningSchedule such as "
            f"tfprune.ConstantSparsity(0.3, 0). Received: {schedule!r}"
        )
    return schedule


def _check_plan(plan, global_pruning):
    """A `ChannelPlan` from a plan, its config or a JSON path (None stays None)."""
    if plan is None:
        return None
    from tfprune.planning.channel_plan import ChannelPlan

    if isinstance(plan, str):
        plan = ChannelPlan.load(plan)
    elif isinstance(plan, dict):
        plan = ChannelPlan.from_config(plan) if "targets" in plan else ChannelPlan(plan)
    if not isinstance(plan, ChannelPlan):
        raise ValueError(
            "`plan` must be a tfprune.planning.ChannelPlan, its config, a {group key: kept} "
            f"dict or the path of a saved plan. Received: {plan!r}"
        )
    if global_pruning:
        raise ValueError(
            "A plan fixes each group's kept channels, so global_pruning=True has nothing to "
            "decide. Pass either plan= or global_pruning=True."
        )
    return plan


def _final_sparsity(schedule):
    """The sparsity a schedule ends at (its target or final value)."""
    for name in ("final_sparsity", "target_sparsity"):
        if hasattr(schedule, name):
            return float(getattr(schedule, name))
    return float(schedule.sparsity(2**62))


def _check_round_to(round_to):
    if isinstance(round_to, bool) or not isinstance(round_to, (int, np.integer)) or round_to < 1:
        raise ValueError(f"`round_to` must be an integer >= 1. Received: round_to={round_to!r}")
    return int(round_to)


class ChannelPruner:
    """Decides the channel masks of a whole model (one controller per model).

    `UpdatePruningStep` calls `update(step)` before every training batch; when
    the schedule says so, every prunable group is scored and its lowest
    channels are masked in all its layers. Channels once removed stay
    removed (their score is -inf), so masks only grow.

    Args:
      model: A model holding `PruneChannels` wrappers.
      pruning_schedule: A `tfprune.PruningSchedule`.
      importance: `"l1"`, `"l2"`, `"bn_scale"`, `"taylor"` or a callable.
      round_to: Kept channels per group are a multiple of this.
      global_pruning: If True, channels are ranked across all groups (scores
        divided by their group's mean, so wide and narrow layers compare);
        the schedule's sparsity then applies to all prunable channels together.
      ignored_layers: Layers or names whose channels never change.
      plan: A `tfprune.planning.ChannelPlan` (or its config, or a JSON path):
        each planned group ends at its planned count, reached as the
        schedule's sparsity reaches its final value; unplanned groups keep
        their channels.

    Raises:
      ValueError: On an invalid argument.
    """

    def __init__(self, model, pruning_schedule, importance="l2", round_to=1,
                 global_pruning=False, ignored_layers=None, plan=None):
        self.model = model
        self.pruning_schedule = _check_schedule(pruning_schedule)
        self.round_to = _check_round_to(round_to)
        self.global_pruning = bool(global_pruning)
        self.graph = graph_lib.DependencyGraph(model, ignored_layers=ignored_layers)
        self.wrappers = {}
        for site in self.graph.trace.sites:
            if isinstance(site.operation, PruneChannels):
                self.wrappers[id(site.layer)] = site.operation
        self._wrappers_by_site = {
            site.index: site.operation for site in self.graph.trace.sites
            if isinstance(site.operation, PruneChannels)
        }
        self.importance = importance_lib.get(importance, taylor_lookup=self._taylor_lookup)
        self.notes = {}
        self.groups = []
        for group in self.graph.prunable_groups:
            missing = [layer.name for layer, _ in group.layers if id(layer) not in self.wrappers]
            if missing:
                self.notes[group.id] = f"kept: layer '{missing[0]}' is not wrapped"
                continue
            self.groups.append(group)
        for wrapper in self.wrappers.values():
            wrapper._channel_pruner = self
        self.plan = _check_plan(plan, self.global_pruning)
        self._plan_counts = None if self.plan is None else self.plan.counts(self.graph)

    @classmethod
    def from_wrappers(cls, model, wrappers):
        """A pruner configured like `wrappers[0]` (e.g. after loading a model)."""
        first = wrappers[0]
        return cls(model, first.pruning_schedule, importance=first.importance,
                   round_to=first.round_to, global_pruning=first.global_pruning,
                   ignored_layers=first.ignored_layers or None, plan=first.plan)

    def _planned_counts(self, sparsity):
        """Kept counts at `sparsity` when following a plan.

        The schedule's sparsity is read as progress towards its final value:
        at the final value every planned group keeps its planned count; on
        the way, each group has removed that share of its planned cut.
        """
        final = _final_sparsity(self.pruning_schedule)
        progress = 1.0 if final <= 0 else min(sparsity / final, 1.0)
        counts = {}
        for group in self.groups:
            target = self._plan_counts.get(group.id, group.size)
            if progress >= 1.0:
                counts[group.id] = target
                continue
            group_sparsity = (1.0 - target / group.size) * progress
            counts[group.id] = max(target, kept_count(group.size, group_sparsity, self.round_to))
        return counts

    def _taylor_lookup(self, layer, slot="out"):
        wrapper = self.wrappers.get(id(layer))
        return None if wrapper is None else wrapper.taylor_scores(slot)

    # -- masks ---------------------------------------------------------------

    def current_keep(self):
        """Kept flag per channel of `graph` (from the wrappers' masks)."""
        return surgery.keep_from_wrappers(self.graph, self._wrappers_by_site)

    def set_keep(self, keep):
        """Masks channels explicitly.

        Args:
          keep: `{group id: bool array}` for groups of `self.graph`, or a bool
            array over all channels.

        Raises:
          ValueError: If the flags are invalid for the graph (see
            `DependencyGraph.full_keep`) or a changed group is not wrapped.
        """
        if isinstance(keep, dict):
            keep = self.graph.full_keep(keep)
        keep = np.asarray(keep, dtype=bool)
        allowed = np.zeros(self.graph.num_channels, dtype=bool)
        for group in self.groups:
            allowed[group._components] = True
        if np.any(~keep & ~allowed):
            raise ValueError("Only channels of prunable, wrapped groups can be masked.")
        for layer_id, wrapper in self.wrappers.items():
            layer = wrapper.layer
            masks = {}
            for slot in wrapper.layout.slots:
                channels = self.graph.channel_of(self.graph.slot_elements(layer, slot))
                masks[slot] = keep[channels]
            wrapper.set_channel_masks(masks)

    def scores(self):
        """`{group id: scores}` for the prunable groups, with fallbacks noted."""
        out = {}
        fallback = importance_lib.get("l2")
        for group in self.groups:
            try:
                out[group.id] = self.importance(group)
                self.notes.pop(group.id, None)
            except importance_lib.ImportanceUnavailable as err:
                note = f"{self.importance.name} -> l2: {err}"
                if self.notes.get(group.id) != note:
                    logging.info("Channel group %d: %s", group.id, note)
                self.notes[group.id] = note
                out[group.id] = fallback(group)
        return out

    def decide(self, sparsity, scores=None, current=None):
        """Keep flags per group for `sparsity`.

        Args:
          sparsity: Fraction of channels to remove, in [0, 1).
          scores: `{group id: scores}`; default `self.scores()`.
          current: Current keep flags over all channels; removed channels
            stay removed.

        Returns:
          `{group id: bool array}`.
        """
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1). Received: {sparsity!r}")
        scores = self.scores() if scores is None else scores
        current = self.current_keep() if current is None else current
        ranked = {}
        for group in self.groups:
            s = np.asarray(scores[group.id], dtype=np.float64).copy()
            alive = current[group._components]
            s[~alive] = -np.inf
            ranked[group.id] = s
        if self.plan is not None:
            counts = self._planned_counts(sparsity)
        elif self.global_pruning:
            counts = self._global_counts(ranked, sparsity)
        else:
            counts = {g.id: kept_count(g.size, sparsity, self.round_to) for g in self.groups}
        keep = {}
        for group in self.groups:
            order = np.argsort(-ranked[group.id], kind="stable")
            flags = np.zeros(group.size, dtype=bool)
            flags[order[:counts[group.id]]] = True
            keep[group.id] = flags
        return keep

    def _global_counts(self, ranked, sparsity):
        entries = []
        for group in self.groups:
            s = ranked[group.id]
            finite = s[np.isfinite(s)]
            mean = finite.mean() if finite.size else 0.0
            normalized = s / mean if mean > 0 else s
            entries.append(np.stack([np.full(group.size, group.id), normalized], axis=1))
        if not entries:
            return {}
        table = np.concatenate(entries)
        total = table.shape[0]
        remove = int(round(total * sparsity))
        order = np.argsort(table[:, 1], kind="stable")[:remove]
        removed = np.bincount(table[order, 0].astype(np.int64),
                              minlength=max(g.id for g in self.groups) + 1)
        counts = {}
        for group in self.groups:
            kept = group.size - int(removed[group.id])
            counts[group.id] = kept_count(group.size, 1.0 - kept / group.size, self.round_to)
        return counts

    def prune_to(self, sparsity):
        """Scores, decides and applies the masks for `sparsity` now."""
        keep = self.decide(sparsity)
        self.set_keep(keep)
        for wrapper in self.wrappers.values():
            wrapper.reset_taylor_scores()
        return keep

    def update(self, step):
        """Recomputes masks if the schedule says so at `step`.

        Returns:
          Whether masks were recomputed.
        """
        if not self.pruning_schedule.should_prune(step):
            return False
        sparsity = self.pruning_schedule.sparsity(step)
        self.prune_to(sparsity)
        logging.vlog(1, "ChannelPruner: step %d, channel sparsity %.4f", step, sparsity)
        return True

    def summary(self, print_fn=None):
        """The dependency table with kept/total channels and importance notes.

        Returns:
          The table as a string.
        """
        keep = self.graph.group_keep(self.current_keep())
        text = self.graph.summary(keep=keep)
        if self.notes:
            text += "\n" + "\n".join(f"group {g}: {note}" for g, note in sorted(self.notes.items()))
        if print_fn is not None:
            print_fn(text)
        return text


def get_channel_pruner(model):
    """The `ChannelPruner` of a model from `prune_channels` (rebuilt if needed).

    Raises:
      ValueError: If the model has no `PruneChannels` wrappers.
    """
    wrappers = [s.operation for s in trace_lib.trace(model).sites
                if isinstance(s.operation, PruneChannels)]
    if not wrappers:
        raise ValueError(
            f"Model '{model.name}' has no PruneChannels wrappers; call "
            "tfprune.prune_channels(model, schedule) first."
        )
    pruner = wrappers[0]._channel_pruner
    if pruner is None:
        pruner = ChannelPruner.from_wrappers(model, wrappers)
    return pruner


def _copy_layer(layer, used):
    config = layer.get_config()
    config["name"] = surgery._unique_name(layer.name, used)
    clone = layer_copies.from_config(layer, config)
    values = layer.get_weights()

    def set_weights(new):
        if values:
            new.set_weights(values)

    return clone, set_weights


def _warn_nothing_prunable(model, graph):
    channels_first = sorted({
        site.operation.name for site in graph.trace.sites
        if getattr(site.operation, "data_format", None) == "channels_first"
    })
    if channels_first:
        reason = (
            f"layers {channels_first} use data_format='channels_first', and tfprune "
            "prunes channels on the last axis only. Build the model channels_last (the "
            "Keras default) and copy the weights, then prune"
        )
    else:
        reason = "see tfprune.DependencyGraph(model).summary() for why each group is kept"
    logging.warning("prune_channels: model '%s' has no channel group that can be pruned: %s.",
                    model.name, reason)


def prune_channels(model, pruning_schedule, importance="l2", round_to=1,
                   global_pruning=False, ignored_layers=None, plan=None):
    """Wraps a model so that whole channels are pruned on a schedule.

    Finds the groups of coupled channels (`tfprune.DependencyGraph`), wraps
    each layer with removable channels in `PruneChannels`, and computes the
    masks for step 0, so `tfprune.shrink(prune_channels(model,
    tfprune.ConstantSparsity(0.5, 0)))` is one-shot pruning. For gradual
    pruning, train with `callbacks=[tfprune.UpdatePruningStep()]`, then call
    `tfprune.shrink` for the thinner model. The model is copied (nested models
    are flattened into the copy); the original is left untouched. Model
    outputs never change width.

    Args:
      model: A Keras 3 Sequential or functional model.
      pruning_schedule: A `tfprune.PruningSchedule`; its sparsity is the
        fraction of channels removed from each group.
      importance: `"l1"`, `"l2"`, `"bn_scale"`, `"taylor"` or a callable
        `fn(group) -> scores` (see `tfprune.importance`).
      round_to: Kept channels per group are a multiple of this (8 or 16
        suit XNNPACK); no group is ever emptied.
      global_pruning: Rank channels across groups instead of pruning every
        group by the same ratio.
      ignored_layers: Layers or layer names whose channels must not change.
      plan: Per-group targets instead of one ratio: a
        `tfprune.planning.ChannelPlan` (e.g. from `tflite_export.plan`), its
        config, a `{group key: kept channels}` dict or a saved plan's path.
        Each planned group ends at its count when the schedule reaches its
        final sparsity (the schedule then only sets the pace); groups the
        plan leaves out keep their channels.

    Returns:
      A functional model with `PruneChannels` wrappers.

    Raises:
      ValueError: If the model is subclassed or already wrapped, an ignored
        layer is not in the model, or an argument is out of range.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            "tfprune.prune_channels needs a keras.Model (Sequential or functional). "
            f"Received: {type(model).__name__}"
        )
    _check_schedule(pruning_schedule)
    importance_lib.validate(importance)
    _check_round_to(round_to)
    plan = _check_plan(plan, global_pruning)
    graph = graph_lib.DependencyGraph(model, ignored_layers=ignored_layers)
    if plan is not None:
        plan.counts(graph)  # A plan for another model fails here, before any copy.
    if not graph.prunable_groups:
        _warn_nothing_prunable(model, graph)
    wrapped_sites = [s for s in graph.trace.sites if isinstance(s.operation, MaskedWeightsWrapper)]
    if wrapped_sites:
        raise ValueError(
            f"Layer '{wrapped_sites[0].operation.name}' is already wrapped by "
            f"{type(wrapped_sites[0].operation).__name__}. Prune channels of the original "
            "model (or shrink/strip it first)."
        )
    ignored_names = ignored_layer_names(ignored_layers)
    to_wrap = {id(layer) for group in graph.prunable_groups for layer, _ in group.layers}
    params = dict(pruning_schedule=pruning_schedule, importance=importance,
                  round_to=round_to, global_pruning=global_pruning,
                  ignored_layers=ignored_names,
                  plan=None if plan is None else plan.get_config())

    def make_operation(site, used):
        layer = site.layer
        if not isinstance(layer, keras.layers.Layer):
            return surgery.copy_operation(layer), None
        clone, set_weights = _copy_layer(layer, used)
        if id(layer) not in to_wrap:
            return clone, set_weights
        name = surgery._unique_name(f"prune_channels_{layer.name}", used)
        wrapper = PruneChannels(clone, name=name, **params)
        return wrapper, lambda w: set_weights(w.layer)

    wrapped = surgery.replay(graph.trace, make_operation)
    pruner = ChannelPruner(wrapped, pruning_schedule, importance=importance, round_to=round_to,
                           global_pruning=global_pruning, ignored_layers=ignored_names or None,
                           plan=plan)
    if pruning_schedule.should_prune(0):
        pruner.prune_to(pruning_schedule.sparsity(0))
    return wrapped
