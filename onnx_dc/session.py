"""onnxruntime sessions, made in one place: the public `make_session` (the onnx_dc library registered, the
DCDecode constants predecoded in memory), `session_for` (any model file, compressed or not), and the plain
sessions the data-aware path and the conv timing run. Above the graph layer: predecoding rewrites graphs."""
from __future__ import annotations

import os
from typing import Any

import onnx
import onnxruntime as ort

from .graph.decompress import decode_constant_payloads
from .graph.model_io import PROTOBUF_LIMIT, proto_size
from .native import get_library_path
from .operators import is_onnx_dc

CPU = ["CPUExecutionProvider"]


def new_session(model: Any, threads: int | None = None, inter_op_threads: int | None = None, library: bool = False,
                quiet: bool = False, providers: list | None = None, sess_options=None, **kw: Any):
    """The one factory: an InferenceSession for a path, serialized bytes or an onnx.ModelProto. `library`:
    register libonnx_dc_ops.so; `threads` / `inter_op_threads`: the session's thread counts (None or 0:
    onnxruntime's default); `quiet`: errors only in onnxruntime's log; `sess_options` is modified."""
    options = sess_options or ort.SessionOptions()
    if library:
        options.register_custom_ops_library(get_library_path())
    if threads:
        options.intra_op_num_threads = int(threads)
    if inter_op_threads:
        options.inter_op_num_threads = int(inter_op_threads)
    if quiet:
        options.log_severity_level = 3
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    return ort.InferenceSession(model, sess_options=options, providers=providers or CPU, **kw)


def make_session(model_path_or_bytes: Any, intra_op_threads: int | None = None, providers: list | None = None,
                 predecode: bool = True, **kw: Any):
    """An ``onnxruntime.InferenceSession`` that can run the ``onnx_dc`` operators.

    ``model_path_or_bytes``: a path, serialized model bytes, or an ``onnx.ModelProto``.
    ``intra_op_threads``: the session's intra-op thread count (None: onnxruntime's default).
    ``providers``: defaults to ``["CPUExecutionProvider"]`` (the library's kernels are CPU kernels).
    ``predecode``: decode the ``DCDecode`` constants (dense-run conv kernels, other constants) into plain
    initializers in memory before the session is created, so that onnxruntime optimizes their consumers as
    it would the original model's (it never constant-folds a custom operator); the file is not changed.
    ``sess_options`` may be passed in ``kw``; the library is registered into it (so it is modified).
    Other keyword arguments go to ``InferenceSession``.
    """
    if isinstance(model_path_or_bytes, os.PathLike):
        model_path_or_bytes = os.fspath(model_path_or_bytes)
    if predecode:
        model_path_or_bytes = _predecoded(model_path_or_bytes)
    return new_session(model_path_or_bytes, threads=intra_op_threads, library=True, providers=providers, **kw)


def _predecoded(model: Any) -> Any:
    """`model` with its DCDecode constants decoded (serialized bytes), or `model` itself when it has none,
    when the result would not fit in one protobuf, or when anything about it is wrong (a file that does not
    parse, a payload the reader refuses, a tensor too large to decode): onnxruntime then loads the model as
    it is and reports what is wrong in its usual way. Predecoding is an optimization, never a new failure."""
    try:
        return _predecode(model)
    except Exception:  # noqa: BLE001 - see above: the session reports the problem, not this shortcut
        return model


def _predecode(model: Any) -> Any:
    if isinstance(model, str):
        proto = onnx.load(model, load_external_data=False)
        if not any(n.op_type == "DCDecode" and is_onnx_dc(n) for n in proto.graph.node):
            return model
        onnx.load_external_data_for_model(proto, os.path.dirname(os.path.abspath(model)))
    elif isinstance(model, (bytes, bytearray)):
        proto = onnx.ModelProto()
        proto.ParseFromString(bytes(model))
    else:
        proto = model
    decoded, count = decode_constant_payloads(proto)
    if not count or proto_size(decoded) >= PROTOBUF_LIMIT:
        return model
    return decoded.SerializeToString()


def session_for(path, threads: int | None = None):
    """An onnxruntime session for any model file; a compressed one gets the onnx-dc library registered."""
    path = str(path)
    model = onnx.load(path, load_external_data=False)
    if any(is_onnx_dc(n) for n in model.graph.node):
        return make_session(path, intra_op_threads=threads)
    return new_session(path, threads=threads)
