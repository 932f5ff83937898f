"""Canonical, length-limited Huffman coding (Deep Compression §4), bit order as in docs/FORMAT.md.

Encoding is vectorised with numpy. Decoding uses a lookup table indexed by the next `max_len` bits (no
tree walk); it is the executable specification for the native decoder and fast enough for the reference
oracle and `decompress`.
"""
from __future__ import annotations

import heapq

import numpy as np

MAX_CODE_LENGTH = 16  # the format's limit
DEFAULT_LENGTH_LIMIT = 12  # the writer's: a decode table of at most 4,096 entries fits in L1


class HuffmanError(ValueError):
    """A code-length table or a bit stream that breaks docs/FORMAT.md."""


def code_lengths(freqs: np.ndarray, max_len: int = DEFAULT_LENGTH_LIMIT) -> np.ndarray:
    """Optimal prefix-code lengths for `freqs`, limited to `max_len` bits (0 for symbols that never occur).

    Plain Huffman first; if the longest code is too long, the length histogram is repaired as in JPEG
    (ITU T.81 Annex K.3: move pairs of leaves up), then lengths are dealt to symbols by falling frequency.
    """
    freqs = np.asarray(freqs, dtype=np.int64)
    lengths = np.zeros(freqs.size, dtype=np.uint8)
    used = np.flatnonzero(freqs > 0)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used[0]] = 1  # an incomplete code: one symbol, one bit each
        return lengths
    if used.size > (1 << max_len):
        raise HuffmanError(f"{used.size} symbols cannot have codes of at most {max_len} bits")
    # Huffman tree over the used symbols; ties broken by creation order, so the result is deterministic.
    heap = [(int(freqs[s]), i, i) for i, s in enumerate(used)]
    heapq.heapify(heap)
    parent = list(range(used.size))  # leaves 0..m-1, internal nodes appended
    next_id = used.size
    while len(heap) > 1:
        f1, _, a = heapq.heappop(heap)
        f2, _, b = heapq.heappop(heap)
        parent.append(next_id)
        parent[a] = parent[b] = next_id
        heapq.heappush(heap, (f1 + f2, next_id, next_id))
        next_id += 1
    root = next_id - 1
    depth = [0] * next_id
    for node in range(root - 1, -1, -1):  # parents are created after their children
        depth[node] = depth[parent[node]] + 1
    leaf_depth = np.array(depth[: used.size])
    longest = int(leaf_depth.max())
    bits = np.bincount(leaf_depth, minlength=max(longest, max_len) + 1).astype(np.int64)
    for i in range(longest, max_len, -1):
        while bits[i] > 0:
            j = i - 2
            while bits[j] == 0:
                j -= 1
            bits[i] -= 2
            bits[i - 1] += 1
            bits[j + 1] += 2
            bits[j] -= 1
    # Deal the lengths: most frequent symbols get the shortest codes (stable: lower symbol first on ties).
    by_freq = used[np.argsort(-freqs[used], kind="stable")]
    dealt = np.repeat(np.arange(bits.size), bits)
    lengths[by_freq] = dealt[: by_freq.size]
    return lengths


def check_lengths(lengths: np.ndarray) -> None:
    """Raise HuffmanError unless `lengths` is a valid (possibly incomplete) prefix code, per FORMAT.md."""
    lengths = np.asarray(lengths)
    if lengths.size and int(lengths.max()) > MAX_CODE_LENGTH:
        raise HuffmanError(f"code length {int(lengths.max())} exceeds the limit of {MAX_CODE_LENGTH}")
    used = lengths[lengths > 0].astype(np.int64)
    if (np.ldexp(1.0, -used)).sum() > 1.0:
        raise HuffmanError("code lengths are over-subscribed (Kraft sum > 1)")


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of each symbol (RFC 1951 §3.2.2); 0 for unused symbols."""
    lengths = np.asarray(lengths, dtype=np.int64)
    check_lengths(lengths)
    max_len = int(lengths.max()) if lengths.size else 0
    count = np.bincount(lengths, minlength=max_len + 1)
    count[0] = 0
    next_code = np.zeros(max_len + 2, dtype=np.int64)
    code = 0
    for n in range(1, max_len + 1):
        code = (code + int(count[n - 1])) << 1
        next_code[n] = code
    codes = np.zeros(lengths.size, dtype=np.int64)
    for sym in np.flatnonzero(lengths):  # increasing symbol order
        n = lengths[sym]
        codes[sym] = next_code[n]
        next_code[n] += 1
    return codes


def encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Encode `symbols` MSB-first. Returns the bytes (zero-padded to a byte) and the bit offset at which
    each symbol starts, plus one final entry: the total number of bits."""
    symbols = np.asarray(symbols)
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = canonical_codes(lengths)
    # Narrow per-symbol arrays (codes ≤ 16 bits): encoding a large layer's streams stays light.
    sym_len = lengths.astype(np.uint8)[symbols]
    if symbols.size and int(sym_len.min()) == 0:
        raise HuffmanError("a symbol to encode has no code")
    offsets = np.zeros(symbols.size + 1, dtype=np.int64)
    np.cumsum(sym_len, out=offsets[1:])
    total = int(offsets[-1])
    bits = np.zeros(total, dtype=np.uint8)
    sym_code = codes.astype(np.uint32)[symbols]
    starts = offsets[:-1]
    for j in range(int(sym_len.max()) if symbols.size else 0):
        sel = np.flatnonzero(sym_len > j)
        shift = (sym_len[sel] - np.uint8(1 + j)).astype(np.uint32)
        bits[starts[sel] + j] = (sym_code[sel] >> shift) & np.uint32(1)
    return np.packbits(bits).tobytes(), offsets


class Decoder:
    """Table-driven decoder for one code-length table."""

    def __init__(self, lengths: np.ndarray):
        lengths = np.asarray(lengths, dtype=np.int64)
        check_lengths(lengths)
        self.max_len = int(lengths.max()) if lengths.size else 0
        codes = canonical_codes(lengths)
        size = 1 << self.max_len
        table_sym = np.zeros(size, dtype=np.int64)
        table_len = np.zeros(size, dtype=np.int64)  # 0: no code starts with these bits
        for sym in np.flatnonzero(lengths):
            n = int(lengths[sym])
            first = int(codes[sym]) << (self.max_len - n)
            table_sym[first : first + (1 << (self.max_len - n))] = sym
            table_len[first : first + (1 << (self.max_len - n))] = n
        self._sym = table_sym.tolist()
        self._len = table_len.tolist()

    def decode(
        self, data: bytes, bit_start: int, bit_limit: int, count: int, filler: int = -1
    ) -> tuple[list[int], int]:
        """Decode from bit `bit_start` until `count` symbols other than `filler` have been read (all of
        them are returned, fillers included); never reads past `bit_limit`. Returns the symbols and the
        bit position after the last one."""
        out: list[int] = []
        if count == 0:
            return out, bit_start
        if self.max_len == 0:
            raise HuffmanError("a stream with no codes has symbols to decode")
        shift_base = 32 - self.max_len
        mask = (1 << self.max_len) - 1
        tsym, tlen = self._sym, self._len
        first_byte = bit_start >> 3
        window = data[first_byte : (bit_limit + 7) >> 3] + b"\0\0\0\0"
        pos = bit_start - first_byte * 8
        limit = bit_limit - first_byte * 8
        frombytes = int.from_bytes
        append = out.append
        while count:
            b = pos >> 3
            peek = (frombytes(window[b : b + 4], "big") >> (shift_base - (pos & 7))) & mask
            n = tlen[peek]
            if n == 0:
                raise HuffmanError(f"invalid code at bit {first_byte * 8 + pos}")
            pos += n
            if pos > limit:
                raise HuffmanError("bit stream ends inside a symbol")
            s = tsym[peek]
            append(s)
            if s != filler:
                count -= 1
        return out, first_byte * 8 + pos
