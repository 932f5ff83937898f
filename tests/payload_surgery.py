"""Byte surgery on payloads (docs/FORMAT.md): header fields by name, byte flips, and the CRC recomputed.

The header's layout comes from the codec (onnx_dc.codec.payload.HEADER, HEADER_SIZE); the CRC-32 is the
last 4 bytes, over every byte before it. Every function takes bytes or a bytearray and returns new bytes.
"""
from __future__ import annotations

import re
import struct
import zlib

from onnx_dc.codec.payload import HEADER, HEADER_SIZE

CRC = struct.Struct("<I")  # the trailing checksum
CRC_SIZE = CRC.size

# The header's fields in docs/FORMAT.md's order; offsets and formats follow from the codec's HEADER struct.
_NAMES = ("magic", "version", "header_size", "total_size", "rank", "weight_bits", "index_bits", "row_count_bits",
          "codebook_size", "rows", "cols", "nnz", "n_index_symbols", "n_chunks", "flags", "index_stream_bytes",
          "weight_stream_bytes")


def _fields() -> dict[str, tuple[int, str]]:
    order, codes = HEADER.format[0], re.findall(r"\d*[a-zA-Z?]", HEADER.format[1:])
    assert len(codes) == len(_NAMES), "the codec's header changed: update payload_surgery._NAMES"
    fields, offset = {}, 0
    for name, code in zip(_NAMES, codes):
        fields[name] = (offset, order + code)
        offset += struct.calcsize(order + code)
    assert offset == HEADER_SIZE
    return fields


FIELDS = _fields()  # name -> (byte offset, struct format)


def dims_field(i: int) -> tuple[int, str]:
    """(offset, format) of dims[i], the u64s right after the header."""
    return HEADER_SIZE + 8 * i, "<Q"


def get_field(blob, name: str):
    offset, fmt = FIELDS[name]
    return struct.unpack_from(fmt, blob, offset)[0]


def set_field(blob, name: str, value) -> bytes:
    """`blob` with header field `name` set to `value` (the CRC is left as it was)."""
    offset, fmt = FIELDS[name]
    return patch(blob, offset, fmt, value)


def patch(blob, offset: int, fmt: str, *values) -> bytes:
    """`blob` with `values` packed (struct format `fmt`) at `offset` (the CRC is left as it was)."""
    b = bytearray(blob)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


def flip(blob, pos: int, mask: int) -> bytes:
    """`blob` with byte `pos` XOR-ed with `mask` (the CRC is left as it was)."""
    b = bytearray(blob)
    b[pos] ^= mask
    return bytes(b)


def crc_of(body) -> bytes:
    """The 4-byte trailer a payload ending in `body` must carry."""
    return CRC.pack(zlib.crc32(bytes(body)))


def fix_crc(blob) -> bytes:
    """`blob` with its last 4 bytes replaced by the CRC of every byte before them."""
    return bytes(blob[:-CRC_SIZE]) + crc_of(blob[:-CRC_SIZE])


def seal(body) -> bytes:
    """A payload from `body` (every byte but the CRC): total_size set to the sealed length, the CRC appended."""
    body = bytearray(body)
    offset, fmt = FIELDS["total_size"]
    if len(body) >= offset + struct.calcsize(fmt):
        struct.pack_into(fmt, body, offset, len(body) + CRC_SIZE)
    return bytes(body) + crc_of(body)


def reseal(blob) -> bytes:
    """Fix total_size and the CRC of an edited payload, so that structural checks (not the checksum or the
    length) must catch the damage; a blob shorter than the CRC is all body."""
    return seal(blob[:-CRC_SIZE] if len(blob) >= CRC_SIZE else blob)
