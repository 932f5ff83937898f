"""Payloads and one-node models of the onnx_dc operators (DCSparseGemm, DCDecode, DCSparseConv, DCGather).

Payloads come from the project's writer (onnx_dc.codec); the models are built by hand, one operator each,
for the native tests and the scripts they run in fresh interpreters (tests/ is on their PYTHONPATH).
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnx_dc.codec import compress_tensor, pack_tensor


def random_payload(rng: np.random.Generator, dims, density: float, weight_bits: int, index_bits: int,
                   huffman: bool = True, chunk_symbols: int | None = None, codebook_size: int | None = None) -> bytes:
    """A payload written by the project's writer (onnx_dc.codec.payload.write_payload) for a random tensor."""
    from onnx_dc.codec.payload import DEFAULT_CHUNK_SYMBOLS, write_payload

    dims = tuple(int(d) for d in dims)
    rows = dims[0]
    cols = int(np.prod(dims[1:], dtype=np.int64)) if len(dims) > 1 else 1
    mask = rng.random((rows, cols)) < density
    size = codebook_size or int(rng.integers(1, (1 << weight_bits) + 1))
    codebook = (rng.standard_normal(size) * 0.5).astype(np.float32)
    # Skewed cluster frequencies, so Huffman codes get different lengths.
    p = 0.7 ** np.arange(size)
    labels = rng.choice(size, size=int(mask.sum()), p=p / p.sum())
    blob, _ = write_payload(dims, mask, labels, codebook, weight_bits, index_bits, huffman_coded=huffman,
                            chunk_symbols=chunk_symbols or DEFAULT_CHUNK_SYMBOLS)
    return blob


def python_dense(blob: bytes) -> np.ndarray:
    from onnx_dc.codec.payload import read_payload
    return read_payload(blob).dense()


def opsets():
    return [helper.make_opsetid("", 17), helper.make_opsetid("onnx_dc", 1)]


def sparse_gemm_model(blob: bytes, x_shape, bias: np.ndarray | None = None, y_shape="infer",
                      payload_as_input: bool = False) -> bytes:
    """One DCSparseGemm node. y_shape: a list for Y's value_info, None for no shape, "infer" for X's
    leading dims + [N] (what the converter writes)."""
    payload = np.frombuffer(blob, dtype=np.uint8)
    inits, inputs, node_inputs = [], [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)], ["X", "W"]
    if payload_as_input:
        inputs.append(helper.make_tensor_value_info("W", TensorProto.UINT8, [payload.size]))
    else:
        inits.append(numpy_helper.from_array(payload, "W"))
    if bias is not None:
        inits.append(numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "B"))
        node_inputs.append("B")
    if y_shape == "infer":
        y_shape = None if x_shape is None else list(x_shape[:-1]) + [python_info(blob).rows]
    node = helper.make_node("DCSparseGemm", node_inputs, ["Y"], name="fc", domain="onnx_dc")
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape)],
                              inits)
    model = helper.make_model(graph, opset_imports=opsets())
    model.ir_version = 8
    return model.SerializeToString()


def decode_model(blob: bytes) -> bytes:
    payload = np.frombuffer(blob, dtype=np.uint8)
    node = helper.make_node("DCDecode", ["P"], ["Y"], name="decode", domain="onnx_dc")
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(payload, "P")])
    model = helper.make_model(graph, opset_imports=opsets())
    model.ir_version = 8
    return model.SerializeToString()


def python_info(blob: bytes):
    from onnx_dc.codec.payload import read_info
    return read_info(blob)[0]


# ---- DCSparseConv and DCGather ----------------------------------------------------------------------------

def make_payload(rng, shape, sparsity, bits=5, index_bits=4):
    """(payload bytes, decoded dense weight) for a random weight; sparsity 1.0 prunes everything."""
    weight = rng.standard_normal(shape).astype(np.float32)
    if sparsity >= 1.0:
        packed = pack_tensor(shape, np.zeros((shape[0], int(np.prod(shape[1:]))), bool), np.zeros(0, np.int64),
                             np.array([0.5], np.float32), bits, index_bits)
    else:
        packed = compress_tensor(weight, sparsity, bits, index_bits)
    return packed.payload, packed.dense


def _model(node, inputs, initializers, y_shape=None):
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape)],
                              initializers)
    model = helper.make_model(graph, opset_imports=opsets())
    model.ir_version = 8
    return model


def conv_model(blob, x_shape, bias=None, y_shape=None, **attrs):
    inits = [numpy_helper.from_array(np.frombuffer(blob, np.uint8), "W")]
    names = ["X", "W"]
    if bias is not None:
        inits.append(numpy_helper.from_array(np.asarray(bias, np.float32), "B"))
        names.append("B")
    node = helper.make_node("DCSparseConv", names, ["Y"], name="conv", domain="onnx_dc", **attrs)
    return _model(node, [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)], inits, y_shape)


def gather_model(blob, index_type=TensorProto.INT64, index_shape=None, y_shape=None):
    node = helper.make_node("DCGather", ["T", "I"], ["Y"], name="embed", domain="onnx_dc")
    return _model(node, [helper.make_tensor_value_info("I", index_type, index_shape)],
                  [numpy_helper.from_array(np.frombuffer(blob, np.uint8), "T")], y_shape)


# ---- the convolutions the conv tests run (also in fresh interpreters) ---------------------------------------

# (M, C, kH, kW), (H, W), attributes, batch, kept fraction. The ids name what each case exercises.
CONV_CASES = {
    "1x1-pointwise": ((12, 8, 1, 1), (6, 7), {}, 1, 0.5),
    "1x1-stride2": ((12, 8, 1, 1), (7, 7), {"strides": [2, 2]}, 3, 0.5),
    "1x1-padded": ((5, 4, 1, 1), (4, 5), {"pads": [1, 0, 0, 2]}, 1, 0.3),
    "3x3": ((16, 6, 3, 3), (10, 9), {}, 1, 0.5),
    "3x3-pad1-batch3": ((16, 6, 3, 3), (10, 9), {"pads": [1, 1, 1, 1]}, 3, 0.5),
    "3x3-stride2-pad": ((8, 5, 3, 3), (11, 12), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, 3, 0.3),
    "3x3-asymmetric": ((7, 3, 3, 3), (9, 8), {"strides": [2, 1], "pads": [0, 2, 1, 0]}, 1, 0.6),
    "3x3-dilation2": ((6, 4, 3, 3), (12, 11), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}, 3, 0.5),
    "3x3-dilation-strides": ((6, 4, 3, 3), (13, 12), {"dilations": [2, 1], "strides": [1, 2]}, 1, 0.5),
    "5x5": ((10, 3, 5, 5), (12, 12), {}, 1, 0.5),
    "5x5-stride2-pad2": ((10, 3, 5, 5), (13, 14), {"strides": [2, 2], "pads": [2, 2, 2, 2]}, 3, 0.1),
    "5x5-lenet-conv2": ((50, 20, 5, 5), (12, 12), {}, 3, 0.1),
    "3x5-rectangular": ((9, 4, 3, 5), (8, 11), {"pads": [1, 2, 1, 2]}, 1, 0.4),
    "valid": ((8, 4, 3, 3), (9, 10), {"auto_pad": "VALID"}, 3, 0.5),
    "same-upper": ((8, 4, 3, 3), (9, 10), {"auto_pad": "SAME_UPPER"}, 1, 0.5),
    "same-lower-stride2": ((8, 4, 3, 3), (9, 10), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}, 3, 0.5),
    "same-upper-even-kernel": ((8, 4, 2, 2), (7, 8), {"auto_pad": "SAME_UPPER"}, 1, 0.5),
    "same-lower-even-kernel": ((8, 4, 4, 4), (7, 8), {"auto_pad": "SAME_LOWER"}, 1, 0.5),
    "same-upper-5x5-stride2": ((6, 3, 5, 5), (11, 12), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, 3, 0.5),
    "kernel-shape-given": ((8, 4, 3, 3), (8, 8), {"kernel_shape": [3, 3], "group": 1}, 1, 0.5),
    "nothing-pruned": ((16, 8, 3, 3), (9, 9), {"pads": [1, 1, 1, 1]}, 3, 1.0),  # dense form
    "everything-pruned": ((16, 8, 3, 3), (9, 9), {"pads": [1, 1, 1, 1]}, 1, 0.0),
    "one-output-pixel": ((64, 32, 3, 3), (3, 3), {}, 1, 0.5),  # few units, several row parts: pack, then parts
    "few-pixels-many-rows": ((256, 32, 3, 3), (6, 6), {}, 1, 0.5),
    "parallel-3x3": ((64, 32, 3, 3), (20, 20), {"pads": [1, 1, 1, 1]}, 3, 0.5),
    "rounds": ((16, 64, 5, 5), (20, 20), {"pads": [2, 2, 2, 2]}, 3, 0.3),  # 75 units > one round of scratch
    "pixels-tail-1": ((8, 3, 3, 1), (17, 1), {"pads": [1, 0, 1, 0]}, 1, 0.5),  # 17 pixels: 16 + 1
    "pixels-9": ((8, 3, 3, 3), (5, 5), {"pads": [0, 0, 0, 0]}, 3, 0.5),  # 9 pixels: one 16-wide tile
    "pixels-tail-8": ((8, 3, 3, 3), (6, 7), {}, 3, 0.5),  # 20 pixels: 16 + an 8-wide tile of 4
    "kernel-covers-image": ((4, 3, 5, 5), (5, 5), {}, 3, 0.5),
}


def conv_case(name):
    """(payload, decoded dense kernel, X, bias, attributes) of CONV_CASES[name], the same on every call."""
    shape, (h, w), attrs, batch, keep = CONV_CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    blob, dense = make_payload(rng, shape, 1.0 - keep)
    x = rng.standard_normal((batch, shape[1], h, w)).astype(np.float32)
    bias = rng.standard_normal(shape[0]).astype(np.float32)
    return blob, dense, x, bias, attrs
