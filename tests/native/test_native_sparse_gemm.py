"""DCSparseGemm in onnxruntime with libonnx_dc_ops.so: numerics, threads, shapes, shape inference, errors.

Oracles: numpy on the matrix the Python reader decodes (float64 accumulation, tolerance relative to the
size of the terms), and the library's scalar reference kernel (the fast path must equal it bit for bit:
both sum in the order gemm.h fixes). Results must be bit-identical for 1 and 2 intra-op threads.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnx_dc.session import make_session
from native_lib import bits, kernel_sets, run_python
from op_models import python_dense, random_payload, sparse_gemm_model
from repo_paths import REPO


def _expected(x, dense, bias):
    """float64 product and the magnitude of its terms (for a tolerance that scales with them)."""
    x64, w64 = x.astype(np.float64), dense.astype(np.float64)
    y = x64 @ w64.T
    mag = np.abs(x64) @ np.abs(w64).T
    if bias is not None:
        y = y + bias
        mag = mag + np.abs(bias)
    return y, mag


def _check_close(got, x, dense, bias):
    y, mag = _expected(x, dense, bias)
    assert got.shape == y.shape and got.dtype == np.float32
    err = np.abs(got - y)
    assert np.all(err <= 1e-5 * mag + 1e-6), f"max error {err.max()} (terms up to {mag.max()})"


def _run(blob, x, bias, threads):
    model = sparse_gemm_model(blob, [f"d{i}" for i in range(x.ndim - 1)] + [x.shape[-1]], bias=bias)
    sess = make_session(model, intra_op_threads=threads)
    return sess.run(None, {"X": x})[0]


CASES = [
    # (N, K), density, weight bits, index bits, x leading dims
    ((30, 50), 0.2, 4, 5, (4,)),
    ((300, 784), 0.1, 5, 5, (1,)),
    ((300, 784), 0.1, 5, 5, (64,)),  # parallel path, tile kernel
    ((100, 300), 0.08, 5, 5, (3, 7)),  # rank-3 X
    ((10, 100), 0.5, 2, 3, ()),  # rank-1 X
    ((257, 513), 0.35, 8, 8, (9,)),  # tile + single-row remainder
    ((64, 1000), 0.01, 3, 1, (17,)),  # filler-heavy payload
    ((48, 64), 0.0, 3, 3, (5,)),  # every weight pruned: Y = B
    ((48, 64), 1.0, 6, 4, (2, 2, 2)),  # nothing pruned, rank-4 X
    ((6, 70000), 0.002, 4, 16, (3,)),  # K > 65536: 32-bit columns
    ((1, 1), 1.0, 1, 1, (2,)),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0][0]}x{c[0][1]}-d{c[1]}-x{c[4]}" for c in CASES])
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_matches_numpy_and_is_thread_count_independent(lib_path, case, with_bias):
    (n, k), density, wb, ib, lead = case
    rng = np.random.default_rng(hash((n, k, density, lead)) % 2**32)
    blob = random_payload(rng, (n, k), density, wb, ib)
    dense = python_dense(blob)
    x = rng.standard_normal(lead + (k,)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    y1 = _run(blob, x, bias, threads=1)
    y2 = _run(blob, x, bias, threads=2)
    assert y1.shape == lead + (n,)
    _check_close(y1, x, dense, bias)
    assert np.array_equal(y1.view(np.uint32), y2.view(np.uint32)), "1 and 2 threads differ"


@pytest.mark.parametrize("m", [1, 2, 3, 7, 8, 9, 16, 17, 64, 65])
def test_fast_kernel_equals_reference_kernel(native, m):
    rng = np.random.default_rng(m)
    blob = random_payload(rng, (123, 345), 0.15, 5, 4)
    x = rng.standard_normal((m, 345)).astype(np.float32)
    bias = rng.standard_normal(123).astype(np.float32)
    for b in (None, bias):
        ref = native.spmm(blob, x, b, kernel="reference")
        fast = native.spmm(blob, x, b, kernel="fast")
        assert np.array_equal(ref.view(np.uint32), fast.view(np.uint32))
        _check_close(ref, x, python_dense(blob), b)


def test_batch_rows_do_not_depend_on_batch_size(lib_path):
    """The summation order is per output, so a row of Y is the same whatever else is in the batch."""
    rng = np.random.default_rng(7)
    blob = random_payload(rng, (200, 400), 0.1, 5, 5)
    x = rng.standard_normal((33, 400)).astype(np.float32)
    sess = make_session(sparse_gemm_model(blob, ["M", 400]), intra_op_threads=2)
    full = sess.run(None, {"X": x})[0]
    for lo, hi in [(0, 1), (5, 6), (3, 11), (0, 17), (30, 33)]:
        part = sess.run(None, {"X": x[lo:hi]})[0]
        assert np.array_equal(part, full[lo:hi])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 90), k=st.integers(1, 200), density=st.floats(0, 1), wb=st.integers(1, 8),
       ib=st.integers(1, 9), lead=st.lists(st.integers(0, 5), max_size=2), with_bias=st.booleans(),
       huffman=st.booleans(), seed=st.integers(0, 2**16))
def test_random_layers(lib_path, n, k, density, wb, ib, lead, with_bias, huffman, seed):
    rng = np.random.default_rng(seed)
    blob = random_payload(rng, (n, k), density, wb, ib, huffman=huffman, chunk_symbols=int(rng.integers(4, 200)))
    x = rng.standard_normal(tuple(lead) + (k,)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else None
    y1 = _run(blob, x, bias, 1)
    _check_close(y1, x, python_dense(blob), bias)
    assert np.array_equal(y1, _run(blob, x, bias, 2))


def test_runs_repeatedly_and_concurrently(lib_path):
    """Decoded once per session; runs share the execution format read-only (threads calling run at once)."""
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(3)
    blob = random_payload(rng, (256, 512), 0.1, 5, 5)
    sess = make_session(sparse_gemm_model(blob, ["M", 512]), intra_op_threads=2)
    xs = [rng.standard_normal((m, 512)).astype(np.float32) for m in (1, 8, 20, 64) * 4]
    expected = [sess.run(None, {"X": x})[0] for x in xs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda x: sess.run(None, {"X": x})[0], xs))
    for e, g in zip(expected, got):
        assert np.array_equal(e, g)


# ---- shape inference -------------------------------------------------------------------------------------------

def _output_shape(model):
    return make_session(model, intra_op_threads=1).get_outputs()[0].shape


def test_shape_inference_keeps_leading_dims_and_value_info_gives_n(lib_path):
    blob = random_payload(np.random.default_rng(1), (30, 50), 0.3, 3, 3)
    # The converter's value_info: fully known.
    assert _output_shape(sparse_gemm_model(blob, ["batch", 50])) == ["batch", 30]
    assert _output_shape(sparse_gemm_model(blob, [2, 3, 50])) == [2, 3, 30]
    # Without a value_info for Y: leading dims from X, N symbolic (the payload is invisible to shape inference).
    shape = _output_shape(sparse_gemm_model(blob, ["batch", 7, 50], y_shape=None))
    assert shape[:2] == ["batch", 7] and isinstance(shape[2], str)
    shape = _output_shape(sparse_gemm_model(blob, [None, 50], y_shape=None))
    assert len(shape) == 2 and all(isinstance(d, str) for d in shape)


def test_downstream_shape_inference_sees_the_value_info(lib_path):
    """A standard op after DCSparseGemm gets Y's full shape (here: Softmax output is fully known)."""
    import onnx
    from onnx import TensorProto, helper
    blob = random_payload(np.random.default_rng(1), (10, 20), 0.3, 3, 3)
    model = onnx.load_from_string(sparse_gemm_model(blob, ["batch", 20]))
    model.graph.node.append(helper.make_node("Softmax", ["Y"], ["Z"], axis=-1))
    model.graph.value_info.append(model.graph.output[0])
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("Z", TensorProto.FLOAT, None))
    sess = make_session(model, intra_op_threads=1)
    x = np.random.default_rng(0).standard_normal((4, 20)).astype(np.float32)
    z = sess.run(None, {"X": x})[0]
    assert z.shape == (4, 10)
    np.testing.assert_allclose(z.sum(axis=-1), 1.0, rtol=1e-5)


# ---- run-time errors (clean onnxruntime errors, in a subprocess so a crash fails the test) -------------------

_ERROR_SCRIPT = """
import numpy as np, onnxruntime as ort
from onnx_dc.session import make_session
from op_models import random_payload, sparse_gemm_model
blob = random_payload(np.random.default_rng(1), (30, 50), 0.3, 3, 3)
model = sparse_gemm_model(blob, {x_decl!r}, bias={bias})
try:
    sess = make_session(model, intra_op_threads=2)
    sess.run(None, {{"X": {x}}})
except Exception as exc:
    print("ERROR:", type(exc).__name__, exc)
else:
    print("NO ERROR")
"""

RUN_ERRORS = {
    "wrong_k": (None, "np.ones((2, 49), np.float32)", "None", "last dimension is 49 but the payload's K is 50"),
    "wrong_k_rank3": (None, "np.ones((2, 3, 51), np.float32)", "None", "last dimension is 51"),
    "scalar_x": (None, "np.array(1.0, np.float32)", "None", "rank >= 1"),
    "bias_wrong_length": (["M", 50], "np.ones((2, 50), np.float32)", "np.ones(29, np.float32)", "B must have shape \\[N\\] = \\[30\\]"),
    "bias_wrong_rank": (["M", 50], "np.ones((2, 50), np.float32)", "np.ones((1, 30), np.float32)", "B must have shape"),
    "x_double": (["M", 50], "np.ones((2, 50))", "None", "tensor\\(double\\)|Unexpected input data type|float"),
}


@pytest.mark.parametrize("name", sorted(RUN_ERRORS))
def test_bad_inputs_give_onnxruntime_errors(lib_path, name):
    import re
    x_decl, x, bias, pattern = RUN_ERRORS[name]
    proc = run_python(_ERROR_SCRIPT.format(x_decl=x_decl, x=x, bias=bias), lib_path)
    assert proc.returncode == 0, f"the subprocess died ({proc.returncode}):\n{proc.stderr[-3000:]}"
    assert "ERROR:" in proc.stdout, proc.stdout
    assert re.search(pattern, proc.stdout), proc.stdout


def test_bias_absent_by_empty_name_or_given_at_run_time(lib_path):
    """Input 2 is optional: an empty name means no bias; a bias that is a graph input works too."""
    import onnx
    from onnx import TensorProto, helper
    rng = np.random.default_rng(4)
    blob = random_payload(rng, (12, 20), 0.4, 3, 3)
    dense = python_dense(blob)
    x = rng.standard_normal((3, 20)).astype(np.float32)
    model = onnx.load_from_string(sparse_gemm_model(blob, ["M", 20]))
    model.graph.node[0].input.append("")
    y = make_session(model, intra_op_threads=1).run(None, {"X": x})[0]
    _check_close(y, x, dense, None)
    model.graph.node[0].input[2] = "B"
    model.graph.input.append(helper.make_tensor_value_info("B", TensorProto.FLOAT, [12]))
    bias = rng.standard_normal(12).astype(np.float32)
    y = make_session(model, intra_op_threads=1).run(None, {"X": x, "B": bias})[0]
    _check_close(y, x, dense, bias)


# ---- every kernel set and execution-format variant against the scalar reference (gemm.h's order) ------------

KERNEL_CASES = [
    # (N, K), density, weight bits, index bits
    ((123, 345), 0.15, 5, 4),
    ((300, 784), 0.08, 5, 5),    # a LeNet layer: many short cluster runs (padding)
    ((64, 3000), 0.3, 8, 6),     # 256-entry codebook, long rows
    ((40, 70), 1.0, 3, 4),       # nothing pruned
    ((17, 50), 0.0, 3, 3),       # everything pruned
    ((5, 70000), 0.003, 4, 16),  # K >= 65536: 32-bit columns
]
BATCHES = [1, 2, 3, 7, 8, 9, 15, 16, 17, 24, 25, 33, 64, 65]
# Execution-format options: default; few row parts (other part edges, fewer tasks than threads); the dense
# form (layers of density >= 1/16; sparser ones stay sparse).
FORMATS = ["", "parts=3", "parts=1", "form=dense", "form=dense,parts=2"]


@pytest.mark.parametrize("case", KERNEL_CASES, ids=[f"{c[0][0]}x{c[0][1]}-d{c[1]}" for c in KERNEL_CASES])
def test_every_kernel_path_is_bit_identical_to_the_reference(native, case):
    """C API: for each kernel set (scalar, avx2 where the CPU has it) and format variant, the fast path on 1, 2
    and 3 threads equals the scalar reference bit for bit at every batch size (vector kernel, 8- and 16-row
    tiles, odd tails), with and without bias; the reference is close to numpy; all kernel sets agree."""
    (n, k), density, wb, ib = case
    rng = np.random.default_rng(n * 7 + k)
    blob = random_payload(rng, (n, k), density, wb, ib)
    dense = python_dense(blob)
    bias = rng.standard_normal(n).astype(np.float32)
    xs = {m: rng.standard_normal((m, k)).astype(np.float32) for m in BATCHES if m * k <= 4_000_000}
    for options in FORMATS:
        outputs = {}
        for kernel in kernel_sets(native):
            gemm = native.gemm(blob, f"kernel={kernel},{options}".rstrip(","))
            info = gemm.info()
            assert info["kernel"] == kernel
            forced = "form=dense" in options
            expect_dense = density >= 1 / 16 if forced else density >= 0.55
            assert info["form"] == ("dense" if expect_dense else "sparse-blocks"), (options, info)
            for m, x in xs.items():
                for b in (None, bias):
                    ref = gemm.run(x, b, mode="reference")
                    _check_close(ref, x, dense, b)
                    for threads in (1, 2, 3):
                        fast = gemm.run(x, b, threads=threads)
                        assert np.array_equal(bits(fast), bits(ref)), (kernel, options, m, threads, b is None)
                    outputs.setdefault((m, b is None), []).append(ref)
            gemm.close()
        for key, ys in outputs.items():
            for y in ys[1:]:
                assert np.array_equal(bits(y), bits(ys[0])), ("kernel sets differ", options, key)


def test_non_finite_inputs_propagate_like_the_reference(native):
    rng = np.random.default_rng(8)
    blob = random_payload(rng, (50, 90), 0.3, 4, 4)
    x = rng.standard_normal((17, 90)).astype(np.float32)
    x[0, :5] = np.inf
    x[3, 7] = np.nan
    x[9, :] = -np.inf
    for kernel in kernel_sets(native):
        gemm = native.gemm(blob, f"kernel={kernel}")
        for m in (1, 8, 17):
            ref, fast = gemm.run(x[:m], mode="reference"), gemm.run(x[:m])
            assert np.array_equal(np.isnan(ref), np.isnan(fast))
            finite = ~np.isnan(ref)
            assert np.array_equal(bits(ref[finite]), bits(fast[finite]))
        assert np.isnan(gemm.run(x[3:4])).any()


def test_the_form_follows_the_density(native):
    """auto: dense from dense_density (default 0.55) on, sparse blocks below; forced dense only from 1/16."""
    rng = np.random.default_rng(3)
    for density, expected in [(0.3, "sparse-blocks"), (0.7, "dense"), (1.0, "dense"), (0.0, "sparse-blocks")]:
        blob = random_payload(rng, (64, 200), density, 4, 4)
        assert native.gemm(blob).info()["form"] == expected, density
    blob = random_payload(rng, (64, 200), 0.3, 4, 4)
    assert native.gemm(blob, "dense_density=0.25").info()["form"] == "dense"
    assert native.gemm(blob, "form=dense").info()["form"] == "dense"
    assert native.gemm(blob, "form=sparse,dense_density=0").info()["form"] == "sparse-blocks"
    sparse = random_payload(rng, (64, 200), 0.02, 4, 4)
    assert native.gemm(sparse, "form=dense").info()["form"] == "sparse-blocks"
    dense_layer = native.gemm(blob, "form=dense")
    assert dense_layer.info()["resident_bytes"] >= 64 * 200 * 4 and dense_layer.info()["blocks"] == 0


def test_gemm_options_are_checked(native):
    from onnx_dc.native import NativeError
    blob = random_payload(np.random.default_rng(1), (10, 20), 0.5, 3, 3)
    for bad, message in [("kernel=sse9", "unknown kernel"), ("parts=0", "positive integer"), ("parts=-3", "positive"),
                         ("colour=red", "unknown option"), ("kernel", "key=value"), ("form=csr", "unknown form"),
                         ("dense_density=x", "number")]:
        with pytest.raises(NativeError, match=message):
            native.gemm(blob, bad)
    if not native.cpu_features()["avx2_runs"]:
        with pytest.raises(NativeError, match="avx2"):
            native.gemm(blob, "kernel=avx2")


# ---- the same through onnxruntime: ONNX_DC_KERNEL steers the session's kernels --------------------------------

@pytest.mark.parametrize("case", [((300, 784), 0.08, 5, 5), ((257, 513), 0.35, 8, 8), ((6, 70000), 0.002, 4, 16)],
                         ids=["lenet_fc1", "odd", "wide_k"])
def test_onnxruntime_kernel_sets_and_threads_agree_with_the_reference(native, lib_path, monkeypatch, case):
    (n, k), density, wb, ib = case
    rng = np.random.default_rng(k)
    blob = random_payload(rng, (n, k), density, wb, ib)
    bias = rng.standard_normal(n).astype(np.float32)
    model = sparse_gemm_model(blob, ["M", k], bias=bias)
    reference = native.gemm(blob)
    xs = {m: rng.standard_normal((m, k)).astype(np.float32) for m in (1, 2, 8, 9, 16, 17, 64)}
    expected = {m: reference.run(x, bias, mode="reference") for m, x in xs.items()}
    for kernel in kernel_sets(native):
        monkeypatch.setenv("ONNX_DC_KERNEL", kernel)
        for threads in (1, 2):
            sess = make_session(model, intra_op_threads=threads)
            for m, x in xs.items():
                y = sess.run(None, {"X": x})[0]
                assert np.array_equal(bits(y), bits(expected[m])), (kernel, threads, m)
    if density >= 1 / 16:  # ONNX_DC_FORM=dense: the dense form's own order, through onnxruntime too
        monkeypatch.setenv("ONNX_DC_FORM", "dense")
        dense = native.gemm(blob, "form=dense")
        assert dense.info()["form"] == "dense"
        for kernel in kernel_sets(native):
            monkeypatch.setenv("ONNX_DC_KERNEL", kernel)
            sess = make_session(model, intra_op_threads=2)
            for m, x in xs.items():
                y = sess.run(None, {"X": x})[0]
                assert np.array_equal(bits(y), bits(dense.run(x, bias, mode="reference"))), (kernel, m)
                _check_close(y, x, python_dense(blob), bias)


def test_onnxruntime_rejects_an_unknown_kernel_request(lib_path):
    proc = run_python("""
import numpy as np
from onnx_dc.session import make_session
from op_models import random_payload, sparse_gemm_model
blob = random_payload(np.random.default_rng(1), (30, 50), 0.3, 3, 3)
try:
    make_session(sparse_gemm_model(blob, ["M", 50]), intra_op_threads=1)
except Exception as exc:
    print("ERROR:", exc)
else:
    print("NO ERROR")
""", lib_path, env={"ONNX_DC_KERNEL": "sse9"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ERROR:" in proc.stdout and "unknown kernel 'sse9'" in proc.stdout, proc.stdout


def test_debug_variable_reports_the_chosen_form(lib_path):
    proc = run_python("""
import numpy as np
from onnx_dc.session import make_session
from op_models import random_payload, sparse_gemm_model
blob = random_payload(np.random.default_rng(1), (30, 50), 0.3, 3, 3)
make_session(sparse_gemm_model(blob, ["M", 50]), intra_op_threads=1)
print("made")
""", lib_path, env={"ONNX_DC_DEBUG": "1", "ONNX_DC_KERNEL": "scalar"})
    assert proc.returncode == 0 and "made" in proc.stdout, proc.stderr[-3000:]
    assert "DCSparseGemm node 'fc': 30 x 50" in proc.stderr and "form sparse-blocks, kernel scalar" in proc.stderr


def test_avx2_translation_unit_shares_no_code_with_the_baseline(lib_path):
    """gemm_avx2.cc is compiled with -mavx2: a weak (COMDAT) symbol it defines outside its own namespace (an
    inline function or template from a shared header, std:: included) could be the copy the linker keeps for
    the whole library, and baseline code would then run AVX2 instructions on CPUs without them."""
    import subprocess
    from shutil import which
    objects = sorted((REPO / "build" / "native").rglob("gemm_avx2.cc.o"))
    if not which("nm") or not objects:
        pytest.skip("nm or the AVX2 object file is not available (non-x86 build)")
    out = subprocess.run(["nm", "-C", str(objects[0])], capture_output=True, text=True, check=True).stdout
    weak = [line for line in out.splitlines() if line.split()[1:2] and line.split()[1] in ("W", "V", "u")]
    assert weak, "expected the kernel templates as weak symbols"
    assert all("onnx_dc::avx2::" in line for line in weak), [w for w in weak if "onnx_dc::avx2::" not in w]
