"""onnx_dc.native (finding the library, its exports) and onnx_dc.session.make_session (the session factory)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from op_models import python_dense, random_payload, sparse_gemm_model
from repo_paths import REPO


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
