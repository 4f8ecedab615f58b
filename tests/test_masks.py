"""Mask math: exact counts, block and N:M patterns, for all inputs (hypothesis)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfprune import masks

finite = st.floats(-10, 10, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    weight=hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=4, max_side=7), elements=finite),
    sparsity=st.floats(0.0, 0.99),
)
def test_magnitude_mask_prunes_exactly_the_rounded_count_of_smallest(weight, sparsity):
    mask = masks.magnitude_mask(weight, sparsity)
    assert mask.shape == weight.shape
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert int((mask == 0).sum()) == masks.num_to_prune(weight.size, sparsity)
    kept, pruned = np.abs(weight)[mask == 1], np.abs(weight)[mask == 0]
    if kept.size and pruned.size:
        assert pruned.max() <= kept.min()


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                                elements=finite), min_size=1, max_size=4),
    sparsity=st.floats(0.0, 0.99),
)
def test_global_masks_prune_the_rounded_count_of_smallest_across_weights(weights, sparsity):
    result = masks.global_magnitude_masks(weights, sparsity)
    assert [m.shape for m in result] == [w.shape for w in weights]
    total = sum(w.size for w in weights)
    assert sum(int((m == 0).sum()) for m in result) == masks.num_to_prune(total, sparsity)
    kept = np.concatenate([np.abs(w)[m == 1] for w, m in zip(weights, result)])
    pruned = np.concatenate([np.abs(w)[m == 0] for w, m in zip(weights, result)])
    if kept.size and pruned.size:
        assert pruned.max() <= kept.min()


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 4), cols=st.integers(1, 4), block=st.sampled_from([(1, 2), (2, 1), (2, 2), (4, 1)]),
    sparsity=st.floats(0.0, 0.95), pooling=st.sampled_from(["AVG", "MAX"]), data=st.data(),
)
def test_block_mask_zeroes_whole_blocks(rows, cols, block, sparsity, pooling, data):
    shape = (rows * block[0], cols * block[1])
    weight = data.draw(hnp.arrays(np.float32, shape, elements=finite))
    mask = masks.magnitude_mask(weight, sparsity, block, pooling)
    tiles = mask.reshape(rows, block[0], cols, block[1])
    per_block = tiles.sum(axis=(1, 3))
    assert set(np.unique(per_block)) <= {0.0, float(block[0] * block[1])}
    assert int((per_block == 0).sum()) == masks.num_to_prune(rows * cols, sparsity)


def test_block_mask_on_conv_kernel_uses_matrix_view():
    weight = np.random.default_rng(0).normal(size=(3, 3, 4, 8)).astype(np.float32)
    mask = masks.magnitude_mask(weight, 0.5, (4, 2))
    matrix = mask.reshape(36, 8).reshape(9, 4, 4, 2).sum(axis=(1, 3))
    assert set(np.unique(matrix)) <= {0.0, 8.0}
    assert mask.mean() == pytest.approx(0.5, abs=1 / 36)


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    shape=st.sampled_from([(8, 3), (3, 3, 8, 5), (5, 12, 2), (2, 2, 4, 4)]),
    pattern=st.sampled_from([(2, 4), (1, 4), (3, 4), (1, 2)]),
)
def test_m_by_n_keeps_exactly_n_minus_m_per_group(data, shape, pattern):
    weight = data.draw(hnp.arrays(np.float32, shape, elements=finite))
    axis = 0 if len(shape) == 2 else -2
    mask = masks.m_by_n_mask(weight, pattern, axis)
    zeros, group = pattern
    moved = np.moveaxis(mask, axis, -1).reshape(-1, group)
    assert (moved.sum(axis=1) == group - zeros).all()
    # The kept ones are the largest in each group.
    groups = np.moveaxis(np.abs(weight), axis, -1).reshape(-1, group)
    for row, keep in zip(groups, moved):
        if keep.min() == 0:
            assert row[keep == 0].max() <= row[keep == 1].min()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: masks.magnitude_mask(np.ones((6, 5)), 0.5, (4, 1)), "block_size"),
        (lambda: masks.m_by_n_mask(np.ones((6, 5)), (2, 4), 0), "multiple of n=4"),
        (lambda: masks.m_by_n_mask(np.ones((8, 5)), (4, 4), 0), "0 < m < n"),
        (lambda: masks.magnitude_mask(np.ones((4, 4)), 0.5, (2, 2), "MEDIAN"), "block_pooling_type"),
    ],
)
def test_bad_patterns_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
