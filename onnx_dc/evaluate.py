"""Accuracy and agreement of a (compressed) model on data, through onnxruntime."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx

from .datasets import DatasetError, fashion_mnist, preprocess
from .graph.model_io import ModelError, load_model
from .session import session_for

DATASET_SHORTCUTS = ("fashion-mnist", "fashion-mnist:train", "fashion-mnist:test")


def _input_specs(model: onnx.ModelProto) -> list[tuple[str, list, np.dtype | None]]:
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type) if t.elem_type else None
        except (KeyError, ValueError):
            dtype = None
        specs.append((vi.name, dims, dtype))
    return specs


def load_data(data: str, model: onnx.ModelProto) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Arrays for the model's inputs (and labels, if any) from an .npz or a dataset shortcut."""
    specs = _input_specs(model)
    if data in DATASET_SHORTCUTS:
        if len(specs) != 1:
            raise DatasetError(f"--data {data} feeds models with one input; this one has {len(specs)}")
        images, labels = fashion_mnist("train" if data.endswith(":train") else "test")
        return {specs[0][0]: preprocess(images, specs[0][1])}, labels
    path = Path(data)
    if not path.is_file():
        raise DatasetError(f"{data}: no such file (give an .npz or one of: {', '.join(DATASET_SHORTCUTS)})")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{data}: not a readable .npz file ({exc})") from None
    feeds = {}
    for name, dims, dtype in specs:
        if name not in arrays:
            raise DatasetError(f"{data}: no array named {name!r} for the model's input (it has: {', '.join(sorted(arrays)) or 'none'})")
        a = arrays[name]
        if a.ndim != len(dims) or any(isinstance(d, int) and d > 0 and d != s for d, s in zip(dims[1:], a.shape[1:])):
            raise DatasetError(f"{data}: array {name!r} has shape {list(a.shape)}, the model expects {dims}")
        if dtype is not None and a.dtype != dtype:
            if not (a.dtype.kind == "f" and np.dtype(dtype).kind == "f"):
                raise DatasetError(f"{data}: array {name!r} has dtype {a.dtype}, the model expects {np.dtype(dtype)}")
            a = a.astype(dtype)  # float64 → float32 and the like
        feeds[name] = a
    n = {a.shape[0] for a in feeds.values()}
    if len(n) > 1:
        raise DatasetError(f"{data}: the input arrays have different numbers of samples {sorted(n)}")
    labels = arrays.get("labels")
    if labels is not None:
        if labels.ndim != 1 or (n and labels.shape[0] != next(iter(n))):
            raise DatasetError(f"{data}: 'labels' has shape {list(labels.shape)}, expected [{next(iter(n), '?')}]")
        labels = labels.astype(np.int64)
    return feeds, labels


def run_batched(session, feeds: dict, batch: int = 1000) -> np.ndarray:
    n = next(iter(feeds.values())).shape[0]
    outs = [session.run(None, {k: v[i : i + batch] for k, v in feeds.items()})[0] for i in range(0, n, batch)]
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def evaluate(model_path, data: str, reference_path=None, threads: int | None = None) -> dict:
    """Top-1 accuracy (with labels) and, against a reference model, agreement and output differences."""
    model = load_model(model_path)
    feeds, labels = load_data(data, model)
    try:
        out = run_batched(session_for(model_path, threads), feeds)
    except Exception as exc:  # onnxruntime's own errors: show its message, not a traceback
        raise ModelError(f"{model_path}: onnxruntime failed: {str(exc).splitlines()[0]}") from None
    metrics = {"model": str(model_path), "samples": int(out.shape[0])}
    if labels is not None:
        metrics["accuracy"] = float((out.reshape(out.shape[0], -1).argmax(1) == labels).mean())
    if reference_path is not None:
        load_model(reference_path)
        ref = run_batched(session_for(reference_path, threads), feeds)
        if ref.shape != out.shape:
            raise ModelError(f"{reference_path}: output shape {list(ref.shape)} differs from {list(out.shape)}")
        a, b = out.reshape(out.shape[0], -1).astype(np.float64), ref.reshape(ref.shape[0], -1).astype(np.float64)
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
        metrics.update({
            "reference": str(reference_path),
            "agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "max_abs_diff": float(np.abs(a - b).max()) if a.size else 0.0,
            "mean_abs_diff": float(np.abs(a - b).mean()) if a.size else 0.0,
            "cosine_similarity": float(cos.mean()) if cos.size else 1.0,
        })
        if labels is not None:
            metrics["reference_accuracy"] = float((b.argmax(1) == labels).mean())
    return metrics


def latency(model_path, feeds: dict, runs: int = 200, threads: int = 1) -> float:
    """Median seconds per run of the model on `feeds` (after warm-up)."""
    session = session_for(model_path, threads)
    for _ in range(10):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t)
    return float(np.median(times))
