"""`tfprune.planning.allocate` on synthetic cost tables whose optimum is known.

Separable tables (each site's cost depends on one group) are solved exactly
by the knapsack: its answer is compared with brute force over every
combination of kept counts. Non-separable (bilinear, convolution-like)
tables check that the greedy pass always meets the budget and that no
removal step is left that the budget could take back.
"""

import itertools

import numpy as np
import pytest

from tfprune.planning import CostModel, SiteCost, allocate
from tfprune.planning.allocator import _choices


def _separable(rng, num_groups=3, round_to=8):
    """Random increasing per-group cost curves (whole numbers) and convex losses."""
    sizes = {f"g{i}": int(rng.integers(2, 6)) * round_to for i in range(num_groups)}
    sites = []
    for key, size in sizes.items():
        levels = list(range(round_to, size + 1, round_to))
        values = np.cumsum(rng.integers(1, 6, len(levels))).astype(float)
        sites.append(SiteCost(f"layer_{key}", [key], [levels], values))
    weights = {k: rng.uniform(0.1, 2.0) for k in sizes}
    powers = {k: rng.uniform(1.0, 2.5) for k in sizes}

    def loss(key, kept):
        return weights[key] * ((sizes[key] - kept) / sizes[key]) ** powers[key]

    return sizes, CostModel(sites, base=1.0), loss


def _brute_force(sizes, cost, budget, loss, round_to, min_keep=0.1):
    choices = [_choices(size, round_to, min_keep) for size in sizes.values()]
    best = None
    for combo in itertools.product(*choices):
        counts = dict(zip(sizes, combo))
        if cost(counts) <= budget:
            total = sum(loss(k, v) for k, v in counts.items())
            if best is None or total < best[0]:
                best = (total, counts)
    return best


def test_knapsack_finds_the_optimum_of_separable_tables():
    # Costs are whole numbers and budgets half-way between two: the optimum
    # has at least 0.5 of slack, more than the knapsack's cost resolution
    # (total saving / 2000 per group) can lose.
    rng = np.random.default_rng(0)
    solved = 0
    for _ in range(40):
        sizes, cost, loss = _separable(rng, num_groups=int(rng.integers(2, 5)))
        budget = np.floor(cost(sizes) * rng.uniform(0.35, 0.9)) + 0.5
        best = _brute_force(sizes, cost, budget, loss, 8)
        if best is None:
            continue
        result = allocate(sizes, cost, budget, loss, round_to=8, method="knapsack")
        assert result.cost <= budget
        assert result.loss == pytest.approx(best[0], abs=1e-12), (result.counts, best)
        solved += 1
    assert solved >= 30


def test_greedy_takes_the_cheapest_loss_per_cost_first():
    # Linear costs and losses: the optimum empties the group with the lowest
    # loss per unit of cost (down to min_keep) before touching the next one.
    sizes = {"cheap": 64, "dear": 64}
    levels = list(range(8, 65, 8))
    cost = CostModel([SiteCost("a", ["cheap"], [levels], [2.0 * k for k in levels]),
                      SiteCost("b", ["dear"], [levels], [2.0 * k for k in levels])])
    per_channel = {"cheap": 0.001, "dear": 0.01}

    def loss(key, kept):
        return per_channel[key] * (sizes[key] - kept)

    # 256 units of cost: "cheap" can give 2 * (64 - 8) = 112; "dear" gives the rest.
    budget = cost(sizes) - 160.0
    for method in ("greedy", "knapsack"):
        result = allocate(sizes, cost, budget, loss, round_to=8, method=method)
        assert result.counts == {"cheap": 8, "dear": 40}, method
        assert result.cost == pytest.approx(budget)


def _bilinear(rng, num_groups=4, round_to=8):
    """A chain of convolutions: site i costs a_i * in_i * out_i (input of the first fixed)."""
    sizes = {f"conv{i}[out]": int(rng.integers(2, 9)) * round_to for i in range(num_groups)}
    keys = list(sizes)
    sites = []
    for i, key in enumerate(keys):
        a = rng.uniform(0.5, 2.0)
        out_levels = [round_to, sizes[key] // 2 // round_to * round_to or round_to, sizes[key]]
        out_levels = sorted(set(out_levels))
        if i == 0:
            sites.append(SiteCost(key, [key], [out_levels], [a * 3 * k for k in out_levels]))
            continue
        prev = keys[i - 1]
        in_levels = sorted({round_to, sizes[prev]})
        values = [[a * cin * cout for cout in out_levels] for cin in in_levels]
        sites.append(SiteCost(key, [prev, key], [in_levels, out_levels], values))
    scores = {k: np.sort(rng.random(size))[::-1] for k, size in sizes.items()}

    def loss(key, kept):
        s = scores[key]
        return float(s[kept:].sum() / s.sum())

    return sizes, CostModel(sites), loss


@pytest.mark.parametrize("method", ["greedy", "knapsack"])
def test_allocation_meets_the_budget_on_bilinear_tables(method):
    rng = np.random.default_rng(1)
    for _ in range(15):
        sizes, cost, loss = _bilinear(rng)
        budget = cost(sizes) * rng.uniform(0.3, 0.9)
        result = allocate(sizes, cost, budget, loss, round_to=8, method=method, min_keep=0.1)
        assert result.cost <= budget * (1 + 1e-9)
        assert result.cost == pytest.approx(cost(result.counts))
        for key, kept in result.counts.items():
            assert kept == sizes[key] or (kept % 8 == 0 and kept >= 0.1 * sizes[key])
        # Nothing left over: no group's next larger count still fits the budget.
        for key, kept in result.counts.items():
            options = _choices(sizes[key], 8, 0.1)
            i = options.index(kept)
            if i > 0:
                trial = dict(result.counts, **{key: options[i - 1]})
                assert cost(trial) > budget or loss(key, options[i - 1]) >= loss(key, kept)


def test_greedy_matches_brute_force_closely_on_bilinear_tables():
    rng = np.random.default_rng(2)
    gaps = []
    for _ in range(10):
        sizes, cost, loss = _bilinear(rng, num_groups=3)
        budget = cost(sizes) * rng.uniform(0.4, 0.8)
        best = _brute_force(sizes, cost, budget, loss, 8)
        if best is None:
            continue
        result = allocate(sizes, cost, budget, loss, round_to=8)
        assert result.loss >= best[0] - 1e-12  # Brute force is the optimum.
        gaps.append(result.loss - best[0])
    assert np.mean(gaps) < 0.05  # Greedy is a heuristic here, but a close one.


def test_plain_callable_cost_gives_the_same_answer_as_a_cost_model():
    rng = np.random.default_rng(3)
    sizes, cost, loss = _bilinear(rng)
    budget = 0.6 * cost(sizes)
    fast = allocate(sizes, cost, budget, loss, round_to=8)
    slow = allocate(sizes, lambda counts: cost(counts), budget, loss, round_to=8)
    assert fast.counts == slow.counts and fast.cost == pytest.approx(slow.cost)


def test_min_keep_and_unreachable_budget():
    sizes = {"a": 64}
    levels = [8, 32, 64]
    cost = CostModel([SiteCost("a", ["a"], [levels], [1.0, 4.0, 8.0])], base=2.0)

    def loss(key, kept):
        return 1 - kept / 64

    result = allocate(sizes, cost, 4.0, loss, round_to=8, min_keep=0.25)
    assert result.counts == {"a": 16} and result.cost == pytest.approx(4.0)
    with pytest.raises(ValueError, match=r"budget 3 cannot be met.*keeping 25%.*costs 4"):
        allocate(sizes, cost, 3.0, loss, round_to=8, min_keep=0.25)


def test_invalid_arguments():
    cost = CostModel([SiteCost("a", ["a"], [[8, 16]], [1.0, 2.0])])

    def loss(key, kept):
        return 0.0

    with pytest.raises(ValueError, match="method must be"):
        allocate({"a": 16}, cost, 1.0, loss, method="exhaustive")
    with pytest.raises(ValueError, match="budget must be a positive number"):
        allocate({"a": 16}, cost, -1.0, loss)
    with pytest.raises(ValueError, match="nothing to allocate"):
        allocate({}, cost, 1.0, loss)


def test_plan_from_a_macs_table_is_exact_on_a_real_model():
    import keras

    import tfprune
    from tfprune import planning

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Dense(24)(x)))
    graph = tfprune.DependencyGraph(model)
    macs = planning.count_site_costs(graph, "macs", round_to=4)
    groups = {planning.group_key(g): g.size for g in graph.prunable_groups}
    assert macs(groups) == tfprune.count_macs(model)
    budget = 0.45 * macs(groups)
    for method in ("greedy", "knapsack"):
        result = allocate(groups, macs, budget, planning.ScoreSensitivity(graph), round_to=4,
                          method=method)
        plan = planning.ChannelPlan(result.counts)
        small = tfprune.shrink(tfprune.prune_channels(
            model, tfprune.ConstantSparsity(0.5, 0), plan=plan))
        assert tfprune.count_macs(small) == result.cost <= budget
