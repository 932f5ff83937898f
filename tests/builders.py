"""Small ONNX models built in the tests: one per layer variant the converter handles."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(nodes, inputs, outputs, inits, opset=OPSET):
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def mlp(sizes=(784, 300, 100, 10), seed=0) -> onnx.ModelProto:
    """Gemm(transB=1)+Relu layers, like a PyTorch nn.Linear export."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "input"
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        inits += [numpy_helper.from_array((rng.standard_normal((n, k)) * np.sqrt(2 / k)).astype(np.float32), f"fc{i}.weight"),
                  numpy_helper.from_array((0.1 * rng.standard_normal(n)).astype(np.float32), f"fc{i}.bias")]
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [f"fc{i}_out"], name=f"fc{i}", transB=1))
        x = f"fc{i}_out"
        if i < len(sizes) - 1:
            nodes.append(helper.make_node("Relu", [x], [f"relu{i}"], name=f"relu{i}"))
            x = f"relu{i}"
    return _model(nodes, [_vi("input", ["N", sizes[0]])], [_vi(x, ["N", sizes[-1]])], inits)


def gemm(k=64, n=48, trans_b=1, alpha=1.0, beta=1.0, bias="vector", seed=0) -> onnx.ModelProto:
    """One Gemm; bias: None, 'vector' [N], 'row' [1, N], 'scalar' []."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W")]
    inputs = ["X", "W"]
    if bias is not None:
        shape = {"vector": (n,), "row": (1, n), "scalar": ()}[bias]
        inits.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), "C"))
        inputs.append("C")
    node = helper.make_node("Gemm", inputs, ["Y"], name="gemm", transB=trans_b, alpha=alpha, beta=beta)
    return _model([node], [_vi("X", ["M", k])], [_vi("Y", ["M", n])], inits)


def matmul(k=64, n=48, x_shape=("B", "S"), bias=False, bias_first=False, seed=0, weight_as_constant_node=False):
    """MatMul with a constant [K, N] weight and an input of shape x_shape + [K]; optionally + bias."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(np.float32)
    nodes, inits = [], []
    if weight_as_constant_node:
        nodes.append(helper.make_node("Constant", [], ["W"], name="w_const", value=numpy_helper.from_array(w, "W")))
    else:
        inits.append(numpy_helper.from_array(w, "W"))
    out = "Y"
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "bias"))
        nodes.append(helper.make_node("MatMul", ["X", "W"], ["mm"], name="matmul"))
        nodes.append(helper.make_node("Add", ["bias", "mm"] if bias_first else ["mm", "bias"], [out], name="add"))
    else:
        nodes.append(helper.make_node("MatMul", ["X", "W"], [out], name="matmul"))
    return _model(nodes, [_vi("X", list(x_shape) + [k])], [_vi(out, list(x_shape) + [n])], inits)


def conv(cin=3, cout=16, ksize=3, seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((cout, cin, ksize, ksize)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    node = helper.make_node("Conv", ["X", "W", "B"], ["Y"], name="conv", pads=[1, 1, 1, 1])
    return _model([node], [_vi("X", ["N", cin, 8, 8])], [_vi("Y", ["N", cout, 8, 8])],
                  [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])


def shared_weight(k=64, n=32, seed=0) -> onnx.ModelProto:
    """Two MatMuls that use the same weight."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["X1", "W"], ["Y1"], name="mm1"),
             helper.make_node("MatMul", ["X2", "W"], ["Y2"], name="mm2")]
    return _model(nodes, [_vi("X1", ["N", k]), _vi("X2", ["N", k])], [_vi("Y1", ["N", n]), _vi("Y2", ["N", n])],
                  [numpy_helper.from_array(w, "W")])


def save(model, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def calibration(model, path, n=400, seed=5) -> dict:
    """Calibration inputs for `model` saved as an .npz at `path` (and returned): features correlated, as
    real activations are, so that a data-aware refit has something to use."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for vi in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else (n if i == 0 else 4)
                for i, d in enumerate(vi.type.tensor_type.shape.dim)]
        mix = np.random.default_rng(0).standard_normal((dims[-1], dims[-1])) / np.sqrt(dims[-1])
        arrays[vi.name] = (rng.standard_normal(dims) @ mix + 0.5).astype(np.float32)
    np.savez(path, **arrays)
    return arrays


# Every layer variant the converter handles, built fresh per call (the graph and native tests share it).
LAYER_VARIANTS = {
    "gemm_transB1_bias": lambda: gemm(trans_b=1),
    "gemm_transB0_bias": lambda: gemm(trans_b=0),
    "gemm_alpha_beta": lambda: gemm(alpha=0.5, beta=2.0),
    "gemm_transB0_alpha_beta": lambda: gemm(trans_b=0, alpha=-1.5, beta=0.25),
    "gemm_no_bias": lambda: gemm(bias=None),
    "gemm_row_bias": lambda: gemm(bias="row"),
    "gemm_scalar_bias": lambda: gemm(bias="scalar"),
    "matmul_2d": lambda: matmul(x_shape=("N",)),
    "matmul_3d": lambda: matmul(x_shape=("B", "S")),
    "matmul_add": lambda: matmul(bias=True),
    "matmul_add_bias_first": lambda: matmul(bias=True, bias_first=True),
    "matmul_constant_node": lambda: matmul(weight_as_constant_node=True),
    "conv": lambda: conv(),
    "mlp": lambda: mlp((64, 48, 32, 10)),
    "lenet_300_100": lambda: mlp((784, 300, 100, 10)),
}


def random_feeds(model, batch=3, seq=5, seed=1, int_high=8) -> dict:
    """Inputs for every graph input: standard-normal floats, integers in [0, int_high) for integer inputs
    (token ids); symbolic N/M/B dims get `batch`, others `seq`."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else (batch if d.dim_param in ("N", "M", "B") else seq)
                for d in vi.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if np.issubdtype(dtype, np.integer):
            feeds[vi.name] = rng.integers(0, int_high, dims).astype(dtype)
        else:
            feeds[vi.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


# --- Whole-model quirks: weights as exporters really write them ----------------------------------------------


def constant_chain(kind: str, k=64, n=48, seed=0, opset=OPSET) -> onnx.ModelProto:
    """A MatMul whose weight is reached through Identity / Cast (from float16) / Transpose of a constant,
    or a Gemm whose weight is such a chain, as exporters write them."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(np.float32)
    nodes = []
    if kind == "identity":
        inits = [numpy_helper.from_array(w, "W0")]
        nodes.append(helper.make_node("Identity", ["W0"], ["W1"], name="alias"))
        nodes.append(helper.make_node("Identity", ["W1"], ["W"], name="alias2"))
    elif kind == "cast":
        inits = [numpy_helper.from_array(w.astype(np.float16), "W16")]
        nodes.append(helper.make_node("Cast", ["W16"], ["W"], name="to_float", to=TensorProto.FLOAT))
    elif kind == "transpose":
        inits = [numpy_helper.from_array(np.ascontiguousarray(w.T), "WT")]
        nodes.append(helper.make_node("Transpose", ["WT"], ["W"], name="t", perm=[1, 0]))
    elif kind == "constant_transpose":
        nodes.append(helper.make_node("Constant", [], ["WT"], name="c", value=numpy_helper.from_array(np.ascontiguousarray(w.T))))
        nodes.append(helper.make_node("Transpose", ["WT"], ["W"], name="t"))
        inits = []
    else:
        raise ValueError(kind)
    nodes.append(helper.make_node("MatMul", ["X", "W"], ["Y"], name="matmul"))
    return _model(nodes, [_vi("X", ["N", k])], [_vi("Y", ["N", n])], inits, opset)


def embedding(vocab=300, dim=32, n=16, seed=0, opset=OPSET, index_type=TensorProto.INT64) -> onnx.ModelProto:
    """Token embedding (Gather on a constant table) followed by a projection, like a BERT input layer."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((vocab, dim)).astype(np.float32)
    w = (rng.standard_normal((dim, n)) / np.sqrt(dim)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"], name="gather"),
             helper.make_node("MatMul", ["emb", "W"], ["Y"], name="proj")]
    ids = helper.make_tensor_value_info("ids", index_type, ["N", "S"])
    return _model(nodes, [ids], [_vi("Y", ["N", "S", n])],
                  [numpy_helper.from_array(table, "table"), numpy_helper.from_array(w, "W")], opset)


def conv_variant(cin=8, cout=16, ksize=3, stride=1, pad=1, group=1, dilation=1, size=12, seed=0, opset=OPSET,
                 auto_pad=None) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((cout, cin // group, ksize, ksize)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    attrs = dict(strides=[stride, stride], group=group, dilations=[dilation, dilation], kernel_shape=[ksize, ksize])
    if auto_pad:
        attrs["auto_pad"] = auto_pad
    else:
        attrs["pads"] = [pad] * 4
    node = helper.make_node("Conv", ["X", "W", "B"], ["Y"], name="conv", **attrs)
    return _model([node], [_vi("X", ["N", cin, size, size])], [_vi("Y", ["N", cout, "H", "W"])],
                  [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")], opset)


def large_constants(n=64, seed=0, opset=OPSET) -> onnx.ModelProto:
    """Float constants no FC/Conv/Gather takes: a positional table added to the input and a scale table
    multiplied in (stored compressed, decoded once per session for the unchanged Add and Mul)."""
    rng = np.random.default_rng(seed)
    pos = rng.standard_normal((16, n)).astype(np.float32)
    scale = (1 + 0.1 * rng.standard_normal((16, n))).astype(np.float32)
    nodes = [helper.make_node("Add", ["X", "pos"], ["a"], name="add_pos"),
             helper.make_node("Mul", ["a", "scale"], ["Y"], name="scale")]
    return _model(nodes, [_vi("X", ["N", 16, n])], [_vi("Y", ["N", 16, n])],
                  [numpy_helper.from_array(pos, "pos"), numpy_helper.from_array(scale, "scale")], opset)


def foreign_domains(seed=0) -> onnx.ModelProto:
    """An MLP with a com.microsoft Gelu and an ai.onnx.ml Normalizer between its layers (left untouched)."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((48, 64)) / 8).astype(np.float32)
    w2 = (rng.standard_normal((10, 48)) / 7).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["X", "W1"], ["h"], name="fc1", transB=1),
             helper.make_node("Gelu", ["h"], ["g"], name="gelu", domain="com.microsoft"),
             helper.make_node("Normalizer", ["g"], ["nrm"], name="normalize", domain="ai.onnx.ml", norm="L2"),
             helper.make_node("Gemm", ["nrm", "W2"], ["Y"], name="fc2", transB=1)]
    graph = helper.make_graph(nodes, "g", [_vi("X", ["N", 64])], [_vi("Y", ["N", 10])],
                              [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1),
                                                    helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    return model


def mlp_at_opset(opset: int) -> onnx.ModelProto:
    m = mlp((64, 48, 32, 10))
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid("", opset))
    m.ir_version = 7 if opset <= 13 else 10
    onnx.checker.check_model(m)
    return m


# Exporter quirks and whole-model kinds; compared in onnxruntime (some use ops the reference evaluator lacks).
QUIRK_VARIANTS = {
    "identity_chain": lambda: constant_chain("identity"),
    "cast_fp16_chain": lambda: constant_chain("cast"),
    "transpose_chain": lambda: constant_chain("transpose"),
    "constant_node_transpose": lambda: constant_chain("constant_transpose"),
    "embedding_int64": lambda: embedding(),
    "embedding_int32": lambda: embedding(index_type=TensorProto.INT32),
    "conv_3x3": lambda: conv_variant(),
    "conv_1x1": lambda: conv_variant(cin=32, cout=48, ksize=1, pad=0),
    "conv_5x5_stride2": lambda: conv_variant(ksize=5, stride=2, pad=2),
    "conv_dilated": lambda: conv_variant(dilation=2, pad=2),
    "conv_same_upper": lambda: conv_variant(stride=2, auto_pad="SAME_UPPER"),
    "conv_grouped": lambda: conv_variant(group=2),
    "conv_depthwise": lambda: conv_variant(cin=64, cout=64, group=64, ksize=5, pad=2),
    "large_constants": lambda: large_constants(),
    "foreign_domains": lambda: foreign_domains(),
    "opset11_mlp": lambda: mlp_at_opset(11),
    "opset11_embedding": lambda: embedding(opset=11),
    "opset11_conv": lambda: conv_variant(opset=11),
    f"opset{onnx.defs.onnx_opset_version()}_mlp": lambda: mlp_at_opset(onnx.defs.onnx_opset_version()),
    f"opset{onnx.defs.onnx_opset_version()}_conv": lambda: conv_variant(opset=onnx.defs.onnx_opset_version()),
}
