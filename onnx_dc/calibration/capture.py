"""Capture the inputs of layers with onnxruntime, batch by batch, as [rows, K] matrices (conv inputs as
image patches): the first step of data-aware compression and of the sensitivity analysis."""
from __future__ import annotations

import numpy as np
import onnx

from ..graph.model import Layer, attr


def with_outputs(model: onnx.ModelProto, names: list[str]) -> bytes:
    """The model, serialised, with `names` added to its outputs, their types left for onnxruntime to infer."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    for name in names:
        if name not in existing:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
            existing.add(name)
    return m.SerializeToString()


def layer_inputs(layer: Layer) -> list[str]:
    """The activation input of every node that uses the layer's weight."""
    if layer.kind == "fc":
        return [u.x for u in layer.uses]
    return [n.input[0] for n in layer.uses]


def as_rows(layer: Layer, use_index: int, x: np.ndarray) -> np.ndarray:
    """A captured input as the rows the layer's matrix multiplies: [..., K] → [rows, K]; a conv input
    [N, C, H, W] → its patches [N·H'·W', C·kh·kw] (the kernel's row-major order)."""
    if layer.kind == "fc":
        return x.reshape(-1, x.shape[-1])
    return im2col(x, layer.uses[use_index], layer.shape)


def im2col(x: np.ndarray, node: onnx.NodeProto, kernel_shape) -> np.ndarray:
    n, c, h, w = x.shape
    kh, kw = kernel_shape[2], kernel_shape[3]
    sh, sw = (list(attr(node, "strides", [1, 1])) + [1, 1])[:2]
    dh, dw = (list(attr(node, "dilations", [1, 1])) + [1, 1])[:2]
    auto_pad = attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, stride, ek in ((h, sh, ekh), (w, sw, ekw)):
            out = -(-size // stride)
            total = max((out - 1) * stride + ek - size, 0)
            small, large = total // 2, total - total // 2
            pads.append((large, small) if auto_pad == "SAME_LOWER" else (small, large))
        (pt, pb), (pl, pr) = pads
    elif auto_pad == "VALID":
        pt = pb = pl = pr = 0
    else:
        pt, pl, pb, pr = (list(attr(node, "pads", [0, 0, 0, 0])) + [0] * 4)[:4]
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (ekh, ekw), axis=(2, 3))  # [n, c, H', W', ekh, ekw]
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw)


def batches(feeds: dict[str, np.ndarray], size: int):
    n = next(iter(feeds.values())).shape[0]
    for i in range(0, n, size):
        yield {k: v[i : i + size] for k, v in feeds.items()}
