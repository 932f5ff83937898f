"""`pip install .` builds the library and puts it inside the package (the wheel is built and looked into).

A compressed layer then runs with the library taken from the wheel."""
from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from native_lib import IN_CI, have_toolchain, headers_available, run_python
from repo_paths import REPO


def test_wheel_carries_the_library(tmp_path):
    if not (have_toolchain() and headers_available()):
        if IN_CI:
            pytest.fail("CI=true but the wheel cannot be built (no toolchain or onnxruntime headers)")
        pytest.skip("no toolchain or onnxruntime headers: run `bash scripts/setup.sh`")
    pytest.importorskip("scikit_build_core")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("onnx_dc-*.whl")
    assert "-py3-none-linux_" in wheel.name  # no libpython dependency: one wheel per platform
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert names.count("onnx_dc/libonnx_dc_ops.so") == 1  # CMake's, even if a dev build sits in onnx_dc/
        assert "onnx_dc/native.py" in names
        zf.extract("onnx_dc/libonnx_dc_ops.so", tmp_path / "unpacked")
    lib = tmp_path / "unpacked" / "onnx_dc" / "libonnx_dc_ops.so"
    code = """
import numpy as np
from onnx_dc.native import get_library_path
from onnx_dc.session import make_session
from op_models import python_dense, random_payload, sparse_gemm_model
blob = random_payload(np.random.default_rng(2), (20, 30), 0.4, 4, 4)
x = np.random.default_rng(3).standard_normal((5, 30)).astype(np.float32)
y = make_session(sparse_gemm_model(blob, ["M", 30])).run(None, {"X": x})[0]
assert np.allclose(y, x @ python_dense(blob).T, rtol=1e-5, atol=1e-5)
print("OK", get_library_path())
"""
    proc = run_python(code, str(lib))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"OK {lib}"
