"""DCSparseConv against onnxruntime's own Conv on the decoded kernel, one layer at a time (prints a table;
asserts nothing).

    python bench/bench_conv.py [--rounds 15] [--threads 1] [--batch 1] [--keep 0.5 0.1] [--clock auto|cpu|wall]

Layers (kernel [M, C, kH, kW] on a C x H x W input, random Gaussian weights and inputs):
  lenet5-conv2   [50, 20, 5, 5] on 12 x 12, no padding
  3x3            [64, 64, 3, 3] on 32 x 32, padding 1
  1x1            [128, 64, 1, 1] on 16 x 16
Each layer is compressed with onnx_dc.codec.compress_tensor (the kept fraction, a 5-bit codebook, 4-bit
relative indices); "Conv" is onnxruntime's Conv (MLAS) with the decoded dense kernel (pruned and quantized: the
same numbers), "DCSparseConv" the same layer from the payload through libonnx_dc_ops.so. Both run in turn,
interleaved: every round times a burst of runs of each, and the ratio is the median over rounds of (DCSparseConv
time / Conv time in the same round). Times are medians over rounds. With --clock auto, 1-thread rows use the
calling thread's CPU time (robust to other processes on the core), others wall time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_kernels import fmt_time, load_average, time_interleaved  # noqa: E402
from onnx_dc.codec import compress_tensor  # noqa: E402
from onnx_dc.session import make_session  # noqa: E402

LAYERS = {  # name: (kernel [M, C, kH, kW], input H x W, pads)
    "lenet5-conv2": ((50, 20, 5, 5), (12, 12), [0, 0, 0, 0]),
    "3x3": ((64, 64, 3, 3), (32, 32), [1, 1, 1, 1]),
    "1x1": ((128, 64, 1, 1), (16, 16), [0, 0, 0, 0]),
}


def _model(node_type: str, domain: str | None, weight, bias, x_shape, pads):
    payload = weight.dtype == np.uint8
    inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")]
    node = helper.make_node(node_type, ["X", "W", "B"], ["Y"], domain=domain, pads=pads)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("onnx_dc", 1)] if payload else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def sessions(kernel_shape, hw, pads, keep, batch, threads, seed=0):
    rng = np.random.default_rng(seed)
    m, c, kh, kw = kernel_shape
    weight = (rng.standard_normal(kernel_shape) / np.sqrt(c * kh * kw)).astype(np.float32)
    bias = (rng.standard_normal(m) * 0.1).astype(np.float32)
    packed = compress_tensor(weight, 1.0 - keep, 5, 4)
    x_shape = [batch, c, hw[0], hw[1]]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    dense = ort.InferenceSession(_model("Conv", None, packed.dense, bias, x_shape, pads).SerializeToString(), options,
                                 providers=["CPUExecutionProvider"])
    payload = np.frombuffer(packed.payload, np.uint8)
    dc = make_session(_model("DCSparseConv", "onnx_dc", payload, bias, x_shape, pads), intra_op_threads=threads)
    x = rng.standard_normal(x_shape).astype(np.float32)
    y_dense, y_dc = dense.run(None, {"X": x})[0], dc.run(None, {"X": x})[0]
    err = float(np.abs(y_dense - y_dc).max() / max(1e-30, np.abs(y_dense).max()))
    return {"Conv": dense, "DCSparseConv": dc}, {"X": x}, packed.payload, err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--keep", type=float, nargs="+", default=[0.5, 0.1])
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    parser.add_argument("--target-ms", type=float, default=20.0, help="length of one timed burst")
    parser.add_argument("--clock", choices=["auto", "cpu", "wall"], default="auto")
    args = parser.parse_args()
    print(f"onnxruntime {ort.__version__}; batch {args.batch}; median of {args.rounds} interleaved rounds; "
          f"load average {load_average()}")
    header = ("| layer | kept | threads | Conv (ORT, dense) | DCSparseConv | ratio | max rel. diff |\n"
              "|---|---:|---:|---:|---:|---:|---:|")
    print(header)
    for name in args.layers:
        kernel_shape, hw, pads = LAYERS[name]
        for keep in args.keep:
            for threads in args.threads:
                cands, feeds, _, err = sessions(kernel_shape, hw, pads, keep, args.batch, threads)
                clock = args.clock if args.clock != "auto" else ("cpu" if threads == 1 else "wall")
                times = time_interleaved(cands, feeds, args.rounds, args.target_ms, clock)
                ratio = statistics.median(d / c for d, c in zip(times["DCSparseConv"], times["Conv"]))
                m, c, kh, kw = kernel_shape
                print(f"| {name} [{m},{c},{kh},{kw}] on {hw[0]}x{hw[1]} | {keep:.0%} | {threads} | "
                      f"{fmt_time(statistics.median(times['Conv']))} | "
                      f"{fmt_time(statistics.median(times['DCSparseConv']))} | {ratio:.2f}x | {err:.1e} |",
                      flush=True)


if __name__ == "__main__":
    main()
