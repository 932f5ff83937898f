"""The native library: where libonnx_dc_ops.so is, onnxruntime sessions that run onnx_dc operators, and a
ctypes view of the library's small C API (payload decoding and kernels, for tests and benchmarks).

The library is looked up in this order:

1. the ``ONNX_DC_LIBRARY`` environment variable (a path to the .so);
2. next to this module, inside the installed package (``pip install .``) or the checkout
   (``bash scripts/build_native.sh`` builds it there).
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import numpy as np

LIBRARY_NAME = "libonnx_dc_ops.so"
LIBRARY_ENV = "ONNX_DC_LIBRARY"
SETUP_HINT = (
    "build it with `bash scripts/setup.sh` (first time) or `bash scripts/build_native.sh` (after changes) in a "
    "checkout, install the package with `pip install .`, or set ONNX_DC_LIBRARY to the library's path"
)


class LibraryNotFoundError(FileNotFoundError):
    """libonnx_dc_ops.so is neither named by ONNX_DC_LIBRARY nor installed next to the package."""


def get_library_path() -> str:
    """Absolute path of libonnx_dc_ops.so, for ``SessionOptions.register_custom_ops_library``."""
    override = os.environ.get(LIBRARY_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise LibraryNotFoundError(f"{LIBRARY_ENV}={override!r} does not name a file")
        return str(path.resolve())
    path = Path(__file__).resolve().parent / LIBRARY_NAME
    if path.is_file():
        return str(path)
    raise LibraryNotFoundError(f"the onnx_dc native library {LIBRARY_NAME} is not in {path.parent}: {SETUP_HINT}")


def make_session(model_path_or_bytes: Any, intra_op_threads: int | None = None, providers: list | None = None,
                 **kw: Any):
    """An ``onnxruntime.InferenceSession`` that can run the ``onnx_dc`` operators.

    ``model_path_or_bytes``: a path, serialized model bytes, or an ``onnx.ModelProto``.
    ``intra_op_threads``: the session's intra-op thread count (None: onnxruntime's default).
    ``providers``: defaults to ``["CPUExecutionProvider"]`` (the library's kernels are CPU kernels).
    ``sess_options`` may be passed in ``kw``; the library is registered into it (so it is modified).
    Other keyword arguments go to ``InferenceSession``.
    """
    import onnxruntime as ort

    options = kw.pop("sess_options", None) or ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    if intra_op_threads is not None:
        options.intra_op_num_threads = int(intra_op_threads)
    if hasattr(model_path_or_bytes, "SerializeToString"):
        model_path_or_bytes = model_path_or_bytes.SerializeToString()
    elif isinstance(model_path_or_bytes, os.PathLike):
        model_path_or_bytes = os.fspath(model_path_or_bytes)
    return ort.InferenceSession(model_path_or_bytes, sess_options=options,
                                providers=providers or ["CPUExecutionProvider"], **kw)


# ---- ctypes view of include/onnx_dc/c_api.h --------------------------------------------------------------

class NativeError(ValueError):
    """The native library rejected a payload or a call; the message is the library's."""


class _PayloadInfo(ctypes.Structure):
    _fields_ = [
        ("rank", ctypes.c_uint32), ("dims", ctypes.c_uint64 * 8),
        ("rows", ctypes.c_uint64), ("cols", ctypes.c_uint64), ("nnz", ctypes.c_uint64),
        ("n_index_symbols", ctypes.c_uint64),
        ("weight_bits", ctypes.c_uint32), ("index_bits", ctypes.c_uint32), ("codebook_size", ctypes.c_uint32),
        ("n_chunks", ctypes.c_uint32),
        ("index_stream_bytes", ctypes.c_uint64), ("weight_stream_bytes", ctypes.c_uint64),
        ("total_size", ctypes.c_uint64),
    ]


class _SparseStats(ctypes.Structure):
    _fields_ = [
        ("rows", ctypes.c_uint64), ("cols", ctypes.c_uint64), ("nnz", ctypes.c_uint64),
        ("resident_bytes", ctypes.c_uint64), ("column_index_bytes", ctypes.c_uint32), ("parts", ctypes.c_uint32),
    ]


class NativeLibrary:
    """The payload reader and kernels of libonnx_dc_ops.so, called directly (no onnxruntime involved)."""

    def __init__(self, path: str | None = None):
        self.path = path or get_library_path()
        lib = ctypes.CDLL(self.path)
        u8p, f32p, err = ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p
        size = ctypes.c_size_t
        lib.onnx_dc_payload_info.argtypes = [u8p, size, ctypes.c_int, ctypes.POINTER(_PayloadInfo), err, size]
        lib.onnx_dc_decode_dense.argtypes = [u8p, size, ctypes.c_int, f32p, size, err, size]
        lib.onnx_dc_sparse_stats.argtypes = [u8p, size, ctypes.c_int, ctypes.POINTER(_SparseStats), err, size]
        lib.onnx_dc_spmm.argtypes = [u8p, size, ctypes.c_int, f32p, size, f32p, f32p, err, size]
        for fn in (lib.onnx_dc_payload_info, lib.onnx_dc_decode_dense, lib.onnx_dc_sparse_stats, lib.onnx_dc_spmm):
            fn.restype = ctypes.c_int
        self._lib = lib

    @staticmethod
    def _call(fn, blob: bytes, *args) -> None:
        message = ctypes.create_string_buffer(1024)
        buf = ctypes.create_string_buffer(bytes(blob), len(blob)) if blob else None
        if fn(buf, len(blob), *args, message, len(message)) != 0:
            raise NativeError(message.value.decode("utf-8", "replace"))

    def payload_info(self, blob: bytes, check_crc: bool = True) -> dict:
        info = _PayloadInfo()
        self._call(self._lib.onnx_dc_payload_info, blob, int(check_crc), ctypes.byref(info))
        out = {name: getattr(info, name) for name, _ in _PayloadInfo._fields_ if name != "dims"}
        out["dims"] = tuple(info.dims[: info.rank])
        return out

    def decode_dense(self, blob: bytes, check_crc: bool = True) -> np.ndarray:
        dims = self.payload_info(blob, check_crc)["dims"]
        out = np.zeros(int(np.prod(dims, dtype=np.uint64)), dtype=np.float32)
        self._call(self._lib.onnx_dc_decode_dense, blob, int(check_crc), out.ctypes.data, out.size)
        return out.reshape(dims)

    def sparse_stats(self, blob: bytes, check_crc: bool = True) -> dict:
        stats = _SparseStats()
        self._call(self._lib.onnx_dc_sparse_stats, blob, int(check_crc), ctypes.byref(stats))
        return {name: getattr(stats, name) for name, _ in _SparseStats._fields_}

    def spmm(self, blob: bytes, x: np.ndarray, bias: np.ndarray | None = None, kernel: str = "fast") -> np.ndarray:
        """Y = X · Wᵀ (+ bias) for a 2-D X, on the calling thread; kernel "reference" or "fast"."""
        info = self.payload_info(blob)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != info["cols"]:
            raise NativeError(f"x must be [m, {info['cols']}], got {x.shape}")
        if bias is not None:
            bias = np.ascontiguousarray(bias, dtype=np.float32)
            if bias.shape != (info["rows"],):
                raise NativeError(f"bias must be [{info['rows']}], got {bias.shape}")
        y = np.empty((x.shape[0], info["rows"]), dtype=np.float32)
        kernels = {"reference": 0, "fast": 1}
        self._call(self._lib.onnx_dc_spmm, blob, kernels[kernel], x.ctypes.data, x.shape[0],
                   None if bias is None else bias.ctypes.data, y.ctypes.data)
        return y
