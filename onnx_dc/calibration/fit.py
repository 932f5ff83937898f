"""One layer fitted on its calibration statistics, the recipe both data-aware compression and the sensitivity
analysis use: the pruned reconstruction quantized (GPTQ or k-means with refits; a classifier output layer
refitted to the original's predicted distribution by KL), packed into a payload, the bias refitted."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..codec import CompressedTensor, pack_tensor
from ..graph.model import Layer
from .solvers import (
    LayerStats, Reconstruction, RefitProblem, kl_refit, quantize_gptq, quantize_refit, refit_problem,
    relative_output_error,
)

MAX_KL_VALUES = 20_000_000  # inputs kept per sample for the output layer's KL refit (rows × K), float32
KL_TEMPERATURE = 4.0
KL_MAX_ITER = 300


@dataclasses.dataclass
class FittedLayer:
    layer: Layer  # with the refitted bias filled in
    packed: CompressedTensor
    error: float  # relative output error on the calibration data


def kl_row_stride(n_samples: int, batch_rows: int, batch_samples: int, k: int) -> int:
    """Keep every stride-th input row for the output layer's KL refit, so that all the calibration data
    gives at most about MAX_KL_VALUES values (rows × K)."""
    return max(1, int(np.ceil(n_samples * batch_rows / batch_samples * k / MAX_KL_VALUES)))


def layer_matrix(layer: Layer) -> np.ndarray:
    return layer.weight.reshape(layer.shape[0], -1)


def layer_bias(layer: Layer) -> np.ndarray | None:
    """The layer's current bias if it can be refitted (one consumer), else None."""
    if layer.kind == "conv":
        return layer.conv_bias
    if len(layer.uses) == 1:
        b = layer.uses[0].bias
        return b if b is not None else np.zeros(layer.shape[0], np.float32)
    return None


def with_bias(layer: Layer, bias: np.ndarray) -> Layer:
    if layer.kind == "conv":
        return dataclasses.replace(layer, new_conv_bias=bias)
    return dataclasses.replace(layer, uses=[dataclasses.replace(layer.uses[0], bias=bias)])


def layer_problem(layer: Layer, stats: LayerStats):
    """The layer's least-squares refit problem on its input statistics (the bias free where it can be refitted)."""
    bias = layer_bias(layer)
    return refit_problem(layer_matrix(layer), bias, stats, free_bias=bias is not None)


def fit_layer(layer: Layer, problem: RefitProblem, rec: Reconstruction, bits: int, index_bits: int, *,
              quantizer: str, init: str, seed: int, huffman: bool, kl_inputs: tuple | None = None,
              gptq_rounds: int | None = None) -> FittedLayer:
    """The pruned reconstruction `rec` quantized to `bits` and packed. `kl_inputs`: (compressed, original)
    input rows of a classifier output layer, refitted to the original predicted distribution
    (fit_classifier); `gptq_rounds`: GPTQ's assignment rounds (None: its default)."""
    if kl_inputs is not None:
        q = fit_classifier(problem, rec, kl_inputs[0], kl_inputs[1], bits, init, seed, quantizer)
    elif quantizer == "gptq":
        rounds = {} if gptq_rounds is None else {"rounds": gptq_rounds}
        q = quantize_gptq(problem, rec, bits, init=init, seed=seed, **rounds)
    else:
        q = quantize_refit(problem, rec, bits, init=init, seed=seed)
    packed = pack_tensor(layer.shape, q.mask, q.labels, q.codebook, bits, index_bits, huffman)
    return FittedLayer(with_bias(layer, q.bias) if problem.free_bias else layer, packed, q.error)


def fit_classifier(problem: RefitProblem, rec: Reconstruction, x_c: np.ndarray, x_o: np.ndarray, bits: int,
                   init: str, seed: int, quantizer: str):
    """The output layer: mask from the least-squares problem, survivors and bias refitted to the original
    predicted distribution, quantized around that fit, then the shared values and bias refitted to it."""
    target = x_o.astype(np.float64) @ problem.w.T + problem.b
    w_kl, b_kl, _ = kl_refit(x_c, target, rec.mask, rec.weight, rec.bias, KL_TEMPERATURE, max_iter=KL_MAX_ITER)
    # The quantizer's least-squares pull goes towards the KL fit (its unconstrained optimum is w_kl).
    around = dataclasses.replace(problem, g=w_kl @ problem.h, w_star=w_kl)
    start = Reconstruction(w_kl.astype(np.float32), rec.mask, b_kl.astype(np.float32))
    q = (quantize_gptq if quantizer == "gptq" else quantize_refit)(around, start, bits, init=init, seed=seed)
    rows, cols = np.nonzero(q.mask)
    wq, bq, codebook = kl_refit(x_c, target, q.mask, None, b_kl, KL_TEMPERATURE,
                                codebook=q.codebook.astype(np.float64), labels=q.labels)
    # Keep the codebook increasing (the refit may reorder values) and float32.
    order = np.argsort(codebook, kind="stable")
    remap = np.empty_like(order)
    remap[order] = np.arange(order.size)
    codebook32 = codebook[order].astype(np.float32)
    labels = remap[q.labels]
    wq = np.zeros_like(problem.w)
    wq[rows, cols] = codebook32[labels]
    err = relative_output_error(wq, bq, problem.w, problem.b, problem.stats)
    return dataclasses.replace(q, labels=labels, codebook=codebook32, bias=bq.astype(np.float32), error=err)
