"""Whole models (issue 8): file size and latency per kind of op, and sparse vs dense conv per layer.

For the bundled LeNet-5 and the ResNet-style / BERT-style test models (models/make_test_models.py), with
the converter's defaults (conv layers: --conv-exec auto, measured per layer):
  1. file size per kind of tensor (fully-connected, convolution, embedding, other) and in all;
  2. batch-1 latency of the original and the compressed model in onnxruntime (1 thread, medians of
     interleaved rounds), and the time per kind of op from onnxruntime's own profiler;
  3. per conv layer: DCSparseConv vs onnxruntime's Conv on the decoded kernel (profiled inside the whole
     model compressed with --conv-exec sparse and --conv-exec dense), and what auto chose.

    python bench/whole_models.py            # prints the tables and updates README.md between the markers
    python bench/whole_models.py --no-readme
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]  # this checkout's onnx_dc, not an installed copy

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import onnx_dc  # noqa: E402
from onnx_dc.config import CompressOptions  # noqa: E402
from onnx_dc.runtime import get_library_path  # noqa: E402

BEGIN, END = "<!-- whole-models:begin -->", "<!-- whole-models:end -->"
ROUNDS = 200
KIND_OF_OP = {"Conv": "conv", "DCSparseConv": "conv", "Gemm": "fc", "MatMul": "fc", "DCSparseGemm": "fc",
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


def session(path: Path, profile_prefix: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.register_custom_ops_library(get_library_path())
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def latencies(paths: list[Path], feeds: dict) -> list[float]:
    """Median seconds per run of each model, measured in interleaved rounds."""
    sessions = [session(p) for p in paths]
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


def study(name: str, out_dir: Path) -> dict:
    src = ROOT / "models" / f"{name}.onnx"
    paths = {}
    reports = {}
    for mode in ("auto", "sparse", "dense"):
        paths[mode] = out_dir / f"{name}.{mode}.onnx"
        reports[mode] = onnx_dc.compress(src, paths[mode], CompressOptions(conv_exec=mode)).report
    feeds = feeds_for(name)
    t_orig, t_auto = latencies([src, paths["auto"]], feeds)
    prof = {mode: node_times(p, feeds) for mode, p in [("original", src)] + list(paths.items())}
    # Conv layers: the profiled time of each node in the sparse-exec and the dense-exec model.
    convs = []
    chosen = {layer["name"]: layer for layer in reports["auto"]["layers"] if layer["kind"] == "conv"}
    model = onnx.load(str(src))
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        w = node.input[1]
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        sparse_us = prof["sparse"].get(node.name, ("", float("nan")))[1]
        dense_us = prof["dense"].get(node.name, ("", float("nan")))[1]
        info = chosen.get(w, {})
        convs.append({"node": node.name, "weight": w, "shape": info.get("shape"), "group": group,
                      "kept_pct": info.get("kept_pct"), "sparse_us": sparse_us if group == 1 else None,
                      "dense_us": dense_us, "auto": info.get("execution", "—")})
    return {"name": name, "reports": reports, "t_orig": t_orig, "t_auto": t_auto,
            "kinds_orig": by_kind(prof["original"]), "kinds_auto": by_kind(prof["auto"]), "convs": convs,
            "original_bytes": src.stat().st_size, "compressed_bytes": paths["auto"].stat().st_size}


def render(results: list[dict]) -> str:
    out = ["Measured by `python bench/whole_models.py` (onnxruntime " + ort.__version__ + ", 1 thread, batch 1; "
           "latencies are medians of interleaved rounds, per-kind times from onnxruntime's profiler). Default "
           "settings: fc keep 10% / 5 bits, conv keep 50% / 8 bits, embeddings keep 50% / 8 bits, other "
           "constants ≥ 256 values quantized to 8 bits; conv layers `--conv-exec auto`.\n",
           "| model | file | compressed | ratio | fc | conv | embedding | other | latency original | latency compressed |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        bk = r["reports"]["auto"]["totals"]["by_kind"]

        def kind_cell(k):
            return f"{bk[k]['original_bytes'] / 1e3:,.0f} kB → {bk[k]['ratio']:.1f}x" if k in bk else "—"

        out.append(f"| {r['name']} | {r['original_bytes']:,} B | {r['compressed_bytes']:,} B | "
                   f"**{r['original_bytes'] / r['compressed_bytes']:.1f}x** | {kind_cell('fc')} | {kind_cell('conv')} | "
                   f"{kind_cell('emb')} | {kind_cell('other')} | {1e6 * r['t_orig']:,.0f} µs | {1e6 * r['t_auto']:,.0f} µs |")
    out += ["", "Time per kind of op inside the model (µs per batch-1 run, onnxruntime profiler; original → compressed):",
            "", "| model | " + " | ".join(KIND_LABEL[k] for k in ("fc", "conv", "emb", "decode", "rest")) + " |",
            "|---|" + "---:|" * 5]
    for r in results:
        cells = []
        for k in ("fc", "conv", "emb", "decode", "rest"):
            a, b = r["kinds_orig"].get(k, 0.0), r["kinds_auto"].get(k, 0.0)
            cells.append("—" if not a and not b else f"{a:,.0f} → {b:,.0f}")
        out.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    out += ["", "Conv layers, sparse (`DCSparseConv`) vs dense (onnxruntime `Conv` on the decoded kernel), µs per "
            "batch-1 run inside the whole model; `auto` is what the converter chose by measuring the layer alone:",
            "", "| model | node | kernel | kept | sparse | dense | sparse/dense | auto chose |", "|---|---|---|---:|---:|---:|---:|---|"]
    for r in results:
        for c in r["convs"]:
            shape = "×".join(map(str, c["shape"])) if c["shape"] else "—"
            sparse = "— (group > 1)" if c["sparse_us"] is None else f"{c['sparse_us']:,.1f}"
            ratio = "" if c["sparse_us"] is None else f"{c['sparse_us'] / c['dense_us']:.2f}"
            kept = "—" if c["kept_pct"] is None else f"{c['kept_pct']:.0f}%"
            out.append(f"| {r['name']} | {c['node']} | {shape} | {kept} | {sparse} | {c['dense_us']:,.1f} | {ratio} | {c['auto']} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-readme", action="store_true", help="print the tables instead of updating README.md")
    ap.add_argument("--models", default="lenet5,resnet_style,bert_style")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for name in args.models.split(","):
            print(f"measuring {name} …", file=sys.stderr, flush=True)
            results.append(study(name, Path(tmp)))
    text = render(results)
    print(text)
    if args.no_readme:
        return
    readme = ROOT / "README.md"
    content = readme.read_text()
    if BEGIN not in content or END not in content:
        sys.exit(f"README.md has no {BEGIN} … {END} markers")
    content = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{text}\n{END}", content, flags=re.S)
    readme.write_text(content)
    print("README.md updated", file=sys.stderr)


if __name__ == "__main__":
    main()
