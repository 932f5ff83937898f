#!/usr/bin/env python3
"""Payloads for the CUDA harness (docs/CUDA.md), written by the project's own writer.

    python3 scripts/make_cuda_cases.py OUT_DIR [--no-bench]

OUT_DIR/random_*.bin: random rank-2 layers over the shapes and options that reach every kernel and decoder
path (1 x 1, K = 1, K = 65535 / 70000 (16- and 32-bit columns), 1- and 2-bit indices (mostly fillers),
16-bit indices (codes longer than the 11-bit primary table), fixed-width codes, many small chunks, dense
layers, skewed cluster frequencies). OUT_DIR/bench_4096x4096_10pct_5bit.bin: the benchmark layer, a
4096 x 4096 Gaussian weight with 10% kept by magnitude, 5-bit codebook (k-means), 5-bit indices, as
`onnx-dc compress` writes a fully-connected layer by default.

Needs only numpy: onnx_dc/codec is imported as a top-level package, so the GPU machine needs neither onnx
nor onnxruntime to run it. Files that already exist with the same content are left alone.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "onnx_dc"))
import codec  # noqa: E402  (onnx_dc/codec, numpy only)
from codec.payload import DEFAULT_CHUNK_SYMBOLS, write_payload  # noqa: E402

# (rows, cols), density, weight bits, index bits, huffman, chunk symbols
RANDOM_CASES = [
    ((1, 1), 1.0, 1, 1, True, None),
    ((7, 13), 0.5, 3, 3, True, None),
    ((300, 784), 0.1, 5, 5, True, None),
    ((100, 300), 0.08, 5, 5, True, 64),
    ((64, 1000), 0.01, 4, 2, True, None),
    ((64, 1000), 0.01, 4, 1, True, None),
    ((40, 70), 1.0, 8, 4, True, None),
    ((33, 65), 0.3, 1, 16, True, None),
    ((33, 65), 0.3, 8, 8, False, None),
    ((1000, 1), 0.5, 2, 1, True, None),
    ((5, 70000), 0.001, 3, 16, True, None),
    ((37, 65535), 0.002, 4, 8, True, None),
    ((512, 2048), 0.3, 6, 4, True, None),
    ((1024, 1024), 0.6, 5, 4, True, None),
    ((3, 5000), 0.9, 8, 3, True, None),
    ((2048, 512), 0.05, 5, 5, True, 256),
    ((1111, 333), 0.2, 7, 12, False, 1000),
    ((20, 300), 0.3, 4, 16, False, None),  # 16-bit fixed-width index codes: every one past the primary table
    ((64, 60000), 0.0005, 5, 14, True, None),  # index codes up to 14 bits
]


def random_blob(rng: np.random.Generator, shape, density, weight_bits, index_bits, huffman, chunk_symbols) -> bytes:
    rows, cols = shape
    mask = rng.random((rows, cols)) < density
    size = int(rng.integers(1, (1 << weight_bits) + 1))
    codebook = (rng.standard_normal(size) * 0.5).astype(np.float32)
    p = 0.7 ** np.arange(size)  # skewed: Huffman codes of different lengths
    labels = rng.choice(size, size=int(mask.sum()), p=p / p.sum())
    blob, _ = write_payload(shape, mask, labels, codebook, weight_bits, index_bits, huffman_coded=huffman,
                            chunk_symbols=chunk_symbols or DEFAULT_CHUNK_SYMBOLS)
    return blob


def bench_blob() -> bytes:
    rng = np.random.default_rng(4096)
    weight = (rng.standard_normal((4096, 4096)) * 0.02).astype(np.float32)
    return codec.compress_tensor(weight, sparsity=0.9, bits=5, index_bits=5).payload


def write(path: Path, blob: bytes) -> None:
    if path.exists() and path.read_bytes() == blob:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--no-bench", action="store_true", help="skip the 4096 x 4096 benchmark layer")
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(RANDOM_CASES):
        (rows, cols), density, wb, ib, huff, chunks = case
        name = f"random_{i:02d}_{rows}x{cols}_d{density:g}_w{wb}_i{ib}{'' if huff else '_fixed'}.bin"
        write(args.out_dir / name, random_blob(np.random.default_rng(900 + i), *case))
    if not args.no_bench:
        write(args.out_dir / "bench_4096x4096_10pct_5bit.bin", bench_blob())
    print(f"{len(RANDOM_CASES)} random cases{'' if args.no_bench else ' and the benchmark layer'} in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
