"""The closed loop: a channel plan that meets a measured budget.

`plan_for_budget(model, latency_ms=4.0)`:

1. Gets a latency table (`tflite_export.latency_table`: measured, or loaded
   when it matches the model, precision, threads and device) and/or the
   exact MACs and parameter cost models (`tfprune.planning.count_site_costs`).
2. Round by round: `tfprune.planning.allocate` chooses each group's kept
   channels so that the predicted cost meets the allocator's budget at least
   predicted accuracy loss; the plan is applied one-shot
   (`prune_channels(model, ConstantSparsity(0.5, 0), plan=...)`, then
   `shrink`), converted and measured as a whole model. Within the tolerance
   (by default between 0.9 and 1.0 times the budget: met without waste) it
   stops. Otherwise the allocator's budget is scaled by what was wanted over
   what was measured (tightened when the model was too slow, loosened when it
   wasted more than the tolerance allows) and the groups are allocated again,
   for at most `max_rounds` rounds.
3. Returns a `PlanResult`: the plan (a `tfprune.planning.ChannelPlan`, with
   its budget and rounds), the shrunk planned model, and every round's
   predicted and measured numbers. If no round was within the tolerance the
   result says so (`met`, `within_tolerance`) and keeps the best round: the
   one that met the budget at the least predicted loss, or else the closest.

The first round aims at the middle of the tolerance band, so that the
measurement noise of a shared machine has room on both sides.
"""

import dataclasses
import os
import time

import numpy as np
from absl import logging

from tflite_export import latency_table as table_lib

_BYTES_PER_WEIGHT = {"int8": 1, "float32": 4}
_KINDS = ("latency_ms", "macs", "params", "size_kb")


@dataclasses.dataclass
class PlanResult:
    """What `plan_for_budget` found.

    Attributes:
      plan: The `tfprune.planning.ChannelPlan` of the chosen round (its
        `budget` and `info` say what it was made for and how it did).
      model: The model pruned one-shot to the plan and shrunk (fine-tune it).
      budget: `{kind: value}` asked for (`latency_ms`, `macs`, `params`,
        `size_kb`), with `precision` and `num_threads`.
      rounds: One dict per round: `round`, `allocator_budget`, `predicted`
        and `measured` (`{kind: value}`), `macs`, `params`, `size_bytes`,
        `latency_ms`, `met`, `within_tolerance`; with validation data,
        `candidates` (each plan considered: `name`, `counts`,
        `predicted_cost`, `validation_loss`) and `chosen_by` (the name of the
        one measured).
      chosen: Index in `rounds` of the round whose plan was kept.
      met: Whether the chosen round's measured values meet every budget.
      within_tolerance: Whether they are also at least the tolerance's lower
        fraction of the budget (no waste).
      dense: Measured numbers of the unpruned model (`latency_ms`,
        `size_bytes`, `macs`, `params`, as far as measured).
      groups: `{group key: channels}` of the prunable groups.
      table: The `LatencyTable` used, or None.
      tolerance: `(low, high)` fractions of the budget.
      elapsed_s: Seconds the planning took (table included).
      stopped: Why the loop ended: `"within"` (tolerance reached),
        `"max_rounds"`, `"repeat"` (the allocator gave a plan already
        measured: no plan at this `round_to` lands closer), or `"thinnest"`
        (even the thinnest plan `min_keep` allows was measured).
    """

    plan: object
    model: object
    budget: dict
    rounds: list
    chosen: int
    met: bool
    within_tolerance: bool
    dense: dict
    groups: dict
    table: object = None
    tolerance: tuple = (0.9, 1.0)
    elapsed_s: float = 0.0
    stopped: str = "within"

    @property
    def measured(self):
        """The chosen round's measured values (`{kind: value}`)."""
        return self.rounds[self.chosen]["measured"]

    @property
    def predicted(self):
        """The chosen round's predicted values (`{kind: value}`)."""
        return self.rounds[self.chosen]["predicted"]

    def export_budget(self):
        """The `budget=` dict for `tflite_export.export` (shown in its report)."""
        out = {k: self.budget[k] for k in _KINDS if k in self.budget}
        out["num_threads"] = self.budget.get("num_threads", 1)
        out["rounds"] = len(self.rounds)
        names = {"latency_ms": "predicted_ms", "size_kb": "predicted_kb",
                 "macs": "predicted_macs", "params": "predicted_params"}
        for kind, value in self.predicted.items():
            out[names[kind]] = value
        return out

    def status(self):
        """One line: met within the tolerance, met with waste, or missed, and in how many rounds."""
        parts = []
        for kind in _KINDS:
            if kind in self.budget:
                value = self.measured.get(kind)
                parts.append(f"{_format(kind, value)} measured for a budget of "
                             f"{_format(kind, self.budget[kind])} "
                             f"({value / self.budget[kind]:.2f}x)")
        n = len(self.rounds)
        rounds = f"{n} round{'s' if n != 1 else ''}"
        low, high = self.tolerance
        if self.within_tolerance and all(self.plan.targets.get(k, size) == size
                                         for k, size in self.groups.items()):
            verdict = "The unpruned model already meets the budget: nothing to remove"
        elif self.within_tolerance:
            verdict = f"Budget met within [{low:g}, {high:g}] x in {rounds}"
        elif self.met:
            verdict = f"Budget met in {rounds}, but below {low:g} x the budget ({self._why()})"
        else:
            verdict = (f"Budget MISSED after {rounds} (round {self.chosen + 1} kept, the "
                       f"closest; {self._why()})")
        return f"{verdict}: " + "; ".join(parts) + "."

    def _why(self):
        return {"max_rounds": "max_rounds reached; allow more rounds",
                "repeat": "the allocator found no other plan: a lower round_to gives finer "
                          "steps",
                "thinnest": "even the thinnest plan min_keep allows misses: lower min_keep or "
                            "raise the budget",
                "within": ""}.get(self.stopped, self.stopped)

    def summary(self):
        """The plan (kept/total per group) and every round, as text."""
        wanted = ", ".join(f"{k}={_format(k, self.budget[k])}" for k in _KINDS
                           if k in self.budget)
        lines = [f"Plan for {wanted} ({self.budget.get('precision')}, "
                 f"{self.budget.get('num_threads')} thread(s)):",
                 "", "| group | kept / total |", "|---|---|"]
        for key, size in self.groups.items():
            kept = self.plan.targets.get(key, size)
            lines.append(f"| {key} | {kept} / {size}" + (" (all)" if kept == size else "")
                         + " |")
        kinds = [k for k in _KINDS if k in self.budget]
        header = ["round", "allocator budget"]
        for kind in kinds:
            header += [f"predicted {kind}", f"measured {kind}"]
        header += ["MACs", "params", "within"]
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        dense = ["dense", ""]
        for kind in kinds:
            dense += ["", _format(kind, self.dense.get(kind))]
        dense += [f"{self.dense.get('macs', 0):,}", f"{self.dense.get('params', 0):,}", ""]
        lines.append("| " + " | ".join(dense) + " |")
        for r in self.rounds:
            cells = [str(r["round"]) + (" (kept)" if r["round"] == self.chosen + 1 else ""),
                     ", ".join(_format(k, v) for k, v in r["allocator_budget"].items())]
            for kind in kinds:
                cells += [_format(kind, r["predicted"].get(kind)),
                          _format(kind, r["measured"].get(kind))]
            cells += [f"{r['macs']:,}", f"{r['params']:,}",
                      "yes" if r["within_tolerance"] else ("met" if r["met"] else "no")]
            lines.append("| " + " | ".join(cells) + " |")
        considered = self.rounds[self.chosen].get("candidates") or []
        if considered:
            lines += ["", f"Round {self.chosen + 1} chose among {len(considered)} plans meeting "
                      "the allocator budget, by validation loss after re-estimating BatchNorm "
                      "statistics:", "", "| candidate | validation loss | kept per group |",
                      "|---|---|---|"]
            for c in considered:
                mark = " (chosen)" if c["name"] == self.rounds[self.chosen]["chosen_by"] else ""
                lines.append(f"| {c['name']}{mark} | {c['validation_loss']:.4f} | "
                             + ", ".join(str(v) for v in c["counts"].values()) + " |")
        lines += ["", self.status(), f"Planning took {self.elapsed_s:.0f} s."]
        return "\n".join(lines)


def _format(kind, value):
    if value is None:
        return "n/a"
    if kind == "latency_ms":
        return f"{value:.3f} ms"
    if kind == "size_kb":
        return f"{value:.1f} KiB"
    return f"{value:,.0f}"


class _Budget:
    """One budget: its target, the cost model the allocator uses, and how it is measured."""

    def __init__(self, kind, target, cost):
        self.kind = kind
        self.target = float(target)
        self.cost = cost


def _check_budgets(latency_ms, macs, params, size_kb):
    given = {k: v for k, v in (("latency_ms", latency_ms), ("macs", macs), ("params", params),
                               ("size_kb", size_kb)) if v is not None}
    if not given:
        raise ValueError("Give a budget: latency_ms=, macs=, params= or size_kb= "
                         "(CLI: --latency_ms, --macs, --params, --size_kb).")
    for kind, value in given.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                or not np.isfinite(value) or value <= 0:
            raise ValueError(f"{kind}={value!r} must be a positive number.")
    return given


def _check_tolerance(tolerance):
    try:
        low, high = (float(t) for t in tolerance)
    except (TypeError, ValueError):
        raise ValueError(f"tolerance={tolerance!r} must be a pair (low, high) of fractions of "
                         "the budget, e.g. (0.9, 1.0).") from None
    if not 0 < low < high:
        raise ValueError(f"tolerance={tolerance!r}: need 0 < low < high, e.g. (0.9, 1.0).")
    return low, high


class _Combined:
    """`max over budgets of cost_k(counts) / allocator budget_k`, for several budgets at once."""

    def __init__(self, budgets, targets):
        self.parts = [(b.cost, targets[b.kind]) for b in budgets]

    def __call__(self, counts):
        return max(cost(counts) / target for cost, target in self.parts)


def _get_table(model, table, precision, num_threads, round_to, levels, runner,
               representative_data, progress):
    """A `LatencyTable`: the given one (checked), loaded from a path, or measured."""
    device = runner.device()
    if isinstance(table, table_lib.LatencyTable):
        table.check(model=model, precision=precision, num_threads=num_threads, device=device)
        return table
    path = None if table is None else os.fspath(table)
    if path is not None and os.path.exists(path):
        try:
            found = table_lib.LatencyTable.load(path, model=model, precision=precision,
                                                num_threads=num_threads, device=device)
            logging.info("Using the latency table %s", path)
            return found
        except ValueError as e:
            if "is not a latency table" in str(e):
                raise ValueError(f"table={path!r} exists and is not a latency table; choose "
                                 "another path (it would be replaced).") from None
            logging.warning("%s Measuring a new table into %s.", e, path)
    measured = table_lib.measure(model, precision=precision, num_threads=num_threads,
                                 round_to=round_to, levels=levels,
                                 representative_data=representative_data, runner=runner,
                                 progress=progress)
    if path is not None:
        measured.save(path)
        logging.info("Saved the latency table to %s", path)
    return measured


class CombinedSensitivity:
    """Measured loss increase, with importance scores to tell apart what it cannot.

    A few hundred validation examples measure large losses well and small ones
    not at all: cutting a wide, redundant layer often measures as free, and a
    free step is taken before any other however little it saves. Adding a small
    share of the importance-score loss (`tfprune.planning.ScoreSensitivity`:
    the share of a group's importance its removed channels carry) keeps the
    measured ranking where it speaks and makes "free" steps cost what their
    scores say.

    Args:
      measured: `fn(group key, kept) -> loss` from validation data (e.g.
        `tfprune.planning.MeasuredSensitivity`).
      scores: `fn(group key, kept) -> share` (e.g. `ScoreSensitivity`).
      groups: `{group key: channels}`, to find the largest measured loss.
      weight: The scores' weight, as a fraction of the largest measured loss
        (at a quarter of any group's channels).
    """

    def __init__(self, measured, scores, groups, weight=0.02):
        self.measured = measured
        self.scores = scores
        largest = max((measured(k, max(1, size // 4)) for k, size in groups.items()),
                      default=0.0)
        self.weight = weight * (largest if largest > 0 else 1.0)

    def __call__(self, key, kept):
        return self.measured(key, kept) + self.weight * self.scores(key, kept)


def _sensitivity(model, graph, sensitivity, importance, round_to, progress):
    """`(loss, scores, evaluator)`: the allocator's loss, and with validation data the scores
    and a `PlanEvaluator` that chooses among candidate plans (else None, None)."""
    from tfprune import planning

    if sensitivity is None or isinstance(sensitivity, str):
        return planning.ScoreSensitivity(graph, sensitivity or importance), None, None
    if isinstance(sensitivity, (tuple, list)) and len(sensitivity) == 2:
        x, y = sensitivity
        # One array, or one per model input.
        inputs = planning.sensitivity.as_inputs(x)
        x = inputs if isinstance(x, (list, tuple)) else inputs[0]
        y = np.asarray(y)
        count = len(inputs[0])
        if count == 0 or count != len(y):
            raise ValueError(f"sensitivity=(x, y) needs as many labels as examples, at least "
                             f"one. Received {count} examples and {len(y)} labels.")
        measured = planning.MeasuredSensitivity(
            model, x, y, round_to=round_to, importance=importance,
            progress=lambda done, total, key: progress(done, total, f"sensitivity {key}"))
        groups = {planning.group_key(g): g.size for g in graph.prunable_groups}
        scores = planning.ScoreSensitivity(graph, importance)
        return (CombinedSensitivity(measured, scores, groups), scores,
                planning.PlanEvaluator(model, x, y, importance=importance))
    if callable(sensitivity):
        return sensitivity, None, None
    raise ValueError(f"sensitivity={sensitivity!r} must be None (importance scores), an "
                     "importance name, (x, y) validation data, or fn(group key, kept) -> loss.")


def _best_candidate(candidates, evaluator, progress, number):
    """The candidate with the least validation loss, and a record of every candidate."""
    if len(candidates) == 1:
        return candidates[0].counts, candidates[0].name, []
    records = []
    for i, candidate in enumerate(candidates):
        loss = evaluator(candidate.counts)
        records.append({"name": candidate.name, "counts": dict(candidate.counts),
                        "predicted_cost": float(candidate.cost), "validation_loss": loss})
        progress(i + 1, len(candidates), f"round {number}: candidate '{candidate.name}': "
                 f"validation loss {loss:.4f}")
    best = min(range(len(records)), key=lambda i: records[i]["validation_loss"])
    return candidates[best].counts, records[best]["name"], records


def plan_for_budget(model, latency_ms=None, macs=None, params=None, size_kb=None,
                    precision="int8", num_threads=1, representative_data=None, table=None,
                    sensitivity=None, importance="l2", round_to=8, levels=3, method="greedy",
                    max_rounds=4, tolerance=(0.9, 1.0), min_keep=0.25, android=False,
                    serial=None, benchmark_binary=None, adb_path=None, runner=None,
                    progress=None):
    """Plans each channel group's width so that the exported model meets a budget.

    Several budgets may be given together; the plan then meets all of them.

    Args:
      model: A Keras 3 model with fixed input sizes (not wrapped).
      latency_ms: Latency budget of the converted model (ms) at `num_threads`
        threads, on this machine (see `latency_table.HostRunner` for the
        statistic) or the Android device (`benchmark_model`'s median, else
        its mean).
      macs: MACs budget (multiply-accumulates per example).
      params: Parameter budget of the shrunk Keras model.
      size_kb: `.tflite` file size budget (KiB, 1024 bytes) at `precision`.
      precision: `"int8"` (full-integer) or `"float32"`: how the model is
        converted to measure latency and size.
      num_threads: Runtime threads for latency.
      representative_data: Examples to calibrate INT8 conversions of whole
        models (an array or a list of arrays per input); None: random data
        (latency and size do not depend on it).
      table: A `LatencyTable`, or the path of one: loaded if it exists and
        was measured for this model, precision, threads and device, else
        measured and saved there. None measures a table (latency budgets
        only).
      sensitivity: How the accuracy loss of narrowing a group is predicted:
        None (the `importance` scores, `tfprune.planning.ScoreSensitivity`),
        `(x, y)` validation examples (`MeasuredSensitivity`: the loss
        increase when one group alone is cut, with the scores as a tie-breaker,
        see `CombinedSensitivity`), or `fn(group key, kept) -> loss`. With
        `(x, y)`, each round also chooses among several plans that meet the
        budget by the cost model (`tfprune.planning.candidate_plans`: the
        allocation, allocations with higher per-group floors, the allocation
        by scores, uniform pruning) the one whose one-shot pruned model has
        the least loss on `(x, y)` after re-estimating its BatchNorm
        statistics (`tfprune.planning.PlanEvaluator`).
      importance: Channel importance used to rank channels (as
        `prune_channels`).
      round_to: Kept channels are multiples of this (8 or 16 suit XNNPACK).
      levels: Grid points per group of a measured latency table (see
        `latency_table.measure`).
      method: Allocator: `"greedy"` or `"knapsack"` (see
        `tfprune.planning.allocate`).
      max_rounds: Measured rounds at most (>= 1).
      tolerance: `(low, high)`: a round is accepted when every measured value
        is at most `high` x its budget and the binding one at least `low` x.
      min_keep: No group keeps fewer than this fraction of its channels.
      android: Measure latency on an Android device over adb.
      serial: adb serial of the device (None: the only online one).
      benchmark_binary: `benchmark_model` built for the device ABI (Android).
      adb_path: Path of `adb` (None: found on PATH).
      runner: Measure with this object instead (`time(contents, names=,
        whole=, progress=)` and `device()`; see `latency_table.HostRunner`).
      progress: Optional `fn(done, total, message)` for table measurement and
        rounds; by default progress goes to absl logging.

    Returns:
      A `PlanResult`.

    Raises:
      ValueError: If no budget is given, an argument is invalid, the model
        has no prunable group, or even the thinnest allowed plan misses the
        budget by the cost model (the message gives the lowest reachable).
    """
    import tfprune
    from tfprune import planning

    started = time.perf_counter()
    targets = _check_budgets(latency_ms, macs, params, size_kb)
    low, high = _check_tolerance(tolerance)
    if precision not in table_lib.PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {table_lib.PRECISIONS}.")
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise ValueError(f"max_rounds={max_rounds!r} must be an integer >= 1.")
    if method not in ("greedy", "knapsack"):
        raise ValueError(f"method={method!r} must be 'greedy' or 'knapsack'.")
    progress = progress or table_lib._log_progress
    table_lib._input_specs(model)
    graph = tfprune.DependencyGraph(model)
    if not graph.prunable_groups:
        raise ValueError(f"Model '{model.name}' has no prunable channel group, so no plan can "
                         "change its cost (see tfprune.DependencyGraph(model).summary()).")
    groups = {planning.group_key(g): g.size for g in graph.prunable_groups}
    needs_tflite = "latency_ms" in targets or "size_kb" in targets
    if runner is None and "latency_ms" in targets:
        runner = table_lib.make_runner(num_threads, android=android, serial=serial,
                                       benchmark_binary=benchmark_binary, adb_path=adb_path)
    if runner is not None:
        num_threads = int(getattr(runner, "num_threads", num_threads))

    dense = {"macs": tfprune.count_macs(model), "params": int(model.count_params())}
    budgets = []
    lat_table = None
    if "latency_ms" in targets:
        lat_table = _get_table(model, table, precision, num_threads, round_to, levels, runner,
                               representative_data, progress)
        cost = lat_table.cost_model
        dense["latency_ms"] = lat_table.dense_ms
        budgets.append(_Budget("latency_ms", targets["latency_ms"], cost))
    if "macs" in targets:
        cost = planning.count_site_costs(graph, "macs", round_to=round_to)
        cost.base = dense["macs"] - cost.sites_sum(groups)
        budgets.append(_Budget("macs", targets["macs"], cost))
    if "params" in targets or "size_kb" in targets:
        counted = planning.count_site_costs(graph, "params", round_to=round_to)
        if "params" in targets:
            cost = planning.CostModel(counted.sites, base=dense["params"] - counted.sites_sum(
                groups), kind="params", unit="parameters")
            budgets.append(_Budget("params", targets["params"], cost))
        if "size_kb" in targets:
            content = table_lib.to_tflite(model, precision, representative_data,
                                          samples=table_lib._MODEL_SAMPLES)
            dense["size_bytes"] = len(content)
            dense["size_kb"] = len(content) / 1024
            scale = _BYTES_PER_WEIGHT[precision] / 1024
            cost = planning.CostModel(counted.sites, base=dense["size_kb"] - scale *
                                      counted.sites_sum(groups), scale=scale, kind="size",
                                      unit="KiB")
            budgets.append(_Budget("size_kb", targets["size_kb"], cost))
    loss, scores, evaluator = _sensitivity(model, graph, sensitivity, importance, round_to,
                                           progress)

    # Measured kinds aim at the middle of the band (room for noise on both sides); MACs
    # are counted exactly, so they aim at the budget itself.
    goal = (low + high) / 2
    aims = {b.kind: high if b.kind == "macs" else goal for b in budgets}
    allocator_targets = {b.kind: b.target * aims[b.kind] for b in budgets}

    def allocate(number):
        """`(counts, chosen candidate name or None, candidate records)` for this round."""
        if len(budgets) == 1:
            cost, value = budgets[0].cost, allocator_targets[budgets[0].kind]
        else:
            cost, value = _Combined(budgets, allocator_targets), 1.0
        if evaluator is None:
            counts = planning.allocate(groups, cost, value, loss, round_to=round_to,
                                       method=method, min_keep=min_keep).counts
            return counts, None, []
        candidates = planning.candidate_plans(groups, cost, value, loss, round_to=round_to,
                                              method=method, min_keep=min_keep, scores=scores)
        return _best_candidate(candidates, evaluator, progress, number)

    thinnest = {k: planning.floor_count(size, round_to, min_keep) for k, size in groups.items()}
    rounds, measured_plans, models, stopped = [], {}, [], "max_rounds"
    for number in range(1, max_rounds + 1):
        try:
            counts, chosen_by, candidates = allocate(number)
        except ValueError as e:
            if rounds:
                # Tightened below the thinnest plan min_keep allows: measure that one, once.
                logging.info("Round %d: %s", number, e)
                counts, stopped = thinnest, "thinnest"
                chosen_by, candidates = "thinnest plan min_keep allows", []
            else:
                # Aiming inside the band was too ambitious: aim at the budget itself.
                aims = {k: high for k in aims}
                allocator_targets = {b.kind: b.target * high for b in budgets}
                try:
                    counts, chosen_by, candidates = allocate(number)
                except ValueError:
                    wanted = ", ".join(f"{k}={_format(k, v)}" for k, v in targets.items())
                    raise ValueError(f"The budget ({wanted}) is out of reach by the cost model: "
                                     f"{e} (min_keep={min_keep:g}).") from None
        signature = tuple(sorted(counts.items()))
        if signature in measured_plans:
            # The allocator gave a plan measured before: nothing new to learn.
            logging.info("Round %d would measure round %d's plan again; stopping.", number,
                         measured_plans[signature])
            stopped = "thinnest" if stopped == "thinnest" else "repeat"
            break
        measured_plans[signature] = number
        small = table_lib.planned_model(model, counts, importance=importance)
        measured, info = _measure_round(small, budgets, precision, representative_data,
                                        runner if needs_tflite else None)
        predicted = {b.kind: float(b.cost(counts)) for b in budgets}
        ratios = {b.kind: measured[b.kind] / b.target for b in budgets}
        met = all(r <= high for r in ratios.values())
        # Keeping every channel wastes nothing that pruning could give back.
        unpruned = all(counts[k] == size for k, size in groups.items())
        within = met and (max(ratios.values()) >= low or unpruned)
        rounds.append({"round": number,
                       "allocator_budget": {k: float(v) for k, v in allocator_targets.items()},
                       "predicted": predicted, "measured": measured, "counts": dict(counts),
                       "loss": float(sum(loss(k, v) for k, v in counts.items())), "met": met,
                       "within_tolerance": within, "chosen_by": chosen_by,
                       "candidates": candidates, **info})
        models.append(small)
        progress(number, max_rounds, f"round {number}: " + ", ".join(
            f"{k} predicted {_format(k, predicted[k])}, measured {_format(k, measured[k])} "
            f"({ratios[k]:.2f}x budget)" for k in predicted)
            + (" - within tolerance" if within else ""))
        if within:
            stopped = "within"
            break
        if stopped == "thinnest":
            break
        # Scale each allocator budget by wanted / measured, from this round's prediction.
        for b in budgets:
            allocator_targets[b.kind] = (predicted[b.kind] * b.target * aims[b.kind]
                                         / measured[b.kind])

    chosen = _choose(rounds, targets)
    best = rounds[chosen]
    budget = dict(targets, precision=precision, num_threads=num_threads)
    info = {"rounds": len(rounds), "chosen_round": chosen + 1, "met": best["met"],
            "within_tolerance": best["within_tolerance"], "tolerance": [low, high],
            "predicted": best["predicted"], "measured": best["measured"],
            "dense": dense, "method": method, "round_to": round_to,
            "chosen_by": best["chosen_by"], "candidates": best["candidates"],
            "history": [{k: r[k] for k in ("round", "allocator_budget", "predicted",
                                           "measured", "met", "within_tolerance",
                                           "chosen_by")}
                        for r in rounds]}
    if lat_table is not None:
        info["device"] = lat_table.key.get("device")
        info["table_validation_error"] = lat_table.calibration.get("validation_error")
    plan = planning.ChannelPlan(best["counts"], budget=budget, info=info)
    info["stopped"] = stopped
    result = PlanResult(plan=plan, model=models[chosen], budget=budget, rounds=rounds,
                        chosen=chosen, met=best["met"], within_tolerance=best["within_tolerance"],
                        dense=dense, groups=groups, table=lat_table, tolerance=(low, high),
                        elapsed_s=time.perf_counter() - started, stopped=stopped)
    plan.info["elapsed_s"] = round(result.elapsed_s, 1)
    (logging.info if result.met else logging.warning)("%s", result.status())
    return result


def _measure_round(small, budgets, precision, representative_data, runner):
    """`({kind: measured}, {macs, params, size_bytes, latency_ms})` of a shrunk model."""
    import tfprune

    info = {"macs": int(tfprune.count_macs(small)), "params": int(small.count_params()),
            "size_bytes": None, "latency_ms": None}
    kinds = {b.kind for b in budgets}
    if "latency_ms" in kinds or "size_kb" in kinds:
        content = table_lib.to_tflite(small, precision, representative_data,
                                      samples=table_lib._MODEL_SAMPLES)
        info["size_bytes"] = len(content)
        if "latency_ms" in kinds:
            info["latency_ms"] = float(runner.time([content], names=[small.name],
                                                   whole=[True])[0])
    measured = {}
    for kind in kinds:
        measured[kind] = {"latency_ms": info["latency_ms"], "macs": info["macs"],
                          "params": info["params"],
                          "size_kb": None if info["size_bytes"] is None
                          else info["size_bytes"] / 1024}[kind]
    return measured, info


def _choose(rounds, targets):
    """The round to keep: the first within tolerance, else the best met one, else the closest."""
    for i, r in enumerate(rounds):
        if r["within_tolerance"]:
            return i
    met = [i for i, r in enumerate(rounds) if r["met"]]
    if met:
        # Least waste: the met round with the least predicted accuracy loss.
        return min(met, key=lambda i: rounds[i]["loss"])
    return min(range(len(rounds)), key=lambda i: max(
        rounds[i]["measured"][k] / targets[k] for k in targets))
