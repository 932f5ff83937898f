"""Benchmark of the native library (prints tables; asserts nothing).

    python bench/bench_native.py [--rounds 15] [--threads 1 2] [--batches 1 8 64] [--skip-big]

For the compressed 784-300-100-10 MLP (models/lenet_300_100.onnx if present, else a random one) and a
single 4096x4096 fully-connected layer with 10% of its weights kept, next to onnxruntime's dense fp32
model of the same layers, in the same process:
  - session creation time (which includes decoding every payload once) and the decode rate in MB/s of
    payload (decoding alone, through the library's C API: checksum, Huffman, execution format);
  - resident bytes of the execution format per nonzero (from the library: onnx_dc_sparse_stats);
  - latency at batch 1, 8 and 64 per intra-op thread count: rounds interleave the compressed and the
    dense session, each round times a burst of runs; the table shows the median over rounds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import onnx_dc  # noqa: E402
from onnx_dc.config import CompressOptions, PerKind  # noqa: E402
from onnx_dc.native import NativeLibrary, get_library_path
from onnx_dc.session import make_session  # noqa: E402


def mlp_model(sizes=(784, 300, 100, 10), seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "input"
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        inits += [numpy_helper.from_array((rng.standard_normal((n, k)) * np.sqrt(2 / k)).astype(np.float32), f"fc{i}.weight"),
                  numpy_helper.from_array(np.zeros(n, np.float32), f"fc{i}.bias")]
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [f"fc{i}"], transB=1))
        x = f"fc{i}"
        if i < len(sizes) - 1:
            nodes.append(helper.make_node("Relu", [x], [f"relu{i}"]))
            x = f"relu{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", sizes[0]])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", sizes[-1]])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def fc_model(n=4096, k=4096, seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    node = helper.make_node("Gemm", ["X", "W", "B"], ["Y"], transB=1)
    graph = helper.make_graph([node], "fc", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", n])],
                              [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(n, np.float32), "B")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def payloads(model: onnx.ModelProto) -> list[bytes]:
    return [numpy_helper.to_array(t).tobytes() for t in model.graph.initializer if t.data_type == TensorProto.UINT8]


def median_time(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def bench_case(name, original_path, dc_path, native, args) -> None:
    dc_model = onnx.load(str(dc_path))
    blobs = payloads(dc_model)
    payload_bytes = sum(len(b) for b in blobs)
    stats = [native.sparse_stats(b) for b in blobs]
    nnz = sum(s["nnz"] for s in stats)
    resident = sum(s["resident_bytes"] for s in stats)
    decode_s = median_time(lambda: [native.sparse_stats(b) for b in blobs], 7)
    dense_bytes = sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(original_path)).graph.initializer)

    print(f"\n## {name}")
    print(f"file: dense {Path(original_path).stat().st_size / 1e6:.2f} MB, compressed {Path(dc_path).stat().st_size / 1e6:.3f} MB; "
          f"payloads {payload_bytes / 1e3:.1f} kB for {nnz} nonzeros ({8 * payload_bytes / max(nnz, 1):.2f} bits/nonzero)")
    print(f"execution format: {resident / 1e6:.3f} MB resident = {resident / max(nnz, 1):.2f} bytes/nonzero "
          f"(dense fp32 weights: {dense_bytes / 1e6:.2f} MB)")
    print(f"decode (checksum + Huffman + execution format, 1 thread): {decode_s * 1e3:.2f} ms = "
          f"{payload_bytes / decode_s / 1e6:.1f} MB/s of payload, {nnz / decode_s / 1e6:.1f} M nonzeros/s")

    print(f"\n| session creation | compressed | dense |\n|---|---:|---:|")
    for threads in args.threads:
        c = median_time(lambda: make_session(dc_path, intra_op_threads=threads), 5)
        d = median_time(lambda: ort.InferenceSession(str(original_path), _options(threads), providers=["CPUExecutionProvider"]), 5)
        print(f"| {threads} thread(s) | {c * 1e3:.1f} ms | {d * 1e3:.1f} ms |")

    print(f"\n| threads | batch | compressed (median) | dense fp32 (median) | dense / compressed |\n|---:|---:|---:|---:|---:|")
    input_name = dc_model.graph.input[0].name
    k = dc_model.graph.input[0].type.tensor_type.shape.dim[-1].dim_value
    rng = np.random.default_rng(0)
    for threads in args.threads:
        sc = make_session(dc_path, intra_op_threads=threads)
        sd = ort.InferenceSession(str(original_path), _options(threads), providers=["CPUExecutionProvider"])
        for batch in args.batches:
            x = {input_name: rng.standard_normal((batch, k)).astype(np.float32)}
            yc, yd = sc.run(None, x)[0], sd.run(None, x)[0]
            if not np.allclose(yc.shape, yd.shape):
                raise SystemExit("shape mismatch")
            burst = max(1, int(args.target_ms / 1e3 / max(median_time(lambda: sd.run(None, x), 3), 1e-6)))
            times = {"c": [], "d": []}
            for _ in range(args.rounds):
                for key, sess in (("c", sc), ("d", sd)):
                    t0 = time.perf_counter()
                    for _ in range(burst):
                        sess.run(None, x)
                    times[key].append((time.perf_counter() - t0) / burst)
            c, d = statistics.median(times["c"]), statistics.median(times["d"])
            print(f"| {threads} | {batch} | {_fmt(c)} | {_fmt(d)} | {d / c:.2f}x |")


def _options(threads):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    return o


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--target-ms", type=float, default=20.0, help="length of one timed burst")
    parser.add_argument("--skip-big", action="store_true", help="only the MLP")
    args = parser.parse_args()
    native = NativeLibrary()
    print(f"library: {get_library_path()}\nonnxruntime {ort.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lenet = REPO / "models" / "lenet_300_100.onnx"
        if not lenet.is_file():
            lenet = tmp / "mlp.onnx"
            onnx.save(mlp_model(), str(lenet))
        # Deep Compression's LeNet-300-100 setting: 8% of the weights kept, 6-bit codebooks, 5-bit indices.
        mlp_opts = CompressOptions(sparsity=PerKind(0.92, 0.5), bits=PerKind(6, 8), index_bits=PerKind(5, 8))
        onnx_dc.compress(lenet, tmp / "mlp.dc.onnx", mlp_opts)
        bench_case(f"784-300-100-10 MLP ({lenet.name}, 8% kept, 6-bit weights, 5-bit indices)", lenet,
                   tmp / "mlp.dc.onnx", native, args)
        if not args.skip_big:
            onnx.save(fc_model(), str(tmp / "fc.onnx"))
            fc_opts = CompressOptions(sparsity=PerKind(0.9, 0.5), bits=PerKind(5, 8), index_bits=PerKind(5, 8))
            onnx_dc.compress(tmp / "fc.onnx", tmp / "fc.dc.onnx", fc_opts)
            bench_case("4096x4096 fully-connected layer (10% kept, 5-bit weights, 5-bit indices)", tmp / "fc.onnx",
                       tmp / "fc.dc.onnx", native, args)


if __name__ == "__main__":
    main()
