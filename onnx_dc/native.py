"""The native library, the bottom floor: where libonnx_dc_ops.so is, and a ctypes view of its small C API
(include/onnx_dc/c_api.h: payload decoding and kernels, for the decoder, tests and benchmarks). Sessions
that run the onnx_dc operators are built above the graph layer, in session.py.

The library is looked up in this order:

1. the ``ONNX_DC_LIBRARY`` environment variable (a path to the .so);
2. next to this module, inside the installed package (``pip install .``) or the checkout
   (``bash scripts/build_native.sh`` builds it there).
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

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
        ("blocks", ctypes.c_uint64),
    ]


class _GemmInfo(ctypes.Structure):
    _fields_ = [("stats", _SparseStats), ("kernel", ctypes.c_char * 16), ("form", ctypes.c_char * 16)]


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
        lib.onnx_dc_decode_limit_elements.argtypes = [ctypes.c_uint64]
        lib.onnx_dc_decode_limit_elements.restype = ctypes.c_uint64
        lib.onnx_dc_cpu_features.argtypes = []
        lib.onnx_dc_cpu_features.restype = ctypes.c_uint32
        lib.onnx_dc_gemm_create.argtypes = [u8p, size, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p), err, size]
        lib.onnx_dc_gemm_info.argtypes = [ctypes.c_void_p, ctypes.POINTER(_GemmInfo), err, size]
        lib.onnx_dc_gemm_run.argtypes = [ctypes.c_void_p, ctypes.c_int, f32p, size, f32p, f32p, size, err, size]
        lib.onnx_dc_gemm_free.argtypes = [ctypes.c_void_p]
        lib.onnx_dc_gemm_free.restype = None
        for fn in (lib.onnx_dc_payload_info, lib.onnx_dc_decode_dense, lib.onnx_dc_sparse_stats, lib.onnx_dc_spmm,
                   lib.onnx_dc_gemm_create, lib.onnx_dc_gemm_info, lib.onnx_dc_gemm_run):
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

    def decode_limit_elements(self, payload_bytes: int) -> int:
        """The most elements DCDecode decodes a payload of this many bytes to (operators.decode_limit_elements
        states the same rule)."""
        return int(self._lib.onnx_dc_decode_limit_elements(int(payload_bytes)))

    def cpu_features(self) -> dict:
        """Which kernel sets exist here: {"avx2_compiled": bool, "avx2_runs": bool}."""
        bits = self._lib.onnx_dc_cpu_features()
        return {"avx2_compiled": bool(bits & 1), "avx2_runs": bool(bits & 2)}

    def gemm(self, blob: bytes, options: str = "") -> "NativeGemm":
        """A decoded layer for repeated runs (options: see NativeGemm)."""
        return NativeGemm(self, blob, options)


_NATIVE: list = []


def native_library() -> "NativeLibrary | None":
    """The process-wide NativeLibrary, or None when the library is not built (callers fall back)."""
    if not _NATIVE:
        try:
            _NATIVE.append(NativeLibrary())
        except (LibraryNotFoundError, OSError, AttributeError):
            _NATIVE.append(None)
    return _NATIVE[0]


class NativeGemm:
    """One layer decoded into DCSparseGemm's execution format, as onnxruntime holds it (c_api.h:
    onnx_dc_gemm_*). ``options``: comma-separated ``kernel=auto|scalar|avx2`` (auto: the environment variable
    ONNX_DC_KERNEL if set, else the best this CPU runs) and ``parts=N`` (at most N row parts)."""

    def __init__(self, native: NativeLibrary, blob: bytes, options: str = ""):
        self._lib = native._lib
        self._handle = None
        info = native.payload_info(blob)
        self.rows, self.cols = info["rows"], info["cols"]
        handle = ctypes.c_void_p()
        message = ctypes.create_string_buffer(1024)
        buf = ctypes.create_string_buffer(bytes(blob), len(blob))
        if self._lib.onnx_dc_gemm_create(buf, len(blob), options.encode(), ctypes.byref(handle), message,
                                         len(message)) != 0:
            raise NativeError(message.value.decode("utf-8", "replace"))
        self._handle = handle

    def info(self) -> dict:
        """Execution format and kernel: rows, cols, nnz, resident_bytes, column_index_bytes, parts, blocks,
        kernel ("scalar"/"avx2"), form ("sparse-blocks")."""
        gi = _GemmInfo()
        message = ctypes.create_string_buffer(1024)
        if self._lib.onnx_dc_gemm_info(self._handle, ctypes.byref(gi), message, len(message)) != 0:
            raise NativeError(message.value.decode("utf-8", "replace"))
        out = {name: getattr(gi.stats, name) for name, _ in _SparseStats._fields_}
        out["kernel"], out["form"] = gi.kernel.decode(), gi.form.decode()
        return out

    def run(self, x: np.ndarray, bias: np.ndarray | None = None, mode: str = "fast", threads: int = 1,
            out: np.ndarray | None = None) -> np.ndarray:
        """Y = X · Wᵀ (+ bias) for a 2-D X; mode "reference" (the scalar reference) or "fast" (the kernels, on
        `threads` threads of this call)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.cols:
            raise NativeError(f"x must be [m, {self.cols}], got {x.shape}")
        if bias is not None:
            bias = np.ascontiguousarray(bias, dtype=np.float32)
            if bias.shape != (self.rows,):
                raise NativeError(f"bias must be [{self.rows}], got {bias.shape}")
        y = out if out is not None else np.empty((x.shape[0], self.rows), dtype=np.float32)
        if y.shape != (x.shape[0], self.rows) or y.dtype != np.float32 or not y.flags.c_contiguous:
            raise NativeError("out has the wrong shape, type or layout")
        message = ctypes.create_string_buffer(1024)
        modes = {"reference": 0, "fast": 1}
        if self._lib.onnx_dc_gemm_run(self._handle, modes[mode], x.ctypes.data, x.shape[0],
                                      None if bias is None else bias.ctypes.data, y.ctypes.data, int(threads),
                                      message, len(message)) != 0:
            raise NativeError(message.value.decode("utf-8", "replace"))
        return y

    def close(self) -> None:
        if self._handle is not None:
            self._lib.onnx_dc_gemm_free(self._handle)
            self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
