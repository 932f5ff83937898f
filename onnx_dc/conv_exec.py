"""Per conv layer: run it sparse (DCSparseConv, the payload's own kernel over image patches) or dense
(DCDecode once per session, then onnxruntime's Conv) — whichever measures faster on this machine.

The sparse form reads fewer bytes but gives up onnxruntime's tuned dense convolution; which wins depends
on the kernel's density, its shape and the image size, so it is measured, not guessed: both forms of the
one layer run in onnxruntime at batch 1 on one thread, interleaved, and the medians are compared.
"""
from __future__ import annotations

import time

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph.decompress import decode_dense_fast
from .graph.model import Layer
from .native import LibraryNotFoundError, get_library_path
from .operators import CONV_ATTRIBUTES, DOMAIN, DOMAIN_VERSION
from .session import new_session

ROUNDS = 15  # interleaved timing rounds per form (after one warm-up run each)
TIME_BUDGET_S = 2.0  # per layer: stop measuring early for very slow layers


def choose_conv_exec(layer: Layer, payload: bytes, mode: str) -> tuple[str, str]:
    """(exec form, why) for a conv layer: mode is "sparse", "dense" or "auto" (measure)."""
    if layer.exec == "dense":
        return "dense", layer.exec_reason  # ruled out by the node itself (e.g. a grouped conv)
    if mode == "sparse":
        return "sparse", "--conv-exec sparse"
    if mode == "dense":
        return "dense", "--conv-exec dense"
    dims = (layer.input_dims or [None])[0]
    if not dims or len(dims) != 4 or any(d is None for d in dims[1:]):
        return "dense", "input shape unknown to shape inference, so not measured (--conv-exec sparse forces it)"
    try:
        get_library_path()
    except (LibraryNotFoundError, OSError, RuntimeError):
        return "dense", "native library not built, so not measured"
    try:
        sparse_s, dense_s = measure(layer, payload, [1] + list(dims[1:]))
    except Exception as exc:  # noqa: BLE001 - a measurement that cannot run decides nothing: stay dense
        return "dense", f"could not measure the sparse form ({type(exc).__name__}: {str(exc)[:120]})"
    detail = f"measured {1e6 * sparse_s:,.0f} µs sparse vs {1e6 * dense_s:,.0f} µs dense (batch 1, 1 thread)"
    return ("sparse", detail) if sparse_s < dense_s else ("dense", detail)


def single_conv_models(layer: Layer, payload: bytes, x_shape: list[int]) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The layer alone, as DCSparseConv and as Conv on the decoded kernel (same attributes and bias)."""
    conv = layer.uses[0]
    attrs = [a for a in conv.attribute if a.name in CONV_ATTRIBUTES]
    bias = layer.conv_bias if layer.new_conv_bias is None else layer.new_conv_bias
    m = int(layer.shape[0])
    bias = np.zeros(m, np.float32) if bias is None else np.asarray(bias, np.float32)
    inits = [numpy_helper.from_array(np.frombuffer(payload, np.uint8), "payload"),
             numpy_helper.from_array(bias, "B")]
    x = helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, x_shape)
    y = helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)
    node = helper.make_node("DCSparseConv", ["X", "payload", "B"], ["Y"], domain=DOMAIN)
    node.attribute.extend(attrs)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)]
    sparse = helper.make_model(helper.make_graph([node], "sparse", [x], [y], inits), opset_imports=opsets)
    dense_w = numpy_helper.from_array(decode_dense_fast(payload), "W")
    node = helper.make_node("Conv", ["X", "W", "B"], ["Y"])
    node.attribute.extend(attrs)
    dense = helper.make_model(helper.make_graph([node], "dense", [x], [y], [dense_w, inits[1]]),
                              opset_imports=opsets[:1])
    return sparse, dense


def measure(layer: Layer, payload: bytes, x_shape: list[int], rounds: int = ROUNDS,
            budget_s: float = TIME_BUDGET_S) -> tuple[float, float]:
    """Median seconds per run of the sparse and the dense form of the layer."""
    sessions = [new_session(model, threads=1, inter_op_threads=1, library=True)
                for model in single_conv_models(layer, payload, x_shape)]
    x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
    times: list[list[float]] = [[], []]
    for s in sessions:
        s.run(None, {"X": x})  # warm-up
    start = time.perf_counter()
    for _ in range(rounds):
        for i, s in enumerate(sessions):
            t0 = time.perf_counter()
            s.run(None, {"X": x})
            times[i].append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return float(np.median(times[0])), float(np.median(times[1]))
