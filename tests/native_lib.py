"""The library under test: build libonnx_dc_ops.so (or the self-test) from this checkout, or skip/fail.

The native tests run against the library built from this checkout: `native_library()` rebuilds it
incrementally with scripts/build_native.sh (a no-op when nothing changed) and returns its path. Where it
cannot be built (no compiler or no onnxruntime headers) the tests skip with the set-up command as the
reason, except under CI=true, where they fail: CI must test the library. `run_python` runs code in a fresh
interpreter with that library, the repository and tests/ (these helper modules) importable.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from repo_paths import REPO, TESTS

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SETUP = "bash scripts/setup.sh"


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true but the native library is unavailable: {reason}", pytrace=False)
    pytest.skip(f"native library not built ({reason}); run `{SETUP}`")


def headers_available() -> bool:
    if os.environ.get("ONNXRUNTIME_INCLUDE_DIR"):
        return True
    return any((d / "onnxruntime_c_api.h").is_file()
               for d in (REPO / ".deps/onnxruntime/include", Path("/usr/include/onnxruntime")))


@functools.lru_cache(maxsize=None)
def _build(target: str) -> tuple[bool, str]:
    args = ["bash", str(REPO / "scripts/build_native.sh")] + (["--sanitize"] if target == "asan" else [])
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=1800)
    return proc.returncode == 0, proc.stdout + proc.stderr


def have_toolchain() -> bool:
    from shutil import which
    return bool(which("cmake") and (which("c++") or which("g++")))


def native_library() -> str:
    """Path of the freshly built libonnx_dc_ops.so (or ONNX_DC_LIBRARY's); skips/fails if there is none."""
    from onnx_dc.native import LIBRARY_ENV, LibraryNotFoundError, get_library_path

    if not os.environ.get(LIBRARY_ENV):
        if have_toolchain() and headers_available():
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
    if not have_toolchain():
        _unavailable("cmake or a C++ compiler is missing")
    if sanitized:
        ok, log = _build("asan")
        exe = REPO / "build/asan/onnx_dc_selftest"
    else:
        if not headers_available():
            _unavailable("onnxruntime headers are missing")
        ok, log = _build("release")
        exe = REPO / "build/native/onnx_dc_selftest"
    if not ok:
        pytest.fail(f"scripts/build_native.sh {'--sanitize ' if sanitized else ''}failed:\n{log[-4000:]}", pytrace=False)
    return exe


def run_python(code: str, lib: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (so that a crash is a failed test, not a dead test run); `env`: extra
    environment variables."""
    env = dict(os.environ, **(env or {}), ONNX_DC_LIBRARY=lib,
               PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def kernel_sets(native) -> list[str]:
    """The kernel sets ONNX_DC_KERNEL may pick on this CPU (`native`: the NativeLibrary fixture)."""
    sets = ["scalar"]
    if native.cpu_features()["avx2_runs"]:
        sets.append("avx2")
    return sets


def bits(a) -> np.ndarray:
    """The float32 bit patterns of `a`, for bit-for-bit comparisons."""
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
