"""onnx_dc.native (finding the library, making sessions) and the helpers every tests/test_native_*.py uses.

The native tests run against the library built from this checkout: `native_library()` rebuilds it
incrementally with scripts/build_native.sh (a no-op when nothing changed) and returns its path. Where it
cannot be built (no compiler or no onnxruntime headers) the tests skip with the set-up command as the
reason, except under CI=true, where they fail: CI must test the library.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SETUP = "bash scripts/setup.sh"


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true but the native library is unavailable: {reason}", pytrace=False)
    pytest.skip(f"native library not built ({reason}); run `{SETUP}`")


def _headers_available() -> bool:
    if os.environ.get("ONNXRUNTIME_INCLUDE_DIR"):
        return True
    return any((d / "onnxruntime_c_api.h").is_file()
               for d in (REPO / ".deps/onnxruntime/include", Path("/usr/include/onnxruntime")))


@functools.lru_cache(maxsize=None)
def _build(target: str) -> tuple[bool, str]:
    args = ["bash", str(REPO / "scripts/build_native.sh")] + (["--sanitize"] if target == "asan" else [])
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=1800)
    return proc.returncode == 0, proc.stdout + proc.stderr


def _have_toolchain() -> bool:
    from shutil import which
    return bool(which("cmake") and (which("c++") or which("g++")))


def native_library() -> str:
    """Path of the freshly built libonnx_dc_ops.so (or ONNX_DC_LIBRARY's); skips/fails if there is none."""
    from onnx_dc.native import LIBRARY_ENV, LibraryNotFoundError, get_library_path

    if not os.environ.get(LIBRARY_ENV):
        if _have_toolchain() and _headers_available():
            ok, log = _build("release")
            if not ok:
                pytest.fail(f"scripts/build_native.sh failed:\n{log[-4000:]}", pytrace=False)
        else:
            _check_not_stale()
    try:
        return get_library_path()
    except LibraryNotFoundError as exc:
        _unavailable(str(exc))


def _check_not_stale() -> None:
    lib = REPO / "onnx_dc" / "libonnx_dc_ops.so"
    if not lib.is_file():
        return
    sources = [p for p in (REPO / "custom_ops").rglob("*") if p.suffix in (".cc", ".h", ".txt", ".map")]
    newest = max(sources, key=lambda p: p.stat().st_mtime, default=None)
    if newest is not None and newest.stat().st_mtime > lib.stat().st_mtime:
        pytest.fail(f"{lib} is older than {newest}; rebuild with `bash scripts/build_native.sh`", pytrace=False)


def selftest_binary(sanitized: bool) -> Path:
    """onnx_dc_selftest, built (incrementally) plain or with ASan + UBSan."""
    if not _have_toolchain():
        _unavailable("cmake or a C++ compiler is missing")
    if sanitized:
        ok, log = _build("asan")
        exe = REPO / "build/asan/onnx_dc_selftest"
    else:
        if not _headers_available():
            _unavailable("onnxruntime headers are missing")
        ok, log = _build("release")
        exe = REPO / "build/native/onnx_dc_selftest"
    if not ok:
        pytest.fail(f"scripts/build_native.sh {'--sanitize ' if sanitized else ''}failed:\n{log[-4000:]}", pytrace=False)
    return exe


@pytest.fixture(scope="module")
def lib_path() -> str:
    return native_library()


@pytest.fixture(scope="module")
def native(lib_path):
    from onnx_dc.native import NativeLibrary
    return NativeLibrary(lib_path)


def run_python(code: str, lib: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (so that a crash is a failed test, not a dead test run); `env`: extra
    environment variables."""
    env = dict(os.environ, **(env or {}), ONNX_DC_LIBRARY=lib,
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


# ---- payloads and one-node models ------------------------------------------------------------------------

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


# ---- tests of onnx_dc.runtime ------------------------------------------------------------------------------

def _tiny_model() -> tuple[bytes, bytes, np.ndarray]:
    rng = np.random.default_rng(5)
    blob = random_payload(rng, (6, 10), 0.5, 3, 3)
    return blob, sparse_gemm_model(blob, ["M", 10]), python_dense(blob)


def test_library_path_is_inside_the_package_by_default(lib_path, monkeypatch):
    from onnx_dc.native import LIBRARY_ENV, get_library_path
    if os.environ.get(LIBRARY_ENV):
        pytest.skip("ONNX_DC_LIBRARY is set for this run")
    path = Path(get_library_path())
    assert path.name == "libonnx_dc_ops.so" and path.parent == REPO / "onnx_dc"


def test_library_env_override(lib_path, tmp_path, monkeypatch):
    from onnx_dc.native import LIBRARY_ENV, LibraryNotFoundError, get_library_path
    copy = tmp_path / "custom.so"
    copy.write_bytes(Path(lib_path).read_bytes())
    monkeypatch.setenv(LIBRARY_ENV, str(copy))
    assert get_library_path() == str(copy.resolve())
    monkeypatch.setenv(LIBRARY_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(LibraryNotFoundError, match="missing.so"):
        get_library_path()


def test_missing_library_names_the_setup_command(monkeypatch, tmp_path):
    import onnx_dc.native as runtime
    monkeypatch.delenv(runtime.LIBRARY_ENV, raising=False)
    monkeypatch.setattr(runtime, "__file__", str(tmp_path / "runtime.py"))
    with pytest.raises(runtime.LibraryNotFoundError, match="scripts/setup.sh"):
        runtime.get_library_path()


@pytest.mark.parametrize("form", ["bytes", "path", "proto"])
def test_make_session_accepts_bytes_paths_and_protos(lib_path, tmp_path, form):
    from onnx_dc.session import make_session
    blob, model, dense = _tiny_model()
    arg = {"bytes": model, "path": tmp_path / "m.onnx", "proto": onnx.load_from_string(model)}[form]
    if form == "path":
        arg.write_bytes(model)
    sess = make_session(arg, intra_op_threads=1)
    x = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {"X": x})[0], x @ dense.T, rtol=1e-6, atol=1e-6)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert sess.get_session_options().intra_op_num_threads == 1


def test_make_session_uses_given_session_options(lib_path):
    import onnxruntime as ort
    from onnx_dc.session import make_session
    _, model, _ = _tiny_model()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = make_session(model, intra_op_threads=2, sess_options=options)
    assert sess.get_session_options().intra_op_num_threads == 2
    assert sess.get_session_options().log_severity_level == 3


def test_plain_onnxruntime_without_the_library_rejects_the_model(lib_path):
    import onnxruntime as ort
    _, model, _ = _tiny_model()
    with pytest.raises(Exception, match="DCSparseGemm|onnx_dc"):
        ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def test_library_exports_only_its_entry_points(lib_path):
    from shutil import which
    if not which("nm"):
        pytest.skip("nm (binutils) is not installed")
    out = subprocess.run(["nm", "-D", "--defined-only", lib_path], capture_output=True, text=True, check=True).stdout
    names = sorted(line.split()[-1] for line in out.splitlines() if line.strip())
    assert "RegisterCustomOps" in names
    assert all(n == "RegisterCustomOps" or n.startswith("onnx_dc_") for n in names), names
    needed = subprocess.run(["readelf", "-d", lib_path], capture_output=True, text=True).stdout
    assert "onnxruntime" not in needed  # the API comes from RegisterCustomOps, never from linking
