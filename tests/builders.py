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


def random_feeds(model, batch=3, seq=5, seed=1) -> dict:
    """Standard-normal inputs for every graph input: symbolic N/M/B dims get `batch`, others `seq`."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else (batch if d.dim_param in ("N", "M", "B") else seq)
                for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds
