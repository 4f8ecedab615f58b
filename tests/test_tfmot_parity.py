"""tfprune against tfmot, batch by batch: same steps, same sparsity, same masks.

Each case (`benchmarks/tfmot_parity.py`, `CASES`) trains one architecture
twice from the same initial weights on the same batches in the same order:
in `tf_keras` with `tfmot.sparsity.keras.prune_low_magnitude` and its
`UpdatePruningStep`, and in Keras 3 with `tfprune.prune_low_magnitude` and
`tfprune.UpdatePruningStep`, under the same schedule. After every batch both
record each wrapper's `pruning_step` and masks. Checked after every batch:
the same pruning steps (the first batch is step 1) and the same number of
zeros in every mask; and identical masks wherever both compute them from the
same weights:

- "frozen" cases (SGD with learning rate 0): at every batch;
- "copied" cases (Adam): tfmot's weights, as its mask update reads them, are
  copied into the Keras 3 model before every update step; at every batch;
- "lockstep" cases: the same on a Fashion-MNIST CNN, at every batch: the
  weights both libraries hold after the same optimizer step (pruned weights as
  the optimizer moved them off zero, which both rank at the next update);
- "trained" cases (no copying, so float round-off separates the two runs):
  until the schedule's second update.

With `steps_per_execution=3` on the tfprune side, batches are compared where
its executions end. Also covered: XLA on the tfprune side, two `fit` calls
in a row, equal magnitudes, block pruning with blocks that do not divide the
kernel, N:M on Dense and Conv2D, and a Fashion-MNIST CNN.

tfmot zeroes pruned weights before the forward pass and lets the optimizer
move them afterwards, so its next mask update ranks them one optimizer step
off zero and sometimes keeps one again; tfprune does the same (its mask
constraint leaves them unmasked in the step before an update), which
"fashion_cnn_constant_lockstep" (Adam, `ConstantSparsity(0.5, 1,
frequency=1)`, 64 steps) checks.
"""

import importlib.util
import os

import numpy as np
import pytest

_PARITY = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "benchmarks",
                       "tfmot_parity.py")


def _load_parity():
    spec = importlib.util.spec_from_file_location("tfmot_parity", _PARITY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


parity = _load_parity()


@pytest.fixture(scope="module")
def frameworks():
    pytest.importorskip("tensorflow_model_optimization")
    pytest.importorskip("tf_keras")
    return parity.import_frameworks()


@pytest.fixture(scope="module")
def run(frameworks):
    """`run(name)`: `(tfmot_trace, tfprune_trace)` of a case, computed once."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = parity.run_case(parity.CASES[name], frameworks)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(parity.CASES))
def test_same_steps_sparsity_and_masks(name, run, frameworks):
    case = parity.CASES[name]
    theirs, ours = run(name)
    assert theirs.names == ours.names
    result = parity.compare(case, theirs, ours, frameworks)
    # Every batch compared (tfprune with steps_per_execution > 1: each execution's end).
    total = parity.total_batches(case)
    expected = [b for b in range(1, total + 1)
                if b % case.steps_per_execution == 0 or b == total]
    if case.epochs * case.fits == 1 or case.steps_per_execution == 1:
        assert result.batches == expected
    # tfmot counts the first batch as step 1.
    for batch in result.batches:
        assert set(theirs.records[batch].steps) == {batch}, f"tfmot steps after batch {batch}"
    assert not result.step_mismatches, (
        "pruning_step differs (batch, layer, tfmot, tfprune): "
        f"{result.step_mismatches[:10]}")
    assert not result.sparsity_mismatches, (
        "mask sparsity differs (batch, layer, weight, tfmot, tfprune): "
        f"{result.sparsity_mismatches[:10]}")
    assert result.masks_compared > 0
    assert not result.mask_mismatches, (
        f"{len(result.mask_mismatches)} of {result.masks_compared} masks differ; first:\n"
        + parity.describe_mask_mismatch(theirs, ours, *result.mask_mismatches[0][:3],
                                        mode=case.mode))


def _kernel_sparsity(trace, layer, batches):
    at = trace.names.index(f"prune_low_magnitude_{layer}")
    return [float(np.mean(trace.records[b].masks[at][0] == 0)) for b in batches]


def test_polynomial_decay_every_step_matches_tfmot_numbers(run):
    theirs, ours = run("poly_every_step")
    # PolynomialDecay(0.2, 0.6, 1, 4, power=3, frequency=1) on the 16x5 kernel.
    expected = [0.2, 0.4875, 0.5875, 0.6, 0.6]
    assert _kernel_sparsity(theirs, "d1", range(1, 6)) == pytest.approx(expected, abs=1e-9)
    assert _kernel_sparsity(ours, "d1", range(1, 6)) == pytest.approx(expected, abs=1e-9)


def test_constant_sparsity_waits_for_begin_step(run):
    theirs, ours = run("constant_begin3_freq4")
    # ConstantSparsity(0.5, begin_step=3, end_step=14, frequency=4): updates at 3, 7, 11.
    for trace in (theirs, ours):
        assert _kernel_sparsity(trace, "d1", [1, 2, 3, 16]) == [0.0, 0.0, 0.5, 0.5]


def test_rounding_and_high_sparsity_keep_what_tfmot_keeps(run):
    # 10 weights at sparsity 0.25: round(7.5) = 8 kept (half to even).
    for trace in run("constant_rounding"):
        assert _kernel_sparsity(trace, "d2", [1]) == [0.2]
    # Sparsity 0.99 keeps one weight of 40, and one of 10.
    for trace in run("constant_0.99"):
        assert _kernel_sparsity(trace, "d1", [1, 2, 6]) == [0.0, 39 / 40, 39 / 40]
        assert _kernel_sparsity(trace, "d2", [2]) == [0.9]


def test_equal_magnitudes_are_all_kept_as_in_tfmot(run):
    # d1 holds 21 zeros, 23 of 0.1, 34 of 0.2 and 2 of 0.3 (`weights="ties"`).
    # Every weight as large as the k-th largest stays: at step 1 (sparsity
    # 0.05) that is 0, so nothing is pruned; at step 2 (0.368) all 59 non-zero
    # weights stay; at step 4 (0.589) the 36 weights of 0.2 and 0.3.
    for name in ("ties", "ties_xla"):
        for trace in run(name):
            assert _kernel_sparsity(trace, "d1", [1, 2, 4]) == [0.0, 0.2625, 0.55], name


def test_steps_per_execution_counts_every_step(run):
    theirs, ours = run("steps_per_execution_3")
    assert sorted(ours.records) == [3, 6, 9, 12, 15, 16]
    for batch, record in ours.records.items():
        assert set(record.steps) == {batch}


def test_m_by_n_keeps_two_of_every_four_input_channels(run):
    for trace in run("m_by_n_2_4"):
        conv, dense = trace.records[1].masks[0][0], trace.records[1].masks[1][0]
        # Groups of 4 consecutive input channels: Conv2D axis 2, Dense axis 0.
        assert (conv.reshape(3, 3, 1, 4, 8).sum(axis=3) == 2).all()
        assert (dense.reshape(32, 4, 4).sum(axis=1) == 2).all()


def test_trained_runs_compare_masks_at_the_first_update(run, frameworks):
    case = parity.CASES["fashion_cnn_trained"]
    theirs, ours = run("fashion_cnn_trained")
    assert 1 in parity.comparable_batches(case, theirs, ours, frameworks)
    assert parity.sparsity(theirs.records[1]) > 0.29
