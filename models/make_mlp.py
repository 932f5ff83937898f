"""Write models/mlp_784_300_100_10.onnx: the LeNet-300-100 architecture (784-300-100-10, ReLU) with
He-initialised random weights and a fixed seed.

It is *untrained*: it exists so that the converter, the report and the native kernels can be shown and
measured on the paper's smallest network without any download. Trained reference models (Fashion-MNIST)
come with their own training scripts.
Run: python models/make_mlp.py
"""
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZES = (784, 300, 100, 10)


def build(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "input"
    for i, (k, n) in enumerate(zip(SIZES[:-1], SIZES[1:]), start=1):
        w = (rng.standard_normal((n, k)) * np.sqrt(2.0 / k)).astype(np.float32)
        b = (0.01 * rng.standard_normal(n)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"fc{i}.weight"), numpy_helper.from_array(b, f"fc{i}.bias")]
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [f"fc{i}"], name=f"fc{i}", transB=1))
        x = f"fc{i}"
        if i < len(SIZES) - 1:
            nodes.append(helper.make_node("Relu", [x], [f"relu{i}"], name=f"relu{i}"))
            x = f"relu{i}"
    graph = helper.make_graph(nodes, "lenet_300_100_untrained",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 784])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    graph.node[-1].output[0] = "logits"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx-dc models/make_mlp.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    out = Path(__file__).with_name("mlp_784_300_100_10.onnx")
    onnx.save(build(), str(out))
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
