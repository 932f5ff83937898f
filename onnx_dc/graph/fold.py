"""Constant chains, as exporters write them: a weight reached through Identity, Cast or Transpose of a
constant is made a constant itself before matching, so that the layer behind it can be compressed.

- `Identity(x)`: its consumers read `x` directly (an alias costs nothing; exporters use Identity to share
  one tensor under several names, e.g. tied LayerNorm parameters, and Paddle2ONNX puts pass-through ones
  between activations, e.g. between a MatMul and its bias Add, which then fuse).
- `Cast(c, to=FLOAT)` and `Transpose(c)`: folded into a new initializer under the node's output name, when
  nothing else reads `c` (otherwise folding would store the tensor twice).

Values that are graph outputs or read inside subgraphs are left as they are. The result computes the
same function; it is what `compress` rewrites (and what `decompress` gives back).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from .model import GraphIndex, attr, names_used_in_subgraphs

FOLDABLE = ("Identity", "Cast", "Transpose")


def fold_constant_chains(model: onnx.ModelProto, base_dir: str | None = None) -> tuple[onnx.ModelProto, int]:
    """(the model with constant Identity/Cast/Transpose chains folded, how many nodes were folded).
    The input model is not modified (and is returned as it is when there is nothing to fold: no copy)."""
    if not any(n.op_type in FOLDABLE and n.domain in ("", "ai.onnx") for n in model.graph.node):
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    folded = 0
    while True:
        changed = _fold_once(out, base_dir)
        if not changed:
            break
        folded += changed
    if folded:
        used = {x for n in g.node for x in n.input} | {o.name for o in g.output} | names_used_in_subgraphs(g)
        inits = [t for t in g.initializer if t.name in used or t.name in {i.name for i in g.input}]
        del g.initializer[:]
        g.initializer.extend(inits)
        nodes = [n for n in g.node if not (n.op_type == "Constant" and n.output and n.output[0] not in used)]
        del g.node[:]
        g.node.extend(nodes)
        produced = {o for n in g.node for o in n.output}
        vis = [v for v in g.value_info if v.name in produced]
        del g.value_info[:]
        g.value_info.extend(vis)
    return out, folded


def _fold_once(model: onnx.ModelProto, base_dir: str | None) -> int:
    g = model.graph
    index = GraphIndex(model, base_dir, infer=False)
    protected = index.graph_outputs | index.subgraph_refs
    alias: dict[str, str] = {}
    new_inits: list[onnx.TensorProto] = []
    drop: set[int] = set()
    for i, node in enumerate(g.node):
        if node.domain not in ("", "ai.onnx") or node.op_type not in FOLDABLE or len(node.input) < 1:
            continue
        src, dst = node.input[0], node.output[0]
        if dst in protected:
            continue
        if node.op_type == "Identity":
            # Of a constant or of an activation (Paddle2ONNX writes many pass-through ones, e.g. between a
            # MatMul and its bias Add): its readers can read the source directly.
            alias[dst] = src
            drop.add(i)
            continue
        if not index.is_constant_source(src):
            continue
        if len(index.consumers.get(src, [])) != 1 or src in protected:
            continue  # another reader of the source: folding would keep two copies
        if node.op_type == "Cast" and attr(node, "to", None) != onnx.TensorProto.FLOAT:
            continue
        value = index.constant(src)
        if value is None:
            continue
        if node.op_type == "Cast":
            value = value.astype(np.float32)
        else:
            perm = list(attr(node, "perm", None) or range(value.ndim)[::-1])
            value = np.transpose(value, perm)
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(value), dst))
        drop.add(i)
    if not drop:
        return 0

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    nodes = []
    for i, node in enumerate(g.node):
        if i in drop:
            continue
        for j, name in enumerate(node.input):
            if name in alias:
                node.input[j] = resolve(name)
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    return len(drop)

