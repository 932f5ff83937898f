"""The part of a model downstream of some nodes, run on its own.

A sensitivity candidate changes one layer: everything computed before that layer is what the original model
computes. So the analysis runs the original once to get the tensors that cross into the rest of the graph
(the *cut*), and per candidate runs only the rest, fed with them (ResNet-style: about half of each run)."""
from __future__ import annotations

import onnx
from onnx import helper

_SUBGRAPH_ATTRS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    return {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}


def downstream_cut(model: onnx.ModelProto, start_nodes) -> tuple[list[str], list[str]] | None:
    """(cut, outputs): the tensors that flow into the part of `model` downstream of `start_nodes` (which it
    includes) from outside it — graph inputs and values computed before, not constants — and the graph
    outputs that part computes (the others do not depend on `start_nodes`). None when the cut cannot be
    trusted or has nothing to run: the graph has subgraphs (If/Loop/Scan nodes read outer values without
    naming them), or no output depends on `start_nodes`."""
    graph = model.graph
    if any(a.type in _SUBGRAPH_ATTRS for n in graph.node for a in n.attribute):
        return None
    constants = _constant_names(graph)
    start = {id(n) for n in start_nodes}
    inside, produced = [], set()
    for node in graph.node:  # topologically sorted, as ONNX requires
        if id(node) in start or any(i in produced for i in node.input if i):
            inside.append(node)
            produced.update(o for o in node.output if o)
    outputs = [o.name for o in graph.output if o.name in produced]
    if not outputs:
        return None
    cut: list[str] = []
    for node in inside:
        for name in node.input:
            if name and name not in produced and name not in constants and name not in cut:
                cut.append(name)
    return cut, outputs


def sliced(model: onnx.ModelProto, inputs: dict[str, tuple[int, int]], outputs: list[str]) -> onnx.ModelProto:
    """The nodes of `model` that the tensors `outputs` need, given the tensors `inputs` (name → (ONNX
    element type, rank); dimensions left open) as the new model's inputs; graph inputs the slice still
    reads stay inputs. An output that is not a graph output gets its type from onnxruntime. Only the
    initializers (dense or sparse) the kept nodes read are copied."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output if o}
    constants = _constant_names(graph)
    keep, seen, graph_inputs = set(), set(), set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if not name or name in seen or name in inputs or name in constants:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is None:
            graph_inputs.add(name)
            continue
        keep.add(id(node))
        stack.extend(node.input)
    nodes = [n for n in graph.node if id(n) in keep]
    read = {i for n in nodes for i in n.input}
    new_inputs = [helper.make_tensor_value_info(name, elem, [None] * rank) for name, (elem, rank) in inputs.items()
                  if name in read]
    new_inputs += [vi for vi in graph.input if vi.name in graph_inputs]
    declared = {o.name: o for o in graph.output}
    out = helper.make_graph(nodes, graph.name, new_inputs,
                            [declared.get(name) or onnx.ValueInfoProto(name=name) for name in outputs],
                            [t for t in graph.initializer if t.name in read],
                            sparse_initializer=[t for t in graph.sparse_initializer if t.values.name in read])
    sliced_model = helper.make_model(out, opset_imports=model.opset_import, ir_version=model.ir_version)
    sliced_model.functions.extend(model.functions)
    return sliced_model
