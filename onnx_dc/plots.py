"""Pictures of what compression did to each layer (the paper's Figures 4 and 12). Needs matplotlib
(`pip install onnx-dc[plots]`); imported only by the `plots` command."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .codec.payload import read_payload
from .codec.sparse import encode_relative
from .config import ConfigError
from .graph.model_io import ModelError, load_model
from .graph.rewrite import META_LAYERS, get_metadata
from .operators import DOMAIN, PAYLOAD_INPUT


def pyplot():
    """matplotlib's pyplot on the Agg backend (an optional dependency: imported when a plot is made)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'onnx-dc[plots]' (or pip install matplotlib)") from None
    return plt


def _payloads(model: onnx.ModelProto) -> dict[str, bytes]:
    """Original weight name -> payload bytes, for every compressed layer."""
    weight_of = {r["node"]: r.get("weight") for r in get_metadata(model, META_LAYERS, []) or [] if isinstance(r, dict)}
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.domain == DOMAIN and node.op_type in PAYLOAD_INPUT and len(node.input) > PAYLOAD_INPUT[node.op_type]:
            payload = node.input[PAYLOAD_INPUT[node.op_type]]
            if payload in inits:
                out.setdefault(weight_of.get(node.name) or payload, numpy_helper.to_array(inits[payload]).tobytes())
    return out


def plot_layers(model_path, out_dir, original_path=None) -> list[Path]:
    """One PNG per compressed layer: weight distribution with the codebook (before: the original's
    surviving weights, if the original model is given), and the distributions of cluster indices and of
    relative indices. Returns the files written."""
    plt = pyplot()
    model = load_model(model_path)
    originals = {}
    if original_path is not None:
        originals = {t.name: numpy_helper.to_array(t) for t in load_model(original_path).graph.initializer}
    payloads = _payloads(model)
    if not payloads:
        raise ModelError(f"{model_path}: has no onnx-dc compressed layer")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, blob in payloads.items():
        p = read_payload(blob)
        info = p.info
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        ax = axes[0]
        original = originals.get(name)
        if original is not None and original.size == info.rows * info.cols:
            # Compare the same orientation: payload rows are output neurons.
            w = original.reshape(info.dims) if original.shape == tuple(info.dims) else original.T.reshape(info.dims)
            w = w.reshape(info.rows, info.cols)
            kept = w[np.repeat(np.arange(info.rows), p.row_nnz), p.columns]
            ax.hist(kept, bins=200, color="tab:blue", alpha=0.7, label="surviving weights (before quantization)")
        counts = np.bincount(p.labels, minlength=len(info.codebook))
        ax2 = ax.twinx()
        ax2.vlines(info.codebook, 0, counts, colors="tab:red", label="codebook (weights per centroid)")
        ax2.set_ylabel("weights per centroid")
        ax.set_title(f"{name}: {info.nnz:,} of {info.rows * info.cols:,} weights, {len(info.codebook)} centroids")
        ax.set_xlabel("weight value")
        ax.set_ylabel("count")
        handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        if handles:
            ax.legend(handles=handles, fontsize=8, loc="upper left")
        axes[1].bar(np.arange(1 << info.weight_bits), np.bincount(p.labels, minlength=1 << info.weight_bits),
                    color="tab:green")
        axes[1].set_title(f"cluster index distribution ({info.weight_bits}-bit)")
        axes[1].set_xlabel("cluster index")
        mask = np.zeros((info.rows, info.cols), dtype=bool)
        mask[np.repeat(np.arange(info.rows), p.row_nnz), p.columns] = True
        symbols = encode_relative(mask, info.index_bits).symbols
        axes[2].bar(np.arange(1 << info.index_bits), np.bincount(symbols, minlength=1 << info.index_bits),
                    color="tab:purple")
        axes[2].set_title(f"relative index distribution ({info.index_bits}-bit, last = filler)")
        axes[2].set_xlabel("relative index")
        fig.tight_layout()
        path = out_dir / f"{''.join(c if c.isalnum() or c in '._-' else '_' for c in name)}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
