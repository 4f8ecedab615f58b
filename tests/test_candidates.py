"""`tfprune.planning.candidate_plans`: several plans meeting one budget, uniform among them."""

import numpy as np
import pytest

from tfprune.channel_pruning import kept_count
from tfprune.planning import CostModel, SiteCost, allocate, candidate_plans, uniform_plan

SIZES = {"a": 32, "b": 64, "c": 48}


def _cost():
    """Separable costs: group a is dear per channel, b cheap, c in between."""
    sites = []
    for key, per_channel in (("a", 3.0), ("b", 0.5), ("c", 1.0)):
        levels = list(range(8, SIZES[key] + 1, 8))
        sites.append(SiteCost(f"layer_{key}", [key], [levels],
                              np.array(levels, float) * per_channel))
    return CostModel(sites, base=10.0)


def _loss(key, kept):
    # Group a is almost free to cut one at a time: the allocator empties it first.
    weight = {"a": 0.01, "b": 1.0, "c": 0.5}[key]
    return weight * (1 - kept / SIZES[key]) ** 2


@pytest.mark.parametrize("fraction", [0.85, 0.7, 0.55])
def test_every_candidate_meets_the_budget_and_the_first_is_the_allocation(fraction):
    cost = _cost()
    budget = fraction * cost(SIZES)
    found = candidate_plans(SIZES, cost, budget, _loss, round_to=8, min_keep=0.25)
    first = allocate(SIZES, cost, budget, _loss, round_to=8, min_keep=0.25)
    assert found[0].counts == first.counts and found[0].name == "allocation, min_keep 25%"
    signatures = [tuple(sorted(c.counts.items())) for c in found]
    assert len(set(signatures)) == len(found)
    for candidate in found:
        assert cost(candidate.counts) <= budget * (1 + 1e-9)
        assert candidate.cost == pytest.approx(cost(candidate.counts))
        assert all(v % 8 == 0 and 0 < v <= SIZES[k] for k, v in candidate.counts.items())
    # Uniform pruning is among them (under its own name unless an allocation found it too).
    even = uniform_plan(SIZES, cost, budget, round_to=8, min_keep=0.25)
    assert tuple(sorted(even.counts.items())) in signatures


def test_higher_floors_keep_that_share_of_every_group():
    cost = _cost()
    budget = 0.55 * cost(SIZES)
    found = candidate_plans(SIZES, cost, budget, _loss, round_to=8, min_keep=0.25)
    assert found[0].counts["a"] == 8  # The allocation alone empties the nearly free group.
    floors = [c for c in found if c.name.startswith("allocation, min_keep") and c is not found[0]]
    assert floors
    for candidate in floors:
        share = float(candidate.name.split()[-1].rstrip("%")) / 100
        assert all(v >= share * SIZES[k] - 1e-9 for k, v in candidate.counts.items())


def test_scores_give_one_more_candidate():
    cost = _cost()
    budget = 0.7 * cost(SIZES)

    def scores(key, kept):
        return (1 - kept / SIZES[key]) * {"a": 1.0, "b": 0.01, "c": 0.5}[key]

    names = [c.name for c in candidate_plans(SIZES, cost, budget, _loss, round_to=8,
                                             min_keep=0.25, scores=scores)]
    assert "allocation by importance scores" in names


def test_uniform_plan_is_the_least_pruned_uniform_ratio_that_meets_the_budget():
    cost = _cost()
    budget = 0.6 * cost(SIZES)
    plan = uniform_plan(SIZES, cost, budget, round_to=8, min_keep=0.25)
    sparsity = float(plan.name.split()[-1].rstrip("%")) / 100
    assert plan.counts == {k: kept_count(n, sparsity, 8) for k, n in SIZES.items()}
    assert cost(plan.counts) <= budget
    # One step less pruning misses the budget.
    less = {k: kept_count(n, sparsity - 0.01, 8) for k, n in SIZES.items()}
    assert cost(less) > budget
    # Out of reach even at min_keep: no uniform plan.
    assert uniform_plan(SIZES, cost, 1.0, round_to=8, min_keep=0.25) is None


def test_an_unreachable_budget_raises_as_the_allocator_does():
    with pytest.raises(ValueError, match="cannot be met"):
        candidate_plans(SIZES, _cost(), 5.0, _loss, round_to=8, min_keep=0.25)
