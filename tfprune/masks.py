"""Mask math: which weights to keep, given their values and a target sparsity.

The rules are tfmot's (`pruning_impl.Pruning` and `pruning_utils`), so a mask
computed here equals tfmot's for the same weights and sparsity, bit for bit,
threshold included:

- Magnitude pruning (`magnitude_mask_ops`): keep
  `k = max(round_half_to_even(float32(n) * (1 - sparsity)), 1)` of the `n`
  scored units; the threshold is the k-th largest score and every unit whose
  score is `>=` it is kept, so ties at the threshold are all kept (an
  all-zero weight keeps everything) and at least one unit always is.
- Block pruning scores each `block_size` block of a (squeezed) rank-2 weight
  by its average or maximum magnitude, with tfmot's 'SAME' pooling windows,
  and keeps or drops whole blocks.
- m-by-n pruning (`m_by_n_mask_ops`) zeroes the `m` smallest magnitudes of
  every `n` consecutive weights along the input-channel axis.

Each rule has one implementation, in `keras.ops` (the `*_ops` functions):
graph-safe (static shapes only, so it runs inside a compiled train step,
XLA included) and usable eagerly on NumPy input. The NumPy entry points
(`magnitude_mask`, `m_by_n_mask`, `global_magnitude_masks`, `num_to_prune`,
`keep_top_k`) call them and return NumPy arrays. Weights are assumed finite
(tfmot's handling of NaN is not reproduced).

This module holds no layers or wrappers.
"""

import keras
import numpy as np
from keras import ops

_POOLING_TYPES = ("AVG", "MAX")

# What tfmot stores as the threshold of an m-by-n mask ("some number").
M_BY_N_THRESHOLD = 999.0


def _float_tensor(value):
    """`value` as a backend tensor of a floating dtype (float32 unless it has one)."""
    tensor = ops.convert_to_tensor(value)
    if "float" not in keras.backend.standardize_dtype(tensor.dtype):
        tensor = ops.cast(tensor, "float32")
    return tensor


def _to_numpy(tensor, dtype=np.float32):
    return np.asarray(ops.convert_to_numpy(tensor), dtype=dtype)


def _int_pair(value, low):
    """`value` as a tuple of two Python ints >= `low`, or None if it is not one."""
    try:
        pair = tuple(value)
    except TypeError:
        return None
    if len(pair) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in pair
    ):
        return None
    pair = tuple(int(v) for v in pair)
    return pair if min(pair) >= low else None


def num_to_keep_ops(num_units, sparsity):
    """How many of `num_units` scored units a magnitude mask keeps (tfmot's `k`).

    `k = max(round_half_to_even(float32(num_units) * (1 - sparsity)), 1)`,
    in float32 as tfmot computes it. Ties at the threshold can make a mask
    keep more than `k` units.

    Args:
      num_units: The number of scored units, a Python int.
      sparsity: The target sparsity: a Python float or a float32 tensor
        (rounded to float32 first, as tfmot's schedules return it).

    Returns:
      An int32 scalar tensor.
    """
    sparsity = ops.cast(sparsity, "float32")
    kept = ops.round(ops.multiply(np.float32(num_units), ops.subtract(1.0, sparsity)))
    return ops.cast(ops.maximum(kept, 1.0), "int32")


def _keep_from_top(scores, num_keep):
    """`(threshold, keep)`: the `num_keep`-th largest score and `scores >= it`.

    `num_keep` is an int32 tensor in [1, scores.size]: as tfmot does, the
    whole score array is sorted once (`top_k` over the full size, so the
    shape is static) and indexed at a runtime position. Among equal scores
    `top_k` puts the earlier first, which picks the threshold's bits where
    TensorFlow compares subnormal numbers as zeros.
    """
    flat = ops.reshape(scores, (-1,))
    descending, _ = ops.top_k(flat, k=flat.shape[0], sorted=True)
    threshold = ops.take(descending, ops.subtract(num_keep, 1))
    return threshold, ops.greater_equal(scores, threshold)


def _magnitude_keep(scores, sparsity):
    """tfmot's `_update_mask` on non-negative `scores`: `(threshold, keep)`."""
    size = int(np.prod(scores.shape))
    if size == 0:
        return ops.zeros((), dtype=scores.dtype), ops.zeros(scores.shape, dtype="bool")
    return _keep_from_top(scores, num_to_keep_ops(size, sparsity))


def _pool_rows(matrix, size, pooling):
    """tfmot's 1-D pooling of a matrix's rows: window `size`, stride `size`, 'SAME'.

    With 'SAME' padding, TensorFlow pads `total = ceil(rows / size) * size -
    rows` rows, `total // 2` of them before the first row (so when `total`
    is 2 or more the windows are shifted up), and leaves the padding out of
    an average. An average is TensorFlow's: the window's values summed in
    order, divided by the number of real rows in it.
    """
    rows = matrix.shape[0]
    windows = -(-rows // size)
    total = windows * size - rows
    before = total // 2
    padded = ops.pad(matrix, [[before, total - before], [0, 0]])
    stacked = ops.reshape(padded, (windows, size, matrix.shape[1]))
    if pooling == "MAX":  # Magnitudes are >= 0, so zero padding never wins.
        return ops.max(stacked, axis=1)
    # The window summed in order, as TensorFlow does (float32 sums are not
    # associative). Grappler would regroup a plain chain of adds into one
    # AddN, summed in another order; the `maximum` with 0 between the adds
    # (a no-op on sums of magnitudes) keeps the chain as written.
    total_sum = stacked[:, 0]
    for offset in range(1, size):
        total_sum = ops.maximum(ops.add(total_sum, stacked[:, offset]), 0.0)
    starts = np.arange(windows) * size - before
    counts = np.minimum(starts + size, rows) - np.maximum(starts, 0)
    # The counts enter at run time (plus a zero that only exists then): a
    # constant divisor would be turned into a reciprocal multiplication by
    # Grappler or XLA, which rounds differently.
    # Full-shape counts: Keras' TF `ops.add` treats a `(n, 1)` operand whose
    # `n` equals the other's last dimension as a bias along that last axis.
    counts = np.broadcast_to(counts[:, None], tuple(total_sum.shape))
    runtime_zero = ops.subtract(total_sum, total_sum)
    counts = ops.add(runtime_zero, ops.cast(counts, total_sum.dtype))
    return ops.divide(total_sum, counts)


def validate_block_size(weight_shape, block_size, name="weight"):
    """Checks that block pruning with `block_size` applies to a weight.

    As in tfmot's mask math, blocks tile the weight with its size-1 axes
    dropped, which must leave a matrix; a block that does not divide a
    dimension is allowed (the last block row or column is partial). tfmot's
    `Pruning` also refuses a weight whose own rank is not 2, such as a 1x1
    convolution kernel `(1, 1, in, out)`; this accepts it.

    Args:
      weight_shape: The weight's shape.
      block_size: `(rows, cols)`, positive integers.
      name: How to name the weight in errors.

    Returns:
      `block_size` as a tuple of two ints.

    Raises:
      ValueError: If `block_size` is not two positive integers, or is not
        `(1, 1)` for a weight that is not 2-D once its size-1 axes are dropped.
    """
    block = _int_pair(block_size, 1)
    if block is None:
        raise ValueError(
            "`block_size` must be a pair of positive integers (rows, cols), e.g. "
            f"(1, 1) for single weights. Received: block_size={block_size!r}"
        )
    squeezed = [d for d in weight_shape if d != 1]
    if block != (1, 1) and len(squeezed) != 2:
        raise ValueError(
            f"block_size={block} needs a 2-D weight (once its size-1 axes are "
            f"dropped), as in tfmot, but {name} has shape {tuple(weight_shape)}. "
            "Use block_size=(1, 1) for this layer (or sparsity_m_by_n for "
            "convolutions), or leave it unpruned."
        )
    return block


def _validate_pooling(block_pooling_type):
    if block_pooling_type not in _POOLING_TYPES:
        raise ValueError(
            "`block_pooling_type` must be 'AVG' or 'MAX'. "
            f"Received: block_pooling_type={block_pooling_type!r}"
        )


def magnitude_mask_ops(
    weight, sparsity, block_size=(1, 1), block_pooling_type="AVG", name="weight"
):
    """tfmot's magnitude mask and threshold for `weight` at `sparsity`.

    With `block_size=(1, 1)` (tfmot's `_update_mask`): the scores are the
    magnitudes, `k = num_to_keep_ops(weight.size, sparsity)`, the threshold
    is the k-th largest magnitude and the mask keeps every weight whose
    magnitude is `>=` it (ties all kept).

    Otherwise (tfmot's `_maybe_update_block_mask`): the weight, squeezed to
    a matrix, is cut into `block_size` blocks, each scored by the average
    (`"AVG"`) or maximum (`"MAX"`) magnitude over its window, pooled
    rows first, then columns. Where a block does not divide a dimension,
    tfmot pools with 'SAME' padding: there are `ceil(dim / block)` windows,
    padding is left out of averages, and when the padding is 2 or more
    entries, `padding // 2` of it goes before the first entry, shifting the
    windows. The same rule as above then keeps or drops each block (the
    threshold is a block score), and block `(i, j)` decides entries
    `[i * rows_per_block, (i + 1) * rows_per_block)` x `[j * cols_per_block,
    ...)` (unshifted), the last ones cut at the weight's edge. Unlike tfmot,
    which fails there, a block as large as a dimension (one block row or
    column) works.

    Graph-safe: inside a `tf.function`, XLA included, the values are the
    same as eagerly.

    Args:
      weight: The weight: a tensor or NumPy array with a static shape.
      sparsity: Target sparsity: a Python float or a float32 tensor.
      block_size: `(rows, cols)` of the blocks; `(1, 1)` prunes single weights.
      block_pooling_type: `"AVG"` or `"MAX"`.
      name: How to name the weight in errors.

    Returns:
      `(mask, threshold)`: a 0/1 tensor shaped like `weight` and a scalar,
      both of the weight's floating dtype (float32 for other dtypes).

    Raises:
      ValueError: See `validate_block_size`; also if `block_pooling_type`
        is unknown.
    """
    weight = _float_tensor(weight)
    shape = tuple(weight.shape)
    block = validate_block_size(shape, block_size, name)
    _validate_pooling(block_pooling_type)
    magnitudes = ops.abs(weight)
    if block == (1, 1):
        threshold, keep = _magnitude_keep(magnitudes, sparsity)
        return ops.cast(keep, weight.dtype), threshold
    rows, cols = (d for d in shape if d != 1)
    matrix = ops.reshape(magnitudes, (rows, cols))
    pooled = _pool_rows(matrix, block[0], block_pooling_type)
    pooled = ops.transpose(_pool_rows(ops.transpose(pooled), block[1], block_pooling_type))
    threshold, keep_blocks = _magnitude_keep(pooled, sparsity)
    keep = ops.repeat(ops.repeat(keep_blocks, block[0], axis=0), block[1], axis=1)
    mask = ops.reshape(ops.cast(keep[:rows, :cols], weight.dtype), shape)
    return mask, threshold


def global_magnitude_masks_ops(weights, sparsity):
    """One magnitude threshold across several weights (tfprune's global pruning).

    The rule of `magnitude_mask_ops` (single weights) over the concatenation
    of all magnitudes: `k = num_to_keep_ops(total size, sparsity)`, the
    threshold is the k-th largest magnitude of all, and every weight whose
    magnitude is `>=` it is kept, so weights that matter less overall
    (typically in large layers) give up more than small, crowded ones.

    Args:
      weights: A list of weights (tensors or NumPy arrays, static shapes).
      sparsity: Target sparsity of all their entries together: a Python
        float or a float32 tensor.

    Returns:
      `(masks, threshold)`: a list of 0/1 tensors, one per weight, shaped
      and typed like it, and the float32 threshold.
    """
    weights = [_float_tensor(w) for w in weights]
    magnitudes = [ops.abs(ops.cast(w, "float32")) for w in weights]
    flat = ops.concatenate([ops.reshape(m, (-1,)) for m in magnitudes], axis=0)
    threshold, _ = _magnitude_keep(flat, sparsity)
    masks = [ops.cast(ops.greater_equal(m, threshold), w.dtype) for m, w in zip(magnitudes, weights)]
    return masks, threshold


def validate_m_by_n(weight_shape, m_by_n, axis=None, name="weight"):
    """Checks an `(m, n)` pattern against a weight; returns `(m, n, axis)`.

    As tfmot: `0 <= m < n`, and any dimension is accepted (a last, partial
    group along the axis is padded). With `axis=None` the axis is tfmot's:
    0 for rank-2 (Dense, `(in, out)`) and 2 for rank-4 (Conv2D,
    `(h, w, in, out)`) kernels, the only ranks tfmot supports.

    Args:
      weight_shape: The weight's shape.
      m_by_n: `(m, n)`: m zeros in every n consecutive weights.
      axis: The axis the groups run along, or None for tfmot's.
      name: How to name the weight in errors.

    Returns:
      `(m, n, axis)` as Python ints, `axis` non-negative.

    Raises:
      ValueError: If `m_by_n` is not two integers with `0 <= m < n`, or
        `axis` is None and the weight is not rank 2 or 4, or `axis` is out
        of range.
    """
    pair = _int_pair(m_by_n, 0)
    if pair is None or not pair[0] < pair[1]:
        raise ValueError(
            "sparsity_m_by_n=(m, n) zeroes m of every n consecutive weights and "
            f"needs integers with 0 <= m < n, e.g. (2, 4). Received: {m_by_n!r}"
        )
    rank = len(weight_shape)
    if axis is None:
        if rank not in (2, 4):
            raise ValueError(
                f"sparsity_m_by_n={pair} follows tfmot's layout, defined for rank-2 "
                f"(Dense) and rank-4 (Conv2D) kernels, but {name} has shape "
                f"{tuple(weight_shape)}. Pass the input-channel axis as `axis`, or "
                "leave this layer unpruned."
            )
        axis = 0 if rank == 2 else 2
    elif not -rank <= axis < rank:
        raise ValueError(
            f"axis={axis} is out of range for {name} of shape {tuple(weight_shape)}."
        )
    return pair[0], pair[1], axis % rank


def m_by_n_mask_ops(weight, m_by_n=(2, 4), axis=None, name="weight"):
    """tfmot's m-by-n mask: `m` zeros in every `n` consecutive weights.

    Groups are `n` consecutive entries along `axis` (by default tfmot's: the
    input-channel axis of a Dense or Conv2D kernel, i.e. the last axis of
    TFLite's layout); each keeps its `n - m` largest magnitudes, an earlier
    entry winning a tie. When `n` does not divide the axis, tfmot pads each
    line with zeros to whole groups, so the last group of `r < n` entries
    keeps its `min(r, n - m)` largest. tfmot's threshold for this mode is
    the constant `M_BY_N_THRESHOLD` (999.0).

    tfmot computes m-by-n masks once only, at step 1
    (`Pruning.conditional_mask_update` asks `step == 1`, not the schedule);
    the schedule's sparsity plays no part.

    Graph-safe: every group is ranked by comparing its entries pairwise,
    with static shapes.

    Args:
      weight: The weight: a tensor or NumPy array with a static shape.
      m_by_n: `(m, n)` with `0 <= m < n`, e.g. `(2, 4)`.
      axis: The axis the groups run along; None for tfmot's (rank-2 and
        rank-4 weights only).
      name: How to name the weight in errors.

    Returns:
      A 0/1 tensor shaped like `weight`, of its floating dtype (float32 for
      other dtypes).

    Raises:
      ValueError: See `validate_m_by_n`.
    """
    weight = _float_tensor(weight)
    shape = tuple(weight.shape)
    zeros, group, axis = validate_m_by_n(shape, m_by_n, axis, name)
    length = shape[axis]
    moved = ops.moveaxis(ops.abs(weight), axis, -1)
    lines = ops.reshape(moved, (-1, length))
    num_groups = -(-length // group)
    padded = ops.pad(lines, [[0, 0], [0, num_groups * group - length]])
    groups = ops.reshape(padded, (-1, num_groups, group))
    # How many entries of its group outrank each entry: entry i outranks
    # entry j if it is larger, or equal and earlier (tfmot's `top_k` order).
    # Counted in float arithmetic, without boolean tensors: TensorFlow's
    # oneDNN kernels log an error line for boolean ops in graphs on some CPUs.
    outranked_by = ops.zeros(tuple(groups.shape), dtype="float32")
    for i in range(group):
        sign = ops.sign(ops.subtract(groups[..., i : i + 1], groups))
        larger = ops.relu(sign)
        earlier = (np.arange(group) > i).astype("float32")
        equal_and_earlier = ops.multiply(ops.subtract(1.0, ops.abs(sign)), earlier)
        outranked_by = ops.add(outranked_by, ops.add(larger, equal_and_earlier))
    keep = ops.relu(ops.sign(ops.subtract(float(group - zeros), outranked_by)))
    keep = ops.reshape(ops.cast(keep, weight.dtype), (-1, num_groups * group))[:, :length]
    return ops.moveaxis(ops.reshape(keep, tuple(moved.shape)), -1, axis)


def num_to_prune(num_units, sparsity):
    """How many of `num_units` a magnitude mask zeroes at `sparsity`, ties aside.

    `num_units - num_to_keep_ops(num_units, sparsity)`, as a Python int: the
    exact count when no magnitudes tie at the threshold.
    """
    if num_units == 0:
        return 0
    return int(num_units) - int(_to_numpy(num_to_keep_ops(num_units, sparsity), np.int64))


def keep_top_k(scores, num_keep):
    """A 0/1 mask keeping the `num_keep` largest `scores` (and all ties with them).

    Args:
      scores: An array of scores, any shape.
      num_keep: How many entries to keep; clipped to [0, scores.size].
        Entries equal to the `num_keep`-th largest are all kept.

    Returns:
      A float32 NumPy array shaped like `scores`.
    """
    scores = _float_tensor(np.asarray(scores))
    num_keep = min(int(num_keep), int(np.prod(scores.shape)))
    if num_keep <= 0:
        return np.zeros(tuple(scores.shape), dtype=np.float32)
    _, keep = _keep_from_top(scores, ops.convert_to_tensor(num_keep, "int32"))
    return _to_numpy(keep)


def magnitude_mask(weight, sparsity, block_size=(1, 1), block_pooling_type="AVG"):
    """`magnitude_mask_ops` on a NumPy array (cast to float32): the mask only.

    Returns:
      A float32 0/1 NumPy array shaped like `weight`.

    Raises:
      ValueError: As `magnitude_mask_ops`.
    """
    mask, _ = magnitude_mask_ops(
        np.asarray(weight, dtype=np.float32), sparsity, block_size, block_pooling_type
    )
    return _to_numpy(mask)


def global_magnitude_masks(weights, sparsity):
    """`global_magnitude_masks_ops` on NumPy arrays (cast to float32).

    Returns:
      A list of float32 0/1 NumPy masks, one per weight, shaped like it.
    """
    masks, _ = global_magnitude_masks_ops(
        [np.asarray(w, dtype=np.float32) for w in weights], sparsity
    )
    return [_to_numpy(m) for m in masks]


def m_by_n_mask(weight, m_by_n=(2, 4), axis=None):
    """`m_by_n_mask_ops` on a NumPy array (cast to float32).

    Returns:
      A float32 0/1 NumPy array shaped like `weight`.

    Raises:
      ValueError: See `validate_m_by_n`.
    """
    return _to_numpy(m_by_n_mask_ops(np.asarray(weight, dtype=np.float32), m_by_n, axis))


def sparsity_of(array):
    """Fraction of exact zeros in `array`."""
    array = np.asarray(array)
    return float(np.count_nonzero(array == 0)) / max(array.size, 1)
