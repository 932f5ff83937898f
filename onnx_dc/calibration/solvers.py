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
import scipy.optimize
from threadpoolctl import threadpool_limits

from ..codec.cluster import kmeans_1d
from ..codec.prune import keep_count

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
        """Add a batch of rows ([rows, K] each; row i of both is the same sample and position). The
        products run in float32 (the batch's own rounding, ~1e-7 relative) and accumulate in float64;
        one product serves all three when both are the same array."""
        same = x_c is x_o
        x_c = np.asarray(x_c, dtype=np.float32).reshape(-1, self.k)
        x_o = x_c if same else np.asarray(x_o, dtype=np.float32).reshape(-1, self.k)
        if x_c.shape != x_o.shape:
            raise ValueError(f"calibration batches differ in shape: {x_c.shape} vs {x_o.shape}")
        self.n += x_c.shape[0]
        self.sum_c += x_c.sum(0, dtype=np.float64)
        self.sum_o += x_o.sum(0, dtype=np.float64)
        cc = x_c.T @ x_c
        self.cc += cc
        self.co += cc if same else x_c.T @ x_o
        self.oo += cc if same else x_o.T @ x_o

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


def _damped(h: np.ndarray, ridge: float) -> tuple[np.ndarray, tuple]:
    """H plus a ridge of `ridge` × mean diagonal (dead inputs get a unit diagonal), and its Cholesky factor.
    A covariance is positive semi-definite, but the float32 products of LayerStats.add are not exact: an
    input that barely varies (its variance ~1e-6 of its squared mean, e.g. global-average-pooled features
    of noise images) gets centred moments whose rounding outweighs the ridge, and H comes out indefinite.
    Then the spectrum is lifted so that its smallest eigenvalue is the ridge."""
    d = np.diag(h).copy()
    scale = d.mean() if d.size and d.mean() > 0 else 1.0
    out = h.copy()
    out[np.diag_indices_from(out)] = np.where(d > 0, d, scale) + ridge * scale
    try:
        return out, scipy.linalg.cho_factor(out)
    except np.linalg.LinAlgError:
        out[np.diag_indices_from(out)] += ridge * scale - np.linalg.eigvalsh(out)[0]
        return out, scipy.linalg.cho_factor(out)


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
    h, factor = _damped(h_raw, ridge)
    g = w @ c.T
    hinv = scipy.linalg.cho_solve(factor, np.eye(w.shape[1]))
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



def prune_reconstruct(problem: RefitProblem, sparsity: float, method: str = "obs",
                      row_weight: np.ndarray | None = None) -> Reconstruction:
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

    `row_weight` [N] (optional): how much an error in each output matters downstream (e.g. the squared
    norm of the next layer's weights reading that output). The rows share one budget of survivors, so
    the saliencies are scaled by it: outputs that the next layer barely reads give up their weights first.
    """
    if method not in PRUNE_METHODS:
        raise ValueError(f"unknown pruning method {method!r}; choose one of {', '.join(PRUNE_METHODS)}")
    p = problem
    h, g, hinv, w_star = p.h, p.g, p.hinv, p.w_star
    n_rows = w_star.shape[0]
    keep = keep_count(w_star.size, sparsity)
    rw = _row_weights(row_weight, n_rows)
    if method == "sparsegpt":
        mask = _sparsegpt_mask(w_star, hinv, keep, rw)
    elif method == "obs" and n_rows * (4 * keep / n_rows) ** 3 <= ITERATIVE_FLOP_BUDGET:
        mask = _iterative_obs_mask(h, g, w_star, hinv, keep, rw)
    else:
        saliency = np.abs(w_star) if method == "magnitude" else w_star**2 / np.diag(hinv)[None, :]
        mask = _top(saliency * (rw if method != "magnitude" else np.sqrt(rw)), keep)
    w_new = _refit_rows(h, g, mask)
    return Reconstruction(w_new.astype(np.float32), mask, p.bias_for(w_new).astype(np.float32))


def _row_weights(row_weight, n_rows: int) -> np.ndarray:
    """[N, 1] positive weights, mean 1 (ones if none given or unusable)."""
    if row_weight is None:
        return np.ones((n_rows, 1))
    rw = np.asarray(row_weight, dtype=np.float64).reshape(-1)
    if rw.size != n_rows or not np.all(np.isfinite(rw)) or rw.max() <= 0:
        return np.ones((n_rows, 1))
    rw = np.maximum(rw, 1e-6 * rw.max())
    return (rw / rw.mean())[:, None]


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
                        rw: np.ndarray, first_cut: float = 4.0) -> np.ndarray:
    """One cheap cut by one-shot saliency to `first_cut` × the kept count, then halving steps, each with
    exact per-row saliencies and refits, down to the kept count."""
    total = w_star.size
    counts = []
    c = keep
    while c < min(first_cut * keep, total):
        counts.append(c)
        c *= 2
    counts = [min(c, total)] + counts[::-1]  # e.g. 4k (one-shot), 2k, k
    mask = _top(rw * w_star**2 / np.diag(hinv)[None, :], int(counts[0]))
    for count in counts[1:]:
        _, saliency = _row_obs(h, g, mask)
        mask = _top(rw * saliency, int(count))
    return mask


def _sparsegpt_mask(w_star: np.ndarray, hinv: np.ndarray, keep: int, rw: np.ndarray) -> np.ndarray:
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
        saliency = rw * w1**2 / np.diag(u1)[None, :] ** 2
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
        return float(((wq @ h) * wq).sum() - 2 * (wq * g).sum()), wq

    best = (objective(codebook, labels)[0], codebook.copy(), labels.copy())
    for _ in range(rounds):
        codebook = _codebook_ls(problem, rows, cols, row_start, labels, codebook)
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


QUANTIZERS = ("gptq", "kmeans")
RATE = 1.0  # the price of one bit of cluster-index code, in units of a quantization step's output error
GPTQ_CHUNK_FLOATS = 4_000_000  # rows processed together by the GPTQ sweep: their padded H_SS⁻¹ factors
GPTQ_FLOP_BUDGET = 2e10  # per-row H_SS⁻¹ factors cost about 2·Σ|S|³ flops; above this, quantize_refit instead


def quantize_gptq(problem: RefitProblem, rec: Reconstruction, bits: int, init: str = "linear", seed: int = 0,
                  rounds: int = 3, rate: float = RATE) -> QuantizedLayer:
    """Entropy-constrained GPTQ: k-means seeds the 2^bits shared values; then, `rounds` times, each row's
    survivors are assigned to shared values one at a time (largest H_jj first), the not yet assigned
    survivors of the row absorbing the error through the row's H_SS⁻¹ (Frantar et al., GPTQ), followed
    by the least-squares refit of the shared values and the bias.

    Each assignment minimises output error + λ·(code length of the value's index), the code lengths
    taken from how often each value was used in the previous round (-log2 p: what Huffman coding of the
    indices will spend). `rate` sets λ in units of the output error of one quantization step, so a
    survivor only moves to a more common neighbouring value where that costs little output error; 0
    gives plain GPTQ (nearest value with error feedback). Refitted survivors spread evenly over the
    codebook (unlike magnitude-pruned weights, which pile up next to the pruning threshold) and would
    otherwise cost about a bit more per weight once Huffman coded. Layers whose rows keep too many
    weights to factor each row's H_SS (GPTQ_FLOP_BUDGET) get quantize_refit instead."""
    w, b, h = problem.w, problem.b, problem.h
    mask = rec.mask
    if 2 * float((mask.sum(1).astype(np.float64) ** 3).sum()) > GPTQ_FLOP_BUDGET:
        return quantize_refit(problem, rec, bits, init=init, seed=seed, rounds=rounds)
    rows, cols = np.nonzero(mask)
    w_fit = rec.weight.astype(np.float64)
    values = w_fit[rows, cols]
    clustering = kmeans_1d(values.astype(np.float32), 1 << bits, init=init, seed=seed)
    codebook = clustering.codebook.astype(np.float64)
    labels = clustering.labels.astype(np.int64)
    row_start = np.concatenate([[0], np.cumsum(mask.sum(1))])
    if values.size:
        factors = _gptq_factors(h, mask)
        scale = float(np.median(np.diag(h)[cols]))
        for _ in range(rounds):
            steps = np.diff(np.unique(codebook))
            step = float(np.median(steps)) if steps.size else 0.0
            counts = np.bincount(labels, minlength=codebook.size) + 0.5
            lengths = -np.log2(counts / counts.sum())
            labels = _gptq_assign(factors, w_fit, mask, codebook, rate * scale * step**2, lengths)
            codebook = _codebook_ls(problem, rows, cols, row_start, labels, codebook)
    codebook32, labels = _compact(codebook, labels)
    wq = np.zeros_like(w)
    wq[rows, cols] = codebook32[labels]
    b_new = problem.bias_for(wq)
    err = relative_output_error(wq, b_new, w, b, problem.stats)
    return QuantizedLayer(mask, labels, codebook32, b_new.astype(np.float32), err)


def _compact(codebook: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop unused values and sort the codebook (float32, increasing); labels remapped."""
    used = np.unique(labels)
    order = used[np.argsort(codebook[used], kind="stable")]
    remap = np.zeros(codebook.size, dtype=np.int64)
    remap[order] = np.arange(order.size)
    return codebook[order].astype(np.float32), remap[labels]


def _gptq_factors(h: np.ndarray, mask: np.ndarray) -> list:
    """Per row: its survivors in assignment order (largest H_jj first) and the upper Cholesky factor U of
    H_SS⁻¹ (H_SS⁻¹ = UᵀU) in that order: row i of U carries survivor i's error to the ones after it."""
    diag = np.diag(h)
    out = []
    with _one_blas_thread():
        for n in range(mask.shape[0]):
            s = np.flatnonzero(mask[n])
            if s.size == 0:
                out.append((s, None))
                continue
            s = s[np.argsort(-diag[s], kind="stable")]
            hinv = scipy.linalg.cho_solve(scipy.linalg.cho_factor(h[np.ix_(s, s)]), np.eye(s.size), check_finite=False)
            out.append((s, scipy.linalg.cholesky(hinv, lower=False, check_finite=False)))
    return out


def _gptq_assign(factors: list, w_fit: np.ndarray, mask: np.ndarray, codebook: np.ndarray, lam: float,
                 lengths: np.ndarray) -> np.ndarray:
    """The GPTQ sweep over all rows at once (rows padded to the longest survivor list, in chunks): labels
    of the survivors in row-major order."""
    n_rows = mask.shape[0]
    labels = np.zeros(mask.shape, dtype=np.int64)
    live = [n for n in range(n_rows) if factors[n][1] is not None]
    longest = max((factors[n][0].size for n in live), default=0)
    chunk = max(1, GPTQ_CHUNK_FLOATS // max(1, longest * longest))
    for c0 in range(0, len(live), chunk):
        group = live[c0:c0 + chunk]
        m = max(factors[n][0].size for n in group)
        u = np.zeros((len(group), m, m))
        w = np.zeros((len(group), m))
        valid = np.zeros((len(group), m), dtype=bool)
        for r, n in enumerate(group):
            s, un = factors[n]
            u[r, :s.size, :s.size] = un
            u[r, np.arange(s.size, m), np.arange(s.size, m)] = 1.0
            w[r, :s.size] = w_fit[n, s]
            valid[r, :s.size] = True
        lab = np.zeros((len(group), m), dtype=np.int64)
        for i in range(m):
            d = u[:, i, i]
            cost = (w[:, i, None] - codebook[None, :]) ** 2 / (d * d)[:, None] + lam * lengths[None, :]
            j = np.argmin(cost, axis=1)
            e = np.where(valid[:, i], (w[:, i] - codebook[j]) / d, 0.0)
            w[:, i:] -= e[:, None] * u[:, i, i:]
            lab[:, i] = j
        for r, n in enumerate(group):
            s = factors[n][0]
            labels[n, s] = lab[r, :s.size]
    return labels[mask]


def kl_refit(x: np.ndarray, target_logits: np.ndarray, mask: np.ndarray, weight: np.ndarray | None, bias: np.ndarray,
             temperature: float = 4.0, codebook: np.ndarray | None = None, labels: np.ndarray | None = None,
             max_iter: int = 300, holdout: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Refit a classifier layer (logits = W x + b) to the original model's predictions: minimise the mean
    KL divergence between softmax(target/T) and softmax(logits/T) over the rows of `x` [n, K] (the
    compressed model's inputs to the layer), over the survivors of `mask` and the bias — or, with
    `codebook` and `labels` (the survivors' indices, row-major), over the shared values and the bias.
    Convex (multinomial logistic regression with soft targets); L-BFGS from the given start.
    Least squares on the logits spends its effort on logit values nothing downstream reads; the KL
    objective spends it on the predicted distribution. With many free weights and few samples the fit
    overfits the calibration data, so every `holdout`-th row is held out and the iterate with the lowest
    held-out loss is kept (early stopping; the start counts too). Returns (weight, bias, codebook or None)."""
    x = np.asarray(x, dtype=np.float64)
    rows, cols = np.nonzero(mask)
    po = _softmax(np.asarray(target_logits, dtype=np.float64) / temperature)
    nw = rows.size if codebook is None else codebook.size
    held = np.zeros(x.shape[0], dtype=bool)
    if holdout and x.shape[0] >= 4 * holdout:
        held[holdout - 1::holdout] = True
    fit_x, fit_p, val_x, val_p = x[~held], po[~held], x[held], po[held]

    def unpack(theta):
        wm = np.zeros(mask.shape)
        wm[rows, cols] = theta[:nw] if codebook is None else theta[:nw][labels]
        return wm, theta[nw:]

    def loss(theta, xs, ps, grad=True):
        wm, bb = unpack(theta)
        z = (xs @ wm.T + bb) / temperature
        z -= z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        n = max(xs.shape[0], 1)
        value = -(ps * logp).sum() / n
        if not grad:
            return value
        gz = (np.exp(logp) - ps) / (n * temperature)
        gw = (gz.T @ xs)[rows, cols]
        if codebook is not None:
            gw = np.bincount(labels, weights=gw, minlength=codebook.size)
        return value, np.concatenate([gw, gz.sum(0)])

    start = np.concatenate([np.asarray(weight, dtype=np.float64)[rows, cols] if codebook is None
                            else np.asarray(codebook, dtype=np.float64), np.asarray(bias, dtype=np.float64)])
    best = [loss(start, val_x, val_p, False) if held.any() else np.inf, start]

    def watch(theta):
        if held.any():
            v = loss(theta, val_x, val_p, False)
            if v < best[0]:
                best[:] = [v, theta.copy()]

    with _one_blas_thread():
        res = scipy.optimize.minimize(loss, start, args=(fit_x, fit_p), jac=True, method="L-BFGS-B",
                                      callback=watch, options={"maxiter": max_iter})
    theta = best[1] if held.any() else (res.x if res.fun <= loss(start, fit_x, fit_p, False) else start)
    wm, bb = unpack(theta)
    return wm, bb, (theta[:nw].copy() if codebook is not None else None)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(1, keepdims=True)


def _codebook_ls(problem: RefitProblem, rows, cols, row_start, labels, codebook) -> np.ndarray:
    """The shared values minimising the layer's output error for fixed assignments (the output is linear in
    them): a k×k system gathered from each row's H_SS. Unused values stay where they are."""
    h, g = problem.h, problem.g
    k = codebook.size
    a = np.zeros(k * k)
    rhs = np.bincount(labels, weights=g[rows, cols], minlength=k)
    for n in range(row_start.size - 1):
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
    return np.where(used, np.linalg.solve(a, rhs + reg * codebook), codebook)


def _nearest_index(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    if codebook.size == 1:
        return np.zeros(values.size, dtype=np.int64)
    return np.searchsorted((codebook[:-1] + codebook[1:]) / 2, values, side="right")


def relative_output_error(wq, bq, w, b, stats: "LayerStats") -> float:
    """E‖(W' x_c + b') − (W x_o + b)‖² / E‖W x_o + b‖² over the calibration rows, from the raw moments."""
    n = max(stats.n, 1)
    cc, co, oo = stats.cc / n, stats.co / n, stats.oo / n
    mc, mo = stats.mean_c, stats.mean_o
    qq = ((wq @ cc) * wq).sum() + 2 * bq @ (wq @ mc) + bq @ bq
    qo = ((wq @ co) * w).sum() + bq @ (w @ mo) + b @ (wq @ mc) + bq @ b
    tt = ((w @ oo) * w).sum() + 2 * b @ (w @ mo) + b @ b
    return float(max(qq - 2 * qo + tt, 0.0) / max(tt, 1e-30))
