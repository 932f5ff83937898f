"""Magnitude pruning (Deep Compression §2): drop the connections of smallest absolute value."""
from __future__ import annotations

import numpy as np


def keep_count(size: int, sparsity: float) -> int:
    """Number of weights kept when a fraction `sparsity` of `size` weights is pruned."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return int(round(size * (1.0 - sparsity)))


def prune_mask_by_fraction(weight: np.ndarray, sparsity: float) -> np.ndarray:
    """Boolean mask of the `1 - sparsity` fraction of weights with the largest magnitude.

    Exactly `keep_count(weight.size, sparsity)` entries are kept (ties broken deterministically by
    position), so a layer's kept fraction is what was asked for, not what a threshold happens to give.
    Weights that are already zero are never kept: they would store a zero value at the cost of an entry.
    """
    weight = np.asarray(weight, dtype=np.float32)
    flat = np.abs(weight).ravel()  # the one full-size temporary: selection works on it in place
    k = min(keep_count(flat.size, sparsity), int(np.count_nonzero(flat)))
    if k == 0:
        return np.zeros(weight.shape, dtype=bool)
    # The k-th largest magnitude by selection (O(n), no full sort); everything above it is kept, and
    # among values equal to it the earliest positions: deterministic, exactly k entries.
    flat.partition(flat.size - k)
    t = flat[flat.size - k]
    del flat
    mask = np.empty(weight.size, dtype=bool)
    ties = []
    step = 1 << 22  # in blocks: no second full-size temporary
    w = weight.ravel()
    for i in range(0, w.size, step):
        a = np.abs(w[i : i + step])
        mask[i : i + step] = a > t
        ties.append(np.flatnonzero(a == t) + i)
    ties = np.concatenate(ties)
    mask[ties[: k - int(mask.sum())]] = True
    return mask.reshape(weight.shape)


def prune_mask_by_threshold(weight: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of the weights whose magnitude is strictly above `threshold` (the paper uses a
    quality parameter times the layer's standard deviation)."""
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
    return np.abs(np.asarray(weight, dtype=np.float32)) > threshold
