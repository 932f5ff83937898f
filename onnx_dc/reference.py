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
from .operators import DOMAIN


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


def _conv_axis(size: int, kernel: int, stride: int, dilation: int, head: int, tail: int, auto_pad: str):
    """Output size and leading padding of one spatial axis, by ONNX Conv's rules (as onnx.reference does:
    SAME_* pads max(0, needed), the odd element at the end for SAME_UPPER, at the start for SAME_LOWER)."""
    extent = (kernel - 1) * dilation + 1
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = -(-size // stride)
        total = max(0, (out - 1) * stride + extent - size)
        head = (total + 1) // 2 if auto_pad == "SAME_LOWER" else total // 2
        return out, head
    if auto_pad == "VALID":
        head = tail = 0
    elif auto_pad != "NOTSET":
        raise ValueError(f"DCSparseConv: auto_pad {auto_pad!r} is not NOTSET, VALID, SAME_UPPER or SAME_LOWER")
    padded = size + head + tail
    return ((padded - extent) // stride + 1 if padded >= extent else 0), head


def sparse_conv(x: np.ndarray, payload: np.ndarray, bias: np.ndarray | None = None, *, strides=None, pads=None,
                dilations=None, auto_pad: str = "NOTSET", group: int = 1, kernel_shape=None) -> np.ndarray:
    """ONNX Conv (2-D, group 1) of X [N, C, H, W] with the kernel W [M, C, kH, kW] decoded from the payload."""
    w = decode_payload_array(payload)
    if w.ndim != 4:
        raise ValueError(f"DCSparseConv needs a rank-4 payload [M, C, kH, kW], got shape {list(w.shape)}")
    m, c, kh, kw = w.shape
    if group != 1:
        raise ValueError(f"DCSparseConv: group = {group} is not supported (only 1)")
    if kernel_shape is not None and list(kernel_shape) != [kh, kw]:
        raise ValueError(f"DCSparseConv: kernel_shape {list(kernel_shape)} differs from the payload's [{kh}, {kw}]")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else (auto_pad or "NOTSET")
    strides = list(strides) if strides is not None else [1, 1]
    dilations = list(dilations) if dilations is not None else [1, 1]
    pads = list(pads) if pads is not None else [0, 0, 0, 0]
    if len(strides) != 2 or len(dilations) != 2 or len(pads) != 4 or min(strides + dilations) < 1 or min(pads) < 0:
        raise ValueError(f"DCSparseConv: bad strides {strides}, dilations {dilations} or pads {pads}")
    if auto_pad != "NOTSET" and any(pads):
        raise ValueError("DCSparseConv: pads cannot be combined with auto_pad")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != c:
        raise ValueError(f"DCSparseConv: X must be [N, {c}, H, W], got {list(x.shape)}")
    n, _, h, wd = x.shape
    oh, top = _conv_axis(h, kh, strides[0], dilations[0], pads[0], pads[2], auto_pad)
    ow, left = _conv_axis(wd, kw, strides[1], dilations[1], pads[1], pads[3], auto_pad)
    if oh < 1 or ow < 1:
        raise ValueError(f"DCSparseConv: the output size {oh} x {ow} is not positive")
    # im2col: padded image (enough on every side for every window), then one strided slice per kernel tap.
    bottom = max(0, (oh - 1) * strides[0] + (kh - 1) * dilations[0] + 1 - top - h)
    right = max(0, (ow - 1) * strides[1] + (kw - 1) * dilations[1] + 1 - left - wd)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilations[0], j * dilations[1]
            cols[:, :, i, j] = xp[:, :, r0:r0 + (oh - 1) * strides[0] + 1:strides[0],
                                  c0:c0 + (ow - 1) * strides[1] + 1:strides[1]]
    y = np.einsum("mk,nkp->nmp", w.reshape(m, -1), cols.reshape(n, c * kh * kw, oh * ow)).reshape(n, m, oh, ow)
    if bias is not None and bias.size:
        if bias.shape != (m,):
            raise ValueError(f"DCSparseConv: bias shape {list(bias.shape)}, expected [{m}]")
        y = y + bias.astype(np.float32).reshape(1, m, 1, 1)
    return y.astype(np.float32)


def gather(payload: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """ONNX Gather (axis 0) of the table [V, D] decoded from the payload: indices.shape + [D]."""
    table = decode_payload_array(payload)
    if table.ndim != 2:
        raise ValueError(f"DCGather needs a rank-2 payload [V, D], got shape {list(table.shape)}")
    indices = np.asarray(indices)
    if indices.dtype not in (np.int32, np.int64):
        raise ValueError(f"DCGather: indices must be int32 or int64, got {indices.dtype}")
    v = table.shape[0]
    bad = (indices < -v) | (indices >= v)
    if bad.any():
        raise IndexError(f"DCGather: index {int(indices[bad].flat[0])} is out of range for {v} rows")
    return table[np.where(indices < 0, indices + v, indices).astype(np.int64)].astype(np.float32)


class DCSparseGemm(OpRun):
    op_domain = DOMAIN

    def _run(self, X, W_payload, B=None):  # noqa: N803 (ONNX input names)
        return (sparse_gemm(X, W_payload, B),)


class DCDecode(OpRun):
    op_domain = DOMAIN

    def _run(self, payload):
        return (decode_payload_array(payload).copy(),)


class DCSparseConv(OpRun):
    op_domain = DOMAIN

    def _run(self, X, W_payload, B=None, auto_pad=None, dilations=None, group=None,  # noqa: N803
             kernel_shape=None, pads=None, strides=None):
        return (sparse_conv(X, W_payload, B, strides=strides, pads=pads, dilations=dilations,
                            auto_pad=auto_pad or "NOTSET", group=1 if group is None else group,
                            kernel_shape=kernel_shape),)


class DCGather(OpRun):
    op_domain = DOMAIN

    def _run(self, W_payload, indices):  # noqa: N803
        return (gather(W_payload, indices),)


CUSTOM_OPS = [DCSparseGemm, DCDecode, DCSparseConv, DCGather]


def reference_evaluator(model) -> ReferenceEvaluator:
    """A ReferenceEvaluator (model: a ModelProto or a path) that knows the onnx_dc operators."""
    return ReferenceEvaluator(model, new_ops=CUSTOM_OPS)


def run_reference(model, feeds: dict) -> list[np.ndarray]:
    return reference_evaluator(model).run(None, feeds)
