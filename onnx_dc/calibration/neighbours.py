"""What the data-aware fit reads from the graph around a layer (skipped where it is not clear):
- the one next layer its output feeds through channel-wise ops (element-wise ops, pooling, reshapes): the
  rows of the layer then share its survivor budget in proportion to how much that layer reads each output
  (the squared norm of its weights on that output channel);
- whether its output is the model's output (directly or through Softmax, LogSoftmax, reshapes): a
  fully-connected layer there is taken to produce class logits (refitted by KL with output_fit 'kl').
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx

from ..graph.model import Layer
from .capture import layer_inputs

# Ops an output passes through on its way to the next layer without mixing channels.
CHANNELWISE = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish",
               "Gelu", "Softplus", "MaxPool", "AveragePool", "Identity", "Dropout", "Flatten", "Reshape"}
TO_OUTPUT = {"Identity", "Flatten", "Reshape", "Squeeze", "Softmax", "LogSoftmax"}


def _output_name(layer: Layer) -> str | None:
    if len(layer.uses) != 1:
        return None
    return layer.uses[0].output if layer.kind == "fc" else layer.uses[0].output[0]


def downstream(model: onnx.ModelProto, layers: list[Layer]) -> list[tuple[int | None, bool]]:
    """Per layer: (index of the one layer its output feeds through channel-wise ops, or None;
    whether its output reaches the model's output only through TO_OUTPUT ops)."""
    consumers = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in model.graph.output}
    reads = {}  # (tensor, node) -> layer index
    for j, layer in enumerate(layers):
        nodes = [u.node for u in layer.uses] if layer.kind == "fc" else list(layer.uses)
        for name, node in zip(layer_inputs(layer), nodes):
            reads[(name, node.SerializeToString())] = j
    out = []
    for layer in layers:
        start = _output_name(layer)
        if start is None:
            out.append((None, False))
            continue
        nexts, channelwise, to_output, final_only = set(), True, False, True
        stack, seen = [start], set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in outputs:
                to_output = True
            for node in consumers.get(t, []):
                j = reads.get((t, node.SerializeToString()))
                if j is not None:
                    nexts.add(j)
                    final_only = False
                    continue
                if node.op_type not in TO_OUTPUT:
                    final_only = False
                if node.op_type not in CHANNELWISE or node.input[0] != t:
                    channelwise = False
                    if node.op_type not in TO_OUTPUT:
                        continue
                stack.extend(node.output[:1])
        nxt = next(iter(nexts)) if channelwise and len(nexts) == 1 and not to_output else None
        out.append((nxt, to_output and final_only and not nexts))
    return out


def row_weight(layer: Layer, nxt: Layer | None) -> np.ndarray | None:
    """How much the next layer reads each output channel of `layer`: Σ W_next² over that channel."""
    if nxt is None:
        return None
    n = layer.shape[0]
    w = nxt.weight
    if nxt.kind == "conv":
        if w.ndim < 2 or w.shape[1] != n:
            return None
    elif nxt.kind != "fc" or (w.size // w.shape[0]) % n:
        return None
    w = w.reshape(w.shape[0], n, -1).astype(np.float64)
    return (w**2).sum(axis=(0, 2))


def is_classifier(layer: Layer, final: bool) -> bool:
    return final and layer.kind == "fc" and len(layer.uses) == 1 and layer.shape[0] >= 2
