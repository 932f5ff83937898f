"""Per-layer sensitivity to pruning and quantization (the automatic policy built on it: policy.py).

Each layer is compressed *alone* at each candidate setting and the model is run on calibration data (only
the part from that layer on: suffix.py): the output error it causes (relative squared error of each
floating-point output of the model, averaged over them; and top-1 agreement on the first) is that
setting's cost; its payload size is the price.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx

from ..codec import compress_tensor
from ..config import CompressOptions, ConfigError
from ..graph.decompress import decompress_model
from ..graph.model import Layer
from ..graph.model_io import PROTOBUF_LIMIT, proto_size
from ..graph.rewrite import rewrite
from ..plots import pyplot
from ..session import new_session
from .capture import as_rows, batches, layer_inputs, with_outputs
from .fit import fit_layer, kl_row_stride, layer_bias, layer_problem
from .neighbours import downstream as find_downstream
from .neighbours import is_classifier, row_weight
from .solvers import LayerStats, prune_reconstruct
from .suffix import downstream_cut, sliced

DEFAULT_SPARSITIES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.88, 0.9, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98)
DEFAULT_BITS = {"fc": (4, 5, 6), "conv": (6, 7, 8)}


@dataclass
class Point:
    sparsity: float
    bits: int
    payload_bytes: int
    output_error: float  # E‖Δy‖² / E‖y‖², averaged over the model's floating-point outputs
    agreement: float  # top-1 agreement with the original model
    accuracy: float | None = None


@dataclass
class LayerSensitivity:
    name: str
    kind: str
    weights: int
    points: list = field(default_factory=list)


EVAL_BATCH = 500  # samples per onnxruntime run
_FLOAT_TYPES = ("tensor(float)", "tensor(double)", "tensor(float16)", "tensor(bfloat16)")
SUFFIX_MAX_BYTES = 512 << 20  # a layer's cut tensors (all evaluation samples) above this: run whole models


def _eval_batches(feeds) -> list[tuple[int, dict]]:
    """The evaluation samples in onnxruntime runs of EVAL_BATCH: (samples, feeds) each."""
    return [(len(next(iter(b.values()))), b) for b in batches(feeds, EVAL_BATCH)]


def _outputs(sess, runs: list[tuple[int, dict]], names: list[str]) -> dict[str, np.ndarray]:
    """The session's outputs `names` over all `runs` (_eval_batches; feeds the session does not take are
    left out), each as [samples, values]."""
    wanted = {i.name for i in sess.get_inputs()}
    got = [(rows, sess.run(names, {n: v for n, v in feeds.items() if n in wanted})) for rows, feeds in runs]
    return {name: np.concatenate([values[i].reshape(rows, -1) for rows, values in got])
            for i, name in enumerate(names)}


def analyse(model: onnx.ModelProto, layers: list[Layer], options: CompressOptions, feeds: dict,
            labels: np.ndarray | None = None, sparsities=DEFAULT_SPARSITIES, bits: dict | None = None,
            progress: Callable[[str, int, int], None] | None = None,
            eval_feeds: dict | None = None, jobs: int = 1) -> list[LayerSensitivity]:
    """Sensitivity of each layer at each (sparsity, bits), measured on `eval_feeds` (default: `feeds`,
    the calibration data; `labels` go with eval_feeds). With options.calibration set, each candidate is
    compressed data-aware from `feeds` (one-shot OBS + refits, the fast variant), else by magnitude +
    k-means. The output layer is fitted as compression will fit it: with options.output_fit 'kl' a
    classifier output layer is refitted to the original predicted distribution (fit.fit_classifier),
    so its candidates are priced at the errors that the written model will have. `jobs` > 1: the
    candidates run in that many worker processes (the result does not depend on it)."""
    bits = bits or DEFAULT_BITS
    calib = feeds
    feeds = eval_feeds if eval_feeds is not None else feeds
    # Every floating-point output is measured (a detector's boxes and scores alike); top-1 agreement and
    # accuracy are read from the first.
    sess = new_session(model, quiet=True)
    measured = [o.name for o in sess.get_outputs() if o.type in _FLOAT_TYPES]
    if not measured:
        raise ConfigError("the model has no floating-point output to measure the compression error on "
                          f"(outputs: {', '.join(f'{o.name} {o.type}' for o in sess.get_outputs())})")
    reference = _outputs(sess, _eval_batches(feeds), measured)
    energy = {name: float((ref.astype(np.float64) ** 2).sum()) or 1.0 for name, ref in reference.items()}
    top = reference[measured[0]].argmax(1)
    downstream = find_downstream(model, layers) if options.calibration else [(None, False)] * len(layers)
    kl_layers = _kl_layers(layers, options, downstream)
    stats, kept = _layer_stats(model, layers, calib, kl_layers) if options.calibration else ({}, {})
    ctx = _Context(model, feeds, reference, energy, top, labels, options, {kind: tuple(b) for kind, b in bits.items()})
    # One task per (layer, sparsity): pruned once, then compressed at each bit width and run.
    tasks = []
    for li, (layer, (nxt, _)) in enumerate(zip(layers, downstream)):
        problem = _problem(layer, stats.get(layer.weight_name))
        # The survivor budget shared across the outputs as compress --calibration shares it.
        weights = row_weight(layer, layers[nxt]) if nxt is not None else None
        tasks += [(li, (layer, problem, s, weights, kept.get(layer.weight_name))) for s in sparsities]
    total = sum(len(sparsities) * len(bits[layer.kind]) for layer in layers)
    points: dict[tuple[int, float], list] = {}
    done = 0

    def finished(li, s, pts):
        nonlocal done
        points[(li, s)] = pts
        done += len(pts)
        if progress:
            progress(f"{layers[li].weight_name} keep {1 - s:.0%}", done, total)

    if jobs > 1 and len(tasks) > 1 and proto_size(model) < PROTOBUF_LIMIT:
        # Workers get the model and the data once (initializer); a task carries one layer's fitting problem.
        # They keep BLAS's and onnxruntime's default threads, as this process: the output layer's KL fit
        # amplifies the last-bit differences another thread count gives (LeNet-5's fc2 at 50%: 1.2% vs 2.5%
        # output error), and the analysis must not depend on `jobs`. Forked (as the data-free pool):
        # spawned workers would re-run a caller's script that has no main guard.
        with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=multiprocessing.get_context("fork"),
                                 initializer=_init_worker,
                                 initargs=(dataclasses.replace(ctx, model=model.SerializeToString()),)) as pool:
            futures = {pool.submit(_worker_points, *args): (li, args[2]) for li, args in tasks}
            for future in as_completed(futures):
                li, s = futures[future]
                finished(li, s, future.result())
    else:
        for li, args in tasks:
            finished(li, args[2], _candidate_points(ctx, *args))
    out = []
    for li, layer in enumerate(layers):
        sens = LayerSensitivity(layer.weight_name, layer.kind, int(layer.weight.size))
        for s in sparsities:
            sens.points += points[(li, s)]
        out.append(sens)
    if progress:
        progress("", total, total)
    return out


@dataclass
class _Context:
    """What every candidate needs besides its layer: the model, the evaluation data and its reference."""
    model: onnx.ModelProto  # serialized (bytes) on its way to a worker process
    feeds: dict
    reference: dict  # output name → [samples, values], the measured (floating-point) outputs in model order
    energy: dict
    top: np.ndarray
    labels: np.ndarray | None
    options: CompressOptions
    bits: dict
    # The last layer's cut (suffix.py): (weight name, ({tensor: (type, rank)}, [(rows, feeds) per batch],
    # measured outputs downstream) or None). One layer at a time: tasks come layer by layer, and cuts can be
    # large.
    cut: tuple | None = field(default=None, repr=False)

    def cut_for(self, layer: Layer):
        """The values (per evaluation batch) of the tensors that flow into the graph downstream of `layer`,
        computed by the original model once per layer; None where running whole models is needed or
        cheaper (no cut, or its values would take more than SUFFIX_MAX_BYTES)."""
        if self.cut is None or self.cut[0] != layer.weight_name:
            self.cut = (layer.weight_name, self._compute_cut(layer))
        return self.cut[1]

    def _compute_cut(self, layer: Layer):
        found = downstream_cut(self.model, layer.nodes)
        graph_inputs = [vi.name for vi in self.model.graph.input]
        if found is None or set(found[0]) <= set(graph_inputs):
            return None  # nothing before the layer to skip
        names, outputs = found
        computed = [n for n in names if n not in graph_inputs]
        sess = new_session(sliced(self.model, {}, computed), quiet=True)  # only the part before the cut
        out, size = [], 0
        for rows, batch in _eval_batches(self.feeds):
            values = dict(zip(computed, sess.run(computed, batch)))
            values.update({n: batch[n] for n in names if n in batch})
            size += sum(v.nbytes for v in values.values())
            if size > SUFFIX_MAX_BYTES:
                return None
            out.append((rows, values))
        types = {n: (onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.ndim) for n, v in out[0][1].items()}
        return types, out, [name for name in self.reference if name in outputs]


_WORKER: _Context | None = None
_WORKER_NODES: dict = {}  # the worker's graph nodes by their serialized form (_rebound)


def _init_worker(ctx: _Context) -> None:
    global _WORKER, _WORKER_NODES
    _WORKER = dataclasses.replace(ctx, model=onnx.load_from_string(ctx.model))
    _WORKER_NODES = {n.SerializeToString(deterministic=True): n for n in _WORKER.model.graph.node}


def _worker_points(layer: Layer, *args) -> list:
    return _candidate_points(_WORKER, _rebound(layer, _WORKER_NODES), *args)


def _rebound(layer: Layer, nodes: dict) -> Layer:
    """The layer with its nodes replaced by the equal nodes of the worker's graph (`nodes`, by serialized
    form): a layer arrives in a worker as a copy, and rewrite() finds the nodes to replace by identity
    (outputs are unique, so equal is unique)."""

    def same(node):
        return nodes[node.SerializeToString(deterministic=True)] if isinstance(node, onnx.NodeProto) else node

    uses = [dataclasses.replace(u, **{f.name: same(getattr(u, f.name)) for f in dataclasses.fields(u)})
            if dataclasses.is_dataclass(u) else same(u) for u in layer.uses]
    return dataclasses.replace(layer, uses=uses)


def _candidate_points(ctx: _Context, layer: Layer, problem, sparsity: float, weights, kl_rows) -> list:
    """The points of one layer at one sparsity: pruned once, then compressed at each bit width and the
    whole model run with that layer alone replaced."""
    rec = _prune(problem, sparsity, ctx.options, weights)
    cut = ctx.cut_for(layer)
    names = list(ctx.reference)
    out = []
    for b in ctx.bits[layer.kind]:
        packed, new_layer = _compress_one(layer, problem, rec, sparsity, b, ctx.options, kl_rows)
        candidate, _ = rewrite(ctx.model, [new_layer], {layer.weight_name: packed.payload})
        candidate = decompress_model(candidate)
        if cut is None:
            y = _outputs(new_session(candidate, quiet=True), _eval_batches(ctx.feeds), names)
        else:  # only the graph from the layer on, fed with the original's values there
            types, cut_batches, changed = cut
            y = dict(ctx.reference)  # outputs the layer does not reach are the original's
            if changed:
                y.update(_outputs(new_session(sliced(candidate, types, changed), quiet=True), cut_batches,
                                  changed))
        # The mean over outputs of each one's relative squared error (one output: E‖Δy‖² / E‖y‖²).
        error = np.mean([((y[n].astype(np.float64) - ctx.reference[n]) ** 2).sum() / ctx.energy[n] for n in names])
        first = y[names[0]].argmax(1)
        point = Point(sparsity, b, len(packed.payload), float(error), float((first == ctx.top).mean()))
        if ctx.labels is not None:
            point.accuracy = float((first == ctx.labels).mean())
        out.append(point)
    return out


def _kl_layers(layers, options: CompressOptions, downstream) -> set[str]:
    """The layers compress --calibration refits to the predicted distribution (output_fit 'kl')."""
    if not options.calibration or options.output_fit != "kl":
        return set()
    return {layer.weight_name for layer, (_, final) in zip(layers, downstream)
            if is_classifier(layer, final) and layer_bias(layer) is not None}


def _layer_stats(model, layers, feeds, kl_layers=frozenset()) -> tuple[dict[str, LayerStats], dict[str, np.ndarray]]:
    """Per layer: its input statistics; for the layers in `kl_layers`, also the input rows the KL refit
    needs (thinned as compress_calibrated thins them)."""
    names = sorted({n for layer in layers for n in layer_inputs(layer)})
    sess = new_session(with_outputs(model, names), quiet=True)
    stats = {layer.weight_name: LayerStats(layer.weight.reshape(layer.shape[0], -1).shape[1]) for layer in layers}
    kept = {name: [] for name in kl_layers}
    n_samples = len(next(iter(feeds.values())))
    for batch in batches(feeds, 256):
        values = dict(zip(names, sess.run(names, batch)))
        for layer in layers:
            for u, name in enumerate(layer_inputs(layer)):
                rows = as_rows(layer, u, values[name])
                stats[layer.weight_name].add(rows, rows)
                if layer.weight_name in kept:
                    stride = kl_row_stride(n_samples, rows.shape[0], len(values[name]), rows.shape[1])
                    kept[layer.weight_name].append(rows[::stride].astype(np.float32))
    return stats, {name: np.concatenate(rows) for name, rows in kept.items() if rows}


def _problem(layer: Layer, stats: LayerStats | None):
    return None if stats is None else layer_problem(layer, stats)


def candidate_prune_method(prune_method: str) -> str:
    """How the analysis prunes its candidates for compress's `prune_method`: magnitude stays magnitude,
    every OBS-like method becomes the fast variant (one OBS cut on the unconstrained optimum, survivors
    refitted exactly)."""
    return "magnitude" if prune_method == "magnitude" else "obs-oneshot"


def _prune(problem, sparsity: float, options: CompressOptions, weights=None):
    if problem is None:
        return None
    return prune_reconstruct(problem, sparsity, candidate_prune_method(options.prune_method), row_weight=weights)


def _compress_one(layer: Layer, problem, rec, sparsity: float, bits: int, options: CompressOptions,
                  kl_rows: np.ndarray | None = None):
    index_bits = int(options.index_bits.for_kind(layer.kind))
    if problem is None:
        packed = compress_tensor(layer.weight, sparsity, bits, index_bits, init=options.init, seed=options.seed,
                                 huffman=options.huffman)
        return packed, layer
    # As compress --calibration fits the layer, so that the payload sizes are the ones it writes: GPTQ in one
    # round; with output_fit 'kl' the classifier output layer refitted to the predicted distribution (the
    # layer alone, so the compressed model's inputs are the original's).
    fitted = fit_layer(layer, problem, rec, bits, index_bits, quantizer=options.quantizer, init=options.init,
                       seed=options.seed, huffman=options.huffman,
                       kl_inputs=None if kl_rows is None else (kl_rows, kl_rows), gptq_rounds=1)
    return fitted.packed, fitted.layer


def sensitivity_rows(sens: list[LayerSensitivity]) -> list[dict]:
    """Flat rows for tables and JSON."""
    return [{"layer": s.name, "kind": s.kind, "weights": s.weights, **dataclasses.asdict(p)} for s in sens for p in s.points]


def plot(sens: list[LayerSensitivity], path, default_bits: dict) -> None:
    """The paper's Figure 5: each layer pruned alone — agreement (or accuracy) and output error vs the
    fraction of its weights pruned, at each layer's default bits."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for s in sens:
        pts = sorted((p for p in s.points if p.bits == default_bits[s.kind]), key=lambda p: p.sparsity)
        x = [100 * p.sparsity for p in pts]
        y = [100 * (p.accuracy if p.accuracy is not None else p.agreement) for p in pts]
        ax1.plot(x, y, marker="o", label=f"{s.name} ({default_bits[s.kind]}-bit)")
        ax2.semilogy(x, [max(p.output_error, 1e-12) for p in pts], marker="o", label=s.name)
    has_acc = any(p.accuracy is not None for s in sens for p in s.points)
    ax1.set_ylabel("top-1 accuracy (%)" if has_acc else "top-1 agreement with the original (%)")
    ax2.set_ylabel("relative output error")
    for ax in (ax1, ax2):
        ax.set_xlabel("weights pruned in this layer alone (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Pruning sensitivity, one layer at a time")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


__all__ = ["DEFAULT_BITS", "DEFAULT_SPARSITIES", "LayerSensitivity", "Point", "analyse", "candidate_prune_method",
           "plot", "sensitivity_rows"]
