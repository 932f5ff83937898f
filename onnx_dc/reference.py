"""The executable specification of the onnx_dc operators (docs/OPERATOR.md), in numpy.

Registered as custom ops for `onnx.reference.ReferenceEvaluator`, so a compressed model runs without the
native library: `run_reference(model, feeds)`. This is the oracle the native kernels are tested against.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from .codec.payload import read_payload


@lru_cache(maxsize=64)
def _decode(blob: bytes) -> np.ndarray:
    dense = read_payload(blob).dense()
    dense.setflags(write=False)
    return dense


def decode_payload_array(payload: np.ndarray) -> np.ndarray:
    return _decode(np.ascontiguousarray(payload, dtype=np.uint8).tobytes())


def sparse_gemm(x: np.ndarray, payload: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Y = X · Wᵀ + B for X of shape [..., K], W [N, K] decoded from the payload."""
    w = decode_payload_array(payload)
    if w.ndim != 2:
        raise ValueError(f"DCSparseGemm needs a rank-2 payload, got shape {list(w.shape)}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ValueError(f"DCSparseGemm: input's last dimension is {x.shape[-1:]}, the weight needs K={w.shape[1]}")
    y = np.matmul(x, w.T)
    if bias is not None and bias.size:
        if bias.shape != (w.shape[0],):
            raise ValueError(f"DCSparseGemm: bias shape {list(bias.shape)}, expected [{w.shape[0]}]")
        y = y + bias.astype(np.float32)
    return y.astype(np.float32)


class DCSparseGemm(OpRun):
    op_domain = "onnx_dc"

    def _run(self, X, W_payload, B=None):  # noqa: N803 (ONNX input names)
        return (sparse_gemm(X, W_payload, B),)


class DCDecode(OpRun):
    op_domain = "onnx_dc"

    def _run(self, payload):
        return (decode_payload_array(payload).copy(),)


CUSTOM_OPS = [DCSparseGemm, DCDecode]


def reference_evaluator(model) -> ReferenceEvaluator:
    """A ReferenceEvaluator (model: a ModelProto or a path) that knows the onnx_dc operators."""
    return ReferenceEvaluator(model, new_ops=CUSTOM_OPS)


def run_reference(model, feeds: dict) -> list[np.ndarray]:
    return reference_evaluator(model).run(None, feeds)
