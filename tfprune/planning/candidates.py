"""Several plans that meet one budget, for a validation measurement to choose from.

The allocator minimizes a predicted loss that adds up groups cut one at a
time. That prediction is least reliable where it matters most: a group it
cuts to its floor (one-shot, a residual branch or a wide layer often looks
nearly free) can cost more after fine-tuning than its measurement said.
`candidate_plans` therefore gives a short list of plans that all meet the
budget by the cost model, from the most targeted to the most even:

- the allocation at the caller's `min_keep`;
- allocations with a higher floor per group (40%, 50%, 60%, 75% of its
  channels kept), where the budget allows one: the same loss model, kept
  from emptying any one group;
- the allocation by importance scores alone, if given;
- uniform pruning: the smallest share of every group that meets the budget.

A caller measures each (`PlanEvaluator`: validation loss after re-estimating
BatchNorm statistics) and keeps the best.
"""

import dataclasses

import numpy as np

from tfprune.planning.allocator import allocate, floor_count

FLOORS = (0.4, 0.5, 0.6, 0.75)


@dataclasses.dataclass
class Candidate:
    """One plan that meets the budget.

    Attributes:
      name: How it was made (e.g. `"allocation, min_keep 50%"`, `"uniform 42%"`).
      counts: `{group key: kept channels}`.
      cost: Its predicted cost.
    """

    name: str
    counts: dict
    cost: float


def candidate_plans(groups, cost, budget, loss, round_to=1, method="greedy", min_keep=0.1,
                    scores=None, floors=FLOORS):
    """Distinct plans meeting `cost(counts) <= budget` (see the module docstring).

    Args:
      groups: `{group key: size}` of the prunable groups.
      cost: A `CostModel` or `fn(counts) -> float`.
      budget: The cost to meet.
      loss: `fn(group key, kept) -> float`, the allocator's predicted loss.
      round_to: Kept counts are multiples of this (or the whole group).
      method: The allocator (`"greedy"` or `"knapsack"`).
      min_keep: No group keeps fewer than this fraction of its channels.
      scores: Optional second `fn(group key, kept) -> float` (e.g.
        `ScoreSensitivity`) to allocate by alone.
      floors: Higher per-group floors to try (fractions above `min_keep`).

    Returns:
      A list of `Candidate`, the allocation at `min_keep` first, without
      duplicates.

    Raises:
      ValueError: As `allocate`, if even the allocation at `min_keep` cannot
        meet the budget.
    """
    first = allocate(groups, cost, budget, loss, round_to=round_to, method=method,
                     min_keep=min_keep)
    found = [Candidate(f"allocation, min_keep {min_keep:.0%}", first.counts, first.cost)]
    for floor in sorted(f for f in floors if f > min_keep):
        try:
            made = allocate(groups, cost, budget, loss, round_to=round_to, method=method,
                            min_keep=floor)
        except ValueError:
            break  # Higher floors only cost more.
        found.append(Candidate(f"allocation, min_keep {floor:.0%}", made.counts, made.cost))
    if scores is not None:
        made = allocate(groups, cost, budget, scores, round_to=round_to, method=method,
                        min_keep=min_keep)
        found.append(Candidate("allocation by importance scores", made.counts, made.cost))
    even = uniform_plan(groups, cost, budget, round_to=round_to, min_keep=min_keep)
    if even is not None:
        found.append(even)
    unique, seen = [], set()
    for candidate in found:
        signature = tuple(sorted(candidate.counts.items()))
        if signature not in seen:
            seen.add(signature)
            unique.append(candidate)
    return unique


def uniform_plan(groups, cost, budget, round_to=1, min_keep=0.1, step=0.01):
    """The least-pruned uniform plan meeting the budget (a `Candidate`), or None.

    Every group loses the same share (`kept_count` rounding, as
    `prune_channels` with one sparsity), tried in `step`s from 0; no group
    keeps fewer than `min_keep` of its channels.
    """
    from tfprune.channel_pruning import kept_count

    for sparsity in np.arange(0.0, 1.0, step):
        counts = {}
        for key, size in groups.items():
            counts[key] = max(floor_count(size, round_to, min_keep),
                              kept_count(size, float(sparsity), round_to))
        value = float(cost(counts))
        if value <= budget * (1 + 1e-9):
            return Candidate(f"uniform {sparsity:.0%}", counts, value)
    return None
