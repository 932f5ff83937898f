"""The payload writer and reader (onnx_dc.codec.payload): exact round trips, edge cases, and hostile blobs."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnx_dc.codec import compress_tensor, decode_dense, read_payload, write_payload
from onnx_dc.codec.payload import HEADER_SIZE, PayloadError, read_info
from onnx_dc.codec.prune import keep_count
from payload_surgery import FIELDS, flip, patch, reseal


def _pack(dense_mask, labels, codebook, wbits, ibits, **kw):
    return write_payload(dense_mask.shape, dense_mask, labels, codebook, wbits, ibits, **kw)[0]


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 40), cols=st.integers(1, 200), sparsity=st.floats(0, 0.99), bits=st.integers(1, 8),
       index_bits=st.integers(1, 10), huffman=st.booleans(), seed=st.integers(0, 2**16))
def test_decoding_gives_exactly_the_pruned_and_quantized_matrix(rows, cols, sparsity, bits, index_bits, huffman, seed):
    w = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    c = compress_tensor(w, sparsity, bits, index_bits, huffman=huffman)
    dense = decode_dense(c.payload)
    assert dense.dtype == np.float32 and np.array_equal(dense, c.dense)
    p = read_payload(c.payload)
    assert p.info.nnz == c.nnz == keep_count(rows * cols, sparsity)
    # Each kept weight became its nearest shared value, and there are at most 2^bits of them.
    kept = w.reshape(rows, cols)[np.repeat(np.arange(rows), p.row_nnz), p.columns]
    nearest = np.abs(kept[:, None] - p.info.codebook[None, :]).min(axis=1)
    assert np.allclose(np.abs(kept - p.info.codebook[p.labels]), nearest)
    assert p.info.codebook.size <= 2**bits


@pytest.mark.parametrize("index_bits", [1, 3, 5])
def test_edge_cases_round_trip(index_bits):
    f = (1 << index_bits) - 1
    cols = 5 * (f + 1) + 7
    m = np.zeros((8, cols), dtype=bool)
    m[1, 0] = True  # first column
    m[1, cols - 1] = True  # last column
    m[2, f - 1] = True  # gap of exactly 2^b - 2 (largest without filler)
    m[3, f] = True  # gap of exactly 2^b - 1: one filler
    m[4, f + 1] = True  # gap of 2^b
    m[5, cols - 1] = True  # a gap far wider than the index allows
    m[6, :] = True  # a full row
    # rows 0 and 7 are empty
    labels = np.arange(m.sum()) % 3
    codebook = np.array([-1.5, 0.25, 2.0], np.float32)
    blob = _pack(m, labels, codebook, 2, index_bits)
    p = read_payload(blob)
    assert p.row_nnz.tolist() == m.sum(axis=1).tolist()
    expect = np.zeros(m.shape, np.float32)
    expect[m] = codebook[labels]
    assert np.array_equal(p.dense(), expect)


def test_all_zero_layer_and_single_nonzero():
    blob = _pack(np.zeros((3, 4), bool), np.zeros(0, int), np.zeros(1, np.float32), 1, 4)
    assert np.array_equal(decode_dense(blob), np.zeros((3, 4), np.float32))
    m = np.zeros((3, 4), bool)
    m[2, 3] = True
    blob = _pack(m, np.array([0]), np.array([0.5], np.float32), 1, 4)
    assert decode_dense(blob)[2, 3] == 0.5 and decode_dense(blob).sum() == 0.5


def test_conv_shaped_tensor_and_one_distinct_value():
    w = np.full((4, 3, 3, 3), 0.7, np.float32)
    c = compress_tensor(w, 0.5, 8, 8)
    d = decode_dense(c.payload)
    assert d.shape == (4, 3, 3, 3) and set(np.unique(d)) == {0.0, np.float32(0.7)}


def test_code_length_limit_is_hit():
    # Exponentially skewed cluster frequencies need codes longer than 12 bits unless limited.
    counts = [2**i for i in range(15)]
    labels = np.repeat(np.arange(15), counts)
    m = np.zeros((1, labels.size), bool)
    m[0, :] = True
    blob, _ = write_payload(m.shape, m, labels, np.arange(15, dtype=np.float32), 4, 2)
    _, sections = read_info(blob)
    assert sections["weight_lengths"].max() == 12
    assert np.array_equal(read_payload(blob).labels, labels)


def test_chunks_decode_independently():
    w = np.random.default_rng(0).standard_normal((64, 500)).astype(np.float32)
    c = compress_tensor(w, 0.5, 5, 4)
    info, sections = read_info(c.payload)
    assert info.n_chunks > 1
    assert np.array_equal(decode_dense(c.payload), c.dense)


# --- the reader is the security boundary -------------------------------------------------------------

def _blob():
    w = np.random.default_rng(5).standard_normal((12, 40)).astype(np.float32)
    return compress_tensor(w, 0.7, 3, 3).payload


BLOB = _blob()


def _expect_clean_error(blob):
    try:
        p = read_payload(blob)
    except PayloadError as exc:
        assert str(exc)
        return None
    return p


@given(st.integers(0, len(BLOB) - 1), st.integers(1, 255))
def test_any_flipped_byte_is_detected(pos, xor):
    with pytest.raises(PayloadError):
        read_payload(flip(BLOB, pos, xor))


@given(st.integers(0, len(BLOB) - 1))
def test_any_truncation_is_detected(cut):
    with pytest.raises(PayloadError):
        read_payload(BLOB[:cut])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(BLOB) - 5), st.integers(0, 255)), min_size=1, max_size=4))
def test_structurally_damaged_payloads_fail_cleanly(edits):
    """With the checksum recomputed, structural validation alone must stop every inconsistency: the only
    outcomes are a PayloadError or a payload that decodes to a matrix of the declared shape."""
    bad = bytearray(BLOB)
    for pos, value in edits:
        bad[pos] = value
    p = _expect_clean_error(reseal(bad))
    if p is not None:
        d = p.dense()
        assert d.shape == p.info.dims


@pytest.mark.parametrize("field,offset,fmt,value,message", [
    ("magic", *FIELDS["magic"], b"XXXX", "not an onnx-dc payload"),
    ("version", *FIELDS["version"], 2, "unsupported payload version 2"),
    ("rank", *FIELDS["rank"], 9, "rank 9"),
    ("weight bits", *FIELDS["weight_bits"], 0, "weight bits 0"),
    ("codebook size", *FIELDS["codebook_size"], 1000, "codebook size"),
    ("nnz", *FIELDS["nnz"], 10**9, "nnz"),
    ("chunks", *FIELDS["n_chunks"], 0, "chunks"),
    ("flags", *FIELDS["flags"], 2, "unknown flags"),
])
def test_inconsistent_header_fields_are_named(field, offset, fmt, value, message):
    with pytest.raises(PayloadError, match=message):
        read_payload(reseal(patch(BLOB, offset, fmt, value)))


def test_checksum_mismatch_is_reported_as_corruption():
    with pytest.raises(PayloadError, match="checksum"):
        read_payload(flip(BLOB, HEADER_SIZE + 20, 1))
