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
    w = weight.ravel()
    k = min(keep_count(w.size, sparsity), _count_nonzero(w))
    if k == 0:
        return np.zeros(weight.shape, dtype=bool)
    t = _kth_largest_magnitude(w, k)
    # Everything above the k-th largest magnitude is kept, and among values equal to it the earliest
    # positions: deterministic, exactly k entries. In blocks: no full-size temporary.
    mask = np.empty(w.size, dtype=bool)
    ties = []
    for i in range(0, w.size, _BLOCK):
        a = np.abs(w[i : i + _BLOCK])
        mask[i : i + _BLOCK] = a > t
        ties.append(np.flatnonzero(a == t) + i)
    ties = np.concatenate(ties)
    mask[ties[: k - int(mask.sum())]] = True
    return mask.reshape(weight.shape)


_BLOCK = 1 << 22


def _count_nonzero(w: np.ndarray) -> int:
    return sum(int(np.count_nonzero(w[i : i + _BLOCK])) for i in range(0, w.size, _BLOCK))


def _kth_largest_magnitude(w: np.ndarray, k: int) -> np.float32:
    """The k-th largest |w| (1-based), exactly, in O(n) time and block-sized memory.

    The bit pattern of a non-negative float32 orders like the float, so a histogram of the top 16 bits of
    |w|'s pattern finds the bin holding the k-th largest; only that bin's values are then selected."""
    shift = 15
    hist = np.zeros(1 << (31 - shift), dtype=np.int64)
    for i in range(0, w.size, _BLOCK):
        bits = np.ascontiguousarray(w[i : i + _BLOCK]).view(np.uint32) & np.uint32(0x7FFFFFFF)
        hist += np.bincount(bits >> shift, minlength=hist.size)
    above = np.cumsum(hist[::-1])  # above[j]: values in the top j+1 bins
    top = int(np.searchsorted(above, k))  # the bin (counted from the top) holding the k-th largest
    b = hist.size - 1 - top
    rank = k - (int(above[top - 1]) if top else 0)  # its rank within that bin, from the top
    values = []
    for i in range(0, w.size, _BLOCK):
        block = np.ascontiguousarray(w[i : i + _BLOCK])
        bits = block.view(np.uint32) & np.uint32(0x7FFFFFFF)
        values.append(np.abs(block[(bits >> shift) == b]))
    values = np.concatenate(values)
    return values[np.argpartition(values, values.size - rank)[values.size - rank]]


def prune_mask_by_threshold(weight: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of the weights whose magnitude is strictly above `threshold` (the paper uses a
    quality parameter times the layer's standard deviation)."""
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
    return np.abs(np.asarray(weight, dtype=np.float32)) > threshold
