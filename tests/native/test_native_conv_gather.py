"""DCSparseConv and DCGather in onnxruntime with libonnx_dc_ops.so: numerics, threads, kernels, shapes, errors.

Numerics against the numpy reference (onnx_dc/reference.py) and onnxruntime's own Conv/Gather on the decoded
weight, thread-count and kernel-set independence, shape inference, and errors.

Payloads come from the project's codec (onnx_dc.codec.compress_tensor / pack_tensor), models are built by hand
(tests/op_models.py).
"""
from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from native_lib import bits, kernel_sets, run_python
from onnx_dc import reference
from onnx_dc.session import make_session
from op_models import CONV_CASES, conv_case, conv_model, gather_model, make_payload, opsets


# ---- oracles and checks (payloads, models and the conv cases: op_models) ----------------------------------------

def ort_conv(dense, x, bias=None, **attrs):
    """onnxruntime's own Conv on the decoded kernel."""
    inits = [numpy_helper.from_array(dense, "Wd")]
    names = ["X", "Wd"]
    if bias is not None:
        inits.append(numpy_helper.from_array(np.asarray(bias, np.float32), "B"))
        names.append("B")
    node = helper.make_node("Conv", names, ["Y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"X": x})[0]


def assert_close(got, want):
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * (float(np.abs(want).max(initial=0.0)) + 1.0))


def run(model, feeds, threads=1):
    return make_session(model, intra_op_threads=threads).run(None, feeds)[0]


# ---- DCSparseConv: numerics --------------------------------------------------------------------------------------

def _ort_conv_agrees(attrs, shape, hw):
    """onnxruntime's Conv rejects dilations with SAME_* and pads differently from the ONNX reference when a SAME_*
    padding would be negative (stride larger than the dilated kernel); elsewhere it is an oracle."""
    mode = attrs.get("auto_pad", "NOTSET")
    if mode.startswith("SAME"):
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            return False
        for axis in (0, 1):
            s, k, n = attrs.get("strides", [1, 1])[axis], shape[2 + axis], hw[axis]
            if (-(-n // s) - 1) * s + k - n < 0:
                return False
    return True


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name", sorted(CONV_CASES))
def test_conv_matches_reference_and_onnxruntime_conv(lib_path, name, with_bias):
    blob, dense, x, bias, attrs = conv_case(name)
    b = bias if with_bias else None
    model = conv_model(blob, ["N", x.shape[1], x.shape[2], x.shape[3]], b, **attrs)
    y1 = run(model, {"X": x}, threads=1)
    want = reference.run_reference(model, {"X": x})[0]
    assert_close(y1, want)
    shape, hw = CONV_CASES[name][0], CONV_CASES[name][1]
    if _ort_conv_agrees(attrs, shape, hw):
        assert_close(y1, ort_conv(dense, x, b, **{k: v for k, v in attrs.items() if k != "group"}))
    y2 = run(model, {"X": x}, threads=2)
    assert np.array_equal(bits(y1), bits(y2)), "1 and 2 threads differ"


def test_reference_equals_onnx_reference_conv():
    """The numpy reference is ONNX Conv on the decoded kernel (onnx.reference's own Conv), also where
    onnxruntime's Conv differs or refuses (SAME_* with dilations or with a negative padding)."""
    from onnx.reference import ReferenceEvaluator
    for name, extra in [("same-upper", {"dilations": [2, 2]}), ("same-lower-stride2", {"dilations": [1, 2]}),
                        ("1x1-stride2", {"auto_pad": "SAME_UPPER", "strides": [3, 3]}),
                        ("1x1-stride2", {"auto_pad": "SAME_LOWER", "strides": [3, 3]})]:
        blob, dense, x, bias, attrs = conv_case(name)
        attrs = {**attrs, **extra}
        node = helper.make_node("Conv", ["X", "Wd", "B"], ["Y"], **attrs)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                                  [numpy_helper.from_array(dense, "Wd"), numpy_helper.from_array(bias, "B")])
        want = ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).run(
            None, {"X": x})[0]
        model = conv_model(blob, list(x.shape), bias, **attrs)
        assert_close(reference.run_reference(model, {"X": x})[0], want)
        assert_close(run(model, {"X": x}), want)


@pytest.mark.parametrize("keep", [1.0, 0.7, 0.5, 0.25, 0.1, 0.02, 0.0])
def test_conv_sparsities(lib_path, keep):
    rng = np.random.default_rng(int(keep * 100))
    blob, dense = make_payload(rng, (24, 12, 3, 3), 1.0 - keep)
    x = rng.standard_normal((2, 12, 11, 10)).astype(np.float32)
    bias = rng.standard_normal(24).astype(np.float32)
    model = conv_model(blob, list(x.shape), bias, pads=[1, 1, 1, 1], strides=[1, 2])
    y = run(model, {"X": x}, threads=2)
    assert_close(y, reference.run_reference(model, {"X": x})[0])
    assert_close(y, ort_conv(dense, x, bias, pads=[1, 1, 1, 1], strides=[1, 2]))
    if keep == 0.0:
        assert np.array_equal(y, np.broadcast_to(bias.reshape(1, -1, 1, 1), y.shape))


def test_batch_images_do_not_depend_on_the_batch(lib_path):
    """Each output is computed by one kernel call in one order: an image's result is the same alone or in a batch."""
    blob, _, x, bias, attrs = conv_case("3x3-pad1-batch3")
    x = np.concatenate([x, x[::-1]], axis=0)
    sess = make_session(conv_model(blob, ["N"] + list(x.shape[1:]), bias, **attrs), intra_op_threads=2)
    full = sess.run(None, {"X": x})[0]
    for i in range(x.shape[0]):
        assert np.array_equal(bits(sess.run(None, {"X": x[i:i + 1]})[0]), bits(full[i:i + 1]))


@pytest.mark.parametrize("name", ["5x5-lenet-conv2", "parallel-3x3", "one-output-pixel", "pixels-tail-1",
                                  "1x1-pointwise", "nothing-pruned", "rounds"])
def test_scalar_kernel_set_equals_the_fast_one(native, lib_path, monkeypatch, name):
    """ONNX_DC_KERNEL (read when a session creates the kernel) and ONNX_DC_FORM select the kernel set and the
    form; within a form every kernel set and thread count gives the same bits."""
    blob, _, x, bias, attrs = conv_case(name)
    model = conv_model(blob, list(x.shape), bias, **attrs)
    want = reference.run_reference(model, {"X": x})[0]
    for form in ("auto", "sparse", "dense"):
        monkeypatch.setenv("ONNX_DC_FORM", form)
        outputs = []
        for kernel in kernel_sets(native):
            monkeypatch.setenv("ONNX_DC_KERNEL", kernel)
            for threads in (1, 2):
                outputs.append(run(model, {"X": x}, threads))
        for y in outputs:
            assert np.array_equal(bits(y), bits(outputs[0])), form
        assert_close(outputs[0], want)


def test_scalar_kernel_in_a_fresh_process(lib_path):
    """ONNX_DC_KERNEL=scalar set before the process starts gives the same bits as the default kernel set."""
    script = """
import sys, numpy as np
from onnx_dc.session import make_session
from op_models import conv_case, conv_model
blob, _, x, bias, attrs = conv_case("parallel-3x3")
y = make_session(conv_model(blob, list(x.shape), bias, **attrs), intra_op_threads=2).run(None, {"X": x})[0]
sys.stdout.write(y.tobytes().hex())
"""
    outs = {k: run_python(script, lib_path, env={"ONNX_DC_KERNEL": k}) for k in ("scalar", "auto")}
    for k, proc in outs.items():
        assert proc.returncode == 0, (k, proc.stderr[-2000:])
    assert outs["scalar"].stdout == outs["auto"].stdout and outs["scalar"].stdout


# ---- DCSparseConv: shapes --------------------------------------------------------------------------------------

def test_conv_shape_inference(lib_path):
    blob, _ = make_payload(np.random.default_rng(0), (8, 4, 3, 3), 0.5)
    out = lambda model: make_session(model, intra_op_threads=1).get_outputs()[0].shape  # noqa: E731
    # kernel_shape given and H, W known: OH, OW computed; M (in the payload) symbolic.
    shape = out(conv_model(blob, ["batch", 4, 10, 9], kernel_shape=[3, 3], strides=[2, 1], pads=[1, 1, 1, 1]))
    assert shape[0] == "batch" and isinstance(shape[1], str) and shape[2:] == [5, 9]
    shape = out(conv_model(blob, [2, 4, 10, 9], kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2]))
    assert shape[0] == 2 and shape[2:] == [5, 5]
    # Without kernel_shape: rank 4, N kept.
    shape = out(conv_model(blob, [2, 4, 10, 9]))
    assert len(shape) == 4 and shape[0] == 2
    # The converter's value_info wins.
    assert out(conv_model(blob, ["batch", 4, 10, 9], y_shape=["batch", 8, 8, 7])) == ["batch", 8, 8, 7]


def test_conv_empty_batch(lib_path):
    blob, _ = make_payload(np.random.default_rng(0), (8, 4, 3, 3), 0.5)
    y = run(conv_model(blob, ["N", 4, 6, 6]), {"X": np.zeros((0, 4, 6, 6), np.float32)})
    assert y.shape == (0, 8, 4, 4)


# ---- DCGather --------------------------------------------------------------------------------------------------

GATHER_TABLES = {  # (V, D), kept fraction
    "embedding": ((50, 16), 0.3),
    "dense": ((20, 33), 1.0),
    "all-pruned": ((12, 9), 0.0),
    "wide-d": ((4, 70000), 0.001),  # D > 65536: 32-bit columns
    "one-row": ((1, 5), 0.6),
}


@pytest.mark.parametrize("table", sorted(GATHER_TABLES))
@pytest.mark.parametrize("index_type", [TensorProto.INT64, TensorProto.INT32], ids=["int64", "int32"])
def test_gather_matches_reference_and_onnxruntime_gather(lib_path, table, index_type):
    (v, d), keep = GATHER_TABLES[table]
    rng = np.random.default_rng(v * d)
    blob, dense = make_payload(rng, (v, d), 1.0 - keep, bits=4, index_bits=5)
    dtype = np.int64 if index_type == TensorProto.INT64 else np.int32
    model = gather_model(blob, index_type)
    for indices in [np.array(v - 1, dtype), np.array(-1, dtype), np.arange(-v, v, dtype=dtype),
                    rng.integers(-v, v, size=(3, 7)).astype(dtype), np.zeros((2, 0), dtype),
                    rng.integers(-v, v, size=(2, 3, 4)).astype(dtype)]:
        y = run(model, {"I": indices})
        want = reference.run_reference(model, {"I": indices})[0]
        assert y.shape == indices.shape + (d,) and np.array_equal(y, want)
        assert np.array_equal(y, dense[np.where(indices < 0, indices + v, indices)])
        node = helper.make_node("Gather", ["Td", "I"], ["Y"], axis=0)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("I", index_type, None)],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                                  [numpy_helper.from_array(dense, "Td")])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        theirs = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"I": indices})[0]
        assert np.array_equal(y, theirs)


def test_gather_many_indices_in_parallel(lib_path):
    """Enough rows to be cut into tasks: the same bytes at 1 and 2 threads, equal to the reference."""
    rng = np.random.default_rng(11)
    blob, dense = make_payload(rng, (1000, 64), 0.8, bits=5, index_bits=4)
    indices = rng.integers(-1000, 1000, size=(40, 300)).astype(np.int64)
    model = gather_model(blob, TensorProto.INT64, ["B", "S"])
    y1, y2 = run(model, {"I": indices}, 1), run(model, {"I": indices}, 2)
    assert np.array_equal(bits(y1), bits(y2))
    assert np.array_equal(y1, dense[np.where(indices < 0, indices + 1000, indices)])


def test_gather_shape_inference(lib_path):
    blob, _ = make_payload(np.random.default_rng(0), (30, 8), 0.5)
    shape = make_session(gather_model(blob, TensorProto.INT64, ["B", 5]), intra_op_threads=1).get_outputs()[0].shape
    assert shape[:2] == ["B", 5] and isinstance(shape[2], str) and len(shape) == 3
    shape = make_session(gather_model(blob, TensorProto.INT64, ["B", 5], y_shape=["B", 5, 8]),
                         intra_op_threads=1).get_outputs()[0].shape
    assert shape == ["B", 5, 8]


# ---- errors: onnxruntime errors, never crashes (subprocesses) ----------------------------------------------------

_ERROR_SCRIPT = """
import numpy as np
from onnx import TensorProto
from onnx_dc.session import make_session
from op_models import conv_model, gather_model, make_payload
rng = np.random.default_rng(1)
try:
{body}
except Exception as exc:
    print("ERROR:", type(exc).__name__, exc)
else:
    print("NO ERROR")
"""

ERRORS = {
    # name: (body, expected message pattern)
    "x-rank-3": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\n"
                 "make_session(conv_model(blob, None)).run(None, {'X': np.ones((4, 6, 6), np.float32)})",
                 "X must be 4-D \\[N, C, H, W\\], got rank 3"),
    "x-channels": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\n"
                   "make_session(conv_model(blob, None)).run(None, {'X': np.ones((1, 5, 6, 6), np.float32)})",
                   "X has 5 channels but the kernel .* needs C = 4"),
    "bias-length": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\n"
                    "make_session(conv_model(blob, None, bias=np.ones(7, np.float32))).run("
                    "None, {'X': np.ones((1, 4, 6, 6), np.float32)})", "B must have shape \\[M\\] = \\[8\\]"),
    "output-empty": ("blob, _ = make_payload(rng, (8, 4, 5, 5), 0.5)\n"
                     "make_session(conv_model(blob, None)).run(None, {'X': np.ones((1, 4, 4, 9), np.float32)})",
                     "output would be empty"),
    "output-empty-dilated": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\n"
                             "make_session(conv_model(blob, None, dilations=[3, 3])).run("
                             "None, {'X': np.ones((1, 4, 6, 9), np.float32)})", "output would be empty"),
    "payload-rank-2": ("blob, _ = make_payload(rng, (8, 36), 0.5)\nmake_session(conv_model(blob, None))",
                       "DCSparseConv needs a rank-4 payload \\[M, C, kH, kW\\], this one has rank 2"),
    "group-2": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\nmake_session(conv_model(blob, None, group=2))",
                "group = 2 is not supported"),
    "kernel-shape": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\n"
                     "make_session(conv_model(blob, None, kernel_shape=[5, 5]))",
                     "kernel_shape \\[5, 5\\] differs from the payload's kernel \\[3, 3\\]"),
    "auto-pad-unknown": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\n"
                         "make_session(conv_model(blob, None, auto_pad='SAME'))", "auto_pad is 'SAME'"),
    "pads-and-auto-pad": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\n"
                          "make_session(conv_model(blob, None, auto_pad='VALID', pads=[1, 1, 1, 1]))",
                          "cannot be combined with auto_pad"),
    "strides-zero": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\n"
                     "make_session(conv_model(blob, None, strides=[0, 1]))", "strides must be >= 1"),
    "pads-negative": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\n"
                      "make_session(conv_model(blob, None, pads=[-1, 0, 0, 0]))", "pads must be >= 0"),
    "pads-length": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\n"
                    "make_session(conv_model(blob, None, pads=[1, 1]))", "pads must have 4 values"),
    "strides-float": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\n"
                      "make_session(conv_model(blob, None, strides=[1.0, 1.0]))",
                      "strides must be a list of integers"),
    "conv-corrupt-payload": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\n"
                             "blob = blob[:100] + bytes([blob[100] ^ 1]) + blob[101:]\n"
                             "make_session(conv_model(blob, None))", "checksum"),
    "conv-pads-overflow": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\n"
                           "make_session(conv_model(blob, None, pads=[2**62, 2**62, 2**62, 2**62])).run("
                           "None, {'X': np.ones((1, 4, 6, 6), np.float32)})", "output would be empty or overflow"),
    "conv-output-too-large": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\n"
                              "make_session(conv_model(blob, None, pads=[2**61, 2**61, 2**61, 2**61])).run("
                              "None, {'X': np.ones((1, 4, 6, 6), np.float32)})", "the output is too large"),
    "gather-out-of-range": ("blob, _ = make_payload(rng, (10, 4), 0.5)\n"
                            "make_session(gather_model(blob)).run(None, {'I': np.array([3, 10, 2], np.int64)})",
                            "index 10 \\(at position 1 of the indices\\) is out of range"),
    "gather-negative-out-of-range": ("blob, _ = make_payload(rng, (10, 4), 0.5)\n"
                                     "make_session(gather_model(blob, TensorProto.INT32)).run("
                                     "None, {'I': np.array([[0], [-11]], np.int32)})", "index -11 "),
    "gather-float-indices": ("blob, _ = make_payload(rng, (10, 4), 0.5)\n"
                             "make_session(gather_model(blob, TensorProto.FLOAT)).run("
                             "None, {'I': np.array([1.0], np.float32)})", "indices must be int64 or int32"),
    "gather-payload-rank-4": ("blob, _ = make_payload(rng, (8, 4, 3, 3), 0.5)\nmake_session(gather_model(blob))",
                              "DCGather needs a rank-2 payload \\[V, D\\], this one has rank 4"),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_bad_inputs_give_onnxruntime_errors(lib_path, name):
    body, pattern = ERRORS[name]
    proc = run_python(_ERROR_SCRIPT.format(body="\n".join("    " + line for line in body.splitlines())), lib_path)
    assert proc.returncode == 0, f"the subprocess died ({proc.returncode}):\n{proc.stderr[-3000:]}"
    assert "ERROR:" in proc.stdout, proc.stdout
    assert re.search(pattern, proc.stdout), proc.stdout


def test_payload_must_be_a_constant(lib_path):
    blob, _ = make_payload(np.random.default_rng(0), (8, 4, 3, 3), 0.5)
    model = conv_model(blob, [1, 4, 6, 6])
    del model.graph.initializer[:]
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.UINT8, [len(blob)]))
    with pytest.raises(Exception, match="must be a constant initializer"):
        make_session(model, intra_op_threads=1)


def test_reference_evaluator_runs_both_operators():
    """The numpy oracle is registered with onnx.reference: a model mixing both operators runs without the library."""
    rng = np.random.default_rng(5)
    table_blob, table = make_payload(rng, (10, 3 * 5 * 5), 0.5)
    kernel_blob, kernel = make_payload(rng, (4, 3, 3, 3), 0.5)
    nodes = [helper.make_node("DCGather", ["T", "I"], ["E"], domain="onnx_dc"),
             helper.make_node("Reshape", ["E", "shape"], ["X"]),
             helper.make_node("DCSparseConv", ["X", "K"], ["Y"], domain="onnx_dc", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("I", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 4, 5, 5])],
                              [numpy_helper.from_array(np.frombuffer(table_blob, np.uint8), "T"),
                               numpy_helper.from_array(np.frombuffer(kernel_blob, np.uint8), "K"),
                               numpy_helper.from_array(np.array([2, 3, 5, 5], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=opsets())
    model.ir_version = 8
    onnx.checker.check_model(model)
    indices = np.array([7, -2], np.int64)
    y = reference.run_reference(model, {"I": indices})[0]
    x = table[[7, 8]].reshape(2, 3, 5, 5)
    assert_close(y, ort_conv(kernel, x, pads=[1, 1, 1, 1]))
    assert_close(run(model, {"I": indices}), y)
