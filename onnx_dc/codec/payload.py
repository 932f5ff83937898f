"""The payload format of docs/FORMAT.md: writer and validating reader (the security boundary)."""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from . import huffman
from .sparse import decode_relative, encode_relative, filler_symbol

MAGIC = b"ODCW"
VERSION = 1
HEADER = struct.Struct("<4sHHQBBBBIQQQQIIQQ")
HEADER_SIZE = HEADER.size  # 80
CHUNK_ENTRY = 24
MAX_RANK = 8
MAX_ELEMENTS = 1 << 62
FLAG_ENTROPY_CODED = 1
DEFAULT_CHUNK_SYMBOLS = 8192  # index symbols per chunk the writer aims at

assert HEADER_SIZE == 80


class PayloadError(ValueError):
    """A payload that breaks docs/FORMAT.md; the message names the rule."""


@dataclass(frozen=True)
class PayloadInfo:
    """What the header and the section sizes say, validated, without decoding the streams."""

    dims: tuple[int, ...]
    rows: int
    cols: int
    weight_bits: int
    index_bits: int
    row_count_bits: int
    codebook: np.ndarray
    nnz: int
    n_index_symbols: int
    n_chunks: int
    entropy_coded: bool
    index_stream_bytes: int
    weight_stream_bytes: int
    total_size: int

    @property
    def fillers(self) -> int:
        return self.n_index_symbols - self.nnz

    @property
    def overhead_bytes(self) -> int:
        """Everything but the two streams: header, dims, codebook, code lengths, chunks, row counts, CRC."""
        return self.total_size - self.index_stream_bytes - self.weight_stream_bytes


@dataclass(frozen=True)
class Payload:
    info: PayloadInfo
    row_nnz: np.ndarray  # int64 [rows]
    columns: np.ndarray  # int64 [nnz], absolute column of each entry, row-major
    labels: np.ndarray  # int64 [nnz], cluster index of each entry

    def dense(self) -> np.ndarray:
        info = self.info
        matrix = np.zeros((info.rows, info.cols), dtype=np.float32)
        rows = np.repeat(np.arange(info.rows), self.row_nnz)
        matrix[rows, self.columns] = info.codebook[self.labels]
        return matrix.reshape(info.dims)


@dataclass(frozen=True)
class WriteStats:
    index_stream_bits: int
    weight_stream_bits: int
    fillers: int
    size: int


def _pack_fields(values: np.ndarray, width: int) -> bytes:
    """Fixed-width unsigned fields, MSB first (the streams' bit order)."""
    if width == 0 or values.size == 0:
        return b""
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
    bits = ((values.astype(np.int64)[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bits.ravel()).tobytes()


def _unpack_fields(data: bytes, count: int, width: int) -> np.ndarray:
    if width == 0:
        return np.zeros(count, dtype=np.int64)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * width].reshape(count, width)
    return (bits.astype(np.int64) << np.arange(width - 1, -1, -1, dtype=np.int64)).sum(axis=1)


def write_payload(
    dims: tuple[int, ...],
    mask: np.ndarray,
    labels: np.ndarray,
    codebook: np.ndarray,
    weight_bits: int,
    index_bits: int,
    huffman_coded: bool = True,
    length_limit: int = huffman.DEFAULT_LENGTH_LIMIT,
    chunk_symbols: int = DEFAULT_CHUNK_SYMBOLS,
) -> tuple[bytes, WriteStats]:
    """Serialise one compressed tensor.

    `mask` is the tensor's nonzero pattern as a [rows, cols] matrix, `labels` the cluster index of each
    kept entry in row-major order, `codebook` the shared values (at most 2**weight_bits of them).
    """
    dims = tuple(int(d) for d in dims)
    if not 1 <= len(dims) <= MAX_RANK:
        raise ValueError(f"rank must be 1..{MAX_RANK}, got {len(dims)}")
    rows = dims[0]
    cols = int(np.prod(dims[1:], dtype=np.int64)) if len(dims) > 1 else 1
    mask = np.asarray(mask, dtype=bool).reshape(rows, cols)
    labels = np.asarray(labels).ravel()
    codebook = np.asarray(codebook, dtype=np.float32).ravel()
    if not 1 <= weight_bits <= 8:
        raise ValueError(f"weight bits must be 1..8, got {weight_bits}")
    if not 1 <= codebook.size <= (1 << weight_bits):
        raise ValueError(f"codebook has {codebook.size} values; {weight_bits} bits allow 1..{1 << weight_bits}")
    if not np.all(np.isfinite(codebook)):
        raise ValueError("codebook values must be finite")
    rel = encode_relative(mask, index_bits)
    nnz = int(rel.row_nnz.sum())
    if labels.size != nnz:
        raise ValueError(f"{labels.size} labels for {nnz} kept entries")
    if nnz and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= codebook.size):
        raise ValueError("a label is outside the codebook")

    index_alphabet, weight_alphabet = 1 << index_bits, 1 << weight_bits
    if huffman_coded:
        limit = max(length_limit, index_bits)
        index_lengths = huffman.code_lengths(np.bincount(rel.symbols, minlength=index_alphabet), limit)
        weight_lengths = huffman.code_lengths(np.bincount(labels, minlength=weight_alphabet), max(length_limit, weight_bits))
    else:
        index_lengths = np.full(index_alphabet, index_bits, dtype=np.uint8)
        weight_lengths = np.full(weight_alphabet, weight_bits, dtype=np.uint8)
    index_stream, index_offsets = huffman.encode(rel.symbols, index_lengths)
    weight_stream, weight_offsets = huffman.encode(labels, weight_lengths)

    # Chunks: consecutive rows, cut once a chunk holds about `chunk_symbols` index symbols.
    entry_start = np.concatenate([[0], np.cumsum(rel.row_nnz)])  # first entry of each row (and the end)
    row_first_symbol = np.concatenate([[0], np.cumsum(rel.row_symbols)])[:-1]  # first index symbol of each row
    chunk_rows = []
    if rows:
        chunk_rows.append(0)
        for r in range(1, rows):
            if row_first_symbol[r] - row_first_symbol[chunk_rows[-1]] >= chunk_symbols:
                chunk_rows.append(r)
    chunk_table = bytearray()
    for r in chunk_rows:
        chunk_table += struct.pack(
            "<QQQ", r, int(index_offsets[row_first_symbol[r]]), int(weight_offsets[entry_start[r]])
        )

    row_count_bits = int(rel.row_nnz.max()).bit_length() if rows else 0
    row_counts = _pack_fields(rel.row_nnz, row_count_bits)
    body = b"".join(
        [
            struct.pack(f"<{len(dims)}Q", *dims),
            codebook.astype("<f4").tobytes(),
            weight_lengths.astype(np.uint8).tobytes(),
            index_lengths.astype(np.uint8).tobytes(),
            bytes(chunk_table),
            row_counts,
            index_stream,
            weight_stream,
        ]
    )
    total = HEADER_SIZE + len(body) + 4
    header = HEADER.pack(
        MAGIC, VERSION, HEADER_SIZE, total, len(dims), weight_bits, index_bits, row_count_bits,
        codebook.size, rows, cols, nnz, rel.symbols.size, len(chunk_rows),
        FLAG_ENTROPY_CODED if huffman_coded else 0, len(index_stream), len(weight_stream),
    )
    blob = header + body
    blob += struct.pack("<I", zlib.crc32(blob))
    stats = WriteStats(int(index_offsets[-1]), int(weight_offsets[-1]), rel.fillers, len(blob))
    return blob, stats


class _Cursor:
    """Bounds-checked sequential reader over the blob."""

    def __init__(self, blob: bytes, start: int):
        self.blob, self.pos = blob, start

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.blob) - 4:
            raise PayloadError(f"payload is truncated: the {what} section needs {n} bytes at offset {self.pos}")
        out = self.blob[self.pos : self.pos + n]
        self.pos += n
        return out


def read_info(blob: bytes, check_crc: bool = True) -> tuple[PayloadInfo, dict]:
    """Validate the header and section sizes; returns the info and the raw sections."""
    blob = bytes(blob)
    if len(blob) < HEADER_SIZE + 4:
        raise PayloadError(f"payload is truncated: {len(blob)} bytes, the header alone needs {HEADER_SIZE + 4}")
    (magic, version, header_size, total, rank, wbits, ibits, rcbits, cb_size, rows, cols, nnz, nsym,
     n_chunks, flags, istream, wstream) = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise PayloadError(f"not an onnx-dc payload (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise PayloadError(f"unsupported payload version {version} (this reader knows version {VERSION})")
    if header_size != HEADER_SIZE:
        raise PayloadError(f"header size {header_size} is not {HEADER_SIZE}")
    if total != len(blob):
        raise PayloadError(f"payload is {len(blob)} bytes but its header says {total} (truncated or padded)")
    if check_crc:
        stored = struct.unpack_from("<I", blob, len(blob) - 4)[0]
        if zlib.crc32(blob[:-4]) != stored:
            raise PayloadError("payload checksum mismatch: the payload is corrupted")
    if not 1 <= rank <= MAX_RANK:
        raise PayloadError(f"rank {rank} is outside 1..{MAX_RANK}")
    if not 1 <= wbits <= 8:
        raise PayloadError(f"weight bits {wbits} outside 1..8")
    if not 1 <= ibits <= 16:
        raise PayloadError(f"index bits {ibits} outside 1..16")
    if rcbits > 32:
        raise PayloadError(f"row count bits {rcbits} exceed 32")
    if not 1 <= cb_size <= (1 << wbits):
        raise PayloadError(f"codebook size {cb_size} outside 1..{1 << wbits}")
    if flags & ~FLAG_ENTROPY_CODED:
        raise PayloadError(f"unknown flags 0x{flags:x}")
    cur = _Cursor(blob, HEADER_SIZE)
    dims = struct.unpack(f"<{rank}Q", cur.take(8 * rank, "dims"))
    elements = 1
    for d in dims:
        elements *= d
        if elements > MAX_ELEMENTS:
            raise PayloadError("tensor has too many elements")
    if rows != dims[0]:
        raise PayloadError(f"rows {rows} differ from dims[0] {dims[0]}")
    expect_cols = 1
    for d in dims[1:]:
        expect_cols *= d
    if cols != expect_cols:
        raise PayloadError(f"cols {cols} differ from the product of dims[1:] ({expect_cols})")
    if nnz > rows * cols:
        raise PayloadError(f"nnz {nnz} exceeds the {rows * cols} elements")
    if nnz > 8 * wstream:
        raise PayloadError(f"nnz {nnz} cannot fit in a {wstream}-byte weight stream")
    if nsym < nnz or nsym > 8 * istream:
        raise PayloadError(f"{nsym} index symbols is inconsistent with nnz {nnz} and a {istream}-byte index stream")
    if (n_chunks == 0) != (rows == 0) or n_chunks > rows:
        raise PayloadError(f"{n_chunks} chunks for {rows} rows")
    codebook = np.frombuffer(cur.take(4 * cb_size, "codebook"), dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(codebook)):
        raise PayloadError("codebook holds a NaN or infinity")
    sections = {
        "weight_lengths": np.frombuffer(cur.take(1 << wbits, "weight code lengths"), dtype=np.uint8),
        "index_lengths": np.frombuffer(cur.take(1 << ibits, "index code lengths"), dtype=np.uint8),
        "chunks": np.frombuffer(cur.take(CHUNK_ENTRY * n_chunks, "chunk table"), dtype="<u8").reshape(n_chunks, 3),
        "row_counts": cur.take((rows * rcbits + 7) // 8, "row counts"),
        "index_stream": cur.take(istream, "index stream"),
        "weight_stream": cur.take(wstream, "weight stream"),
    }
    if cur.pos != len(blob) - 4:
        raise PayloadError(f"{len(blob) - 4 - cur.pos} unexplained bytes after the weight stream")
    info = PayloadInfo(tuple(int(d) for d in dims), rows, cols, wbits, ibits, rcbits, codebook, nnz, nsym,
                       n_chunks, bool(flags & FLAG_ENTROPY_CODED), istream, wstream, total)
    return info, sections


def read_payload(blob: bytes, check_crc: bool = True) -> Payload:
    """Parse and fully decode a payload, checking every rule of docs/FORMAT.md."""
    info, sec = read_info(blob, check_crc)
    try:
        index_decoder = huffman.Decoder(sec["index_lengths"])
        weight_decoder = huffman.Decoder(sec["weight_lengths"])
    except huffman.HuffmanError as exc:
        raise PayloadError(f"bad code-length table: {exc}") from None
    row_nnz = _unpack_fields(sec["row_counts"], info.rows, info.row_count_bits)
    if int(row_nnz.sum()) != info.nnz:
        raise PayloadError(f"row counts add up to {int(row_nnz.sum())}, header says nnz {info.nnz}")
    if info.rows and int(row_nnz.max()) > info.cols:
        raise PayloadError("a row has more entries than columns")
    chunks = sec["chunks"].astype(object)  # python ints: no silent u64 wrap-around
    row_starts = [int(x) for x in chunks[:, 0]]
    if row_starts and (row_starts[0] != 0 or any(b <= a for a, b in zip(row_starts, row_starts[1:]))
                       or row_starts[-1] >= info.rows):
        raise PayloadError("chunk row starts must begin at 0, increase strictly and stay below rows")
    if chunks.size and (chunks[0, 1] != 0 or chunks[0, 2] != 0):
        raise PayloadError("the first chunk must start at bit 0 of both streams")
    istream, wstream = sec["index_stream"], sec["weight_stream"]
    ibits_total, wbits_total = 8 * len(istream), 8 * len(wstream)
    filler = filler_symbol(info.index_bits)
    index_symbols: list[int] = []
    labels: list[int] = []
    ipos = wpos = 0
    for i, r0 in enumerate(row_starts):
        r1 = row_starts[i + 1] if i + 1 < len(row_starts) else info.rows
        # Each chunk must start exactly where the previous one ended.
        if int(chunks[i, 1]) != ipos or int(chunks[i, 2]) != wpos:
            raise PayloadError(f"chunk {i} offsets do not match where chunk {i - 1} ended")
        count = int(row_nnz[r0:r1].sum())
        try:
            syms, ipos = index_decoder.decode(istream, ipos, ibits_total, count, filler)
            labs, wpos = weight_decoder.decode(wstream, wpos, wbits_total, count)
        except huffman.HuffmanError as exc:
            raise PayloadError(f"chunk {i}: {exc}") from None
        index_symbols += syms
        labels += labs
        if len(index_symbols) > info.n_index_symbols:
            raise PayloadError(f"more than the header's {info.n_index_symbols} index symbols")
    if len(index_symbols) != info.n_index_symbols:
        raise PayloadError(f"decoded {len(index_symbols)} index symbols, header says {info.n_index_symbols}")
    for name, pos, data in (("index", ipos, istream), ("weight", wpos, wstream)):
        if (pos + 7) // 8 != len(data):
            raise PayloadError(f"the {name} stream has {len(data) * 8 - pos} bits left over after decoding")
        if pos % 8 and data[-1] & ((1 << (8 - pos % 8)) - 1):
            raise PayloadError(f"the {name} stream's padding bits are not zero")
    labels_arr = np.asarray(labels, dtype=np.int64)
    if labels_arr.size and int(labels_arr.max()) >= len(info.codebook):
        raise PayloadError("a cluster index is outside the codebook")
    try:
        columns = decode_relative(np.asarray(index_symbols, dtype=np.int64), row_nnz, info.index_bits, info.cols)
    except ValueError as exc:
        raise PayloadError(str(exc)) from None
    return Payload(info, row_nnz, columns, labels_arr)


def decode_dense(blob: bytes) -> np.ndarray:
    """The dense float32 tensor a payload stands for."""
    return read_payload(blob).dense()
