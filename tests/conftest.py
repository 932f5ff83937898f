"""Fixtures shared across tests/: the native library under test (`lib_path`) and its ctypes view (`native`).

tests/ itself is on sys.path (pytest's default 'prepend' import mode puts this file's folder there), so
test modules in the subfolders import the helper modules beside this file: builders (model builders),
native_lib (building and finding the library), op_models (payloads and one-node operator models),
payload_surgery (byte edits and CRCs) and repo_paths. Test files carry unique basenames across folders.
"""
import pytest

from native_lib import native_library


@pytest.fixture(scope="module")
def lib_path() -> str:
    """Path of libonnx_dc_ops.so built from this checkout; skips (fails under CI=true) where it cannot be."""
    return native_library()


@pytest.fixture(scope="module")
def native(lib_path):
    """onnx_dc.native.NativeLibrary on `lib_path`: the C API through ctypes."""
    from onnx_dc.native import NativeLibrary
    return NativeLibrary(lib_path)
