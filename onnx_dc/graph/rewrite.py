"""Rewrite matched layers into the onnx_dc operators (docs/OPERATOR.md)."""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..operators import CONV_ATTRIBUTES, DOMAIN, DOMAIN_VERSION
from .model import Layer, attr, names_used_in_subgraphs

META_LAYERS = "onnx_dc.layers"
META_SKIPPED = "onnx_dc.skipped"
META_ORIGINAL_BYTES = "onnx_dc.original_bytes"
META_VERSION = "onnx_dc.version"


class FreshNames:
    """Fresh, collision-free tensor and node names."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.used = {t.name for t in g.initializer} | {n.name for n in g.node}
        self.used |= {x for n in g.node for x in list(n.input) + list(n.output)}
        self.used |= {v.name for v in list(g.input) + list(g.output) + list(g.value_info)}

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name


def _known_types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # advisory: keep whatever value_info the model already had
        inferred = model
    return {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}


def rewrite(model: onnx.ModelProto, layers: list[Layer], payloads: dict[str, bytes]
            ) -> tuple[onnx.ModelProto, list[dict]]:
    """A new model in which each layer's weight is a payload behind DCSparseGemm / DCDecode.

    `payloads` maps a layer's weight name to its payload bytes. Returns the model and, per rewritten
    node, what `decompress` needs to restore the original operator.
    """
    types = _known_types(model)
    graph_outputs = {o.name for o in model.graph.output}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    names = FreshNames(out)
    by_id = {id(n): i for i, n in enumerate(model.graph.node)}  # positions in the original order
    replace: dict[int, list[onnx.NodeProto]] = {}  # original position -> nodes to put there
    drop: set[int] = set()
    prepend: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    detached: set[str] = set()  # constants that may have lost their last user
    redefined: set[str] = set()  # constants now produced by a DCDecode node under the same name
    records: list[dict] = []
    value_infos: list[onnx.ValueInfoProto] = []

    for layer in layers:
        payload_name = names.fresh(f"{layer.weight_name}_dc_payload")
        new_inits.append(numpy_helper.from_array(np.frombuffer(payloads[layer.weight_name], dtype=np.uint8),
                                                 payload_name))
        detached.add(layer.weight_name)
        if layer.kind == "emb":
            for node in layer.uses:
                gather = helper.make_node("DCGather", [payload_name, node.input[1]], [node.output[0]],
                                          name=node.name or names.fresh(f"{layer.weight_name}_dc_gather"), domain=DOMAIN)
                replace[by_id[id(node)]] = [gather]
                if node.output[0] in types and node.output[0] not in graph_outputs:
                    value_infos.append(types[node.output[0]])
                records.append({"node": gather.name, "op": "Gather", "kind": "emb", "weight": layer.weight_name,
                                "axis": int(attr(node, "axis", 0))})
            continue
        if layer.kind == "conv" and layer.exec == "sparse":
            bias_override = None
            if layer.new_conv_bias is not None:
                bias_override = names.fresh(f"{layer.weight_name}_dc_bias")
                new_inits.append(numpy_helper.from_array(layer.new_conv_bias.astype(np.float32), bias_override))
            for conv in layer.uses:
                bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else ""
                if bias_override:
                    detached.add(bias)
                    bias = bias_override
                node = helper.make_node("DCSparseConv", [conv.input[0], payload_name] + ([bias] if bias else []),
                                        [conv.output[0]], name=conv.name or names.fresh(f"{layer.weight_name}_dc_conv"),
                                        domain=DOMAIN)
                node.attribute.extend(a for a in conv.attribute if a.name in CONV_ATTRIBUTES)
                if not any(a.name == "kernel_shape" for a in node.attribute):
                    # The op's shape inference cannot see the payload: give it the kernel's spatial size.
                    node.attribute.append(helper.make_attribute("kernel_shape", [int(d) for d in layer.shape[2:]]))
                replace[by_id[id(conv)]] = [node]
                if conv.output[0] in types and conv.output[0] not in graph_outputs:
                    value_infos.append(types[conv.output[0]])
                records.append({"node": node.name, "op": "Conv", "kind": "conv", "weight": layer.weight_name,
                                "exec": "sparse", "exec_reason": layer.exec_reason})
            continue
        if layer.kind in ("conv", "other"):
            # The dense tensor keeps its name, now produced by a decode node; every consumer runs unchanged.
            node = helper.make_node("DCDecode", [payload_name], [layer.weight_name],
                                    name=names.fresh(f"{layer.weight_name}_dc_decode"), domain=DOMAIN)
            prepend.append(node)
            redefined.add(layer.weight_name)
            value_infos.append(helper.make_tensor_value_info(layer.weight_name, onnx.TensorProto.FLOAT,
                                                             list(layer.shape)))
            records.append({"node": node.name, "op": layer.op_label, "kind": layer.kind, "weight": layer.weight_name,
                            "exec": "dense", "exec_reason": layer.exec_reason})
            if layer.new_conv_bias is not None:
                (conv,) = layer.uses
                bias_name = names.fresh(f"{layer.weight_name}_dc_bias")
                new_inits.append(numpy_helper.from_array(layer.new_conv_bias.astype(np.float32), bias_name))
                patched = onnx.NodeProto()
                patched.CopyFrom(conv)
                if len(patched.input) > 2:
                    detached.add(patched.input[2])
                    patched.input[2] = bias_name
                else:
                    patched.input.append(bias_name)
                replace[by_id[id(conv)]] = [patched]
            continue
        for use in layer.uses:
            inputs = [use.x, payload_name]
            bias_name = None
            if use.bias is not None:
                bias_name = names.fresh(f"{layer.weight_name}_dc_bias")
                new_inits.append(numpy_helper.from_array(use.bias.astype(np.float32), bias_name))
                inputs.append(bias_name)
                detached.add(use.bias_source)
            base = use.node.name or f"{layer.weight_name}_dc_gemm"
            node_name = use.node.name if use.node.name and use.add_node is None else names.fresh(base + "_dc")
            node = helper.make_node("DCSparseGemm", inputs, [use.output], name=node_name, domain=DOMAIN)
            replace[by_id[id(use.node)]] = [node]
            if use.add_node is not None:
                drop.add(by_id[id(use.add_node)])
            if use.output in types and use.output not in graph_outputs:
                value_infos.append(types[use.output])
            records.append({
                "node": node.name, "op": use.op, "kind": "fc", "weight": layer.weight_name, "trans_b": use.trans_b,
                "original_node": use.node.name, "add_node": use.add_node.name if use.add_node else None,
                "matmul_output": use.node.output[0] if use.add_node else None,
            })

    new_nodes = list(prepend)
    for i, node in enumerate(g.node):
        if i in drop:
            continue
        new_nodes.extend(replace.get(i, [node]))
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(new_inits)
    _remove_constants(out, redefined, detached)
    # value_info: keep the old entries for names that still exist, add the replaced outputs' types.
    produced = {o for n in g.node for o in n.output} | {t.name for t in g.initializer}
    kept = [v for v in g.value_info if v.name in produced]
    seen = {v.name for v in kept}
    for v in value_infos:
        if v.name not in seen:
            kept.append(v)
            seen.add(v.name)
    del g.value_info[:]
    g.value_info.extend(kept)
    if not any(op.domain == DOMAIN for op in out.opset_import):
        out.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    return out, records


def _remove_constants(model: onnx.ModelProto, redefined: set[str], candidates: set[str]) -> None:
    """Drop the initializers and Constant nodes named in `redefined`, and those in `candidates` that
    nothing uses any more."""
    g = model.graph
    used = {x for n in g.node for x in n.input} | {o.name for o in g.output} | names_used_in_subgraphs(g)
    dead = {c for c in candidates if c and c not in used} | redefined
    keep_inits = [t for t in g.initializer if t.name not in dead]
    del g.initializer[:]
    g.initializer.extend(keep_inits)
    keep_nodes = [n for n in g.node if not (n.op_type == "Constant" and n.domain in ("", "ai.onnx")
                                            and n.output and n.output[0] in dead)]
    del g.node[:]
    g.node.extend(keep_nodes)
    inputs = [i for i in g.input if i.name not in dead]
    del g.input[:]
    g.input.extend(inputs)


def set_metadata(model: onnx.ModelProto, entries: dict[str, str]) -> None:
    props = {p.key: p.value for p in model.metadata_props}
    props.update(entries)
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))


def get_metadata(model: onnx.ModelProto, key: str, default=None):
    for p in model.metadata_props:
        if p.key == key:
            try:
                return json.loads(p.value)
            except ValueError:
                return default
    return default
