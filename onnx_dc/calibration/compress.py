"""Data-aware compression: the layers in graph order, each fitted on calibration data to reproduce the
original layer's output while seeing the activations of the already compressed layers before it
(neighbours.py says what is read from the graph around a layer; fit.py is the one-layer recipe)."""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import onnx

from ..config import OUTPUT_FITS, ConfigError, LayerPolicy
from ..graph.decompress import decompress_model
from ..graph.model import Layer
from ..graph.rewrite import rewrite
from ..session import new_session
from .capture import as_rows, batches, layer_inputs, with_outputs
from .fit import FittedLayer, fit_layer, kl_row_stride, layer_bias, layer_matrix, layer_problem
from .neighbours import downstream as find_downstream
from .neighbours import is_classifier, row_weight
from .solvers import LayerStats, prune_reconstruct

BATCH = 256
MIN_ROWS_PER_INPUT = 0.25  # rows of calibration data needed per input of a layer (ridge-stabilised below 1)


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
    """`quantizer`: 'gptq' (entropy-constrained GPTQ, see solvers.quantize_gptq) or 'kmeans' (k-means,
    least-squares codebook refits, nearest-value re-assignment). `output_fit`: 'kl' refits a classifier
    output layer to the original predicted distribution, 'mse' to the original logits. `cache`: shared by
    calls that differ only in `policies` (FitCache)."""
    if output_fit not in OUTPUT_FITS:
        raise ValueError(f"unknown output fit {output_fit!r}; choose one of {', '.join(OUTPUT_FITS)}")
    downstream = find_downstream(model, layers)
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
        k = layer_matrix(layer).shape[1]
        nxt, final = downstream[i]
        classifier = output_fit == "kl" and is_classifier(layer, final) and layer_bias(layer) is not None
        if cache is not None and stats_key in cache.stats:
            cache.hits += 1
            stats, kept_c, kept_o = cache.stats[stats_key]
        else:
            if not original:
                original.append(new_session(with_outputs(model, names), quiet=True))
            stats, kept_c, kept_o = _layer_stats(model, layer, fitted, original[0], feeds, k, classifier)
            if cache is not None:
                cache.keep_stats(stats_key, (stats, kept_c, kept_o))
        needed = max(16, int(np.ceil(MIN_ROWS_PER_INPUT * k)))
        if stats.n < needed:
            raise ConfigError(f"--calibration: layer {layer.weight_name} has {k} inputs and the calibration data "
                              f"gives {stats.n} rows for it; at least {needed} are needed (more samples)")
        problem = layer_problem(layer, stats)
        weights = row_weight(layer, layers[nxt]) if nxt is not None else None
        rec = prune_reconstruct(problem, policy.sparsity, method=prune_method, row_weight=weights)
        fitted.append(fit_layer(layer, problem, rec, policy.bits, policy.index_bits, quantizer=quantizer, init=init,
                                seed=seed, huffman=huffman,
                                kl_inputs=(np.concatenate(kept_c), np.concatenate(kept_o)) if classifier else None))
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
        working = new_session(with_outputs(decompress_model(partial), layer_inputs(layer)), quiet=True)
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
