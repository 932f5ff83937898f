"""Data-aware compression without a training loop: layer-wise reconstruction from calibration statistics.

For a layer y = W x + b (W [N, K]) we see calibration inputs of the *compressed* model so far (X_c) and of
the original model (X_o), and fit the compressed layer to reproduce the original layer's output:

    minimise  Σ_samples ‖W' x_c + b' − (W x_o + b)‖²

With centred statistics H = X̃_cᵀX̃_c and C = X̃_cᵀX̃_o (X̃: X minus its mean) the bias is free
(b' = b + W μ_o − W' μ_c) and each row is a quadratic: w'ᵀ H w' − 2 w'ᵀ g, g = C w. Everything here
works on these K×K statistics, accumulated in batches, so memory does not grow with the data.
numpy only; nothing here knows about ONNX.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

from .cluster import kmeans_1d
from .prune import keep_count

PRUNE_METHODS = ("obs", "obs-oneshot", "sparsegpt", "magnitude")
SPARSEGPT_BLOCK = 128
# Iterative OBS inverts each row's survivor block at every step; above this many flops per step it falls
# back to one-shot OBS saliency (large layers).
ITERATIVE_FLOP_BUDGET = 4e10


class LayerStats:
    """Running sums of the compressed-model and original-model inputs of one layer."""

    def __init__(self, k: int):
        self.k = k
        self.n = 0
        self.sum_c = np.zeros(k)
        self.sum_o = np.zeros(k)
        self.cc = np.zeros((k, k))
        self.co = np.zeros((k, k))
        self.oo = np.zeros((k, k))

    def add(self, x_c: np.ndarray, x_o: np.ndarray) -> None:
        """Add a batch of rows ([rows, K] each; row i of both is the same sample and position)."""
        x_c = np.asarray(x_c, dtype=np.float64).reshape(-1, self.k)
        x_o = np.asarray(x_o, dtype=np.float64).reshape(-1, self.k)
        if x_c.shape != x_o.shape:
            raise ValueError(f"calibration batches differ in shape: {x_c.shape} vs {x_o.shape}")
        self.n += x_c.shape[0]
        self.sum_c += x_c.sum(0)
        self.sum_o += x_o.sum(0)
        self.cc += x_c.T @ x_c
        self.co += x_c.T @ x_o
        self.oo += x_o.T @ x_o

    @property
    def mean_c(self) -> np.ndarray:
        return self.sum_c / max(self.n, 1)

    @property
    def mean_o(self) -> np.ndarray:
        return self.sum_o / max(self.n, 1)

    def moments(self, centred: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(H, C) per row: centred when the bias is refitted too (it absorbs the means), raw otherwise."""
        n = max(self.n, 1)
        if not centred:
            return self.cc / n, self.co / n
        h = self.cc / n - np.outer(self.mean_c, self.mean_c)
        c = self.co / n - np.outer(self.mean_c, self.mean_o)
        return h, c


def _damped(h: np.ndarray, ridge: float) -> np.ndarray:
    """H plus a ridge of `ridge` × mean diagonal (dead inputs get a unit diagonal): always positive definite."""
    d = np.diag(h).copy()
    scale = d.mean() if d.size and d.mean() > 0 else 1.0
    out = h.copy()
    out[np.diag_indices_from(out)] = np.where(d > 0, d, scale) + ridge * scale
    return out


@dataclass
class RefitProblem:
    """One layer's least-squares problem, prepared once and shared by every candidate setting."""

    w: np.ndarray  # float64 [N, K], the original weight
    ridge: float
    b: np.ndarray  # float64 [N], the original bias (zeros if none)
    stats: LayerStats
    free_bias: bool
    h: np.ndarray  # damped H [K, K]
    g: np.ndarray  # [N, K], row n: C w_n
    hinv: np.ndarray
    w_star: np.ndarray  # the unconstrained optimum of each row

    def bias_for(self, w_new: np.ndarray) -> np.ndarray:
        """The refitted bias (b + W μ_o − W' μ_c) or the original one."""
        if not self.free_bias:
            return self.b
        return self.b + self.w @ self.stats.mean_o - w_new @ self.stats.mean_c


def refit_problem(weight: np.ndarray, bias: np.ndarray | None, stats: LayerStats, ridge: float = 0.01,
                  free_bias: bool = True) -> RefitProblem:
    """Prepare the layer's problem. `free_bias`: refit the bias too (else keep it and use raw moments)."""
    w = np.asarray(weight, dtype=np.float64)
    b = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    h_raw, c = stats.moments(free_bias)
    h = _damped(h_raw, ridge)
    g = w @ c.T
    hinv = scipy.linalg.cho_solve(scipy.linalg.cho_factor(h), np.eye(w.shape[1]))
    return RefitProblem(w, ridge, b, stats, free_bias, h, g, hinv, g @ hinv)


@dataclass
class Reconstruction:
    weight: np.ndarray  # float32 [N, K], zeros where pruned
    mask: np.ndarray  # bool [N, K]
    bias: np.ndarray  # float32 [N]


def _refit_rows(h: np.ndarray, g: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Exact least squares of each row's survivors: w'_S = H_SS⁻¹ g_S."""
    out = np.zeros(g.shape, dtype=np.float64)
    with _one_blas_thread():
        for n in range(g.shape[0]):
            s = np.flatnonzero(mask[n])
            if s.size:
                out[n, s] = scipy.linalg.solve(h[np.ix_(s, s)], g[n, s], assume_a="pos", check_finite=False)
    return out



def prune_reconstruct(problem: RefitProblem, sparsity: float, method: str = "obs") -> Reconstruction:
    """Choose which weights to drop and refit the survivors so the layer reproduces the original output.

    `method`:
    - 'obs' (default): iterative Optimal Brain Surgeon. The kept fraction shrinks geometrically over a few
      steps; at each step every survivor's saliency is the output error its removal would cause given the
      row's other survivors (w² / [H_SS⁻¹]_jj), the least salient go, and the rest are refitted exactly.
      Gradual pruning lets the survivors take over the work of the pruned weights before the next cut,
      the layer-wise analogue of the paper's iterative prune-retrain. Falls back to one-shot saliency on
      the unconstrained optimum for layers too large to invert row by row at every step.
    - 'obs-oneshot': one cut by OBS saliency on the unconstrained optimum (fast).
    - 'sparsegpt': SparseGPT's block-wise mask selection with OBS error propagation.
    - 'magnitude': keep the largest |w*| (w*: the unconstrained optimum).
    The survivors of each row are finally refitted exactly (the optimum for that mask), and the bias
    with them if the problem frees it.
    """
    if method not in PRUNE_METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {', '.join(PRUNE_METHODS)}")
    p = problem
    h, g, hinv, w_star = p.h, p.g, p.hinv, p.w_star
    n_rows = w_star.shape[0]
    keep = keep_count(w_star.size, sparsity)
    if method == "sparsegpt":
        mask = _sparsegpt_mask(w_star, hinv, keep)
    elif method == "obs" and n_rows * (4 * keep / n_rows) ** 3 <= ITERATIVE_FLOP_BUDGET:
        mask = _iterative_obs_mask(h, g, w_star, hinv, keep)
    else:
        saliency = np.abs(w_star) if method == "magnitude" else w_star**2 / np.diag(hinv)[None, :]
        mask = _top(saliency, keep)
    w_new = _refit_rows(h, g, mask)
    return Reconstruction(w_new.astype(np.float32), mask, p.bias_for(w_new).astype(np.float32))


def _top(saliency: np.ndarray, keep: int) -> np.ndarray:
    mask = np.zeros(saliency.size, dtype=bool)
    if keep:
        mask[np.argsort(-saliency.ravel(), kind="stable")[:keep]] = True
    return mask.reshape(saliency.shape)


def _row_obs(h: np.ndarray, g: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, with one Cholesky factorisation of its survivor block: the exact refit of the survivors
    and their OBS saliency w² / [H_SS⁻¹]_jj (the output error of removing each one alone)."""
    weights = np.zeros(g.shape)
    saliency = np.full(g.shape, -np.inf)
    with _one_blas_thread():
        _row_obs_loop(h, g, mask, weights, saliency)
    return weights, saliency


def _one_blas_thread():
    """Small per-row factorisations run far faster single-threaded: a multithreaded BLAS spends more
    time waking its threads (and, on a busy machine, waiting for them) than computing."""
    return threadpool_limits(limits=1, user_api="blas")


def _row_obs_loop(h, g, mask, weights, saliency) -> None:
    for n in range(g.shape[0]):
        s = np.flatnonzero(mask[n])
        if s.size == 0:
            continue
        lower = scipy.linalg.cholesky(h[np.ix_(s, s)], lower=True, check_finite=False)
        w = scipy.linalg.cho_solve((lower, True), g[n, s], check_finite=False)
        inv_lower = scipy.linalg.solve_triangular(lower, np.eye(s.size), lower=True, check_finite=False)
        weights[n, s] = w
        saliency[n, s] = w**2 / (inv_lower**2).sum(axis=0)


def _iterative_obs_mask(h: np.ndarray, g: np.ndarray, w_star: np.ndarray, hinv: np.ndarray, keep: int,
                        first_cut: float = 4.0) -> np.ndarray:
    """One cheap cut by one-shot saliency to `first_cut` × the kept count, then halving steps, each with
    exact per-row saliencies and refits, down to the kept count."""
    total = w_star.size
    counts = []
    c = keep
    while c < min(first_cut * keep, total):
        counts.append(c)
        c *= 2
    counts = [min(c, total)] + counts[::-1]  # e.g. 4k (one-shot), 2k, k
    mask = _top(w_star**2 / np.diag(hinv)[None, :], int(counts[0]))
    for count in counts[1:]:
        _, saliency = _row_obs(h, g, mask)
        mask = _top(saliency, int(count))
    return mask


def _sparsegpt_mask(w_star: np.ndarray, hinv: np.ndarray, keep: int) -> np.ndarray:
    """SparseGPT's mask (Frantar & Alistarh, 2023): sweep the columns in blocks; in each block drop the
    weights of least OBS saliency w² / [H⁻¹]_jj — computed on weights already updated for the error of
    the columns pruned before — and spread each pruned weight's error over the columns not yet visited."""
    n_rows, k = w_star.shape
    w = w_star.copy()
    u = scipy.linalg.cholesky(hinv, lower=False)  # H⁻¹ = UᵀU: the sequential OBS updates, precomputed
    drop_total = w.size - keep
    mask = np.ones(w.shape, dtype=bool)
    dropped = 0
    for i1 in range(0, k, SPARSEGPT_BLOCK):
        i2 = min(i1 + SPARSEGPT_BLOCK, k)
        w1 = w[:, i1:i2].copy()
        u1 = u[i1:i2, i1:i2]
        err1 = np.zeros_like(w1)
        # This block's share of the pruning, so the total is exact.
        drop = round(drop_total * i2 / k) - dropped
        saliency = w1**2 / np.diag(u1)[None, :] ** 2
        block_mask = ~_top(-saliency, drop) if drop > 0 else np.ones_like(w1, dtype=bool)
        dropped += drop
        for i in range(i2 - i1):
            col = w1[:, i]
            q = np.where(block_mask[:, i], col, 0.0)
            e = (col - q) / u1[i, i]
            w1[:, i:] -= np.outer(e, u1[i, i:])
            err1[:, i] = e
        mask[:, i1:i2] = block_mask
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return mask


@dataclass
class QuantizedLayer:
    mask: np.ndarray  # bool [N, K]
    labels: np.ndarray  # cluster index of each survivor, row-major
    codebook: np.ndarray  # float32
    bias: np.ndarray  # float32 [N]
    error: float  # relative output error ‖ΔY‖² / ‖Y‖² on the calibration statistics


def quantize_refit(problem: RefitProblem, rec: Reconstruction, bits: int, init: str = "linear", seed: int = 0,
                   rounds: int = 3) -> QuantizedLayer:
    """k-means the refitted survivors, then refit the k shared values by least squares on the layer
    output (it is linear in them), re-assign each survivor to its nearest refitted value and repeat
    (`rounds` times; 0: k-means only). The bias is refitted last. Keeps the best round (by the
    calibration objective)."""
    w, b, h, g, stats = problem.w, problem.b, problem.h, problem.g, problem.stats
    n_rows = w.shape[0]
    mask = rec.mask
    rows, cols = np.nonzero(mask)
    values = rec.weight[mask].astype(np.float64)
    clustering = kmeans_1d(values.astype(np.float32), 1 << bits, init=init, seed=seed)
    codebook = clustering.codebook.astype(np.float64)
    labels = clustering.labels.astype(np.int64)
    row_start = np.concatenate([[0], np.cumsum(mask.sum(1))])

    def objective(cb, lab):
        wq = np.zeros_like(w)
        wq[rows, cols] = cb[lab]
        return float(np.einsum("nk,kj,nj->", wq, h, wq) - 2 * np.einsum("nk,nk->", wq, g)), wq

    best = (objective(codebook, labels)[0], codebook.copy(), labels.copy())
    for _ in range(rounds):
        k = codebook.size
        a = np.zeros(k * k)
        rhs = np.bincount(labels, weights=g[rows, cols], minlength=k)
        for n in range(n_rows):
            s0, s1 = row_start[n], row_start[n + 1]
            if s0 == s1:
                continue
            s = cols[s0:s1]
            lab = labels[s0:s1]
            a += np.bincount((lab[:, None] * k + lab[None, :]).ravel(), weights=h[np.ix_(s, s)].ravel(),
                             minlength=k * k)
        a = a.reshape(k, k)
        used = np.bincount(labels, minlength=k) > 0
        # A small pull towards the current values keeps unused or ill-determined centroids in place.
        reg = problem.ridge * (np.diag(a).mean() if np.diag(a).mean() > 0 else 1.0)
        a[np.diag_indices(k)] += reg
        codebook = np.where(used, np.linalg.solve(a, rhs + reg * codebook), codebook)
        codebook_sorted = np.sort(codebook)
        labels = _nearest_index(values, codebook_sorted)
        codebook = codebook_sorted
        obj = objective(codebook, labels)[0]
        if obj < best[0]:
            best = (obj, codebook.copy(), labels.copy())
    _, codebook, labels = best
    # Drop unused centroids, keep the codebook increasing.
    used = np.unique(labels)
    remap = np.zeros(codebook.size, dtype=np.int64)
    remap[used] = np.arange(used.size)
    codebook32 = codebook[used].astype(np.float32)
    labels = remap[labels]
    wq = np.zeros_like(w)
    wq[rows, cols] = codebook32[labels]
    b_new = problem.bias_for(wq)
    # Relative output error on the calibration data: E‖(Wq x_c + b') − (W x_o + b)‖² / E‖W x_o + b‖².
    err = relative_output_error(wq, b_new, w, b, stats)
    return QuantizedLayer(mask, labels, codebook32, b_new.astype(np.float32), err)


def _nearest_index(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    if codebook.size == 1:
        return np.zeros(values.size, dtype=np.int64)
    return np.searchsorted((codebook[:-1] + codebook[1:]) / 2, values, side="right")


def relative_output_error(wq, bq, w, b, stats: "LayerStats") -> float:
    """E‖(W' x_c + b') − (W x_o + b)‖² / E‖W x_o + b‖² over the calibration rows, from the raw moments."""
    n = max(stats.n, 1)
    cc, co, oo = stats.cc / n, stats.co / n, stats.oo / n
    mc, mo = stats.mean_c, stats.mean_o
    qq = np.einsum("nk,kj,nj->", wq, cc, wq) + 2 * bq @ (wq @ mc) + bq @ bq
    qo = np.einsum("nk,kj,nj->", wq, co, w) + bq @ (w @ mo) + b @ (wq @ mc) + bq @ b
    tt = np.einsum("nk,kj,nj->", w, oo, w) + 2 * b @ (w @ mo) + b @ b
    return float(max(qq - 2 * qo + tt, 0.0) / max(tt, 1e-30))
