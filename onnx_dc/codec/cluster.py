"""k-means weight sharing (Deep Compression §3) on the weights that survived pruning.

Scalar (1-D) k-means is solved exactly on the *sorted* values: with centroids in increasing order each
cluster is a contiguous run of sorted values, bounded by the midpoints between neighbouring centroids.
One Lloyd iteration is then `searchsorted` of k−1 midpoints plus k prefix-sum differences — O(k log n)
instead of O(n·k) — so tens of millions of weights cluster in about the time of one sort.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INIT_METHODS = ("linear", "density", "random", "kmeans++")


@dataclass(frozen=True)
class Clustering:
    codebook: np.ndarray  # float32 [k], increasing
    labels: np.ndarray  # uint8/uint16 [n], index into codebook for each input value (input order)
    iterations: int


def _init_centroids(sorted_values: np.ndarray, k: int, method: str, rng: np.random.Generator) -> np.ndarray:
    lo, hi = float(sorted_values[0]), float(sorted_values[-1])
    n = sorted_values.size
    if method == "linear":
        # The paper's best: evenly spaced between min and max, so large (rare, important) weights get
        # centroids of their own.
        return np.linspace(lo, hi, k)
    if method == "density":
        # Evenly spaced on the CDF: centroids concentrate where the weights are dense.
        levels = (np.arange(k) + 0.5) / k
        return np.quantile(sorted_values.astype(np.float64), levels)
    if method == "random":
        # Forgy: k distinct observations chosen at random.
        return np.sort(sorted_values[rng.choice(n, size=min(k, n), replace=False)].astype(np.float64))
    if method == "kmeans++":
        # D² sampling. On at most 65,536 evenly strided samples of the sorted values: the seeding only needs
        # the distribution's shape, and this bounds its O(n·k) cost.
        sample = sorted_values[:: max(1, n // 65536)].astype(np.float64)
        centers = [sample[rng.integers(sample.size)]]
        d2 = (sample - centers[0]) ** 2
        for _ in range(1, min(k, sample.size)):
            total = d2.sum()
            if total <= 0:
                break
            c = sample[np.searchsorted(np.cumsum(d2), rng.random() * total, side="right").clip(0, sample.size - 1)]
            centers.append(c)
            np.minimum(d2, (sample - c) ** 2, out=d2)
        return np.sort(np.array(centers))
    raise ValueError(f"unknown k-means initialisation {method!r}; choose one of {', '.join(INIT_METHODS)}")


def kmeans_1d(
    values: np.ndarray, k: int, init: str = "linear", seed: int = 0, max_iter: int = 300
) -> Clustering:
    """Cluster `values` into at most `k` shared values (fewer if there are fewer distinct values).

    Deterministic for a given seed. Returns the codebook (increasing) and each value's cluster label.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    values = np.asarray(values, dtype=np.float32).ravel()
    label_dtype = np.uint8 if k <= 256 else np.uint16
    if values.size == 0:
        return Clustering(np.zeros(1, np.float32), np.zeros(0, label_dtype), 0)
    if not np.all(np.isfinite(values)):
        raise ValueError("weights contain NaN or infinity")
    order = np.argsort(values, kind="stable")
    sv = values[order].astype(np.float64)
    distinct = np.unique(sv)
    if distinct.size <= k:
        # Every distinct value gets its own centroid: exact, no error.
        codebook = distinct
        iterations = 0
    else:
        rng = np.random.default_rng(seed)
        centroids = np.unique(_init_centroids(sv, k, init, rng))
        prefix = np.concatenate([[0.0], np.cumsum(sv)])
        iterations = 0
        for iterations in range(1, max_iter + 1):
            bounds = np.searchsorted(sv, (centroids[:-1] + centroids[1:]) / 2, side="right")
            starts = np.concatenate([[0], bounds])
            ends = np.concatenate([bounds, [sv.size]])
            counts = ends - starts
            sums = prefix[ends] - prefix[starts]
            # An empty cluster keeps its centroid (it may capture values later); drop it at the end.
            new = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
            if np.array_equal(new, centroids):
                break
            centroids = new
        bounds = np.searchsorted(sv, (centroids[:-1] + centroids[1:]) / 2, side="right")
        counts = np.diff(np.concatenate([[0], bounds, [sv.size]]))
        codebook = centroids[counts > 0]
    # Final assignment: nearest centroid, computed in float32 exactly as the stored codebook.
    codebook32 = np.unique(codebook.astype(np.float32))
    labels_sorted = _nearest(sv.astype(np.float32), codebook32)
    labels = np.empty(values.size, dtype=label_dtype)
    labels[order] = labels_sorted
    return Clustering(codebook32, labels, iterations)


def _nearest(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest codebook entry (codebook increasing) for each value."""
    if codebook.size == 1:
        return np.zeros(values.size, dtype=np.int64)
    mids = (codebook[:-1].astype(np.float64) + codebook[1:]) / 2
    return np.searchsorted(mids, values.astype(np.float64), side="right")
