"""Turn a compressed model back into a standard ONNX model (dense, pruned and quantized weights)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..codec.payload import PayloadError, read_info, read_payload
from ..native import NativeError, native_library
from ..operators import DOMAIN, PAYLOAD_INPUT, decode_limit_elements
from .rewrite import META_LAYERS, FreshNames, get_metadata


def decode_dense_fast(blob: bytes) -> np.ndarray:
    """The dense tensor of a payload: by the native library's reader when it is built (hundreds of MB/s),
    else by the Python reader (the specification; a few MB/s). Both validate the same rules."""
    native = native_library()
    if native is None:
        return read_payload(blob).dense()
    try:
        return native.decode_dense(blob)
    except NativeError as exc:
        raise PayloadError(str(exc)) from None


def decompress_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every onnx_dc node by the operator it came from (Gemm, MatMul, MatMul+Add, a dense
    constant), restoring the original names and weight layouts where the model's metadata records them."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    records = {r["node"]: r for r in get_metadata(model, META_LAYERS, []) or [] if isinstance(r, dict) and "node" in r}
    inits = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.domain == DOMAIN and (n.op_type not in PAYLOAD_INPUT or len(n.input) <= PAYLOAD_INPUT[n.op_type]):
            raise ValueError(f"unknown operator {DOMAIN}.{n.op_type} or missing payload input (node {n.name!r})")
    payload_names = {n.input[PAYLOAD_INPUT[n.op_type]] for n in g.node if n.domain == DOMAIN}
    decoded = {}
    for name in payload_names:
        if name not in inits:
            raise ValueError(f"payload {name!r} is not an initializer of the model")
        decoded[name] = decode_dense_fast(numpy_helper.to_array(inits[name]).tobytes())
    names = FreshNames(out)
    # The original weight names are free again once the payloads are gone.
    for r in records.values():
        names.used.discard(r.get("weight"))
    new_inits: dict[str, onnx.TensorProto] = {}
    weight_for: dict[tuple, str] = {}  # (payload, layout) -> dense initializer name

    def dense_weight(payload: str, transpose: bool, preferred: str) -> str:
        key = (payload, transpose)
        if key not in weight_for:
            name = names.fresh(preferred)
            w = decoded[payload]
            new_inits[name] = numpy_helper.from_array(np.ascontiguousarray(w.T if transpose else w), name)
            weight_for[key] = name
        return weight_for[key]

    new_nodes = []
    for node in g.node:
        if node.domain != DOMAIN:
            new_nodes.append(node)
            continue
        rec = records.get(node.name, {})
        if node.op_type == "DCDecode":
            out_name = node.output[0]
            new_inits[out_name] = numpy_helper.from_array(decoded[node.input[0]], out_name)
            continue
        if node.op_type == "DCSparseConv":
            w = dense_weight(node.input[1], False, rec.get("weight") or f"{node.input[1]}_dense")
            conv = helper.make_node("Conv", [node.input[0], w] + [i for i in node.input[2:3] if i], [node.output[0]],
                                    name=node.name)
            conv.attribute.extend(node.attribute)
            new_nodes.append(conv)
            continue
        if node.op_type == "DCGather":
            w = dense_weight(node.input[0], False, rec.get("weight") or f"{node.input[0]}_dense")
            new_nodes.append(helper.make_node("Gather", [w, node.input[1]], [node.output[0]], name=node.name,
                                              axis=int(rec.get("axis", 0))))
            continue
        x, payload = node.input[0], node.input[1]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        preferred = rec.get("weight") or f"{payload}_dense"
        op = rec.get("op", "MatMul+Add" if bias else "MatMul")
        if op == "Gemm":
            trans_b = int(rec.get("trans_b", 1))
            w = dense_weight(payload, not trans_b, preferred)
            new_nodes.append(helper.make_node("Gemm", [x, w] + ([bias] if bias else []), [node.output[0]],
                                              name=rec.get("original_node") or node.name, transB=trans_b))
        else:
            w = dense_weight(payload, True, preferred)
            if bias:
                mid = rec.get("matmul_output") or names.fresh(f"{node.output[0]}_matmul")
                new_nodes.append(helper.make_node("MatMul", [x, w], [mid], name=rec.get("original_node") or node.name))
                new_nodes.append(helper.make_node("Add", [mid, bias], [node.output[0]],
                                                  name=rec.get("add_node") or names.fresh(f"{node.name}_add")))
            else:
                new_nodes.append(helper.make_node("MatMul", [x, w], [node.output[0]],
                                                  name=rec.get("original_node") or node.name))
    del g.node[:]
    g.node.extend(new_nodes)
    kept = [t for t in g.initializer if t.name not in payload_names]
    del g.initializer[:]
    g.initializer.extend(kept + list(new_inits.values()))
    # Dense constants are initializers now, not node outputs: their value_info entries go.
    vis = [v for v in g.value_info if v.name not in new_inits]
    del g.value_info[:]
    g.value_info.extend(vis)
    ops = [o for o in out.opset_import if o.domain != DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(ops)
    props = [p for p in out.metadata_props if not p.key.startswith("onnx_dc.")]
    del out.metadata_props[:]
    out.metadata_props.extend(props)
    return out


def decode_constant_payloads(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(the model with every DCDecode node replaced by the dense initializer it produces, how many).

    onnxruntime never constant-folds a custom operator, so behind DCDecode a Conv kernel or any other
    constant is a run-time value: its consumer loses the graph optimizations that need an initializer
    (onnxruntime's NCHWc convolution, weight pre-packing, BatchNorm fusion) and every run copies the tensor
    out. Decoding these nodes in memory before the session is created gives onnxruntime plain
    initializers again; the file stays compressed. DCSparseGemm, DCSparseConv and DCGather stay as they are."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    targets = [n for n in g.node if n.domain == DOMAIN and n.op_type == "DCDecode" and n.input and n.input[0] in inits]
    if not targets:
        return model, 0
    blobs = {}
    for node in targets:
        blob = numpy_helper.to_array(inits[node.input[0]]).tobytes()
        info, _ = read_info(blob)  # header checks only; raises PayloadError
        # The native DCDecode's rule: a tensor larger than its payload can justify is refused, not allocated.
        if info.rows * info.cols > decode_limit_elements(len(blob)):
            raise PayloadError(f"payload {node.input[0]!r} declares {info.rows * info.cols} elements, more than "
                               "its size can justify")
        blobs[node.name, node.output[0]] = blob
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    dense = [numpy_helper.from_array(decode_dense_fast(blobs[node.name, node.output[0]]), node.output[0])
             for node in targets]
    done = {n.output[0] for n in targets}
    nodes = [n for n in g.node if not (n.domain == DOMAIN and n.op_type == "DCDecode" and n.output[0] in done)]
    del g.node[:]
    g.node.extend(nodes)
    used = {x for n in g.node for x in n.input}
    decoded_payloads = {n.input[0] for n in targets}
    kept = [t for t in g.initializer if t.name in used or t.name not in decoded_payloads]
    del g.initializer[:]
    g.initializer.extend(kept + dense)
    vis = [v for v in g.value_info if v.name not in done]
    del g.value_info[:]
    g.value_info.extend(vis)
    return out, len(targets)
