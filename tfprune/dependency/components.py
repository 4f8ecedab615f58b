"""Connected components of a graph given as edge arrays, in vectorized numpy.

Channel graphs are large (ResNet152 has about a million channel elements), so
a Python union-find is too slow; this hooks roots and jumps pointers in
whole-array steps (Shiloach-Vishkin style), taking a few dozen passes.
"""

import numpy as np


def connected_components(n, u, v):
    """Labels the connected components of an undirected graph.

    Args:
      n: Number of vertices, `0..n-1`.
      u: Int array of edge endpoints.
      v: Int array of the other endpoints, same length as `u`.

    Returns:
      `(labels, count)`: an int array of length `n` with component ids
      `0..count-1`, numbered in order of each component's smallest vertex.
    """
    parent = np.arange(n, dtype=np.int64)
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    while u.size:
        # Invariant: parent[i] <= i and every parent is a root after jumping.
        ru, rv = parent[u], parent[v]
        differ = ru != rv
        if not differ.any():
            break
        ru, rv = ru[differ], rv[differ]
        u, v = u[differ], v[differ]
        low, high = np.minimum(ru, rv), np.maximum(ru, rv)
        np.minimum.at(parent, high, low)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    is_root = parent == np.arange(n)
    label_of_root = np.cumsum(is_root) - 1
    return label_of_root[parent], int(is_root.sum())
