"""Expected pruning state, computed independently of tfprune's own code.

tfmot's rule: at sparsity `s`, a weight of `n` entries keeps
`max(round(n * (1 - s)), 1)` of them, in float32 with round-half-to-even, and
steps count from 1 (the first batch trained is step 1).
"""

import numpy as np


def last_update_step(schedule, steps):
    """The last step <= `steps` (counting from 1) at which `schedule` updates, or None."""
    due = [s for s in range(1, steps + 1) if schedule.should_prune(s)]
    return due[-1] if due else None


def zeros_at(size, sparsity):
    """How many of `size` weights tfmot's rule zeroes at `sparsity`."""
    keep = max(float(np.round(np.float32(size) * (np.float32(1.0) - np.float32(sparsity)))), 1.0)
    return size - int(keep)


def expected_zeros(size, schedule, steps):
    """Zeros in a mask of `size` entries after `steps` steps of `schedule`."""
    step = last_update_step(schedule, steps)
    return 0 if step is None else zeros_at(size, schedule.sparsity(step))
