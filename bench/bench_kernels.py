"""DCSparseGemm against every onnxruntime peer, one fully-connected layer at a time (prints tables; asserts
nothing).

    python bench/bench_kernels.py [--rounds 9] [--threads 1 2] [--batches 1 8 64] [--keep 0.1 0.05]
                                  [--shapes 300x784 4096x9216 4096x4096 1000x4096] [--clock auto|cpu|wall]

For each layer shape (N outputs x K inputs; random Gaussian weights), the script builds, in this process:
  - dense:  onnxruntime fp32 `Gemm` (transB=1, with bias): the baseline of every ratio;
  - int8:   `onnxruntime.quantization.quantize_dynamic` of the same layer as MatMul + Add (int8 weights,
            activations quantized at run time);
  - 4-bit:  `MatMulNBits` (com.microsoft) with 4-bit weights in blocks of 32, symmetric, accuracy_level=4
            (int8 activations) + Add, packed here from the same weights;
  - dc:     `onnx_dc.compress` of the Gemm model with the given kept fractions (5-bit codebook, 5-bit
            relative indices), run by libonnx_dc_ops.so (DCSparseGemm).
All candidates of one shape and thread count run interleaved: every round times a burst of runs of each in
turn, and a candidate's ratio is the median over rounds of (its time / dense's time in the same round), so
drift and other load on the machine hit both sides. Times are medians over rounds. By default the caches are
warm (a layer's weights stay in the 32 MB L3 between runs when they fit: everything here but dense fp32);
--cold evicts them before every run, as in a network whose weights do not fit. With --clock auto,
1-thread rows use the CPU time of the calling thread (onnxruntime runs a 1-thread session on it; this is
robust to other processes sharing the core) and 2-thread rows wall time.

Also printed: the execution format each dc layer got (kernel set, blocks, bytes per nonzero; the same
choice onnxruntime's kernel makes, from the library's C API with the same environment), decoding speed at
session creation (payload MB/s), the batch-1 bandwidth bound of the execution format's bytes, the 1- vs
2-thread batch-1 wall times, and the fixed per-call cost on a LeNet-sized layer.
"""
from __future__ import annotations

import argparse
import os
import platform
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

DRAM_GBPS = 12.5  # single-thread DRAM read bandwidth of the reference machine


# ---- models -----------------------------------------------------------------------------------------------

def weights(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32),
            (rng.standard_normal(n) * 0.1).astype(np.float32))


def _model(nodes, inits, k, n, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "fc", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), *extra_opsets])
    model.ir_version = 8
    return model


def gemm_model(w, b) -> onnx.ModelProto:
    n, k = w.shape
    node = helper.make_node("Gemm", ["X", "W", "B"], ["Y"], transB=1)
    return _model([node], [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")], k, n)


def matmul_model(w, b) -> onnx.ModelProto:
    n, k = w.shape
    nodes = [helper.make_node("MatMul", ["X", "Wt"], ["XW"]), helper.make_node("Add", ["XW", "B"], ["Y"])]
    return _model(nodes, [numpy_helper.from_array(np.ascontiguousarray(w.T), "Wt"), numpy_helper.from_array(b, "B")],
                  k, n)


def int8_model(w, b, tmp: Path) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    src, dst = tmp / "fp32_matmul.onnx", tmp / "int8.onnx"
    onnx.save(matmul_model(w, b), str(src))
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    model = onnx.load(str(dst))
    if not any(nd.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for nd in model.graph.node):
        raise SystemExit(f"quantize_dynamic did not quantize the MatMul: {[nd.op_type for nd in model.graph.node]}")
    return model


def nbits_model(w, b, block: int = 32, accuracy_level: int = 4) -> onnx.ModelProto:
    """MatMulNBits, 4-bit symmetric blocks of `block` along K (zero point 8, the operator's default):
    B [N, blocks, block / 2] with element 2i in the low nibble of byte i, scales [N * blocks]."""
    n, k = w.shape
    nb = -(-k // block)
    wp = np.zeros((n, nb * block), np.float32)
    wp[:, :k] = w
    blocks = wp.reshape(n, nb, block)
    scale = np.abs(blocks).max(axis=2) / 7.0
    scale[scale == 0] = 1.0
    q = (np.clip(np.round(blocks / scale[..., None]), -8, 7).astype(np.int32) + 8).astype(np.uint8)
    packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    nodes = [helper.make_node("MatMulNBits", ["X", "Bq", "S"], ["XW"], domain="com.microsoft", K=k, N=n, bits=4,
                              block_size=block, accuracy_level=accuracy_level),
             helper.make_node("Add", ["XW", "B"], ["Y"])]
    inits = [numpy_helper.from_array(packed, "Bq"), numpy_helper.from_array(scale.reshape(-1).astype(np.float32), "S"),
             numpy_helper.from_array(b, "B")]
    return _model(nodes, inits, k, n, [helper.make_opsetid("com.microsoft", 1)])


def dc_model(gemm: onnx.ModelProto, keep: float, tmp: Path, bits: int = 5, index_bits: int = 5) -> Path:
    src, dst = tmp / "fp32_gemm.onnx", tmp / f"dc_{keep}.onnx"
    onnx.save(gemm, str(src))
    opts = CompressOptions(sparsity=PerKind(1 - keep, 0.5), bits=PerKind(bits, 8), index_bits=PerKind(index_bits, 8),
                           min_weights=0)
    onnx_dc.compress(src, dst, opts)
    return dst


def payload_of(path: Path) -> bytes:
    model = onnx.load(str(path))
    blobs = [numpy_helper.to_array(t).tobytes() for t in model.graph.initializer if t.data_type == TensorProto.UINT8]
    if len(blobs) != 1:
        raise SystemExit(f"{path}: expected one payload, found {len(blobs)}")
    return blobs[0]


def session(model, threads: int, dc: bool = False):
    if dc:
        return make_session(model, intra_op_threads=threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


# ---- timing ---------------------------------------------------------------------------------------------------

_EVICT = None


def evict_caches() -> None:
    """Read 96 MB (three times this machine's L3), so that no weights stay cached from the previous run."""
    global _EVICT
    if _EVICT is None:
        _EVICT = np.ones(24 << 20, np.float32)
    _EVICT.sum()


def time_interleaved(sessions: dict, feeds: dict, rounds: int, target_ms: float, clock: str,
                     cold: bool = False) -> dict:
    """Per candidate: list over rounds of seconds per run (clock: "cpu" or "wall"). cold: every timed run
    starts with caches evicted (not timed), one run per round and candidate."""
    now = time.thread_time if clock == "cpu" else time.perf_counter
    if cold:
        times = {name: [] for name in sessions}
        for sess in sessions.values():
            sess.run(None, feeds)
        for _ in range(rounds):
            for name, sess in sessions.items():
                evict_caches()
                t0 = now()
                sess.run(None, feeds)
                times[name].append(now() - t0)
        return times
    bursts = {}
    for name, sess in sessions.items():
        sess.run(None, feeds)  # warm up
        t0 = time.perf_counter()
        reps = 0
        while time.perf_counter() - t0 < 0.005 or reps < 2:
            sess.run(None, feeds)
            reps += 1
        per = (time.perf_counter() - t0) / reps
        bursts[name] = max(1, int(target_ms / 1e3 / max(per, 1e-7)))
    times = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, sess in sessions.items():
            burst = bursts[name]
            t0 = now()
            for _ in range(burst):
                sess.run(None, feeds)
            times[name].append((now() - t0) / burst)
    return times


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs" if seconds >= 1e-5 else f"{seconds * 1e6:.1f} µs"
    return f"{seconds * 1e3:.2f} ms"


def ratio(times: dict, name: str) -> float:
    return statistics.median(c / d for c, d in zip(times[name], times["dense"]))


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# ---- the report -------------------------------------------------------------------------------------------------

def bench_shape(n, k, args, native, tmp, results) -> None:
    w, b = weights(n, k)
    gemm = gemm_model(w, b)
    peers = {"dense": gemm, "int8": int8_model(w, b, tmp), "4-bit": nbits_model(w, b)}
    dcs = {}
    for keep in args.keep:
        path = dc_model(gemm, keep, tmp)
        blob = payload_of(path)
        t0 = time.perf_counter()
        layer = native.gemm(blob)  # decode + execution format, as at session creation
        create = time.perf_counter() - t0
        creates = [create]
        for _ in range(2):
            t0 = time.perf_counter()
            native.gemm(blob).close()
            creates.append(time.perf_counter() - t0)
        dcs[keep] = (path, blob, layer.info(), statistics.median(creates))
        layer.close()
    print(f"\n### {n} x {k}  (dense fp32 weights {n * k * 4 / 1e6:.1f} MB)\n")
    print("| layer | payload | execution format | bytes/nonzero | decode at session creation | batch-1 bound |")
    print("|---|---:|---|---:|---:|---:|")
    for keep, (path, blob, info, create) in dcs.items():
        bound = info["resident_bytes"] / (DRAM_GBPS * 1e9)
        results.setdefault("bound", {})[(n, k, keep)] = bound
        print(f"| {keep:.0%} kept | {len(blob) / 1e6:.3f} MB | {info['form']}, {info['kernel']}, "
              f"{info['blocks']} blocks ({4 * info['blocks'] / max(info['nnz'], 1):.2f} slots/nonzero) | "
              f"{info['resident_bytes'] / max(info['nnz'], 1):.2f} | "
              f"{create * 1e3:.1f} ms = {len(blob) / create / 1e6:.0f} MB/s | "
              f"{fmt_time(bound)} |")
    names = ["dense", "int8", "4-bit"] + [f"dc {keep:.0%}" for keep in args.keep]
    print(f"\n| threads | batch | clock | dense fp32 | " + " | ".join(names[1:]) + " |")
    print("|---:|---:|---|---:|" + "---:|" * (len(names) - 1))
    rng = np.random.default_rng(1)
    for threads in args.threads:
        sessions = {name: session(model, threads) for name, model in peers.items()}
        for keep, (path, _, _, _) in dcs.items():
            sessions[f"dc {keep:.0%}"] = session(path, threads, dc=True)
        clock = args.clock if args.clock != "auto" else ("cpu" if threads == 1 else "wall")
        for batch in args.batches:
            feeds = {"X": rng.standard_normal((batch, k)).astype(np.float32)}
            times = time_interleaved(sessions, feeds, args.rounds, args.target_ms, clock, args.cold)
            cells = [fmt_time(statistics.median(times["dense"]))]
            for name in names[1:]:
                cells.append(f"{ratio(times, name):.3f}x ({fmt_time(statistics.median(times[name]))})")
            print(f"| {threads} | {batch} | {clock} | " + " | ".join(cells) + " |", flush=True)
            for name in names:
                keep = next((kp for kp in args.keep if name == f"dc {kp:.0%}"), None)
                results.setdefault("rows", []).append(
                    dict(shape=(n, k), threads=threads, batch=batch, clock=clock, name=name, keep=keep,
                         time=statistics.median(times[name]), ratio=ratio(times, name)))
        del sessions
    # Batch 1, 1 vs 2 threads, wall clock, interleaved.
    if 1 in args.threads and 2 in args.threads and 1 in args.batches:
        sess = {}
        for keep, (path, _, _, _) in dcs.items():
            for threads in (1, 2):
                sess[f"dc {keep:.0%} {threads}t"] = session(path, threads, dc=True)
        sess["dense"] = session(gemm, 1)
        times = time_interleaved(sess, {"X": rng.standard_normal((1, k)).astype(np.float32)}, args.rounds,
                                 args.target_ms, "wall")
        parts = []
        for keep in args.keep:
            t1, t2 = (statistics.median(times[f"dc {keep:.0%} {t}t"]) for t in (1, 2))
            parts.append(f"{keep:.0%} kept: 1 thread {fmt_time(t1)}, 2 threads {fmt_time(t2)} ({t1 / t2:.2f}x)")
        print("\nbatch 1, wall clock: " + "; ".join(parts))


def per_call_overhead(native, tmp, rounds, target_ms) -> None:
    """LeNet-300-100's first layer (300 x 784, 8% kept, 6-bit) at batch 1: DCSparseGemm next to dense, an
    all-pruned DCSparseGemm of the same shape (nothing to compute: the fixed cost of a call) and a Relu
    (onnxruntime's own floor for a one-node model)."""
    from onnx_dc.codec import pack_tensor
    w, b = weights(300, 784)
    gemm = gemm_model(w, b)
    lenet = dc_model(gemm, 0.08, tmp, bits=6)
    # The same model with an all-pruned payload: every output is just its bias.
    model = onnx.load(str(lenet))
    nothing = pack_tensor((300, 784), np.zeros((300, 784), bool), np.zeros(0, np.int64), np.zeros(1, np.float32), 6, 5)
    for t in model.graph.initializer:
        if t.data_type == TensorProto.UINT8:
            t.CopyFrom(numpy_helper.from_array(np.frombuffer(nothing.payload, np.uint8), t.name))
    empty = tmp / "empty.onnx"
    onnx.save(model, str(empty))
    relu = _model([helper.make_node("Relu", ["X"], ["Y"])], [], 784, 784)
    sessions = {"dense": session(gemm, 1), "dc": session(lenet, 1, dc=True), "dc all-pruned": session(empty, 1, dc=True),
                "Relu": session(relu, 1)}
    x = {"X": np.random.default_rng(2).standard_normal((1, 784)).astype(np.float32)}
    wall = time_interleaved(sessions, x, rounds, target_ms, "wall")
    layer = native.gemm(payload_of(lenet))
    xx = x["X"]
    out = np.empty((1, 300), np.float32)
    reps = 20000
    t0 = time.perf_counter()
    for _ in range(reps):
        layer.run(xx, out=out)
    kernel_ctypes = (time.perf_counter() - t0) / reps
    med = {name: statistics.median(t) for name, t in wall.items()}
    print("\n### Per-call overhead: 300 x 784, 8% kept, 6-bit, batch 1, 1 thread (wall clock)\n")
    print("| dense fp32 Gemm | DCSparseGemm | DCSparseGemm, all weights pruned | one Relu node | "
          "kernel through ctypes |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {fmt_time(med['dense'])} | {fmt_time(med['dc'])} ({ratio(wall, 'dc'):.2f}x) | "
          f"{fmt_time(med['dc all-pruned'])} | {fmt_time(med['Relu'])} | {fmt_time(kernel_ctypes)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["300x784", "4096x9216", "4096x4096", "1000x4096"])
    parser.add_argument("--keep", type=float, nargs="+", default=[0.1, 0.05])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--target-ms", type=float, default=15.0, help="length of one timed burst")
    parser.add_argument("--clock", choices=["auto", "cpu", "wall"], default="auto")
    parser.add_argument("--no-overhead", action="store_true", help="skip the per-call overhead table")
    parser.add_argument("--cold", action="store_true",
                        help="evict the caches before every timed run (as for a layer of a network whose weights "
                             "do not all fit in the last-level cache); one run per round and candidate")
    args = parser.parse_args()
    native = NativeLibrary()
    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    env = {v: os.environ[v] for v in ("ONNX_DC_KERNEL",) if v in os.environ}
    print(f"onnxruntime {ort.__version__}, {platform.machine()} {cpu} ({os.cpu_count()} CPUs), "
          f"library {get_library_path()}, kernel features {native.cpu_features()}, environment {env or '-'}; "
          f"load average at start {load_average()}")
    print(f"ratios: time / dense fp32 time, median over {args.rounds} interleaved rounds; batch-1 bound: execution "
          f"format bytes / {DRAM_GBPS} GB/s; caches {'evicted before every run' if args.cold else 'warm'}")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for shape in args.shapes:
            n, k = (int(v) for v in shape.lower().split("x"))
            bench_shape(n, k, args, native, tmp, results)
        if not args.no_overhead:
            per_call_overhead(native, tmp, args.rounds, args.target_ms)
    rows = [r for r in results.get("rows", []) if r["batch"] == 1 and r["threads"] == 1 and r["keep"] is not None]
    if rows:
        print("\nbatch 1, 1 thread, time / bandwidth bound of the execution format's bytes: " + "; ".join(
            f"{r['shape'][0]}x{r['shape'][1]} {r['name']}: {r['time'] / results['bound'][(*r['shape'], r['keep'])]:.2f}x"
            for r in rows))
    print(f"load average at the end {load_average()}")


if __name__ == "__main__":
    main()
