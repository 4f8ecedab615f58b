"""Mask math: the same masks and thresholds as tfmot's `pruning_impl.Pruning`,
on any weights (hypothesis), eagerly and inside compiled functions."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfprune import masks

# Few distinct values make ties (and all-zero weights) common.
tied = st.sampled_from([0.0, 0.25, -0.25, 0.5, -1.0, 2.0])
finite = st.floats(-10, 10, allow_nan=False, width=32)
values = st.one_of(tied, finite)
sparsities = st.one_of(st.sampled_from([0.0, 1e-6, 0.5, 0.9, 0.99, 0.999]), st.floats(0.0, 0.999))


def tfmot_update(weight, sparsity, block_size=(1, 1), pooling="AVG", m_by_n=None):
    """tfmot's `(mask, threshold)` for `weight`, from `Pruning._maybe_update_block_mask`."""
    from tensorflow_model_optimization.python.core.sparsity.keras import (
        pruning_impl,
        pruning_schedule,
    )

    variable = tf.Variable(weight)
    pruning = pruning_impl.Pruning(
        training_step_fn=lambda: 1,
        pruning_vars=[(variable, None, None)],
        pruning_schedule=pruning_schedule.ConstantSparsity(sparsity, 0),
        block_size=block_size,
        block_pooling_type=pooling,
        sparsity_m_by_n=m_by_n,
    )
    threshold, mask = pruning._maybe_update_block_mask(tf.constant(weight))
    return np.asarray(mask), np.float32(threshold)


def assert_same(ours, theirs):
    mask, threshold = ours
    their_mask, their_threshold = theirs
    np.testing.assert_array_equal(np.asarray(mask), their_mask)
    assert np.float32(threshold) == their_threshold


@settings(max_examples=80, deadline=None)
@given(
    weight=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=4, max_side=7), elements=values),
    sparsity=sparsities,
)
def test_magnitude_mask_is_tfmots(weight, sparsity):
    assert_same(masks.magnitude_mask_ops(weight, sparsity), tfmot_update(weight, sparsity))


@settings(max_examples=80, deadline=None)
@given(
    rows=st.integers(2, 20),
    cols=st.integers(2, 20),
    block=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    pooling=st.sampled_from(["AVG", "MAX"]),
    sparsity=sparsities,
    data=st.data(),
)
def test_block_mask_is_tfmots_including_partial_blocks(rows, cols, block, pooling, sparsity, data):
    # tfmot fails when the pooled grid has a single row or column (see below).
    rows, cols = max(rows, block[0] + 1), max(cols, block[1] + 1)
    weight = data.draw(hnp.arrays(np.float32, (rows, cols), elements=values))
    theirs = tfmot_update(weight, sparsity, block, pooling)
    assert_same(masks.magnitude_mask_ops(weight, sparsity, block, pooling), theirs)
    # Size-1 axes are dropped as tfmot's squeeze does (tfmot itself refuses
    # such weights at construction; its mask math would give this).
    mask, threshold = masks.magnitude_mask_ops(weight.reshape(1, rows, 1, cols), sparsity, block, pooling)
    assert_same((np.asarray(mask).reshape(rows, cols), threshold), theirs)


def test_padded_block_windows_are_shifted_as_tensorflow_pads_them():
    # 5 rows in blocks of 4: 'SAME' pads 3 rows, 1 of them before row 0, so
    # the first pooling window averages rows 0-2 and the second rows 3-4,
    # while the first block of the mask still covers rows 0-3.
    weight = np.array([[1.0], [1.0], [1.0], [9.0], [0.0]], np.float32) * np.ones((1, 3), np.float32)
    mask, threshold = masks.magnitude_mask_ops(weight, 0.5, (4, 2))
    assert float(threshold) == 4.5
    np.testing.assert_array_equal(np.asarray(mask), [[0] * 3] * 4 + [[1] * 3])
    assert_same((mask, threshold), tfmot_update(weight, 0.5, (4, 2)))


def test_one_block_row_works_where_tfmot_fails():
    weight = np.arange(1, 25, dtype=np.float32).reshape(4, 6)
    with pytest.raises(ValueError):
        tfmot_update(weight, 0.7, (4, 2))
    mask, threshold = masks.magnitude_mask_ops(weight, 0.7, (4, 2))  # keeps 1 of 3 blocks
    np.testing.assert_array_equal(np.asarray(mask)[0], [0, 0, 0, 0, 1, 1])
    assert (np.asarray(mask) == np.asarray(mask)[0]).all()
    assert float(threshold) == np.mean(weight[:, 4:])


@settings(max_examples=80, deadline=None)
@given(
    shape=st.one_of(
        st.tuples(st.integers(1, 12), st.integers(1, 6)),
        st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 11), st.integers(1, 5)),
    ),
    n=st.integers(2, 8),
    data=st.data(),
)
def test_m_by_n_mask_is_tfmots_including_ties_and_partial_groups(shape, n, data):
    m = data.draw(st.integers(0, n - 1))
    weight = data.draw(hnp.arrays(np.float32, shape, elements=values))
    their_mask, _ = tfmot_update(weight, 0.5, m_by_n=(m, n))
    np.testing.assert_array_equal(np.asarray(masks.m_by_n_mask_ops(weight, (m, n))), their_mask)


def test_m_by_n_groups_run_along_the_input_channels():
    weight = np.zeros((2, 2, 8, 3), np.float32)
    weight[..., ::3, :] = 5.0  # Input channels 0, 3, 6 are large.
    mask = np.asarray(masks.m_by_n_mask_ops(weight, (2, 4)))
    assert mask.shape == weight.shape
    # Groups [0..3] and [4..7]: keep 0 and 3, then 6 and (tie among zeros) 4.
    np.testing.assert_array_equal(mask[0, 0, :, 0], [1, 0, 0, 1, 1, 0, 1, 0])
    # An explicit axis groups along it, for any rank.
    conv1d = np.random.default_rng(0).normal(size=(3, 9, 4)).astype(np.float32)
    kept = np.asarray(masks.m_by_n_mask_ops(conv1d, (1, 4), axis=1))
    groups = np.moveaxis(kept, 1, -1)
    assert (groups[..., :8].reshape(-1, 4).sum(axis=1) == 3).all()
    assert (groups[..., 8] == 1).all()  # A last group of 1 keeps min(1, n - m).


def test_sparsity_near_one_keeps_exactly_one_weight():
    weight = np.random.default_rng(1).normal(size=(8, 5)).astype(np.float32)
    mask, threshold = masks.magnitude_mask_ops(weight, 0.99)
    assert np.asarray(mask).sum() == 1 and float(threshold) == np.abs(weight).max()
    assert_same((mask, threshold), tfmot_update(weight, 0.99))
    assert masks.num_to_prune(40, 0.99) == 39


def test_all_zero_weights_are_kept_with_threshold_zero():
    mask, threshold = masks.magnitude_mask_ops(np.zeros((6, 4), np.float32), 0.5)
    assert np.asarray(mask).all() and float(threshold) == 0.0


def test_counts_round_half_to_even_in_float32():
    # 5 * (1 - 0.5) = 2.5 -> 2 kept; 7 * 0.5 = 3.5 -> 4 kept.
    assert masks.num_to_prune(5, 0.5) == 3 and masks.num_to_prune(7, 0.5) == 3
    weight = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(masks.magnitude_mask(weight, 0.5), [0, 0, 0, 1, 1])


def test_kept_counts_are_float32_round_half_to_even_in_every_mode():
    sizes = np.array([1, 2, 5, 7, 10, 40, 99, 1000, 4097, 2**24 + 3], np.float32)
    # Sparsities at and one ulp around every half-unit boundary of these sizes.
    boundaries = np.concatenate([(np.arange(0, n, 0.5) / n) for n in [2, 5, 7, 10, 40, 99]])
    exact = boundaries.astype(np.float32)
    sparsity = np.concatenate([exact, np.nextafter(exact, 1), np.nextafter(exact, 0)])
    sparsity = sparsity[(sparsity >= 0) & (sparsity < 1)].astype(np.float32)
    expected = {int(n): np.maximum(np.round(n * (np.float32(1) - sparsity)), 1).astype(np.int32)
                for n in sizes}
    compiled = tf.function(masks.num_to_keep_ops, jit_compile=True)
    for n, kept in expected.items():
        np.testing.assert_array_equal(masks.num_to_keep_ops(n, sparsity), kept)
        np.testing.assert_array_equal(compiled(n, tf.constant(sparsity)), kept)
    assert masks.num_to_prune(0, 0.5) == 0


@pytest.mark.parametrize("jit_compile", [False, True])
def test_compiled_masks_equal_eager_masks(jit_compile):
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(37, 23)).astype(np.float32)
    weight[::3] = np.round(weight[::3], 1)  # Ties, among them zeros.
    conv = rng.normal(size=(3, 3, 10, 6)).astype(np.float32)
    cases = [((1, 1), "AVG"), ((16, 3), "AVG"), ((5, 8), "AVG"), ((4, 4), "MAX")]

    @tf.function(jit_compile=jit_compile)
    def compiled(weight, conv, sparsity):
        blocks = [masks.magnitude_mask_ops(weight, sparsity, b, p) for b, p in cases]
        global_masks, global_threshold = masks.global_magnitude_masks_ops([weight, conv], sparsity)
        return blocks, masks.m_by_n_mask_ops(conv, (2, 4)), global_masks, global_threshold

    for sparsity in np.float32([0.0, 0.31, 0.5, 0.77, 0.99]):
        blocks, m_by_n, global_masks, global_threshold = compiled(weight, conv, tf.constant(sparsity))
        for (block, pooling), result in zip(cases, blocks):
            assert_same(result, [np.asarray(v) for v in
                                 masks.magnitude_mask_ops(weight, sparsity, block, pooling)])
        np.testing.assert_array_equal(m_by_n, masks.m_by_n_mask_ops(conv, (2, 4)))
        expected_masks, expected_threshold = masks.global_magnitude_masks_ops([weight, conv], sparsity)
        for got, expected in zip(global_masks, expected_masks):
            np.testing.assert_array_equal(got, expected)
        assert float(global_threshold) == float(expected_threshold)


@settings(max_examples=40, deadline=None)
@given(
    weights=st.lists(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                                elements=values), min_size=1, max_size=4),
    sparsity=sparsities,
)
def test_global_masks_apply_the_single_weight_rule_to_the_concatenation(weights, sparsity):
    flat = np.concatenate([w.reshape(-1) for w in weights])
    flat_mask, flat_threshold = masks.magnitude_mask_ops(flat, sparsity)
    result, threshold = masks.global_magnitude_masks_ops(weights, sparsity)
    assert float(threshold) == float(flat_threshold)
    np.testing.assert_array_equal(np.concatenate([np.asarray(m).reshape(-1) for m in result]),
                                  np.asarray(flat_mask))
    numpy_masks = masks.global_magnitude_masks(weights, sparsity)
    assert [m.shape for m in numpy_masks] == [w.shape for w in weights]
    assert all(m.dtype == np.float32 for m in numpy_masks)


def test_numpy_entry_points_return_the_ops_results_as_float32_arrays():
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(9, 6))  # float64 in, float32 out
    for result, expected in [
        (masks.magnitude_mask(weight, 0.6), masks.magnitude_mask_ops(weight.astype(np.float32), 0.6)[0]),
        (masks.magnitude_mask(weight, 0.6, (2, 4), "MAX"),
         masks.magnitude_mask_ops(weight.astype(np.float32), 0.6, (2, 4), "MAX")[0]),
        (masks.m_by_n_mask(weight, (1, 4), 0), masks.m_by_n_mask_ops(weight, (1, 4))),
    ]:
        assert isinstance(result, np.ndarray) and result.dtype == np.float32
        np.testing.assert_array_equal(result, np.asarray(expected))
    scores = np.array([3.0, 1.0, 2.0, 2.0, 0.5])
    np.testing.assert_array_equal(masks.keep_top_k(scores, 2), [1, 0, 1, 1, 0])  # ties kept
    np.testing.assert_array_equal(masks.keep_top_k(scores, 0), np.zeros(5))
    assert masks.sparsity_of(masks.magnitude_mask(weight, 0.6)) == masks.num_to_prune(54, 0.6) / 54


def test_dtype_of_masks_and_thresholds_follows_the_weight():
    mask, threshold = masks.magnitude_mask_ops(np.ones((4, 4), np.float16), 0.5)
    assert mask.dtype == tf.float16 and threshold.dtype == tf.float16
    mask, threshold = masks.magnitude_mask_ops(np.ones((4, 4), np.int32), 0.5)
    assert mask.dtype == tf.float32


def test_validation_accepts_what_tfmot_accepts():
    assert masks.validate_block_size((10, 6), (4, 4)) == (4, 4)  # padded, not refused
    assert masks.validate_block_size((1, 1, 10, 6), [4, 4]) == (4, 4)
    assert masks.validate_block_size((3, 3, 4, 8), (1, 1)) == (1, 1)
    assert masks.validate_m_by_n((6, 5), (2, 4)) == (2, 4, 0)  # padded, not refused
    assert masks.validate_m_by_n((3, 3, 6, 5), (0, 4)) == (0, 4, 2)
    assert masks.validate_m_by_n((3, 6, 5), (2, 4), -2) == (2, 4, 1)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: masks.magnitude_mask(np.ones((3, 3, 4, 8)), 0.5, (4, 2)),
         r"block_size=\(4, 2\) needs a 2-D weight.*\(3, 3, 4, 8\).*block_size=\(1, 1\)"),
        (lambda: masks.validate_block_size((8, 1), (2, 2), "'kernel' of layer 'out'"),
         r"'kernel' of layer 'out' has shape \(8, 1\)"),
        (lambda: masks.validate_block_size((8, 8), (0, 2)), r"positive integers.*\(0, 2\)"),
        (lambda: masks.magnitude_mask(np.ones((4, 4)), 0.5, (2, 2), "MEDIAN"),
         "block_pooling_type.*'MEDIAN'"),
        (lambda: masks.m_by_n_mask(np.ones((8, 5)), (4, 4)), r"0 <= m < n.*\(4, 4\)"),
        (lambda: masks.m_by_n_mask(np.ones((8, 5)), (2.0, 4)), r"integers.*\(2.0, 4\)"),
        (lambda: masks.m_by_n_mask(np.ones((3, 8, 5)), (2, 4)),
         r"rank-2 \(Dense\) and rank-4 \(Conv2D\).*\(3, 8, 5\).*axis"),
        (lambda: masks.m_by_n_mask(np.ones((8, 5)), (2, 4), 2), r"axis=2 is out of range.*\(8, 5\)"),
    ],
)
def test_what_tfmot_refuses_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
