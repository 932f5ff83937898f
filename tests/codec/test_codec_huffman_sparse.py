"""Huffman codes (canonical, length-limited) and the relative sparse index with fillers (onnx_dc.codec)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onnx_dc.codec import huffman
from onnx_dc.codec.sparse import decode_relative, encode_relative


@given(st.lists(st.integers(0, 63), min_size=1, max_size=2000), st.integers(6, 16))
def test_huffman_round_trip(symbols, limit):
    symbols = np.array(symbols)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=64), limit)
    assert lengths.max() <= limit
    data, offsets = huffman.encode(symbols, lengths)
    decoded, end = huffman.Decoder(lengths).decode(data, 0, 8 * len(data), symbols.size)
    assert decoded == symbols.tolist() and end == offsets[-1] and len(data) == (end + 7) // 8


def test_huffman_is_optimal_when_unconstrained():
    freqs = np.array([45, 13, 12, 16, 9, 5])  # the CLRS example: cost 224
    lengths = huffman.code_lengths(freqs, 16)
    assert (lengths * freqs).sum() == 224


def test_huffman_length_limit_is_hit_and_kept():
    freqs = np.array([2**i for i in range(20)])  # Fibonacci-like skew: unconstrained depth 19
    lengths = huffman.code_lengths(freqs, 8)
    assert lengths.max() == 8
    assert np.ldexp(1.0, -lengths.astype(int)).sum() <= 1.0
    symbols = np.repeat(np.arange(20), 3)
    data, _ = huffman.encode(symbols, lengths)
    assert huffman.Decoder(lengths).decode(data, 0, 8 * len(data), symbols.size)[0] == symbols.tolist()


def test_one_distinct_symbol_uses_one_bit():
    lengths = huffman.code_lengths(np.array([0, 0, 7, 0]))
    assert lengths.tolist() == [0, 0, 1, 0]
    data, offsets = huffman.encode(np.array([2] * 7), lengths)
    assert offsets[-1] == 7 and data == b"\x00"


def test_canonical_codes_match_rfc1951_example():
    # RFC 1951 §3.2.2: lengths (3,3,3,3,3,2,4,4) give codes 010,011,100,101,110,00,1110,1111
    codes = huffman.canonical_codes(np.array([3, 3, 3, 3, 3, 2, 4, 4]))
    assert codes.tolist() == [0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111]


def test_decoder_rejects_oversubscribed_and_unassigned_codes():
    with pytest.raises(huffman.HuffmanError, match="over-subscribed"):
        huffman.Decoder(np.array([1, 1, 1]))
    dec = huffman.Decoder(np.array([1, 0, 0]))  # only code '0' exists
    with pytest.raises(huffman.HuffmanError, match="invalid code"):
        dec.decode(b"\x80", 0, 8, 1)
    with pytest.raises(huffman.HuffmanError, match="ends inside"):
        huffman.Decoder(np.array([2, 2, 2, 2])).decode(b"\x00", 0, 3, 2)


def _mask(rows, cols, density, seed):
    return np.random.default_rng(seed).random((rows, cols)) < density


@given(st.integers(1, 20), st.integers(1, 300), st.floats(0, 1), st.integers(1, 9), st.integers(0, 1000))
def test_relative_index_round_trip(rows, cols, density, bits, seed):
    mask = _mask(rows, cols, density, seed)
    rel = encode_relative(mask, bits)
    cols_dec = decode_relative(rel.symbols, rel.row_nnz, bits, cols)
    r, c = np.nonzero(mask)
    assert np.array_equal(cols_dec, c)
    assert rel.symbols.max(initial=0) <= (1 << bits) - 1


@pytest.mark.parametrize("bits", [1, 2, 3, 5])
def test_filler_gaps_at_the_boundaries(bits):
    f = (1 << bits) - 1
    cols = 4 * f + 3
    for gap in (f - 1, f, f + 1, 2 * f, 3 * f + 2):
        mask = np.zeros((1, cols), bool)
        mask[0, gap] = True
        rel = encode_relative(mask, bits)
        assert rel.fillers == gap // f
        assert rel.symbols[-1] == gap % f
        assert decode_relative(rel.symbols, rel.row_nnz, bits, cols).tolist() == [gap]


def test_worked_example_of_the_format_document():
    mask = np.zeros((1, 21), bool)
    mask[0, [2, 3, 20]] = True
    assert encode_relative(mask, 3).symbols.tolist() == [2, 0, 7, 7, 2]


def test_decode_relative_rejects_out_of_range_columns():
    with pytest.raises(ValueError, match="beyond"):
        decode_relative(np.array([7, 7, 5]), np.array([1]), 3, 10)
