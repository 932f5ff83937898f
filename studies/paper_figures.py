"""The paper's Figure 6 (accuracy vs. model size for pruning only, quantization only, and both) on the
bundled models, measured on Fashion-MNIST through onnxruntime. Writes docs/img/accuracy_vs_size_*.png and
prints the points. Needs matplotlib.

Run: python studies/paper_figures.py
Pruning follows the paper's per-layer kept fractions, scaled from 0.5x to 6x. Sizes count weight bits only: pruning only stores fp32 values plus 5-bit relative indices (fillers
included); quantization only stores B-bit indices for every weight plus the codebook; pruning + quantization
is the real payload size (Huffman coded, all overhead included).
"""
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's onnx_dc, not an installed copy

from onnx_dc.codec import compress_tensor  # noqa: E402
from onnx_dc.codec.cluster import kmeans_1d  # noqa: E402
from onnx_dc.codec.prune import prune_mask_by_fraction  # noqa: E402
from onnx_dc.codec.sparse import encode_relative  # noqa: E402
from onnx_dc.datasets import fashion_mnist, preprocess  # noqa: E402

# Kept fractions follow the paper's per-layer profile (Tables 2 and 3), scaled: uniform pruning would wreck
# the small, sensitive layers (fc3, conv1) long before the big ones.
PAPER_KEEP = {
    "lenet_300_100.onnx": {"fc1.weight": 0.08, "fc2.weight": 0.09, "fc3.weight": 0.26},
    "lenet5.onnx": {"conv1.weight": 0.66, "conv2.weight": 0.12, "fc1.weight": 0.08, "fc2.weight": 0.19},
}
SCALES = (6, 4, 3, 2, 1.5, 1.25, 1, 0.75, 0.5)
BITS = (8, 6, 5, 4, 3, 2, 1)


def accuracy(model: onnx.ModelProto, weights: dict, x, y) -> float:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.name in weights:
            t.CopyFrom(numpy_helper.from_array(weights[t.name].astype(np.float32), t.name))
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    out = np.concatenate([session.run(None, {"input": x[i : i + 2000]})[0] for i in range(0, len(x), 2000)])
    return float((out.argmax(1) == y).mean())


def curves(model_file: str, shape):
    model = onnx.load(str(ROOT / "models" / model_file))
    layers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith(".weight")}
    total_bits = 32 * sum(w.size for w in layers.values())
    images, y = fashion_mnist("test")
    x = preprocess(images, shape)
    base = accuracy(model, {}, x, y)
    out = {"pruning only": [], "quantization only": [], "pruning + quantization": []}
    for scale in SCALES:
        pruned, bits = {}, 0
        keeps = {name: min(1.0, scale * k) for name, k in PAPER_KEEP[model_file].items()}
        for name, w in layers.items():
            keep = keeps[name]
            mask = prune_mask_by_fraction(w, 1 - keep)
            pruned[name] = np.where(mask, w, 0)
            bits += encode_relative(mask.reshape(w.shape[0], -1), 5).symbols.size * 5 + mask.sum() * 32
        out["pruning only"].append((bits / total_bits, accuracy(model, pruned, x, y)))
        both, payload = {}, 0
        for name, w in layers.items():
            c = compress_tensor(w, 1 - keeps[name], 8 if w.ndim == 4 else 5, 5)
            both[name] = c.dense
            payload += 8 * len(c.payload)
        out["pruning + quantization"].append((payload / total_bits, accuracy(model, both, x, y)))
    for b in BITS:
        quant, bits = {}, 0
        for name, w in layers.items():
            c = kmeans_1d(w.ravel(), 1 << b)
            quant[name] = c.codebook[c.labels].reshape(w.shape)
            bits += w.size * b + 32 * c.codebook.size
        out["quantization only"].append((bits / total_bits, accuracy(model, quant, x, y)))
    return base, out


def main():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    for title, file, shape in (("LeNet-300-100", "lenet_300_100.onnx", ["b", 784]),
                               ("LeNet-5", "lenet5.onnx", ["b", 1, 28, 28])):
        base, out = curves(file, shape)
        print(f"{title}: original accuracy {base:.2%}")
        fig, ax = plt.subplots(figsize=(6, 4))
        for (label, points), marker in zip(out.items(), "o^s"):
            points = sorted(points)
            print(f"  {label}: " + ", ".join(f"{100 * s:.1f}%→{a:.1%}" for s, a in points))
            ax.plot([100 * s for s, _ in points], [100 * (a - base) for _, a in points], marker=marker, label=label)
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 5, 10, 20, 50])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("model size ratio after compression (%)")
        ax.set_ylabel("accuracy change (points)")
        ax.set_title(f"{title} on Fashion-MNIST, no retraining (original {base:.1%})")
        ax.axhline(0, color="gray", lw=0.5)
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path = ROOT / "docs" / "img" / f"accuracy_vs_size_{file.replace('.onnx', '')}.png"
        fig.savefig(path, dpi=90)
        print(f"  wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
