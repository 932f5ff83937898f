"""The libFuzzer set-up (scripts/fuzz.sh, custom_ops/fuzz/): its seed corpus and the script's verdicts.

- Every seed in custom_ops/fuzz/corpus/ is what custom_ops/fuzz/make_corpus.py names, valid for the Python
  reader, and read the same by the C++ reader (the dense tensor where it is small, the header otherwise).
- The fuzz target's replay driver (GCC, AddressSanitizer + UBSan: build/asan/fuzz_payload) runs the corpus
  without a report.
- scripts/fuzz.sh builds the libFuzzer binary with clang, passes a short run, and fails (exit 1, a FAILED
  summary line) when libFuzzer reports a crash; here the crash is an RSS limit of 1 MB, which every run
  exceeds.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from native_lib import IN_CI, selftest_binary
from repo_paths import REPO, VECTORS

CORPUS = REPO / "custom_ops" / "fuzz" / "corpus"
SEEDS = sorted(CORPUS.glob("*.bin"))


def test_corpus_is_what_make_corpus_writes():
    sys.path.insert(0, str(REPO / "custom_ops" / "fuzz"))
    try:
        import make_corpus
    finally:
        sys.path.pop(0)
    assert sorted(make_corpus.seeds()) == [p.stem for p in SEEDS], \
        "custom_ops/fuzz/corpus is stale: run python3 custom_ops/fuzz/make_corpus.py"


@pytest.mark.parametrize("seed", SEEDS, ids=lambda p: p.stem)
def test_seed_is_valid_for_both_readers(native, seed):
    from onnx_dc.codec.payload import read_info, read_payload

    blob = seed.read_bytes()
    info, _ = read_info(blob)
    cinfo = native.payload_info(blob)
    assert cinfo["dims"] == info.dims and cinfo["nnz"] == info.nnz and cinfo["total_size"] == len(blob)
    if int(np.prod(info.dims, dtype=object)) <= 1 << 20:
        np.testing.assert_array_equal(native.decode_dense(blob), read_payload(blob).dense())


def test_corpus_replays_under_asan():
    exe = selftest_binary(sanitized=True).parent / "fuzz_payload"
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([str(exe), str(CORPUS), str(VECTORS)], capture_output=True, text=True,
                          timeout=900, env=env)
    n = len(SEEDS) + len([p for p in VECTORS.iterdir() if p.is_file()])
    assert proc.returncode == 0 and f"replayed {n} inputs" in proc.stdout, proc.stdout + proc.stderr[-4000:]
    assert "runtime error" not in proc.stderr and "AddressSanitizer" not in proc.stderr, proc.stderr[-4000:]


def _fuzz_sh(tmp_path, seconds: int, **env) -> subprocess.CompletedProcess:
    if not (shutil.which("clang++") or os.geteuid() == 0 or IN_CI):
        pytest.skip("scripts/fuzz.sh needs clang (or root to install it)")
    # libFuzzer options after SECONDS override the script's (the last occurrence wins): artifacts go here.
    args = [str(seconds), f"-artifact_prefix={tmp_path}/"]
    return subprocess.run(["bash", str(REPO / "scripts" / "fuzz.sh"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=1800,
                          env=dict(os.environ, ONNX_DC_FUZZ_LOG=str(tmp_path / "fuzz.log"), **env))


def test_fuzz_script_passes_a_short_run(tmp_path):
    proc = _fuzz_sh(tmp_path, 3)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    match = re.fullmatch(r"fuzz\.sh: ok: fuzz_payload ran (\d+) inputs in \d+ s, no crash \(.*\)", last)
    assert match and int(match.group(1)) > 0, proc.stdout
    assert "INITED" in (tmp_path / "fuzz.log").read_text()


def test_fuzz_script_fails_on_a_crash(tmp_path):
    proc = _fuzz_sh(tmp_path, 60, ONNX_DC_FUZZ_RSS_MB="1")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("fuzz.sh: FAILED: fuzz_payload exited"), proc.stdout[-3000:]
    assert "out-of-memory" in proc.stdout, proc.stdout[-3000:]
    assert list(tmp_path.glob("oom-*")), "the failing input was not written where -artifact_prefix says"
