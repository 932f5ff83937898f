"""The Python API; the CLI is a thin layer over these functions."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx

from concurrent.futures import ProcessPoolExecutor, as_completed

from . import __version__
from .calibration import policy as auto_policy
from .calibration import saved as saved_analysis
from .calibration import sensitivity as analysis
from .calibration.compress import FitCache, compress_calibrated
from .codec import compress_tensor
from .config import CompressOptions, ConfigError, LayerPolicy
from .conv_exec import choose_conv_exec
from .evaluate import load_data
from .graph.decompress import decompress_model
from .graph.fold import fold_constant_chains
from .graph.match import find_layers
from .graph.model import Layer, Skipped
from .graph.model_io import (
    PROTOBUF_LIMIT, ModelError, check_output_path, load_model, materialize_external, model_bytes_on_disk, proto_size,
    save_model_atomic,
)
from .graph.rewrite import META_LAYERS, META_ORIGINAL_BYTES, META_SKIPPED, META_VERSION, rewrite, set_metadata
from .report import build_report


SENSITIVITY_KINDS = ("fc", "conv")  # the kinds the sensitivity analysis and --target-ratio handle


class NothingToCompress(ValueError):
    """No layer of the model is eligible; the message lists why each was left alone."""


@dataclass
class CompressionResult:
    output: Path
    report: dict
    skipped: list = field(default_factory=list)
    policy: dict | None = None  # with --target-ratio: layer name -> the chosen sensitivity Point


def layer_policy(layer: Layer, options: CompressOptions) -> LayerPolicy:
    sparsity = options.sparsity.for_kind(layer.kind)
    bits = options.bits.for_kind(layer.kind)
    for name in sorted(layer.names):  # a node name or the weight name; sorted: deterministic
        sparsity = options.layer_sparsity.get(name, sparsity)
        bits = options.layer_bits.get(name, bits)
    return LayerPolicy(float(sparsity), int(bits), int(options.index_bits.for_kind(layer.kind)))


def _check_override_names(options: CompressOptions, layers: list[Layer], skipped: list[Skipped]) -> None:
    known = set().union(*(layer.names for layer in layers)) if layers else set()
    for option, overrides in (("--layer-sparsity", options.layer_sparsity), ("--layer-bits", options.layer_bits)):
        for name in overrides:
            if name in known:
                continue
            why = next((s.reason for s in skipped if s.name == name), None)
            if why:
                raise ConfigError(f"{option}: layer {name!r} is not compressed: {why}")
            choices = ", ".join(sorted(known)[:12]) + (" …" if len(known) > 12 else "")
            raise ConfigError(f"{option}: no compressible layer is named {name!r} (weights and nodes: {choices or 'none'})")


def compress(
    input_path,
    output_path,
    options: CompressOptions | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    sensitivity_data: list | None = None,
    **kwargs,
) -> CompressionResult:
    """Compress `input_path` into `output_path`. Options as `CompressOptions` (or its fields as keywords).

    `progress(layer_name, done, total)` is called before each layer and once at the end.
    `sensitivity_data`: with `target_ratio`, a sensitivity analysis of this model and calibration data
    (from `sensitivity()`) to reuse instead of measuring it again (e.g. when trying several ratios).
    Raises ModelError / ConfigError / NothingToCompress with a message meant for the user; nothing is
    written unless everything succeeded.
    """
    options = options or CompressOptions(**kwargs)
    output = check_output_path(input_path, output_path)
    # Data-free compression streams: weights in external files are read one layer at a time. The
    # data-aware paths run the model in onnxruntime from memory, so they load everything.
    streaming = not options.calibration
    model = load_model(input_path, load_external=not streaming)
    base_dir = str(Path(input_path).parent)
    original_bytes = model_bytes_on_disk(input_path)
    model, _ = fold_constant_chains(model, base_dir)
    layers, skipped = find_layers(model, options.min_weights, base_dir, options.kinds)
    _check_override_names(options, layers, skipped)
    policy = None
    if options.target_ratio:
        new_model, all_skipped, policy = _build_to_ratio(model, layers, skipped, options, progress, original_bytes,
                                                         sensitivity_data)
    else:
        new_model, all_skipped = _build(model, layers, skipped, options, progress, original_bytes, base_dir)
    _check(new_model)
    save_model_atomic(new_model, output)
    return CompressionResult(output, build_report(new_model, model_bytes_on_disk(output)), all_skipped, policy)


def _build(model, layers, skipped, options: CompressOptions, progress, original_bytes: int, base_dir=None,
           fit_cache=None, feeds=None, payloads_done=None):
    """The compressed model (not yet saved) and every layer left alone with its reason. `feeds`: the
    calibration arrays when the caller has them loaded already (else read from options.calibration);
    `payloads_done`: data-free layers' payloads (or reasons) already made with these options."""
    skipped = list(skipped)
    payloads = {}
    compressed = []
    for layer, payload in _compress_layers(model, layers, options, progress, fit_cache, feeds, payloads_done):
        if not _payload_kept(layer, payload):
            skipped.append(Skipped(layer.weight_name, layer.op_label, payload if isinstance(payload, str) else
                                   f"its payload ({len(payload)} B) would not be smaller than the weight "
                                   f"({layer.nbytes} B)"))
            continue
        if layer.kind == "conv":
            layer = dataclasses.replace(layer)
            layer.exec, layer.exec_reason = choose_conv_exec(layer, payload, options.conv_exec)
        payloads[layer.weight_name] = payload
        compressed.append(layer)
    if not compressed and not options.allow_unchanged:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in skipped[:5]) or \
            "it has no Gemm, MatMul, Conv or Gather weight and no float constant large enough"
        raise NothingToCompress(f"no layer of the model can be compressed ({reasons})")
    if base_dir is not None:
        # The tensors that stay (biases, layers left alone) go into the output: read them now.
        materialize_external(model, Path(base_dir), skip={layer.weight_name for layer in compressed})
    new_model, records = rewrite(model, compressed, payloads)
    compact = {"separators": (",", ":")}  # metadata is stored in the file: keep it small
    set_metadata(new_model, {
        META_VERSION: json.dumps(__version__),
        META_LAYERS: json.dumps([{k: v for k, v in r.items() if v not in (None, "")} for r in records], **compact),
        META_SKIPPED: json.dumps([{"name": s.name, "op": s.op, "reason": s.reason} for s in skipped], **compact),
        META_ORIGINAL_BYTES: json.dumps(original_bytes),
    })
    return new_model, skipped


def _payload_kept(layer, payload) -> bool:
    """Whether the file stores this payload for the layer (else its weight stays): it was made (not a reason
    string) and is smaller than the weight."""
    return isinstance(payload, bytes) and len(payload) < layer.nbytes


def _build_to_ratio(model, layers, skipped, options: CompressOptions, progress, original_bytes: int, sens=None):
    """Pick per-layer sparsity and bits from the sensitivity analysis so that the file is at least
    `target_ratio` times smaller, at the least output error; returns the model and the chosen policy.
    The analysis covers the fully-connected and conv layers; the other kinds (embedding tables, other
    constants) are compressed data-free with their --sparsity/--bits, once, and their payloads count as a
    fixed part of the file."""
    if not options.calibration:
        raise ConfigError("--target-ratio needs --calibration data to measure each layer's sensitivity")
    tuned = [layer for layer in layers if layer.kind in SENSITIVITY_KINDS]
    if not tuned:
        raise ConfigError("--target-ratio chooses settings for fully-connected and conv layers; the model has none "
                          "(compress it with --sparsity/--bits instead)")
    # Loaded once: every try below fits on them again.
    feeds, _ = load_data(options.calibration, model)
    if sens is None and options.sensitivity:
        sens = saved_analysis.load_analysis(options.sensitivity, model, feeds, options, tuned)
    target_bytes = original_bytes / options.target_ratio
    fixed = {layer.weight_name: data_free_payload(layer.source, layer_policy(layer, options), options.init,
                                                  options.seed, options.huffman)
             for layer in layers if layer.kind not in SENSITIVITY_KINDS}
    # What the file holds besides the tuned payloads: the graph and the tensors left alone, the other kinds'
    # payloads (or their weights, where compressing does not pay), metadata. Checked before the analysis,
    # the long part (after a saved one is checked: a mismatch is the first thing to say).
    fixed_bytes = sum(len(fixed[layer.weight_name]) if _payload_kept(layer, fixed[layer.weight_name]) else layer.nbytes
                      for layer in layers if layer.weight_name in fixed)
    rest = original_bytes - sum(layer.nbytes for layer in layers) + fixed_bytes + 64 + 128 * len(layers)
    if rest >= target_bytes:
        raise ConfigError(
            f"--target-ratio {options.target_ratio:g}: the file may hold {int(target_bytes):,} bytes, but what "
            f"--target-ratio does not choose settings for already takes {rest:,} (graph, small tensors"
            + (f", {len(fixed)} embedding/other tensors compressed with their --sparsity/--bits" if fixed else "")
            + f"); at most about {original_bytes / rest:.1f}x is reachable"
            + (": prune or quantize those harder (--sparsity/--bits emb=…,other=…)" if fixed else ""))
    if sens is None:
        step = (lambda name, done, total: progress(f"sensitivity analysis: {name}", done, total)) if progress else None
        sens = analysis.analyse(model, tuned, options, feeds, progress=step, jobs=options.jobs)
    fit_cache = FitCache()  # the tries differ only in per-layer policies: unchanged prefixes are not refitted

    def build(chosen):
        return _build(model, layers, skipped, auto_policy.policy_options(options, chosen), progress, original_bytes,
                      fit_cache=fit_cache, feeds=feeds, payloads_done=fixed)

    return auto_policy.search_ratio(sens, target_bytes - rest, target_bytes, options.target_ratio, original_bytes,
                                    build)


def _compress_layers(model, layers, options: CompressOptions, progress, fit_cache=None, feeds=None,
                     payloads_done=None):
    """(layer, payload bytes or the reason it could not be compressed) for each layer, in order.

    Data-free layers are independent: with `options.jobs` > 1 they run in a process pool (each worker
    reads its own weight; results are collected in layer order, so the output does not depend on it).
    Only payloads are kept, never the dense weights: memory stays at about one layer per worker."""
    policies = [layer_policy(layer, options) for layer in layers]
    fitted_at = {}
    if options.calibration:
        # fc and conv layers are fitted on the data (in graph order); embedding tables and other constants
        # have no layer output to fit and are compressed data-free below.
        if feeds is None:
            feeds, _ = load_data(options.calibration, model)
        fit = [i for i, layer in enumerate(layers) if layer.kind in SENSITIVITY_KINDS]
        fitted = compress_calibrated(model, [layers[i] for i in fit], [policies[i] for i in fit], feeds,
                                     init=options.init, seed=options.seed, huffman=options.huffman,
                                     prune_method=options.prune_method, progress=progress,
                                     quantizer=options.quantizer, output_fit=options.output_fit,
                                     cache=fit_cache)
        fitted_at = {i: (f.layer, f.packed.payload) for i, f in zip(fit, fitted)}
        if len(fitted_at) == len(layers):
            return [fitted_at[i] for i in range(len(layers))]
    done_before = payloads_done or {}
    results: list = [done_before.get(layer.weight_name) if i not in fitted_at else None
                     for i, layer in enumerate(layers)]
    tasks = [(layer.source, policy, options.init, options.seed, options.huffman)
             if i not in fitted_at and results[i] is None else None
             for i, (layer, policy) in enumerate(zip(layers, policies))]
    if options.jobs > 1 and sum(task is not None for task in tasks) > 1:
        with ProcessPoolExecutor(max_workers=min(options.jobs, len(layers))) as pool:
            futures = {pool.submit(data_free_payload, *task): i for i, task in enumerate(tasks) if task is not None}
            for done, future in enumerate(as_completed(futures)):
                if progress:
                    progress(layers[futures[future]].weight_name, done, len(layers))
                results[futures[future]] = future.result()
    else:
        for i, task in enumerate(tasks):
            if task is None:
                continue
            if progress:
                progress(layers[i].weight_name, i, len(layers))
            results[i] = data_free_payload(*task)
    if progress:
        progress("", len(layers), len(layers))
    return [fitted_at[i] if i in fitted_at else (layer, results[i]) for i, layer in enumerate(layers)]


def data_free_payload(source, policy: LayerPolicy, init: str, seed: int, huffman: bool):
    """One layer, data-free: its payload, or why it cannot be compressed (runs in a worker process too)."""
    try:
        return compress_tensor(source.load(), policy.sparsity, policy.bits, policy.index_bits, init=init, seed=seed,
                               huffman=huffman).payload
    except ValueError as exc:
        return str(exc)


def sensitivity(model_path, calibration: str, data: str | None = None, options: CompressOptions | None = None,
                sparsities=None, progress=None, data_aware: bool = True, save=None):
    """Per-layer sensitivity (list of calibration.sensitivity.LayerSensitivity): each layer compressed alone at each
    sparsity and bit width (fitted on the calibration data, or by magnitude + k-means if not
    `data_aware`), the model run on `data` (with labels: accuracy) or on the calibration data. `save`: also
    write it to this file, for `compress(target_ratio=…, sensitivity=save)` (calibration/saved.py)."""
    options = dataclasses.replace(options or CompressOptions(), calibration=calibration if data_aware else None)
    model, _ = fold_constant_chains(load_model(model_path))
    layers, _ = find_layers(model, options.min_weights, kinds=set(options.kinds) & set(SENSITIVITY_KINDS))
    if not layers:
        raise NothingToCompress(f"{model_path}: no layer of the model can be compressed")
    feeds, _ = load_data(calibration, model)
    eval_feeds, labels = load_data(data, model) if data else (None, None)
    if save is not None:
        _check_analysis_path(save, model_path, calibration, data)
    sens = analysis.analyse(model, layers, options, feeds, labels=labels, eval_feeds=eval_feeds, jobs=options.jobs,
                            sparsities=sparsities or analysis.DEFAULT_SPARSITIES, progress=progress)
    if save is not None:
        saved_analysis.save_analysis(save, sens, model, feeds, options, evaluated_on=data or "calibration data")
    return sens


def _check_analysis_path(path, *inputs) -> None:
    """The analysis file must not overwrite an input, and its folder must exist."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"--save {path}: is a directory")
    if not target.resolve().parent.is_dir():
        raise ConfigError(f"--save {path}: folder {target.parent} does not exist")
    for other in inputs:
        if other and Path(other).exists() and target.resolve() == Path(other).resolve():
            raise ConfigError(f"--save {path}: would overwrite an input file")


def _check(model: onnx.ModelProto) -> None:
    if proto_size(model) < PROTOBUF_LIMIT:  # a larger one is checked by onnx only from a file
        onnx.checker.check_model(model)


def decompress(input_path, output_path) -> Path:
    """Write a standard ONNX model (dense weights, original operators) for a compressed one."""
    output = check_output_path(input_path, output_path)
    model = load_model(input_path)
    try:
        dense = decompress_model(model)
    except ValueError as exc:
        raise ModelError(f"{input_path}: {exc}") from None
    _check(dense)
    save_model_atomic(dense, output)
    return output


def report(model_path) -> dict:
    """The compression report of a compressed model file."""
    model = load_model(model_path)
    try:
        return build_report(model, model_bytes_on_disk(model_path))
    except ValueError as exc:
        raise ModelError(f"{model_path}: {exc}") from None
