"""How fast could any sparse kernel be on this core? The least work, timed against dense fp32 and DCSparseGemm
(prints a table; asserts nothing).

    python bench/core_floor.py [--shapes 4096x4096 4096x9216 1000x4096 300x784] [--keep 0.1] [--rounds 11] [--no-write]

An unstructured sparse product reads x[c] once per nonzero and adds it somewhere. bench/core_floor.cc does
exactly that and nothing else, with the nonzeros' columns of a random layer of the given shape and kept
fraction, in the order DCSparseGemm visits them (rows in turn; in a row, by cluster of a 5-bit codebook, then
column):
  - batch 1:  `u32`     one u32 index load and one scalar add of x per nonzero;
              `u16x4`   4 u16 indices per 64-bit load (what DCSparseGemm stores), one scalar add per nonzero;
              `u16x4+fma` the same with every other add done as fma(x, 1, a) (same rounding), so that the
                        core's FMA pipes take half of the adds;
              `gather`  AVX2 vgatherdps, 8 nonzeros per instruction;
  - batch 8:  one 32-byte load of column c's 8 batch rows from a packed X (as the tile kernel reads it) and
              one vector add per nonzero, u16 columns read four at a time; also, as a what-if, the same
              entries visited window by window (all rows' entries in columns [0, 1024), then [1024, 2048),
              ...; windows of 1024 and 512 columns, whose slice of X fits the 32 KB L1): DCSparseGemm's
              order sweeps all K columns in every row, so the 32 bytes of a column mostly come from L2.
The batch-8 loop prefetches its index stream ahead and reads X from a cache-line-aligned copy, as the tile
kernel does.
No codebook, no multiply, no padding entries, no summation order to keep: a real kernel does all of that on
top, so the fastest floor in DCSparseGemm's order is a lower bound for any kernel on this core, however it is written. Every
candidate runs interleaved in one process with onnxruntime's dense fp32 Gemm of the same layer (1 thread,
CPU time of the calling thread) and with DCSparseGemm (onnx_dc.compress, 5-bit codebook), and each cell is
its time relative to dense in the same rounds (median over rounds) and its median time. Builds the C++ file
with g++ (-O2 -fno-tree-vectorize -mavx2 -mfma -mbmi); needs an x86-64 CPU with AVX2 and FMA.
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "studies")]

from results_block import write_results_block  # noqa: E402
from bench_kernels import (dc_model, fmt_time, gemm_model, load_average, ratio, session,  # noqa: E402
                           time_interleaved, weights)

CLUSTERS = 32  # 5-bit codebook: the order of a row's entries follows it
WINDOWS = (1024, 512)  # batch 8, another order: columns in windows whose X fits L1


def build(tmp: Path) -> ctypes.CDLL:
    lib = tmp / "core_floor.so"
    cmd = ["g++", "-O2", "-fno-tree-vectorize", "-mavx2", "-mfma", "-mbmi", "-shared", "-fPIC", "-o", str(lib),
           str(HERE / "core_floor.cc")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"building {HERE / 'core_floor.cc'} failed:\n{done.stderr}")
    so = ctypes.CDLL(str(lib))
    for name in ("floor_b1_u32", "floor_b1_u16x4", "floor_b1_u16x4_fma", "floor_b1_gather", "floor_b8"):
        getattr(so, name).restype = ctypes.c_float
        getattr(so, name).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return so


def visit_order(n: int, k: int, keep: float, seed: int = 0) -> np.ndarray:
    """Columns of a random layer's nonzeros (about keep * k per row), row by row, each row sorted by a random
    cluster and then by column."""
    rng = np.random.default_rng(seed)
    cols = []
    per_row = max(1, round(keep * k))
    for _ in range(n):
        c = rng.choice(k, per_row, replace=False)
        cluster = rng.integers(0, CLUSTERS, per_row)
        cols.append(c[np.lexsort((c, cluster))])
    return np.concatenate(cols).astype(np.uint32)


def aligned(a: np.ndarray, to: int = 64) -> np.ndarray:
    """A copy of `a` that starts on a cache line (as DCSparseGemm's packed X does), so that no 32-byte load
    straddles two lines."""
    raw = np.empty(a.nbytes + to, np.uint8)
    start = -raw.ctypes.data % to
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def windowed(cols: np.ndarray, n: int, k: int, window: int) -> np.ndarray:
    """The same entries visited window by window: for each range of `window` columns, every row's entries in
    it (in the row's order), then the next range; as u16."""
    per_row = cols.reshape(n, -1)
    win = per_row // window
    return np.concatenate([per_row[win == j] for j in range(-(-k // window))]).astype(np.uint16)


class Floor:
    """One floor loop, with a .run() like an onnxruntime session's, so that bench_kernels' timing drives it."""

    def __init__(self, fn, x: np.ndarray, idx: np.ndarray):
        self.fn, self.x, self.idx = fn, aligned(x), aligned(idx)
        self.args = (self.x.ctypes.data, self.idx.ctypes.data, len(self.idx))

    def run(self, _outputs, _feeds):
        return self.fn(*self.args)


def bench(n: int, k: int, keep: float, so: ctypes.CDLL, rounds: int, target_ms: float, tmp: Path) -> list[str]:
    w, b = weights(n, k)
    gemm = gemm_model(w, b)
    dc = session(dc_model(gemm, keep, tmp), 1, dc=True)
    dense = session(gemm, 1)
    cols = visit_order(n, k, keep)
    rng = np.random.default_rng(1)
    rows = []
    for batch in (1, 8):
        x = rng.standard_normal((batch, k)).astype(np.float32)
        if batch == 1:
            floors = {"u32": Floor(so.floor_b1_u32, x[0], cols),
                      "u16x4": Floor(so.floor_b1_u16x4, x[0], cols.astype(np.uint16)),
                      "u16x4+fma": Floor(so.floor_b1_u16x4_fma, x[0], cols.astype(np.uint16)),
                      "gather": Floor(so.floor_b1_gather, x[0], cols)}
        else:
            floors = {"load+add": Floor(so.floor_b8, x.T, cols.astype(np.uint16))}
            for window in WINDOWS:
                if window < k:
                    floors[f"windows of {window}"] = Floor(so.floor_b8, x.T, windowed(cols, n, k, window))
        sessions = {"dense": dense, **floors, "DCSparseGemm": dc}
        times = time_interleaved(sessions, {"X": x}, rounds, target_ms, "cpu")
        best = min((name for name in floors if not name.startswith("windows")),
                   key=lambda name: statistics.median(times[name]))
        per_nnz = statistics.median(times[best]) / len(cols) * 1e9
        cells = [f"{name} {ratio(times, name):.3f}x ({fmt_time(statistics.median(times[name]))})" for name in floors]
        rows.append(f"| {n}×{k} | {keep:.0%} | {batch} | {fmt_time(statistics.median(times['dense']))} | "
                    f"{'; '.join(cells)} | **{ratio(times, best):.3f}x** ({per_nnz:.3f} ns/nonzero) | "
                    f"{ratio(times, 'DCSparseGemm'):.3f}x ({fmt_time(statistics.median(times['DCSparseGemm']))}) |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["4096x4096", "4096x9216", "1000x4096", "300x784"])
    parser.add_argument("--keep", type=float, nargs="+", default=[0.1])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--target-ms", type=float, default=15.0, help="length of one timed burst")
    parser.add_argument("--no-write", "--no-readme", dest="no_write", action="store_true",
                        help="do not write the table into docs/results/native_speed.md (core-floor)")
    args = parser.parse_args()
    start = load_average()
    print(f"load average at start {start}; 1 thread, CPU time, median of {args.rounds} interleaved rounds")
    header = ["| layer | kept | batch | dense fp32 | floors (time / dense) | fastest floor in DCSparseGemm's order | "
              "DCSparseGemm |", "|---|---:|---:|---:|---|---:|---:|"]
    print("\n" + "\n".join(header))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        so = build(tmp)
        for shape in args.shapes:
            n, k = (int(v) for v in shape.lower().split("x"))
            for keep in args.keep:
                rows += bench(n, k, keep, so, args.rounds, args.target_ms, tmp)
    end = load_average()
    print(f"\nload average at the end {end}")
    if not args.no_write:
        write_results_block("core-floor", "\n".join([
            f"Produced by `python bench/core_floor.py` (1 thread, CPU time, median of {args.rounds} "
            f"interleaved rounds; load average {start} at the start, {end} at the end):", "", *header, *rows]))


if __name__ == "__main__":
    main()
