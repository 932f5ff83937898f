"""The CUDA side of custom_ops/ (docs/CUDA.md), on every machine as far as it can go.

1. Everywhere (a C++ compiler and CMake): the GPU decoder's per-chunk and per-row code (cuda/gpu_decode.h)
   and its host checks run on the CPU (onnx_dc_cuda_emulation_test) against the CPU reader, on the test
   vectors, the fuzz corpus and random layers from the project's writer, plus random mutations: both accept
   and reject the same payloads with the same message, and build exactly the same execution format.
2. Where nvcc is found: the CUDA sources compile (harness, and libonnx_dc_ops_cuda.so when onnxruntime's
   headers are there) for sm_90, cached in build/cuda/check; the CUDA library loads into (CPU) onnxruntime,
   registers, and leaves the CPU operator's results unchanged.
3. Where a CUDA device is visible: the harness's check and mutate steps (scripts/gpu_check.sh runs those and
   the benchmark). Otherwise these skip with the reason "no CUDA device".
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from native_lib import IN_CI, have_toolchain, headers_available
from repo_paths import REPO, VECTORS

CHECK_DIR = REPO / "build/cuda/check"
CORPUS = [VECTORS, REPO / "custom_ops/fuzz/corpus"]


def _run(args, timeout, env=None):
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@functools.lru_cache(maxsize=None)
def _build(emulation: bool) -> tuple[bool, str, Path]:
    if emulation:
        env, folder = {"ONNX_DC_CUDA_BUILD_DIR": str(REPO / "build/cuda/emulation")}, REPO / "build/cuda/emulation"
        args = ["bash", "scripts/build_cuda.sh", "--emulation"]
    else:
        env = {"ONNX_DC_CUDA_BUILD_DIR": str(CHECK_DIR), "ONNX_DC_CUDA_ARCHITECTURES": "90"}
        folder, args = CHECK_DIR, ["bash", "scripts/build_cuda.sh"]
    proc = _run(args, timeout=1800, env=env)
    return proc.returncode == 0, proc.stdout + proc.stderr, folder


def _nvcc() -> str | None:
    return os.environ.get("CUDACXX") or shutil.which("nvcc")


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    """Random layers from the project's writer (scripts/make_cuda_cases.py, without the 4096^2 layer)."""
    out = tmp_path_factory.mktemp("cuda_cases")
    proc = _run([sys.executable, "scripts/make_cuda_cases.py", str(out), "--no-bench"], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture(scope="module")
def cuda_build() -> Path:
    """build/cuda/check, compiled for sm_90; skips without nvcc."""
    if not _nvcc():
        pytest.skip("nvcc not found: the CUDA sources were not compiled")
    if not shutil.which("cmake"):
        pytest.skip("cmake not found")
    ok, log, folder = _build(False)
    if not ok:
        pytest.fail(f"scripts/build_cuda.sh failed:\n{log[-6000:]}", pytrace=False)
    return folder


def test_emulated_gpu_decoder_agrees_with_the_cpu_reader(cases):
    if not have_toolchain():
        if IN_CI:
            pytest.fail("CI=true but cmake or a C++ compiler is missing", pytrace=False)
        pytest.skip("cmake or a C++ compiler not found")
    ok, log, folder = _build(True)
    assert ok, log[-6000:]
    proc = _run([str(folder / "onnx_dc_cuda_emulation_test"), "--mutations", "300", *map(str, CORPUS), str(cases)],
                timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("PASSED") and " 0 failures" in last, last


def test_cuda_sources_compile(cuda_build):
    harness = cuda_build / "onnx_dc_cuda_harness"
    assert harness.is_file()
    assert (cuda_build / "onnx_dc_cuda_emulation_test").is_file()
    if headers_available():
        lib = cuda_build / "libonnx_dc_ops_cuda.so"
        assert lib.is_file()
        nm = shutil.which("nm")
        if nm:
            exported = _run([nm, "-D", "--defined-only", str(lib)], timeout=60).stdout
            assert "RegisterCustomOps" in exported
            assert "cuda" not in exported.lower()  # the CUDA runtime is linked in statically and kept hidden


def test_cuda_library_registers_in_cpu_onnxruntime(cuda_build):
    """libonnx_dc_ops_cuda.so also carries the CPU operators: on a CPU-only onnxruntime the CUDA kernel is
    registered but unused, and DCSparseGemm gives exactly what libonnx_dc_ops.so gives."""
    lib = cuda_build / "libonnx_dc_ops_cuda.so"
    if not lib.is_file():
        pytest.skip("libonnx_dc_ops_cuda.so was not built (onnxruntime headers missing)")
    ort = pytest.importorskip("onnxruntime")
    from native_lib import native_library
    from op_models import random_payload, sparse_gemm_model

    rng = np.random.default_rng(9)
    blob = random_payload(rng, (96, 300), 0.1, 5, 5)
    bias = rng.standard_normal(96).astype(np.float32)
    model = sparse_gemm_model(blob, [4, 300], bias=bias)
    x = rng.standard_normal((4, 300)).astype(np.float32)
    outputs = []
    for path in (str(lib), native_library()):
        so = ort.SessionOptions()
        so.register_custom_ops_library(path)
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        outputs.append(sess.run(None, {"X": x})[0])
    assert np.array_equal(outputs[0].view(np.uint32), outputs[1].view(np.uint32))


@functools.lru_cache(maxsize=None)
def _device(harness: str) -> tuple[bool, str]:
    proc = _run([harness, "info"], timeout=120)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


@pytest.fixture(scope="module")
def harness(cuda_build) -> Path:
    path = cuda_build / "onnx_dc_cuda_harness"
    if shutil.which("nvidia-smi") is None and not Path("/dev/nvidia0").exists():
        pytest.skip("no CUDA device (no nvidia-smi, no /dev/nvidia0)")
    ok, info = _device(str(path))
    if not ok:
        pytest.skip(f"no CUDA device ({info.splitlines()[-1] if info else 'harness info failed'})")
    return path


def test_gpu_kernels_match_the_cpu_reference(harness, cases):
    proc = _run([str(harness), "check", *map(str, CORPUS), str(cases)], timeout=1800)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr


def test_gpu_decoder_agrees_with_the_cpu_reader_under_mutation(harness, cases):
    proc = _run([str(harness), "mutate", "--mutations", "100", *map(str, CORPUS), str(cases)], timeout=1800)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr
