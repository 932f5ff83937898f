"""A sensitivity analysis saved to a file (`onnx-dc sensitivity --save`) and reused by `compress
--target-ratio --sensitivity FILE`, so that trying several ratios does not measure the same analysis again.

The file records what the analysis depends on, and reuse is refused with a one-line reason when any of it
differs: the model (a fingerprint of its graph and weights, whatever files they are stored in), the
calibration arrays, the settings that change how each candidate is fitted and sized, and the layers.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx

from ..config import CompressOptions, ConfigError
from .sensitivity import LayerSensitivity, Point, candidate_prune_method, sensitivity_rows

FORMAT = "onnx-dc-sensitivity"
# 2: a point's output error is averaged over every floating-point output (1: the first output only, which
# priced a layer that only a later output reads at zero).
VERSION = 2


def model_fingerprint(model: onnx.ModelProto) -> str:
    """sha256 of the graph's nodes, inputs, outputs and every initializer's name, type, shape and values."""
    h = hashlib.sha256()
    graph = model.graph
    for part in (graph.node, graph.input, graph.output):
        for item in part:
            h.update(item.SerializeToString(deterministic=True))
    for t in graph.initializer:
        a = onnx.numpy_helper.to_array(t)
        h.update(f"{t.name}|{a.dtype.str}|{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def data_fingerprint(feeds: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(feeds):
        a = np.ascontiguousarray(feeds[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def analysis_settings(options: CompressOptions) -> dict:
    """The options that change a candidate's fit, payload size or price (sensitivity.analyse)."""
    data_aware = bool(options.calibration)
    return {
        "data_aware": data_aware,
        "prune": candidate_prune_method(options.prune_method) if data_aware else "magnitude",
        "quantizer": options.quantizer if data_aware else "kmeans",
        "output_fit": options.output_fit if data_aware else "none",
        "index_bits": {kind: int(options.index_bits.for_kind(kind)) for kind in ("fc", "conv")},
        "init": options.init,
        "seed": options.seed,
        "huffman": options.huffman,
    }


def save_analysis(path, sens, model: onnx.ModelProto, feeds: dict, options: CompressOptions,
                  evaluated_on: str) -> None:
    """Write the analysis atomically (a temporary file renamed into place)."""
    doc = {"format": FORMAT, "version": VERSION, "model": model_fingerprint(model),
           "calibration": data_fingerprint(feeds), "settings": analysis_settings(options),
           "evaluated_on": evaluated_on, "points": sensitivity_rows(sens)}
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent) if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_analysis(path, model: onnx.ModelProto, feeds: dict, options: CompressOptions, layers) -> list:
    """The saved analysis as sensitivity.LayerSensitivity objects, after checking that it was made for
    this model, these calibration arrays, these settings and these layers (ConfigError otherwise)."""
    where = f"--sensitivity {path}"
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where}: not a readable JSON file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(f"{where}: not a saved sensitivity analysis (write one with onnx-dc sensitivity --save)")
    if doc.get("version") != VERSION:
        raise ConfigError(f"{where}: analysis format version {doc.get('version')!r}, this onnx-dc reads {VERSION} "
                          "(write it again with onnx-dc sensitivity --save)")
    if doc.get("model") != model_fingerprint(model):
        raise ConfigError(f"{where}: made for a different model (its graph or weights differ)")
    if doc.get("calibration") != data_fingerprint(feeds):
        raise ConfigError(f"{where}: made with different calibration data than --calibration "
                          f"{options.calibration}")
    want, have = analysis_settings(options), doc.get("settings")
    if have != want:
        diff = [f"{k} {have.get(k) if isinstance(have, dict) else None!r} (this run: {want[k]!r})" for k in want
                if not isinstance(have, dict) or have.get(k) != want[k]]
        raise ConfigError(f"{where}: made with other settings: {'; '.join(diff)}")
    sens: dict[str, LayerSensitivity] = {}
    try:
        for row in doc["points"]:
            s = sens.setdefault(row["layer"], LayerSensitivity(row["layer"], row["kind"], int(row["weights"])))
            s.points.append(Point(float(row["sparsity"]), int(row["bits"]), int(row["payload_bytes"]),
                                  float(row["output_error"]), float(row["agreement"]),
                                  None if row.get("accuracy") is None else float(row["accuracy"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: a point is malformed ({type(exc).__name__}: {exc})") from None
    names = [layer.weight_name for layer in layers]
    missing = [n for n in names if n not in sens or not sens[n].points]
    extra = [n for n in sens if n not in names]
    if missing or extra:
        parts = ([f"no points for {', '.join(missing[:5])}"] if missing else []) + \
                ([f"points for layers this run does not compress: {', '.join(extra[:5])}"] if extra else [])
        raise ConfigError(f"{where}: {'; '.join(parts)} (--kinds / --min-weights differ?)")
    return [sens[n] for n in names]
