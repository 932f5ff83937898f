"""Bad payloads never crash: session creation fails with a clear onnxruntime error.

Everything that loads a corrupted payload into onnxruntime runs in a subprocess, so that a crash is a
failed test. The C++ self-test (custom_ops/tests/selftest.cc) drives the reader and kernels through every
truncation, byte flip and header boundary value of each vector, built once plainly and once with
AddressSanitizer + UndefinedBehaviorSanitizer, where any out-of-bounds access or undefined behaviour aborts.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from native_lib import run_python, selftest_binary
from op_models import random_payload
from repo_paths import REPO, TESTS, VECTORS
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())["vectors"]
BAD = [v for v in MANIFEST if not v["valid"]]

_SESSION_SCRIPT = """
import sys
import numpy as np
from onnx_dc.session import make_session
from op_models import decode_model, sparse_gemm_model
blob = open(sys.argv[1], "rb").read() if len(sys.argv) > 1 else None
{setup}
for op, model in [("DCSparseGemm", sparse_gemm_model(blob, ["M", "K"], y_shape=None)), ("DCDecode", decode_model(blob))]:
    try:
        make_session(model, intra_op_threads=2)
    except Exception as exc:
        print(op, "ERROR:", exc)
    else:
        print(op, "ACCEPTED")
"""


def _sessions(lib, setup: str) -> list[str]:
    proc = run_python(_SESSION_SCRIPT.format(setup=setup), lib)
    assert proc.returncode == 0, f"the subprocess died ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("DCSparseGemm", "DCDecode"))]
    assert len(lines) == 2, proc.stdout
    return lines


@pytest.mark.parametrize("vec", BAD, ids=lambda v: v["file"])
def test_bad_vector_fails_session_creation(lib_path, vec):
    path = (VECTORS / vec["file"]).as_posix()
    for line in _sessions(lib_path, f"blob = open({path!r}, 'rb').read()"):
        assert "ERROR:" in line, line
        assert "invalid onnx-dc payload" in line and re.search(vec["error"], line), line


CORRUPTIONS = {
    # name: python statement turning `blob` (a valid 300 x 784 payload) into a bad one
    "empty": "blob = b''",
    "header_only": "blob = blob[:ps.HEADER_SIZE]",
    "truncated_half": "blob = blob[: len(blob) // 2]",
    "truncated_by_one": "blob = blob[:-1]",
    "flip_in_header": "blob = ps.flip(blob, 30, 0x40)",
    "flip_in_stream": "blob = ps.flip(blob, len(blob) // 2, 0x01)",
    "flip_in_crc": "blob = ps.flip(blob, len(blob) - 1, 0x80)",
    "huge_rows_fixed_crc": ("blob = ps.set_field(ps.set_field(blob, 'rows', 2**40), 'cols', 784); "
                            "blob = ps.fix_crc(ps.patch(blob, *ps.dims_field(0), 2**40))"),
    "huge_nnz_fixed_crc": "blob = ps.fix_crc(ps.set_field(blob, 'nnz', 2**62))",
    "huge_chunks_fixed_crc": "blob = ps.fix_crc(ps.set_field(blob, 'n_chunks', 2**32 - 1))",
    "garbage": "blob = bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8))",
    "rank4_payload_in_gemm": "blob = random_payload(np.random.default_rng(0), (4, 3, 2, 2), 0.5, 3, 3)",
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupted_payload_fails_session_creation(lib_path, name):
    setup = ("import payload_surgery as ps\nfrom op_models import random_payload\n"
             "blob = random_payload(np.random.default_rng(9), (300, 784), 0.1, 5, 5)\n" + CORRUPTIONS[name])
    lines = _sessions(lib_path, setup)
    if name == "rank4_payload_in_gemm":
        assert "rank-2" in lines[0] and "ACCEPTED" in lines[1], lines
        return
    for line in lines:
        assert "ERROR:" in line and "invalid onnx-dc payload" in line, line


def test_payload_must_be_a_constant(lib_path):
    code = """
import numpy as np
from onnx_dc.session import make_session
from op_models import random_payload, sparse_gemm_model
blob = random_payload(np.random.default_rng(1), (30, 50), 0.3, 3, 3)
try:
    make_session(sparse_gemm_model(blob, ["M", 50], payload_as_input=True))
except Exception as exc:
    print("ERROR:", exc)
"""
    proc = run_python(code, lib_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "must be a constant initializer" in proc.stdout, proc.stdout


# ---- the C++ self-test, plain and under AddressSanitizer + UBSan -------------------------------------------------

def _selftest_inputs(tmp_path) -> list[str]:
    files = [str(VECTORS / v["file"]) for v in MANIFEST if v["valid"]]
    rng = np.random.default_rng(11)
    extra = {
        "lenet_fc1": random_payload(rng, (300, 784), 0.08, 5, 5, chunk_symbols=512),
        "fillers": random_payload(rng, (20, 3000), 0.005, 4, 2),
        "wide_k": random_payload(rng, (3, 70000), 0.0005, 3, 16),
        "rank1": random_payload(rng, (40,), 0.5, 2, 2),
    }
    for name, blob in extra.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(blob)
        files.append(str(path))
    return files


@pytest.mark.parametrize("sanitized", [False, True], ids=["plain", "asan_ubsan"])
def test_cpp_selftest_on_corrupted_payloads(tmp_path, sanitized):
    exe = selftest_binary(sanitized)
    env = {"ASAN_OPTIONS": "abort_on_error=0:detect_leaks=1:allocator_may_return_null=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([str(exe), "--random", "1500" if sanitized else "3000", *_selftest_inputs(tmp_path)],
                          capture_output=True, text=True, timeout=1800, env=env)
    report = proc.stdout[-3000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, report
    last = proc.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"onnx_dc_selftest: (\d+) checks ok, 0 failed", last)
    assert match and int(match.group(1)) > 10000, report
    assert "runtime error" not in proc.stderr and "AddressSanitizer" not in proc.stderr, report
    if sanitized:  # the fuzz target's replay driver over the same inputs (GCC has no libFuzzer)
        inputs = _selftest_inputs(tmp_path)
        proc = subprocess.run([str(exe.parent / "fuzz_payload"), *inputs], capture_output=True, text=True,
                              timeout=600, env=env)
        assert proc.returncode == 0 and f"replayed {len(inputs)} inputs" in proc.stdout, proc.stdout + proc.stderr[-4000:]


# ---- the library itself under ASan + UBSan, inside onnxruntime (LD_PRELOAD=libasan into python) -----------------

_ASAN_SCRIPT = """
import glob
import numpy as np
from onnx_dc.session import make_session
from op_models import decode_model, random_payload, sparse_gemm_model
rejected = 0
for path in sorted(glob.glob("tests/vectors/*.bin")):
    blob = open(path, "rb").read()
    for model in (sparse_gemm_model(blob, ["M", "K"], y_shape=None), decode_model(blob)):
        try:
            sess = make_session(model, intra_op_threads=2)
        except Exception:
            rejected += 1
            continue
print("rejected", rejected)
rng = np.random.default_rng(0)
for dims, density, ib in [((300, 784), 0.1, 5), ((64, 1000), 0.01, 2), ((5, 70000), 0.001, 16), ((40, 70), 1.0, 4)]:
    blob = random_payload(rng, dims, density, 4, ib, chunk_symbols=256)
    for threads in (1, 2):
        sess = make_session(sparse_gemm_model(blob, ["M", dims[1]], bias=np.ones(dims[0], np.float32)),
                            intra_op_threads=threads)
        for m in (1, 2, 8, 9, 64):
            sess.run(None, {"X": rng.standard_normal((m, dims[1])).astype(np.float32)})
        try:
            sess.run(None, {"X": np.ones((2, dims[1] + 1), np.float32)})
        except Exception:
            pass
    make_session(decode_model(blob)).run(None, {})
print("done")
"""


def test_library_in_onnxruntime_under_asan(tmp_path):
    """The sanitized library loaded into onnxruntime: every bad vector rejected, kernels run, no report."""
    import os
    import shutil
    exe = selftest_binary(sanitized=True)
    lib = exe.parent / "libonnx_dc_ops.so"
    if not lib.is_file():
        pytest.skip("the sanitized library was not built (no onnxruntime headers)")
    cxx = shutil.which("g++") or shutil.which("c++")
    preload = [os.path.realpath(subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True,
                                               check=True).stdout.strip()) for name in ("libasan.so", "libstdc++.so")]
    env = dict(os.environ, LD_PRELOAD=" ".join(preload),
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:exitcode=97",  # python itself keeps memory at exit
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=98")
    proc = subprocess.run([sys.executable, "-c", _ASAN_SCRIPT], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env=dict(env, ONNX_DC_LIBRARY=str(lib),
                                                PYTHONPATH=f"{REPO}{os.pathsep}{TESTS}"))
    report = proc.stdout[-2000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, report
    bad = sum(1 for v in MANIFEST if not v["valid"])
    assert f"rejected {2 * bad + 1}" in proc.stdout, report  # + the rank-4 vector in DCSparseGemm
    assert "done" in proc.stdout and "AddressSanitizer" not in proc.stderr and "runtime error" not in proc.stderr, report
