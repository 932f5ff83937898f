"""Data-aware compression: layers in graph order, each fitted on calibration data to reproduce the
original layer's output while seeing the activations of the already compressed layers before it."""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import onnx

from .codec import CompressedTensor, pack_tensor
from .codec.refit import LayerStats, prune_reconstruct, quantize_refit, refit_problem
from .config import ConfigError, LayerPolicy
from .graph.calibrate import as_rows, batches, layer_inputs, session, with_outputs
from .graph.decompress import decompress_model
from .graph.match import Layer
from .graph.rewrite import rewrite

BATCH = 256
MIN_ROWS_PER_INPUT = 0.25  # rows of calibration data needed per input of a layer (ridge-stabilised below 1)


@dataclasses.dataclass
class FittedLayer:
    layer: Layer  # with the refitted bias filled in
    packed: CompressedTensor
    error: float  # relative output error on the calibration data


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
) -> list[FittedLayer]:
    names = sorted({n for layer in layers for n in layer_inputs(layer)})
    original = session(with_outputs(model, names))
    fitted: list[FittedLayer] = []
    for i, (layer, policy) in enumerate(zip(layers, policies)):
        if progress:
            progress(layer.weight_name, i, len(layers))
        done = [f.layer for f in fitted]
        if done:
            partial, _ = rewrite(model, done, {f.layer.weight_name: f.packed.payload for f in fitted})
            working = session(with_outputs(decompress_model(partial), layer_inputs(layer)))
        else:
            working = original
        inputs = layer_inputs(layer)
        k = _matrix(layer).shape[1]
        stats = LayerStats(k)
        for batch in batches(feeds, BATCH):
            xo = original.run(inputs, batch)
            xc = xo if working is original else working.run(inputs, batch)
            for u, (a, b) in enumerate(zip(xc, xo)):
                stats.add(as_rows(layer, u, a), as_rows(layer, u, b))
        needed = max(16, int(np.ceil(MIN_ROWS_PER_INPUT * k)))
        if stats.n < needed:
            raise ConfigError(f"--calibration: layer {layer.weight_name} has {k} inputs and the calibration data "
                              f"gives {stats.n} rows for it; at least {needed} are needed (more samples)")
        bias = _bias(layer)
        w = _matrix(layer)
        problem = refit_problem(w, bias, stats, free_bias=bias is not None)
        rec = prune_reconstruct(problem, policy.sparsity, method=prune_method)
        q = quantize_refit(problem, rec, policy.bits, init=init, seed=seed)
        packed = pack_tensor(layer.shape, q.mask, q.labels, q.codebook, policy.bits, policy.index_bits, huffman)
        new_layer = _with_bias(layer, q.bias) if bias is not None else layer
        fitted.append(FittedLayer(new_layer, packed, q.error))
    if progress:
        progress("", len(layers), len(layers))
    return fitted
