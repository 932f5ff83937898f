"""The sensitivity analysis runs only the graph downstream of the layer it changes (onnx_dc.calibration.suffix)."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import builders
import onnx_dc
import onnx_dc.calibration.sensitivity as layer_sensitivity
from onnx_dc.config import CompressOptions
from onnx_dc.calibration.suffix import downstream_cut, sliced


def _residual():
    """x → Relu → a; a·W1 → b; b + a → c (a skip connection); c·W2 → y; plus a side output d = Relu(a)."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W2")
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("MatMul", ["a", "W1"], ["b"], name="mm1"),
             helper.make_node("Add", ["b", "a"], ["c"], name="add"),
             helper.make_node("MatMul", ["c", "W2"], ["y"], name="mm2"),
             helper.make_node("Relu", ["a"], ["d"], name="side")]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
                               helper.make_tensor_value_info("d", TensorProto.FLOAT, ["N", 8])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def test_the_cut_is_every_tensor_that_flows_into_the_rest():
    model = _residual()
    # From mm1 on: mm1, add, mm2 read `a` (twice: the skip connection too), computed before; weights are not
    # cut; of the outputs only y is downstream.
    assert downstream_cut(model, [_node(model, "mm1")]) == (["a"], ["y"])
    assert downstream_cut(model, [_node(model, "mm2")]) == (["c"], ["y"])
    assert downstream_cut(model, [_node(model, "relu")]) == (["x"], ["y", "d"])  # the first node: the graph input
    assert downstream_cut(model, [_node(model, "side")]) == (["a"], ["d"])
    # A node no output depends on: nothing to run.
    model.graph.node.append(helper.make_node("Relu", ["a"], ["unused"], name="dead"))
    assert downstream_cut(model, [_node(model, "dead")]) is None


def test_a_graph_with_subgraphs_is_never_cut():
    model = _residual()
    then = helper.make_graph([helper.make_node("Identity", ["y"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    cond = helper.make_node("Constant", [], ["flag"], value=numpy_helper.from_array(np.array(True), "flag"))
    model.graph.node.extend([cond, helper.make_node("If", ["flag"], ["z"], then_branch=then, else_branch=then)])
    assert downstream_cut(model, [_node(model, "mm1")]) is None


def test_the_slice_computes_the_first_output_from_the_cut():
    model = _residual()
    x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    y, = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})
    part = sliced(model, {"a": (TensorProto.FLOAT, 2)}, ["y"])
    onnx.checker.check_model(part)
    assert [n.name for n in part.graph.node] == ["mm1", "add", "mm2"]  # not relu, not the side branch
    assert [t.name for t in part.graph.initializer] == ["W1", "W2"]
    assert [i.name for i in part.graph.input] == ["a"] and [o.name for o in part.graph.output] == ["y"]
    got, = ort.InferenceSession(part.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"a": np.maximum(x, 0)})
    np.testing.assert_array_equal(got, y)


def test_a_sparse_initializer_downstream_is_copied_into_the_slice():
    """A constant stored as a sparse initializer is a constant on both sides: never a cut tensor, and copied
    into the slice that reads it (the slice used to ask for it as an input it did not declare)."""
    model = _residual()
    w2 = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "W2")).copy()
    w2[np.abs(w2) < 0.5] = 0
    rows, cols = np.nonzero(w2)
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(w2[rows, cols], "W2"),
                                       numpy_helper.from_array(np.stack([rows, cols], 1).astype(np.int64), "idx"),
                                       list(w2.shape))
    model.graph.initializer.remove(next(t for t in model.graph.initializer if t.name == "W2"))
    model.graph.sparse_initializer.append(sparse)
    assert downstream_cut(model, [_node(model, "mm2")]) == (["c"], ["y"])
    part = sliced(model, {"c": (TensorProto.FLOAT, 2)}, ["y"])
    assert [t.values.name for t in part.graph.sparse_initializer] == ["W2"]
    assert [i.name for i in part.graph.input] == ["c"]
    c = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32)
    got, = ort.InferenceSession(part.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"c": c})
    np.testing.assert_allclose(got, c @ w2, rtol=1e-5, atol=1e-6)


def test_analysis_on_slices_equals_analysis_on_whole_models(tmp_path, monkeypatch):
    """Every point measured on the slices equals the one measured by running whole models (to float32
    rounding: onnxruntime may fuse nodes across the cut in the whole model); the first layer has no cut."""
    model = builders.mlp((64, 48, 32, 10))
    src = builders.save(model, tmp_path / "in.onnx")
    builders.calibration(model, tmp_path / "cal.npz", n=300)
    cuts = []
    compute = layer_sensitivity._Context._compute_cut
    monkeypatch.setattr(layer_sensitivity._Context, "_compute_cut",
                        lambda self, layer: cuts.append((layer.weight_name, compute(self, layer))) or cuts[-1][1])

    def analyse():
        return onnx_dc.sensitivity(src, str(tmp_path / "cal.npz"), sparsities=(0.5, 0.9),
                                   options=CompressOptions(min_weights=16, output_fit="kl"))

    on_slices = analyse()
    assert [(name, cut is not None) for name, cut in cuts] == [("fc1.weight", False), ("fc2.weight", True),
                                                               ("fc3.weight", True)]
    monkeypatch.setattr(layer_sensitivity, "SUFFIX_MAX_BYTES", 0)  # every cut too large: whole models
    whole = analyse()
    assert all(cut is None for _, cut in cuts[3:])
    for a, b in zip(on_slices, whole):
        assert [(p.sparsity, p.bits, p.payload_bytes) for p in a.points] == \
            [(p.sparsity, p.bits, p.payload_bytes) for p in b.points]
        np.testing.assert_allclose([p.output_error for p in a.points], [p.output_error for p in b.points], rtol=1e-5)
        assert [p.agreement for p in a.points] == [p.agreement for p in b.points]


def _two_heads():
    """x → fc1 → Relu → h; two outputs: scores = fc2(h) and boxes = fc3(h) (a detector's two heads)."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32), name)
             for name, shape in (("fc1.weight", (48, 64)), ("fc2.weight", (10, 48)), ("fc3.weight", (16, 48)))]
    nodes = [helper.make_node("Gemm", ["x", "fc1.weight"], ["h0"], transB=1, name="fc1"),
             helper.make_node("Relu", ["h0"], ["h"]),
             helper.make_node("Gemm", ["h", "fc2.weight"], ["scores"], transB=1, name="fc2"),
             helper.make_node("Gemm", ["h", "fc3.weight"], ["boxes"], transB=1, name="fc3")]
    graph = helper.make_graph(nodes, "heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 10]),
                               helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_every_float_output_is_measured(tmp_path, monkeypatch):
    """A layer that only the second output reads still costs error (only the first output was measured
    once: fc3 looked free to prune); on slices and on whole models alike."""
    model = _two_heads()
    src = builders.save(model, tmp_path / "in.onnx")
    builders.calibration(model, tmp_path / "cal.npz", n=300)

    def errors():
        sens = onnx_dc.sensitivity(src, str(tmp_path / "cal.npz"), sparsities=(0.0, 0.9),
                                   options=CompressOptions(min_weights=16))
        return {s.name: {p.sparsity: p.output_error for p in s.points if p.bits == 5} for s in sens}

    on_slices = errors()
    assert on_slices["fc3.weight"][0.9] > 10 * on_slices["fc3.weight"][0.0] > 0
    assert on_slices["fc2.weight"][0.9] > 10 * on_slices["fc2.weight"][0.0] > 0
    monkeypatch.setattr(layer_sensitivity, "SUFFIX_MAX_BYTES", 0)
    whole = errors()
    for name in on_slices:
        for s in (0.0, 0.9):
            assert whole[name][s] == pytest.approx(on_slices[name][s], rel=1e-5)


def test_a_model_without_float_outputs_is_refused_in_one_line(tmp_path):
    """Nothing to measure an error on (an exported classifier that returns only class ids)."""
    model = builders.mlp((64, 48, 32, 10))
    model.graph.node.append(helper.make_node("ArgMax", [model.graph.output[0].name], ["label"], axis=1))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("label", TensorProto.INT64, ["N", 1]))
    src = builders.save(model, tmp_path / "in.onnx")
    builders.calibration(builders.mlp((64, 48, 32, 10)), tmp_path / "cal.npz", n=100)
    with pytest.raises(onnx_dc.ConfigError, match=r"no floating-point output .*label tensor\(int64\)"):
        onnx_dc.sensitivity(src, str(tmp_path / "cal.npz"), sparsities=(0.5,), options=CompressOptions(min_weights=16))
