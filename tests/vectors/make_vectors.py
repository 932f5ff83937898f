"""Writes the checked-in payload test vectors (run from the repository root: python tests/vectors/make_vectors.py).

Valid vectors come from the project's writer (onnx_dc.codec.payload.write_payload) with their dense
tensors (.npy, from the Python reader at generation time). Invalid ones are valid vectors with one rule of
docs/FORMAT.md broken on purpose; `error` is a regex the C++ reader's message must match. The tests read
these files: if the writer, either reader or the format changes, they say so.
"""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/, for the payload surgery helpers the tests use too

from onnx_dc.codec.payload import CHUNK_ENTRY, HEADER_SIZE, PayloadError, read_payload, write_payload  # noqa: E402
from payload_surgery import dims_field, fix_crc, flip, get_field, patch, set_field  # noqa: E402


def sections(blob: bytes) -> dict:
    """Byte offsets of every section (from the header)."""
    rank, wb, ib, rcb, cbs, rows, n_chunks, isb, wsb = (get_field(blob, name) for name in (
        "rank", "weight_bits", "index_bits", "row_count_bits", "codebook_size", "rows", "n_chunks",
        "index_stream_bytes", "weight_stream_bytes"))
    out, pos = {}, HEADER_SIZE
    for name, size in [("dims", 8 * rank), ("codebook", 4 * cbs), ("wlen", 1 << wb), ("ilen", 1 << ib),
                       ("chunks", CHUNK_ENTRY * n_chunks), ("rows", (rows * rcb + 7) // 8), ("istream", isb),
                       ("wstream", wsb)]:
        out[name] = (pos, size)
        pos += size
    return out


def matrix(rng, rows, cols, density, bits, index_bits, huffman=True, chunk_symbols=8192, codebook_size=None):
    mask = rng.random((rows, cols)) < density
    size = codebook_size or (1 << bits)
    codebook = np.sort(rng.standard_normal(size)).astype(np.float32)
    p = 0.7 ** np.arange(size)
    labels = rng.choice(size, size=int(mask.sum()), p=p / p.sum())
    blob, _ = write_payload((rows, cols), mask, labels, codebook, bits, index_bits, huffman_coded=huffman,
                            chunk_symbols=chunk_symbols)
    return blob


def main() -> None:
    rng = np.random.default_rng(2024)
    valid = {
        "small_huffman": matrix(rng, 12, 40, 0.3, 4, 3),
        "fillers_2bit_index": matrix(rng, 8, 200, 0.03, 3, 2),
        "fixed_width_codes": matrix(rng, 10, 30, 0.4, 5, 4, huffman=False),
        "many_chunks": matrix(rng, 40, 64, 0.2, 4, 4, chunk_symbols=16),
        "all_pruned": matrix(rng, 5, 9, 0.0, 2, 3),
    }
    conv_mask = rng.random((4, 2 * 3 * 3)) < 0.5
    valid["conv_rank4"], _ = write_payload((4, 2, 3, 3), conv_mask, rng.integers(0, 16, int(conv_mask.sum())),
                                           np.linspace(-1, 1, 16, dtype=np.float32), 4, 4)
    vectors = []
    for name, blob in valid.items():
        (HERE / f"{name}.bin").write_bytes(blob)
        np.save(HERE / f"{name}.npy", read_payload(blob).dense())
        vectors.append({"file": f"{name}.bin", "valid": True, "dense": f"{name}.npy"})

    base = valid["small_huffman"]
    sec = sections(base)
    invalid = {}
    invalid["truncated"] = (base[:-1], "total_size")
    invalid["flipped_byte"] = (flip(base, sec["istream"][0], 0x10), "checksum")
    invalid["bad_magic"] = (fix_crc(set_field(base, "magic", b"X" + get_field(base, "magic")[1:])), "magic")
    invalid["version_2"] = (fix_crc(set_field(base, "version", 2)), "unsupported version 2")
    invalid["unknown_flag"] = (fix_crc(set_field(base, "flags", 2)), "flag")
    invalid["nnz_plus_one"] = (fix_crc(set_field(base, "nnz", get_field(base, "nnz") + 1)), "row counts add up|nnz")
    invalid["dims_disagree"] = (fix_crc(patch(base, *dims_field(0), 13)), "rows 12 differ from dims")  # dims[0] != rows
    invalid["oversubscribed_code"] = (fix_crc(patch(base, sec["wlen"][0], "16B", *[1] * 16)), "over-subscribed")
    invalid["code_length_17"] = (fix_crc(patch(base, sec["ilen"][0], "B", 17)), "exceeds 16")
    invalid["nan_in_codebook"] = (fix_crc(patch(base, sec["codebook"][0] + 4, "<f", float("nan"))), "not finite")
    b = base + b"\0"
    invalid["trailing_byte"] = (fix_crc(set_field(b, "total_size", len(b))), "unexplained bytes")
    # Padding bits: the weight stream of this vector ends mid-byte; set its last padding bit.
    wpos, wsize = sec["wstream"]
    b = bytearray(base)
    b[wpos + wsize - 1] |= 1
    invalid["nonzero_padding"] = (fix_crc(b), "padding|left after decoding|matches no code")
    # A chunk boundary that is not where the previous chunk ends.
    many = valid["many_chunks"]
    msec = sections(many)
    off = msec["chunks"][0] + CHUNK_ENTRY + 8  # chunk 1's index_bit_offset
    b = patch(many, off, "<Q", struct.unpack_from("<Q", many, off)[0] + 1)
    invalid["chunk_offset_off_by_one"] = (fix_crc(b), "does not end where chunk")
    # An entry beyond the last column: shrink cols (and dims[1]) below the largest column used.
    dense = read_payload(base).dense()
    last_col = int(np.nonzero(dense.any(axis=0))[0].max())
    b = patch(set_field(base, "cols", last_col), *dims_field(1), last_col)
    invalid["column_out_of_range"] = (fix_crc(b), "column|fillers run past|entries but only")
    # A cluster index outside the codebook: cut the codebook just below the largest cluster index used.
    top = int(read_payload(base).labels.max())
    b = bytearray(base)
    cb_off, cb_size = sec["codebook"]
    del b[cb_off + 4 * top: cb_off + cb_size]
    b = set_field(set_field(b, "codebook_size", top), "total_size", len(b))
    invalid["cluster_outside_codebook"] = (fix_crc(b), "outside the codebook")
    for name, (blob, error) in invalid.items():
        try:
            read_payload(blob)
        except PayloadError as exc:
            print(f"bad_{name}: python says: {exc}")
        else:
            raise AssertionError(f"the Python reader accepts bad_{name}")
        (HERE / f"bad_{name}.bin").write_bytes(blob)
        vectors.append({"file": f"bad_{name}.bin", "valid": False, "error": error})
    (HERE / "manifest.json").write_text(json.dumps({"vectors": vectors}, indent=1) + "\n")
    print(f"wrote {len(vectors)} vectors to {HERE}")


if __name__ == "__main__":
    main()
