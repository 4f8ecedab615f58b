"""Mask math: which weights to keep, given their values and a target sparsity.

Pure NumPy functions with no Keras state. Masks are float arrays of 0 and 1
with the weight's shape. Counts are exact: for a sparsity `s` over `n` scored
units (weights or blocks), exactly `round(s * n)` units are zeroed, ties being
broken by position, so the realised sparsity matches the schedule to the
granularity of one unit.
"""

import numpy as np


def keep_top_k(scores, num_keep):
    """A 0/1 mask over `scores` keeping the `num_keep` largest entries.

    Args:
      scores: An array of non-negative scores, any shape.
      num_keep: How many entries to keep; clipped to [0, scores.size].

    Returns:
      A float32 array shaped like `scores`.
    """
    flat = np.asarray(scores).reshape(-1)
    num_keep = int(min(max(num_keep, 0), flat.size))
    mask = np.zeros(flat.size, dtype=np.float32)
    if num_keep == flat.size:
        mask[:] = 1.0
    elif num_keep > 0:
        # Selection, not a full sort: O(n) instead of O(n log n), which is most
        # of an update's time on large kernels. Ties at the threshold (e.g.
        # weights already exactly zero) go to the earliest positions, so the
        # choice is deterministic and every replica picks the same mask.
        threshold = np.partition(flat, flat.size - num_keep)[flat.size - num_keep]
        above = flat > threshold
        mask[above] = 1.0
        ties = np.flatnonzero(flat == threshold)[: num_keep - int(above.sum())]
        mask[ties] = 1.0
    return mask.reshape(np.shape(scores))


def global_magnitude_masks(weights, sparsity):
    """Masks that zero the smallest magnitudes across several weights at once.

    One threshold for all: exactly `round(sparsity * n)` of the `n` weights in
    total are zeroed, so weights that matter less overall (typically in large
    dense layers) give up more than small, crowded ones.

    Args:
      weights: A list of weight arrays.
      sparsity: Fraction of all their entries to zero, in [0, 1).

    Returns:
      A list of float32 0/1 masks, one per weight, shaped like it.
    """
    arrays = [np.asarray(w, dtype=np.float32) for w in weights]
    scores = np.concatenate([np.abs(a).reshape(-1) for a in arrays])
    flat = keep_top_k(scores, scores.size - num_to_prune(scores.size, sparsity))
    masks, start = [], 0
    for a in arrays:
        masks.append(flat[start:start + a.size].reshape(a.shape))
        start += a.size
    return masks


def num_to_prune(num_units, sparsity):
    """The number of units zeroed for `sparsity` of `num_units` (rounded)."""
    return int(np.floor(sparsity * num_units + 0.5))


def as_matrix(weight):
    """Views a weight as a 2-D matrix (fan-in rows, last-axis columns).

    Dense kernels already are; convolution kernels `(*spatial, in, out)`
    become `(prod(spatial) * in, out)`; vectors become one row.
    """
    weight = np.asarray(weight)
    if weight.ndim == 0:
        return weight.reshape(1, 1)
    if weight.ndim == 1:
        return weight.reshape(1, -1)
    return weight.reshape(-1, weight.shape[-1])


def validate_block_size(weight_shape, block_size, name="weight"):
    """Checks that `block_size` tiles the matrix view of a weight.

    Raises:
      ValueError: If a block dimension does not divide the matching dimension.
    """
    rows, cols = as_matrix(np.empty(weight_shape, dtype=np.uint8)).shape
    block_rows, block_cols = block_size
    if rows % block_rows or cols % block_cols:
        raise ValueError(
            f"block_size={tuple(block_size)} does not tile {name} of shape "
            f"{tuple(weight_shape)} (viewed as a {rows}x{cols} matrix): each block "
            "dimension must divide the matching matrix dimension. Choose a block "
            "size that divides it, or leave this layer unpruned."
        )


def magnitude_mask(weight, sparsity, block_size=(1, 1), block_pooling_type="AVG"):
    """Keeps the largest-magnitude weights (or blocks of weights).

    Args:
      weight: The weight array.
      sparsity: Fraction of units to zero, in [0, 1).
      block_size: `(rows, cols)` of the blocks, over the matrix view of the
        weight (see `as_matrix`). `(1, 1)` prunes single weights.
      block_pooling_type: `"AVG"` or `"MAX"`: how a block's magnitudes are
        pooled into its score.

    Returns:
      A float32 0/1 mask shaped like `weight`.

    Raises:
      ValueError: If the block size does not tile the weight or the pooling
        type is unknown.
    """
    weight = np.asarray(weight, dtype=np.float32)
    block_rows, block_cols = block_size
    if (block_rows, block_cols) == (1, 1):
        scores = np.abs(weight)
        num_keep = scores.size - num_to_prune(scores.size, sparsity)
        return keep_top_k(scores, num_keep)
    validate_block_size(weight.shape, block_size)
    matrix = np.abs(as_matrix(weight))
    rows, cols = matrix.shape
    blocks = matrix.reshape(rows // block_rows, block_rows, cols // block_cols, block_cols)
    if block_pooling_type == "AVG":
        scores = blocks.mean(axis=(1, 3))
    elif block_pooling_type == "MAX":
        scores = blocks.max(axis=(1, 3))
    else:
        raise ValueError(
            f"block_pooling_type must be 'AVG' or 'MAX'. Received: {block_pooling_type!r}"
        )
    block_mask = keep_top_k(scores, scores.size - num_to_prune(scores.size, sparsity))
    mask = np.repeat(np.repeat(block_mask, block_rows, axis=0), block_cols, axis=1)
    return mask.reshape(weight.shape)


def validate_m_by_n(weight_shape, m_by_n, axis, name="weight"):
    """Checks an `(m, n)` pattern against a weight.

    Raises:
      ValueError: If `m`/`n` are not integers with 0 < m < n, or `n` does not
        divide the weight's dimension along `axis`.
    """
    try:
        zeros, group = (int(v) for v in m_by_n)
    except (TypeError, ValueError):
        raise ValueError(
            f"sparsity_m_by_n must be a pair of integers (m, n). Received: {m_by_n!r}"
        ) from None
    if not 0 < zeros < group:
        raise ValueError(
            "sparsity_m_by_n=(m, n) zeroes m of every n consecutive weights and "
            f"needs 0 < m < n. Received: {tuple(m_by_n)}"
        )
    size = weight_shape[axis]
    if size % group:
        raise ValueError(
            f"sparsity_m_by_n={tuple(m_by_n)} needs the input-channel dimension of "
            f"{name} (axis {axis} of shape {tuple(weight_shape)}, size {size}) to be "
            f"a multiple of n={group}. Leave this layer unpruned or use another pattern."
        )


def m_by_n_mask(weight, m_by_n=(2, 4), axis=-2):
    """Zeroes `m` of every `n` consecutive weights along `axis`.

    As in tfmot, `(2, 4)` leaves exactly 2 non-zeros in each group of 4
    consecutive weights along the input-channel axis: NVIDIA's 2:4 pattern.

    Args:
      weight: The weight array.
      m_by_n: `(m, n)`: m zeros in each group of n.
      axis: The input-channel axis of the weight.

    Returns:
      A float32 0/1 mask shaped like `weight`.

    Raises:
      ValueError: See `validate_m_by_n`.
    """
    weight = np.asarray(weight, dtype=np.float32)
    axis = axis % weight.ndim
    validate_m_by_n(weight.shape, m_by_n, axis)
    zeros, group = (int(v) for v in m_by_n)
    moved = np.moveaxis(np.abs(weight), axis, -1)
    groups = moved.reshape(-1, group)
    # Rank inside each group; stable so ties resolve to the earlier position.
    order = np.argsort(-groups, axis=1, kind="stable")
    group_mask = np.zeros_like(groups)
    np.put_along_axis(group_mask, order[:, : group - zeros], 1.0, axis=1)
    return np.moveaxis(group_mask.reshape(moved.shape), -1, axis)


def sparsity_of(array):
    """Fraction of exact zeros in `array`."""
    array = np.asarray(array)
    return float(np.count_nonzero(array == 0)) / max(array.size, 1)
