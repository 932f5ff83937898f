"""Whole models as exporters write them: file size and latency per kind of op, and sparse vs dense conv per layer.

For the bundled LeNet-5 and the ResNet-style / BERT-style test models (models/make_test_models.py), with
the converter's defaults (conv layers: --conv-exec auto, measured per layer):
  1. file size per kind of tensor (fully-connected, convolution, embedding, other) and in all;
  2. batch-1 latency of the original and the compressed model in onnxruntime (1 thread, medians of
     interleaved rounds), and the time per kind of op from onnxruntime's own profiler;
  3. per conv layer: DCSparseConv vs onnxruntime's Conv on the decoded kernel (each layer alone, as
     --conv-exec auto measures it, with more rounds), and what auto chose.

    python studies/whole_models.py            # prints the tables and updates docs/results/whole_models.md
    python studies/whole_models.py --no-write
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "studies")]  # this checkout's onnx_dc, not an installed copy

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import onnx_dc  # noqa: E402
from results_block import write_results_block  # noqa: E402
from onnx_dc.config import CompressOptions, PerKind  # noqa: E402
from onnx_dc.api import data_free_payload, layer_policy  # noqa: E402
from onnx_dc.conv_exec import measure  # noqa: E402
from onnx_dc.graph.fold import fold_constant_chains  # noqa: E402
from onnx_dc.graph.match import find_layers  # noqa: E402
from onnx_dc.session import make_session  # noqa: E402
from paper_settings import LENET5  # noqa: E402

ROUNDS = 200
KIND_OF_OP = {"Conv": "conv", "FusedConv": "conv", "NchwcConv": "conv", "DCSparseConv": "conv",
              "Gemm": "fc", "FusedGemm": "fc", "MatMul": "fc", "FusedMatMul": "fc", "DCSparseGemm": "fc",
              "Gather": "emb", "DCGather": "emb", "DCDecode": "decode"}
KIND_LABEL = {"fc": "fully-connected", "conv": "convolution", "emb": "embedding", "other": "other constants",
              "decode": "DCDecode (copy out)", "rest": "everything else"}


def feeds_for(name: str) -> dict:
    rng = np.random.default_rng(0)
    if name == "bert_style":
        return {"input_ids": rng.integers(0, 2000, (1, 32)).astype(np.int64), "attention_mask": np.ones((1, 32), np.int64)}
    if name == "resnet_style":
        return {"image": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}
    return {"input": rng.random((1, 1, 28, 28)).astype(np.float32)}


def session(path: Path, profile_prefix: str | None = None, predecode: bool = True) -> ort.InferenceSession:
    """1-thread session with the library; `predecode`: onnx_dc.make_session's default (DCDecode constants
    decoded into initializers before onnxruntime optimizes the graph), False: plain onnxruntime."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return make_session(str(path), sess_options=so, predecode=predecode)


def latencies(paths: list[Path], feeds: dict, predecode: list[bool]) -> list[float]:
    """Median seconds per run of each model, measured in interleaved rounds."""
    sessions = [session(p, predecode=d) for p, d in zip(paths, predecode)]
    for s in sessions:
        for _ in range(5):
            s.run(None, feeds)
    times = [[] for _ in sessions]
    for _ in range(ROUNDS):
        for i, s in enumerate(sessions):
            t0 = time.perf_counter()
            s.run(None, feeds)
            times[i].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def node_times(path: Path, feeds: dict, runs: int = 100) -> dict[str, tuple[str, float]]:
    """node name -> (op type, median µs per run) from onnxruntime's profiler."""
    with tempfile.TemporaryDirectory() as tmp:
        s = session(path, str(Path(tmp) / "prof"))
        for _ in range(5):
            s.run(None, feeds)
        for _ in range(runs):
            s.run(None, feeds)
        events = json.loads(Path(s.end_profiling()).read_text())
    per_node: dict[str, list] = defaultdict(list)
    op_of = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            node = e["name"][: -len("_kernel_time")]
            per_node[node].append(e["dur"])
            op_of[node] = e.get("args", {}).get("op_name", "")
    return {n: (op_of[n], float(np.median(d[-runs:]))) for n, d in per_node.items()}


def by_kind(times: dict[str, tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for op, us in times.values():
        out[KIND_OF_OP.get(op, "rest")] += us
    return out


# (label, model file, options): LeNet-5 at the paper's settings (conv1 keeps 66%, conv2 12%), the test models at
# the defaults (conv keeps 50%) and the ResNet once more with conv layers keeping 10%.
STUDIES = {
    "lenet5": ("LeNet-5 (paper's settings)", "lenet5", LENET5),
    "resnet_style": ("ResNet-style", "resnet_style", CompressOptions()),
    "resnet_style_10": ("ResNet-style, conv keep 10%", "resnet_style", CompressOptions(sparsity=PerKind(0.9, 0.9))),
    "bert_style": ("BERT-style", "bert_style", CompressOptions()),
}


def study(key: str, out_dir: Path) -> dict:
    label, name, options = STUDIES[key]
    src = ROOT / "models" / f"{name}.onnx"
    paths = {}
    reports = {}
    paths["auto"] = out_dir / f"{key}.onnx"
    reports["auto"] = onnx_dc.compress(src, paths["auto"], dataclasses.replace(options, conv_exec="auto")).report
    feeds = feeds_for(name)
    t_orig, t_auto, t_plain = latencies([src, paths["auto"], paths["auto"]], feeds, [True, True, False])
    prof = {"original": node_times(src, feeds), "auto": node_times(paths["auto"], feeds)}
    # Conv layers: each one alone, sparse vs dense, as --conv-exec auto measures it (more rounds here).
    convs = []
    chosen = {layer["name"]: layer for layer in reports["auto"]["layers"] if layer["kind"] == "conv"}
    model, _ = fold_constant_chains(onnx.load(str(src)))
    layers, _ = find_layers(model, options.min_weights, str(src.parent), options.kinds)
    for layer in layers:
        if layer.kind != "conv":
            continue
        info = chosen.get(layer.weight_name, {})
        dims = layer.input_dims[0]
        payload = data_free_payload(layer.source, layer_policy(layer, options), options.init, options.seed, options.huffman)
        if layer.exec == "dense":  # grouped: no sparse form
            sparse_us, dense_us = None, None
        else:
            s, d = measure(layer, payload, [1] + list(dims[1:]), rounds=101, budget_s=20)
            sparse_us, dense_us = 1e6 * s, 1e6 * d
        convs.append({"node": layer.uses[0].name, "weight": layer.weight_name, "shape": list(layer.shape),
                      "image": f"{dims[2]}×{dims[3]}", "kept_pct": info.get("kept_pct"), "sparse_us": sparse_us,
                      "dense_us": dense_us, "auto": info.get("execution", "—")})
    return {"name": label, "reports": reports, "t_orig": t_orig, "t_auto": t_auto, "t_plain": t_plain,
            "kinds_orig": by_kind(prof["original"]), "kinds_auto": by_kind(prof["auto"]), "convs": convs,
            "original_bytes": src.stat().st_size, "compressed_bytes": paths["auto"].stat().st_size}


def render(results: list[dict]) -> str:
    out = ["Measured by `python studies/whole_models.py` (onnxruntime " + ort.__version__ + ", 1 thread, batch 1; "
           "latencies are medians of interleaved rounds, per-kind times from onnxruntime's profiler). Settings: "
           "LeNet-5 the paper's (studies/paper_settings.py); the others the defaults (fc keep 10% / 5 bits, conv "
           "keep 50% / 8 bits, embeddings keep 50% / 8 bits, other constants of rank ≥ 2 and ≥ 256 values "
           "quantized to 8 bits), and the ResNet once more with conv layers keeping 10%; conv layers "
           "`--conv-exec auto`.\n",
           "| model | file | compressed | ratio | fc | conv | embedding | other | latency original | latency compressed | "
           "compressed, DCDecode at run time |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        bk = r["reports"]["auto"]["totals"]["by_kind"]

        def kind_cell(k):
            return f"{bk[k]['original_bytes'] / 1e3:,.0f} kB → {bk[k]['ratio']:.1f}x" if k in bk else "—"

        out.append(f"| {r['name']} | {r['original_bytes']:,} B | {r['compressed_bytes']:,} B | "
                   f"**{r['original_bytes'] / r['compressed_bytes']:.1f}x** | {kind_cell('fc')} | {kind_cell('conv')} | "
                   f"{kind_cell('emb')} | {kind_cell('other')} | {1e6 * r['t_orig']:,.0f} µs | {1e6 * r['t_auto']:,.0f} µs | "
                   f"{1e6 * r['t_plain']:,.0f} µs |")
    out += ["", "*latency compressed*: `onnx_dc.make_session` (DCDecode constants decoded into initializers before "
            "onnxruntime optimizes the graph); *DCDecode at run time*: plain onnxruntime with the library registered, "
            "where the dense-run conv kernels are run-time values (onnxruntime never constant-folds a custom op: "
            "no NCHWc convolution, a copy per run)."]
    out += ["", "Time per kind of op inside the model (µs per batch-1 run, onnxruntime profiler; original → compressed):",
            "", "| model | " + " | ".join(KIND_LABEL[k] for k in ("fc", "conv", "emb", "decode", "rest")) + " |",
            "|---|" + "---:|" * 5]
    for r in results:
        cells = []
        for k in ("fc", "conv", "emb", "decode", "rest"):
            a, b = r["kinds_orig"].get(k, 0.0), r["kinds_auto"].get(k, 0.0)
            cells.append("—" if not a and not b else f"{a:,.0f} → {b:,.0f}")
        out.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    out += ["", "Conv layers, sparse (`DCSparseConv`) vs dense (onnxruntime's `Conv` on the decoded kernel as an "
            "initializer), µs per batch-1 run of the layer alone (medians of 101 interleaved rounds); *auto chose* "
            "is what the converter picked from its own shorter measurement at conversion:",
            "", "| model | node | kernel | image | kept | sparse | dense | sparse/dense | auto chose |",
            "|---|---|---|---|---:|---:|---:|---:|---|"]
    for r in results:
        for c in r["convs"]:
            shape = "×".join(map(str, c["shape"]))
            kept = "—" if c["kept_pct"] is None else f"{c['kept_pct']:.0f}%"
            if c["sparse_us"] is None:
                cells = "— | — | — (group > 1)"
            else:
                cells = f"{c['sparse_us']:,.1f} | {c['dense_us']:,.1f} | {c['sparse_us'] / c['dense_us']:.2f}"
            out.append(f"| {r['name']} | {c['node']} | {shape} | {c['image']} | {kept} | {cells} | {c['auto']} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", "--no-readme", dest="no_write", action="store_true",
                    help="print the tables instead of updating docs/results/whole_models.md")
    ap.add_argument("--models", default=",".join(STUDIES), help="comma-separated: " + ", ".join(STUDIES))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for name in args.models.split(","):
            print(f"measuring {name} …", file=sys.stderr, flush=True)
            results.append(study(name, Path(tmp)))
    text = render(results)
    print(text)
    if args.no_write:
        return
    print(f"{write_results_block('whole-models', text).relative_to(ROOT)} updated", file=sys.stderr)


if __name__ == "__main__":
    main()
