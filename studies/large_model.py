"""A model over the 2 GB protobuf limit: build a synthetic ~3.2 GB MLP (weights in an external data file),
compress it layer by layer, report time and peak memory, and check its outputs through onnxruntime with the
library against the decompressed model on a few inputs.

Run: python studies/large_model.py [--dir DIR] [--keep]     (needs ~12 GB of disk and ~8 GB of memory)
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = (8192, 16384, 16384, 16384, 8192, 1000)  # 3.25 GB of float32 weights; the largest layer 1.07 GB


def build(path: Path) -> int:
    """Write the model and its data file without ever holding more than one block of weights."""
    data_name = path.name + ".data"
    rng = np.random.default_rng(0)
    nodes, inits, x, offset = [], [], "input", 0
    with open(path.parent / data_name, "wb") as f:
        for i, (k, n) in enumerate(zip(SIZES[:-1], SIZES[1:]), start=1):
            for r in range(0, n, 1024):  # the weight, [N, K] (Gemm transB=1), in blocks of rows
                block = (rng.standard_normal((min(1024, n - r), k), dtype=np.float32) * np.float32(np.sqrt(2 / k)))
                f.write(block.astype("<f4").tobytes())
            t = TensorProto(name=f"fc{i}.weight", data_type=TensorProto.FLOAT, dims=[n, k],
                            data_location=TensorProto.EXTERNAL)
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(4 * n * k))):
                t.external_data.add(key=key, value=value)
            offset += 4 * n * k
            inits += [t, onnx.numpy_helper.from_array((0.01 * rng.standard_normal(n)).astype(np.float32), f"fc{i}.bias")]
            nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [f"fc{i}"], name=f"fc{i}", transB=1))
            x = f"fc{i}"
            if i < len(SIZES) - 1:
                nodes.append(helper.make_node("Relu", [x], [f"relu{i}"]))
                x = f"relu{i}"
    graph = helper.make_graph(nodes, "big_mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", SIZES[0]])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["b", SIZES[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return offset


MEASURE = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def run_measured(args) -> tuple[float, float]:
    """Run a command through a fresh parent that reports only its peak; (seconds, peak RSS in GB)."""
    t = time.time()
    out = subprocess.run([sys.executable, "-c", MEASURE, *args], check=True, capture_output=True, text=True)
    return time.time() - t, int(out.stdout.strip().splitlines()[-1]) / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="onnx-dc-large-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = work / "big.onnx"
        t = time.time()
        weight_bytes = build(src)
        print(f"built {src}: {weight_bytes / 1e9:.2f} GB of weights in {time.time() - t:.0f} s "
              f"(largest layer {4 * max(a * b for a, b in zip(SIZES[:-1], SIZES[1:])) / 1e9:.2f} GB)", flush=True)
        os.environ["PYTHONPATH"] = str(ROOT)  # the children run this checkout's onnx_dc
        cli = [sys.executable, "-m", "onnx_dc.cli"]
        seconds, peak = run_measured(cli + ["compress", str(src), "-o", str(work / "big.dc.onnx"), "--sparsity", "0.9",
                                            "--bits", "5", "-q"])
        dc_bytes = sum(f.stat().st_size for f in work.glob("big.dc.onnx*"))
        print(f"compress: {seconds:.0f} s, peak RSS {peak:.2f} GB, {weight_bytes / 1e9:.2f} GB → {dc_bytes / 1e6:.1f} MB",
              flush=True)
        seconds, peak = run_measured(cli + ["decompress", str(work / "big.dc.onnx"), "-o", str(work / "dense.onnx")])
        print(f"decompress: {seconds:.0f} s, peak RSS {peak:.2f} GB", flush=True)
        import onnxruntime as ort

        import onnx_dc

        x = np.random.default_rng(1).standard_normal((3, SIZES[0])).astype(np.float32)
        t = time.time()
        y_dc = onnx_dc.make_session(str(work / "big.dc.onnx")).run(None, {"input": x})[0]
        t_dc = time.time() - t
        y_dense = ort.InferenceSession(str(work / "dense.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        scale = float(np.abs(y_dense).max())
        diff = float(np.abs(y_dc - y_dense).max())
        print(f"onnxruntime + library vs decompressed model: max abs diff {diff:.3g} (output scale {scale:.3g}), "
              f"session + run {t_dc:.1f} s")
        if diff > 1e-4 * max(scale, 1.0):
            sys.exit("outputs differ")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
