"""The allocator: how many channels each group keeps to meet a budget.

Given a cost model (latency, MACs, parameters, file size), a budget and a
predicted accuracy loss per group and kept count, `allocate` chooses kept
counts so that the predicted cost meets the budget with the least predicted
loss. Two methods:

- `"greedy"` (default): start with every channel kept; repeatedly take
  `round_to` channels from the group whose next step costs the least loss
  per unit of cost saved (NetAdapt's and HALP's ratio), re-evaluating the
  cost model with every other group's current width, until the budget is
  met. It uses the cost model as it is (layers between two pruned groups
  cost what both widths make them cost).
- `"knapsack"`: a multiple-choice knapsack solved exactly by dynamic
  programming over discretized costs, on the separable approximation of the
  cost model (each group's saving measured with every other group whole).
  Exact when costs add up group by group; otherwise a good start that the
  greedy pass then makes meet the budget.

Both end with a local search: while some group's next larger count still
fits the budget, the step that recovers the most loss per unit of cost is
taken back (regrowing: it spends what the last removal step, or the
knapsack's conservative rounding of costs, left over); then, while growing
one group by a step and narrowing another by a step fits the budget and
lowers the loss, the best such exchange is made (and regrowing runs again).
The greedy path takes one group at a time and can end far below the budget
when steps are coarse; the exchanges fix that.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Allocation:
    """The allocator's answer.

    Attributes:
      counts: `{group key: kept channels}`.
      cost: The predicted cost of `counts`.
      loss: The predicted loss of `counts` (sum over groups).
      steps: How many removal steps the greedy pass took.
    """

    counts: dict
    cost: float
    loss: float
    steps: int = 0


def floor_count(size, round_to, min_keep):
    """The fewest channels a group of `size` may keep: `min_keep` of them, up to `round_to`."""
    if size <= round_to:
        return size
    return min(size, max(round_to, int(np.ceil(size * min_keep / round_to)) * round_to))


def _choices(size, round_to, min_keep):
    """Kept counts a group may take, largest first: `size`, then multiples of `round_to`."""
    lowest = floor_count(size, round_to, min_keep)
    if lowest >= size:
        return [size]
    counts = list(range((size - 1) // round_to * round_to, lowest - 1, -round_to))
    return [size] + [c for c in counts if 0 < c < size]


def _check(groups, budget):
    if not groups:
        raise ValueError("No channel group can be pruned: there is nothing to allocate.")
    if not np.isfinite(budget) or budget <= 0:
        raise ValueError(f"The budget must be a positive number. Received: {budget!r}")


def allocate(groups, cost, budget, loss, round_to=1, method="greedy", min_keep=0.1):
    """Chooses kept channels per group so that `cost(counts) <= budget` at least loss.

    Args:
      groups: `{group key: size}` of the prunable groups.
      cost: A `CostModel`, or any `fn(counts) -> float` over `{group key: kept}`.
      budget: The cost to meet.
      loss: `fn(group key, kept) -> float`: predicted accuracy loss of keeping
        `kept` channels of a group (0 when all are kept; larger when fewer).
      round_to: Kept counts are multiples of this (or the whole group).
      method: `"greedy"` or `"knapsack"` (see the module docstring).
      min_keep: No group keeps fewer than this fraction of its channels.

    Returns:
      An `Allocation`.

    Raises:
      ValueError: If the budget cannot be met even with every group at its
        minimum (the message gives the lowest reachable cost), or an argument
        is invalid.
    """
    groups = {str(k): int(v) for k, v in groups.items()}
    _check(groups, budget)
    if method not in ("greedy", "knapsack"):
        raise ValueError(f"method must be 'greedy' or 'knapsack'. Received: method={method!r}")
    choices = {k: _choices(size, round_to, min_keep) for k, size in groups.items()}
    counts = {k: size for k, size in groups.items()}
    if method == "knapsack":
        counts = _knapsack(choices, cost, budget, loss)
    counts, steps = _greedy(choices, cost, budget, loss, counts)
    counts = _regrow(choices, cost, budget, loss, counts)
    counts = _exchange(choices, cost, budget, loss, counts)
    total = cost(counts)
    if total > budget * (1 + 1e-9):
        floor = {k: c[-1] for k, c in choices.items()}
        raise ValueError(
            f"The budget {budget:.6g} cannot be met: even keeping {min_keep:.0%} of every "
            f"group's channels costs {cost(floor):.6g}. Raise the budget, lower min_keep, or "
            "prune groups that are kept now (see DependencyGraph.summary())."
        )
    return Allocation(counts=counts, cost=float(total),
                      loss=float(sum(loss(k, v) for k, v in counts.items())), steps=steps)


def _site_terms(cost):
    """Per-group incremental evaluation for a `CostModel`, or None for plain callables."""
    sites = getattr(cost, "sites", None)
    if sites is None or not hasattr(cost, "sites_of"):
        return None
    return cost


def _greedy(choices, cost, budget, loss, counts):
    counts = dict(counts)
    position = {k: choices[k].index(counts[k]) if counts[k] in choices[k] else 0 for k in choices}
    model = _site_terms(cost)
    site_values = [s(counts) for s in model.sites] if model is not None else None
    current = cost(counts)
    steps = 0
    while current > budget * (1 + 1e-9):
        best = None
        for key, options in choices.items():
            i = position[key]
            if i + 1 >= len(options):
                continue
            new = options[i + 1]
            trial = dict(counts)
            trial[key] = new
            if model is not None:
                saving = model.scale * sum(site_values[j] - model.sites[j](trial)
                                           for j in model.sites_of(key))
            else:
                saving = current - cost(trial)
            extra = loss(key, new) - loss(key, counts[key])
            if saving <= 0:
                continue
            # Least loss per unit of cost saved; among equal ratios (e.g. steps that lose
            # nothing), the one that saves the most.
            ratio = (max(extra, 0.0) / saving, -saving)
            if best is None or ratio < best[0]:
                best = (ratio, key, new)
        if best is None:
            break
        _, key, new = best
        counts[key] = new
        position[key] += 1
        if model is not None:
            for j in model.sites_of(key):
                site_values[j] = model.sites[j](counts)
        current = cost(counts)
        steps += 1
    return counts, steps


def _regrow(choices, cost, budget, loss, counts):
    """Takes back removal steps that fit in the budget, most loss recovered per cost first."""
    counts = dict(counts)
    limit = budget * (1 + 1e-9)
    current = cost(counts)
    if current > limit:
        return counts
    while True:
        best = None
        for key, options in choices.items():
            i = options.index(counts[key]) if counts[key] in options else 0
            if i == 0:
                continue
            trial = dict(counts)
            trial[key] = options[i - 1]
            total = cost(trial)
            if total > limit:
                continue
            # Steps that recover no predicted loss still fit: kept channels never hurt.
            recovered = max(loss(key, counts[key]) - loss(key, trial[key]), 0.0)
            extra = total - current
            ratio = np.inf if extra <= 0 else recovered / extra
            if best is None or ratio > best[0]:
                best = (ratio, key, trial[key], total)
        if best is None:
            return counts
        _, key, kept, current = best
        counts[key] = kept


def _exchange(choices, cost, budget, loss, counts, max_moves=100):
    """Grows one group by a step and narrows another by a step while that lowers the loss."""
    counts = dict(counts)
    limit = budget * (1 + 1e-9)
    if cost(counts) > limit:
        return counts
    for _ in range(max_moves):
        index = {k: options.index(counts[k]) if counts[k] in options else 0
                 for k, options in choices.items()}
        ups, downs = [], []
        for key, options in choices.items():
            i = index[key]
            if i > 0:
                ups.append((loss(key, counts[key]) - loss(key, options[i - 1]), key,
                            options[i - 1]))
            if i + 1 < len(options):
                downs.append((loss(key, options[i + 1]) - loss(key, counts[key]), key,
                              options[i + 1]))
        best = None
        for gain, up_key, up in sorted(ups, reverse=True):
            for extra, down_key, down in sorted(downs):
                change = gain - extra
                if down_key == up_key:
                    continue
                if change <= 1e-12 or (best is not None and change <= best[0]):
                    break  # Sorted: no later pair lowers the loss more.
                trial = dict(counts)
                trial[up_key], trial[down_key] = up, down
                if cost(trial) <= limit:
                    best = (change, trial)
                    break
        if best is None:
            return counts
        counts = _regrow(choices, cost, budget, loss, best[1])
    return counts


def _knapsack(choices, cost, budget, loss, bins=2000):
    """Multiple-choice knapsack on separable savings, by dynamic programming.

    Each group's saving at each kept count is measured with every other
    group whole; savings are discretized down (so a solution that reaches
    the needed saving in bins reaches it in cost too) into about `bins` units.
    """
    full = {k: options[0] for k, options in choices.items()}
    base = cost(full)
    need = base - budget
    if need <= 0:
        return full
    keys = list(choices)
    savings, losses = {}, {}
    for key in keys:
        row_s, row_l = [], []
        for kept in choices[key]:
            trial = dict(full)
            trial[key] = kept
            row_s.append(max(base - cost(trial), 0.0))
            row_l.append(loss(key, kept) - loss(key, choices[key][0]))
        savings[key], losses[key] = row_s, row_l
    total_saving = sum(max(s) for s in savings.values())
    if total_saving < need:
        return full  # Not reachable separably; the greedy pass takes over.
    unit = total_saving / bins
    shifts = {k: [int(np.floor(s / unit)) for s in savings[k]] for k in keys}
    size = sum(max(v) for v in shifts.values()) + 1
    best = np.full(size, np.inf)
    best[0] = 0.0
    picks = []
    for key in keys:
        new = np.full(size, np.inf)
        pick = np.zeros(size, dtype=np.int64)
        for c, (shift, extra) in enumerate(zip(shifts[key], losses[key])):
            shifted = np.full(size, np.inf)
            shifted[shift:] = best[:size - shift] + extra
            better = shifted < new
            new[better] = shifted[better]
            pick[better] = c
        best = new
        picks.append(pick)
    target = int(np.ceil(need / unit))
    reachable = np.arange(size) >= target
    if not np.any(np.isfinite(best) & reachable):
        return full
    b = int(np.argmin(np.where(reachable, best, np.inf)))
    counts = {}
    for key, pick in zip(reversed(keys), reversed(picks)):
        c = int(pick[b])
        counts[key] = choices[key][c]
        b -= shifts[key][c]
    return counts
