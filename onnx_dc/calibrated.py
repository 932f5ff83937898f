"""Data-aware compression: layers in graph order, each fitted on calibration data to reproduce the
original layer's output while seeing the activations of the already compressed layers before it.

Two things look past the layer itself (both read from the graph, both skipped where it is not clear):
- the rows of a layer share its survivor budget in proportion to how much the next layer reads each
  output (the squared norm of its weights on that output channel), when the output reaches exactly one
  next layer through element-wise ops, pooling and reshapes;
- a fully-connected layer whose output is the model's output (directly or through Softmax, LogSoftmax,
  reshapes) is taken to produce class logits and is refitted to the original model's predicted
  distribution (KL divergence), not to the logit values (`output_fit="mse"` turns this off).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import onnx

from .codec import CompressedTensor, pack_tensor
from collections import defaultdict

from .codec.refit import (
    LayerStats, Reconstruction, RefitProblem, kl_refit, prune_reconstruct, quantize_gptq, quantize_refit,
    refit_problem, relative_output_error,
)
from .config import OUTPUT_FITS, ConfigError, LayerPolicy
from .graph.calibrate import as_rows, batches, layer_inputs, session, with_outputs
from .graph.decompress import decompress_model
from .graph.match import Layer
from .graph.rewrite import rewrite

BATCH = 256
MIN_ROWS_PER_INPUT = 0.25  # rows of calibration data needed per input of a layer (ridge-stabilised below 1)
MAX_KL_VALUES = 20_000_000  # inputs kept per sample for the output layer's KL refit (rows × K), float32
KL_TEMPERATURE = 4.0
KL_MAX_ITER = 300
# Ops an output passes through on its way to the next layer without mixing channels.
CHANNELWISE = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish",
               "Gelu", "Softplus", "MaxPool", "AveragePool", "Identity", "Dropout", "Flatten", "Reshape"}
TO_OUTPUT = {"Identity", "Flatten", "Reshape", "Squeeze", "Softmax", "LogSoftmax"}


@dataclasses.dataclass
class FittedLayer:
    layer: Layer  # with the refitted bias filled in
    packed: CompressedTensor
    error: float  # relative output error on the calibration data


@dataclasses.dataclass
class FitCache:
    """Work shared by several compressions of one model with the same calibration data and settings that
    differ only in the per-layer policies (the --target-ratio search builds the file up to 16 times). Layer
    i's inputs depend only on the policies of the layers before it, and its fit on its own policy too, so
    both are looked up by the tuple of policies so far and reused exactly. The input statistics (three K×K
    float64 matrices a layer) are kept up to `max_stats_bytes`; fitted layers (a payload each) always."""
    max_stats_bytes: int = 1 << 28
    fits: dict = dataclasses.field(default_factory=dict)
    stats: dict = dataclasses.field(default_factory=dict)
    stats_bytes: int = 0
    hits: int = 0  # layers taken from the cache (fits or statistics); the tests read it

    def keep_stats(self, key: tuple, entry: tuple) -> None:
        size = sum(a.nbytes for a in (entry[0].cc, entry[0].co, entry[0].oo)) + sum(a.nbytes for a in entry[1] + entry[2])
        if self.stats_bytes + size <= self.max_stats_bytes:
            self.stats[key] = entry
            self.stats_bytes += size


def kl_row_stride(n_samples: int, batch_rows: int, batch_samples: int, k: int) -> int:
    """Keep every stride-th input row for the output layer's KL refit, so that all the calibration data
    gives at most about MAX_KL_VALUES values (rows × K)."""
    return max(1, int(np.ceil(n_samples * batch_rows / batch_samples * k / MAX_KL_VALUES)))


def _matrix(layer: Layer) -> np.ndarray:
    return layer.weight.reshape(layer.shape[0], -1)


def _bias(layer: Layer) -> np.ndarray | None:
    """The layer's current bias if it can be refitted (one consumer), else None."""
    if layer.kind == "conv":
        return layer.conv_bias
    if len(layer.uses) == 1:
        b = layer.uses[0].bias
        return b if b is not None else np.zeros(layer.shape[0], np.float32)
    return None


def _with_bias(layer: Layer, bias: np.ndarray) -> Layer:
    if layer.kind == "conv":
        return dataclasses.replace(layer, new_conv_bias=bias)
    return dataclasses.replace(layer, uses=[dataclasses.replace(layer.uses[0], bias=bias)])


def _output_name(layer: Layer) -> str | None:
    if len(layer.uses) != 1:
        return None
    return layer.uses[0].output if layer.kind == "fc" else layer.uses[0].output[0]


def _downstream(model: onnx.ModelProto, layers: list[Layer]) -> list[tuple[int | None, bool]]:
    """Per layer: (index of the one layer its output feeds through channel-wise ops, or None;
    whether its output reaches the model's output only through TO_OUTPUT ops)."""
    consumers = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in model.graph.output}
    reads = {}  # (tensor, node) -> layer index
    for j, layer in enumerate(layers):
        nodes = [u.node for u in layer.uses] if layer.kind == "fc" else list(layer.uses)
        for name, node in zip(layer_inputs(layer), nodes):
            reads[(name, node.SerializeToString())] = j
    out = []
    for layer in layers:
        start = _output_name(layer)
        if start is None:
            out.append((None, False))
            continue
        nexts, channelwise, to_output, final_only = set(), True, False, True
        stack, seen = [start], set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in outputs:
                to_output = True
            for node in consumers.get(t, []):
                j = reads.get((t, node.SerializeToString()))
                if j is not None:
                    nexts.add(j)
                    final_only = False
                    continue
                if node.op_type not in TO_OUTPUT:
                    final_only = False
                if node.op_type not in CHANNELWISE or node.input[0] != t:
                    channelwise = False
                    if node.op_type not in TO_OUTPUT:
                        continue
                stack.extend(node.output[:1])
        nxt = next(iter(nexts)) if channelwise and len(nexts) == 1 and not to_output else None
        out.append((nxt, to_output and final_only and not nexts))
    return out


def _row_weight(layer: Layer, nxt: Layer | None) -> np.ndarray | None:
    """How much the next layer reads each output channel of `layer`: Σ W_next² over that channel."""
    if nxt is None:
        return None
    n = layer.shape[0]
    w = nxt.weight
    if nxt.kind == "conv":
        if w.ndim < 2 or w.shape[1] != n:
            return None
    elif nxt.kind != "fc" or (w.size // w.shape[0]) % n:
        return None
    w = w.reshape(w.shape[0], n, -1).astype(np.float64)
    return (w**2).sum(axis=(0, 2))


def _is_classifier(layer: Layer, final: bool) -> bool:
    return final and layer.kind == "fc" and len(layer.uses) == 1 and layer.shape[0] >= 2


def compress_calibrated(
    model: onnx.ModelProto,
    layers: list[Layer],
    policies: list[LayerPolicy],
    feeds: dict[str, np.ndarray],
    init: str = "linear",
    seed: int = 0,
    huffman: bool = True,
    prune_method: str = "obs",
    progress: Callable[[str, int, int], None] | None = None,
    quantizer: str = "gptq",
    output_fit: str = "mse",
    cache: FitCache | None = None,
) -> list[FittedLayer]:
    """`quantizer`: 'gptq' (entropy-constrained GPTQ, see refit.quantize_gptq) or 'kmeans' (k-means,
    least-squares codebook refits, nearest-value re-assignment). `output_fit`: 'kl' refits a classifier
    output layer to the original predicted distribution, 'mse' to the original logits. `cache`: shared by
    calls that differ only in `policies` (FitCache)."""
    if output_fit not in OUTPUT_FITS:
        raise ValueError(f"unknown output fit {output_fit!r}; choose one of {', '.join(OUTPUT_FITS)}")
    downstream = _downstream(model, layers)
    names = sorted({n for layer in layers for n in layer_inputs(layer)})
    original = []  # the original model's session, made when a layer's statistics are first needed
    fitted: list[FittedLayer] = []
    for i, (layer, policy) in enumerate(zip(layers, policies)):
        if progress:
            progress(layer.weight_name, i, len(layers))
        fit_key, stats_key = tuple(policies[:i + 1]), tuple(policies[:i])
        if cache is not None and fit_key in cache.fits:
            cache.hits += 1
            fitted.append(cache.fits[fit_key])
            continue
        k = _matrix(layer).shape[1]
        nxt, final = downstream[i]
        classifier = output_fit == "kl" and _is_classifier(layer, final) and _bias(layer) is not None
        if cache is not None and stats_key in cache.stats:
            cache.hits += 1
            stats, kept_c, kept_o = cache.stats[stats_key]
        else:
            if not original:
                original.append(session(with_outputs(model, names)))
            stats, kept_c, kept_o = _layer_stats(model, layer, fitted, original[0], feeds, k, classifier)
            if cache is not None:
                cache.keep_stats(stats_key, (stats, kept_c, kept_o))
        needed = max(16, int(np.ceil(MIN_ROWS_PER_INPUT * k)))
        if stats.n < needed:
            raise ConfigError(f"--calibration: layer {layer.weight_name} has {k} inputs and the calibration data "
                              f"gives {stats.n} rows for it; at least {needed} are needed (more samples)")
        bias = _bias(layer)
        w = _matrix(layer)
        problem = refit_problem(w, bias, stats, free_bias=bias is not None)
        row_weight = _row_weight(layer, layers[nxt]) if nxt is not None else None
        rec = prune_reconstruct(problem, policy.sparsity, method=prune_method, row_weight=row_weight)
        if classifier:
            q = _fit_classifier(problem, rec, np.concatenate(kept_c), np.concatenate(kept_o), policy.bits, init,
                                seed, quantizer)
        elif quantizer == "gptq":
            q = quantize_gptq(problem, rec, policy.bits, init=init, seed=seed)
        else:
            q = quantize_refit(problem, rec, policy.bits, init=init, seed=seed)
        packed = pack_tensor(layer.shape, q.mask, q.labels, q.codebook, policy.bits, policy.index_bits, huffman)
        new_layer = _with_bias(layer, q.bias) if bias is not None else layer
        fitted.append(FittedLayer(new_layer, packed, q.error))
        if cache is not None:
            cache.fits[fit_key] = fitted[-1]
    if progress:
        progress("", len(layers), len(layers))
    return fitted


def _layer_stats(model, layer: Layer, fitted: list[FittedLayer], original, feeds, k: int, classifier: bool):
    """The layer's input statistics over the calibration data, original model vs the model with `fitted`
    compressed, and (for a classifier output layer) thinned rows of both inputs for the KL refit."""
    done = [f.layer for f in fitted]
    if done:
        partial, _ = rewrite(model, done, {f.layer.weight_name: f.packed.payload for f in fitted})
        working = session(with_outputs(decompress_model(partial), layer_inputs(layer)))
    else:
        working = original
    inputs = layer_inputs(layer)
    stats = LayerStats(k)
    kept_c, kept_o = [], []
    n_samples = len(next(iter(feeds.values())))
    for batch in batches(feeds, BATCH):
        xo = original.run(inputs, batch)
        xc = xo if working is original else working.run(inputs, batch)
        for u, (a, b) in enumerate(zip(xc, xo)):
            ro = as_rows(layer, u, b)
            rc = ro if a is b else as_rows(layer, u, a)
            stats.add(rc, ro)
            if classifier:
                stride = kl_row_stride(n_samples, rc.shape[0], len(a), k)
                kept_c.append(rc[::stride].astype(np.float32))
                kept_o.append(ro[::stride].astype(np.float32))
    return stats, kept_c, kept_o


def _fit_classifier(problem: RefitProblem, rec: Reconstruction, x_c: np.ndarray, x_o: np.ndarray, bits: int,
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
