"""The C++ payload reader against the Python one (docs/FORMAT.md has one definition, two readers).

Payloads come from the project's writer; the C++ side is reached through the library's C API (ctypes)
and through a one-node DCDecode model in onnxruntime. Every accepted payload must decode to exactly the
matrix the Python reader gives, and with the checksum off (the fuzzers' setting) both readers must
accept and reject the same corrupted blobs.
"""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnx_dc.codec.payload import PayloadError, read_payload
from onnx_dc.native import NativeError
from op_models import decode_model, python_dense, random_payload
import payload_surgery as surgery
from repo_paths import VECTORS

# dims, density, weight bits, index bits, huffman, chunk symbols
CASES = [
    ((6, 10), 0.5, 3, 3, True, None),
    ((300, 784), 0.1, 5, 5, True, None),  # a LeNet-300-100 layer
    ((100, 300), 0.08, 5, 5, True, 64),  # many chunks
    ((64, 1000), 0.01, 4, 2, True, None),  # 2-bit indices: mostly fillers
    ((64, 1000), 0.01, 4, 1, True, None),  # 1-bit indices: every gap is fillers
    ((40, 70), 1.0, 8, 4, True, None),  # nothing pruned
    ((40, 70), 0.0, 2, 4, True, None),  # everything pruned
    ((33, 65), 0.3, 1, 16, True, None),  # 1-bit codebook, 16-bit indices
    ((33, 65), 0.3, 8, 8, False, None),  # fixed-width codes
    ((16, 3, 3, 3), 0.5, 8, 8, True, None),  # a conv kernel
    ((50,), 0.6, 4, 4, True, None),  # rank 1
    ((2, 3, 4, 5, 2, 1, 1, 3), 0.4, 3, 3, True, 8),  # rank 8
    ((0, 5), 0.5, 3, 3, True, None),  # no rows
    ((7, 0), 0.5, 3, 3, True, None),  # no columns
    ((1, 1), 1.0, 1, 1, True, None),
    ((5, 70000), 0.001, 3, 16, True, None),  # K > 65536: 32-bit columns
]


def _case_blob(i):
    dims, density, wb, ib, huff, chunks = CASES[i]
    return random_payload(np.random.default_rng(100 + i), dims, density, wb, ib, huffman=huff, chunk_symbols=chunks)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{c[0]}-d{c[1]}-w{c[2]}-i{c[3]}" for c in CASES])
def test_cpp_decodes_what_python_decodes(native, i):
    blob = _case_blob(i)
    expected = python_dense(blob)
    got = native.decode_dense(blob)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))  # bit for bit
    info = native.payload_info(blob)
    py = read_payload(blob).info
    assert (info["rows"], info["cols"], info["nnz"]) == (py.rows, py.cols, py.nnz)
    assert info["dims"] == py.dims


@pytest.mark.parametrize("i", [0, 1, 3, 9, 10, 11, 12, 13])
def test_dcdecode_in_onnxruntime(lib_path, i):
    from onnx_dc.session import make_session
    blob = _case_blob(i)
    expected = python_dense(blob)
    for threads in (1, 2):
        sess = make_session(decode_model(blob), intra_op_threads=threads)
        for _ in range(2):  # decoded once, copied every run
            (got,) = sess.run(None, {})
            assert got.shape == expected.shape
            assert np.array_equal(got, expected)


def _expected_blocks(blob):
    """Blocks of the execution format (gemm.h) from the Python reader's matrix: per row, each cluster's
    entries in blocks of 4."""
    dense = python_dense(blob).reshape(read_payload(blob).info.rows, -1)
    blocks = 0
    for row in dense:
        # Equal values are one cluster (the writer's codebooks have distinct values).
        _, counts = np.unique(row[row != 0], return_counts=True)
        blocks += int(np.sum(-(-counts // 4)))
    return blocks


def test_execution_format_size(native):
    blob = _case_blob(1)  # 300 x 784, K < 65536
    s = native.sparse_stats(blob)
    assert s["column_index_bytes"] == 2 and s["nnz"] == read_payload(blob).info.nnz
    assert s["blocks"] == _expected_blocks(blob)
    # 2 bytes per slot (4 per block) + 4 per block (its codebook value) + 8 per row + a small fixed part (the
    # struct, the partition, 4 floats of slack).
    assert 12 * s["blocks"] + 8 * (s["rows"] + 1) <= s["resident_bytes"] <= 12 * s["blocks"] + 8 * (s["rows"] + 1) + 2048
    wide = native.sparse_stats(_case_blob(15))
    assert wide["column_index_bytes"] == 4 and wide["blocks"] == _expected_blocks(_case_blob(15))


def test_sparse_stats_rejects_non_matrix_payloads(native):
    with pytest.raises(NativeError, match="rank-2"):
        native.sparse_stats(_case_blob(9))


# ---- checked-in vectors: the format cannot drift in both readers at once ------------------------------------

def _vectors():
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    return manifest["vectors"]


@pytest.mark.parametrize("vec", _vectors(), ids=lambda v: v["file"])
def test_checked_in_vectors(native, vec):
    blob = (VECTORS / vec["file"]).read_bytes()
    if vec["valid"]:
        expected = np.load(VECTORS / vec["dense"])
        assert np.array_equal(python_dense(blob), expected)
        assert np.array_equal(native.decode_dense(blob), expected)
    else:
        with pytest.raises(PayloadError):
            read_payload(blob)
        with pytest.raises(NativeError, match=vec["error"]):
            native.decode_dense(blob)


# ---- differential fuzzing with the checksum off ----------------------------------------------------------------

def _python_result(blob):
    try:
        return read_payload(blob, check_crc=False).dense()
    except PayloadError:
        return None


def _native_result(native, blob):
    try:
        return native.decode_dense(blob, check_crc=False)
    except NativeError:
        return None


_BASES = [_case_blob(i) for i in (0, 2, 3, 8, 10, 13)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from(range(len(_BASES))), edits=st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4), fix_crc=st.booleans())
def test_both_readers_agree_on_corrupted_blobs(native, base, edits, fix_crc):
    blob = bytearray(_BASES[base])
    for pos, value in edits:
        blob[pos % len(blob)] = value
    blob = surgery.fix_crc(blob) if fix_crc else bytes(blob)
    py, cc = _python_result(blob), _native_result(native, blob)
    assert (py is None) == (cc is None), f"python {'rejects' if py is None else 'accepts'}, C++ disagrees"
    if py is not None:
        assert py.shape == cc.shape and np.array_equal(py.view(np.uint32), cc.view(np.uint32))


# (offset, format) of every header field but magic, then dims[0] and dims[1].
_FIELDS = [surgery.FIELDS[name] for name in list(surgery.FIELDS)[1:]] + [surgery.dims_field(0), surgery.dims_field(1)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from(range(len(_BASES))), field=st.sampled_from(_FIELDS),
    value=st.one_of(st.integers(0, 300), st.sampled_from([2**31, 2**32 - 1, 2**32, 2**62, 2**63, 2**64 - 1])))
def test_both_readers_agree_on_header_values(native, base, field, value):
    """Header fields set to boundary values, with a valid checksum: the structural checks decide."""
    blob = bytearray(_BASES[base])
    offset, fmt = field
    value &= (1 << (8 * struct.calcsize(fmt))) - 1
    if offset + struct.calcsize(fmt) > len(blob) - surgery.CRC_SIZE:
        return
    blob = surgery.fix_crc(surgery.patch(blob, offset, fmt, value))
    py = _python_result(blob) if _small_enough(blob) else "skip"
    if isinstance(py, str):
        return
    cc = _native_result(native, blob)
    assert (py is None) == (cc is None), f"python {'rejects' if py is None else 'accepts'}, C++ disagrees"
    if py is not None:
        assert np.array_equal(py.view(np.uint32), cc.view(np.uint32))


def _small_enough(blob) -> bool:
    """Both readers allocate the dense tensor: keep mutated dims to what a test may allocate."""
    rows, cols = surgery.get_field(blob, "rows"), surgery.get_field(blob, "cols")
    return rows * cols <= 1 << 22
