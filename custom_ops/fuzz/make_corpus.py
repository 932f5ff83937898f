"""Writes the fuzzer's seed corpus, custom_ops/fuzz/corpus/*.bin (run from anywhere:
python3 custom_ops/fuzz/make_corpus.py).

Every seed is a valid payload written by the project's writer: real weights of the bundled models
(`onnx_dc.codec.compress_tensor(...).payload`, the converter's own path) and small synthetic tensors
(`write_payload`) that reach the reader's corners: many chunks, fillers (1- and 2-bit relative indices),
fixed-width codes, a single codebook value, all pruned, zero rows, rank 1 and 4, 16-bit relative indices,
K on both sides of the 16/32-bit column boundaries (65535, 65536, 65537), and all-pruned payloads declaring
huge tensors (K = 2^33, N = 2^40, 4096 x 4096), and enough entries for several row parts and the dense
execution form. Seeds stay small (the
largest, with its 2^16-entry index code table, is ~66 kB) so that libFuzzer mutates them quickly.
scripts/fuzz.sh also seeds from tests/vectors/.
"""
from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from onnx_dc.codec import compress_tensor  # noqa: E402
from onnx_dc.codec.payload import read_info, read_payload, write_payload  # noqa: E402


def weights(model: str) -> dict[str, np.ndarray]:
    graph = onnx.load(REPO / "models" / model).graph
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer}


def synthetic(rng, dims, density, bits, index_bits, huffman=True, chunk_symbols=8192, codebook_size=None) -> bytes:
    rows = dims[0]
    cols = int(np.prod(dims[1:], dtype=np.int64)) if len(dims) > 1 else 1
    mask = rng.random((rows, cols)) < density
    size = codebook_size or (1 << bits)
    codebook = np.sort(rng.standard_normal(size)).astype(np.float32)
    p = 0.7 ** np.arange(size)
    labels = rng.choice(size, size=int(mask.sum()), p=p / p.sum())
    blob, _ = write_payload(tuple(dims), mask, labels, codebook, bits, index_bits, huffman_coded=huffman,
                            chunk_symbols=chunk_symbols)
    return blob


def sparse_columns(rows: int, cols: int, columns: list[int], bits: int, index_bits: int) -> bytes:
    """Entries at the given columns of every row (the last column included: the widest cursor)."""
    mask = np.zeros((rows, cols), dtype=bool)
    mask[:, columns] = True
    labels = np.arange(int(mask.sum())) % (1 << bits)
    codebook = np.linspace(-1, 1, 1 << bits, dtype=np.float32)
    blob, _ = write_payload((rows, cols), mask, labels, codebook, bits, index_bits)
    return blob


def patched_dims(blob: bytes, dims: tuple[int, ...]) -> bytes:
    """An all-pruned payload (row counts of 0 bits) with other dims of the same rank: the sections do not
    depend on them. total_size and the CRC are recomputed."""
    b = bytearray(blob)
    assert b[16] == len(dims) and b[19] == 0 and struct.unpack_from("<Q", b, 40)[0] == 0
    cols = 1
    for d in dims[1:]:
        cols *= d
    struct.pack_into("<QQ", b, 24, dims[0], cols)
    for i, d in enumerate(dims):
        struct.pack_into("<Q", b, 80 + 8 * i, d)
    b[-4:] = struct.pack("<I", zlib.crc32(bytes(b[:-4])))
    return bytes(b)


def seeds() -> dict[str, bytes]:
    mlp, lenet5 = weights("lenet_300_100.onnx"), weights("lenet5.onnx")
    rng = np.random.default_rng(7)
    out = {
        # The converter's path on real weights (the paper's settings for these layers).
        "lenet_300_100_fc3": compress_tensor(mlp["fc3.weight"], 0.74, 6, 5).payload,
        "lenet_300_100_fc2_rows16_index3": compress_tensor(mlp["fc2.weight"][:16], 0.91, 6, 3).payload,
        "lenet_300_100_fc3_fixed_width": compress_tensor(mlp["fc3.weight"], 0.74, 6, 5, huffman=False).payload,
        "lenet5_conv1_rank4": compress_tensor(lenet5["conv1.weight"], 0.34, 8, 5).payload,
        "lenet5_fc2": compress_tensor(lenet5["fc2.weight"], 0.81, 5, 5).payload,
        "lenet5_fc2_dense_2bit": compress_tensor(lenet5["fc2.weight"][:4], 0.0, 2, 4).payload,
        # Synthetic corners.
        "many_chunks": synthetic(rng, (24, 40), 0.3, 3, 4, chunk_symbols=8),
        "index_bits_1": synthetic(rng, (6, 50), 0.1, 2, 1),
        "index_bits_2_fillers": synthetic(rng, (8, 300), 0.02, 3, 2),
        "index_bits_16": synthetic(rng, (4, 20), 0.5, 2, 16),
        "one_codebook_value": synthetic(rng, (7, 9), 0.5, 1, 3, codebook_size=1),
        "all_pruned": synthetic(rng, (5, 9), 0.0, 2, 3),
        "zero_rows": synthetic(rng, (0, 12), 0.5, 2, 3),
        "zero_cols": synthetic(rng, (3, 0), 0.5, 2, 3),
        "rank1": synthetic(rng, (40,), 0.5, 2, 2),
        "rank3": synthetic(rng, (6, 4, 5), 0.3, 4, 3),
        "k65535": sparse_columns(2, 65535, [0, 1000, 65534], 2, 8),
        "k65536": sparse_columns(2, 65536, [0, 40000, 65535], 2, 8),
        "k65537": sparse_columns(2, 65537, [3, 65536], 2, 8),
        # Enough entries (> 8,192 slots) for the row partition to make several parts; densities for the
        # dense execution form (>= 50%: chosen by default; >= 1/16: when asked for).
        "parts_160x160_45pct": synthetic(rng, (160, 160), 0.45, 1, 2),
        "dense_form_64x64": synthetic(rng, (64, 64), 1.0, 2, 1),
    }
    # Declared sizes far beyond the bytes (valid: every weight pruned): the reader's paths for K > 2^32, a
    # huge N with nothing per row, and the dense decoder's cap.
    out["zero_rows_k_2_33"] = patched_dims(out["zero_rows"], (0, 1 << 33))
    out["empty_n_2_40"] = patched_dims(out["all_pruned"], (1 << 40, 9))
    out["empty_k_2_33"] = patched_dims(out["all_pruned"], (5, 1 << 33))
    out["empty_4096_squared"] = patched_dims(out["all_pruned"], (4096, 4096))
    for name, blob in out.items():
        if name.startswith(("zero_rows_k", "empty_")):
            read_info(blob)  # the header and sections are valid (decoding would allocate what dims declare)
            continue
        read_payload(blob)  # every seed is valid (the Python reader checks every rule)
    return out


def main() -> None:
    corpus = HERE / "corpus"
    corpus.mkdir(exist_ok=True)
    for old in corpus.glob("*.bin"):
        old.unlink()
    total = 0
    for name, blob in seeds().items():
        (corpus / f"{name}.bin").write_bytes(blob)
        total += len(blob)
    print(f"wrote {len(list(corpus.glob('*.bin')))} seeds ({total:,} bytes) to {corpus}")


if __name__ == "__main__":
    main()
