"""Find the layers whose weights can be compressed: match → check → a Layer, or a Declined value that carries
the reason (the reason is reported to the user as the layer's skip reason)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .model import FcUse, GraphIndex, Layer, Skipped, WeightSource, attr

@dataclass(frozen=True)
class Declined:
    """A match that does not apply, and why."""
    reason: str


def _bias_vector(value: np.ndarray, n: int, max_rank: int | None) -> np.ndarray | None:
    """`value` as a [N] bias if adding it to a [..., N] tensor only broadcasts along the last axis."""
    if value.dtype != np.float32 or value.ndim > max(1, max_rank or 1):
        return None
    if value.size == 1:
        return np.full(n, value.reshape(()), dtype=np.float32)
    if value.shape[-1] == n and value.size == n:
        return value.reshape(n).astype(np.float32)
    return None


def _check_weight(tensor: onnx.TensorProto | None, name: str) -> Declined | None:
    """Checks on the tensor's metadata only (its values are read when the layer is compressed; NaN or
    infinity is reported then)."""
    if tensor is None:
        return Declined(f"weight {name!r} is not a constant (computed at run time or overridable as a graph input)")
    if tensor.data_type != onnx.TensorProto.FLOAT:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type) if tensor.data_type else "untyped"
        return Declined(f"weight {name!r} is {dtype}; only float32 weights are compressed")
    return None


def _weight_tensor(index: GraphIndex, weight_name: str, rank: int, wrong_rank) -> onnx.TensorProto | Declined:
    """The weight's constant tensor if it is float32 of this rank; `wrong_rank(rank)` words the refusal."""
    tensor = index.constant_tensor(weight_name)
    declined = _check_weight(tensor, weight_name)
    if declined:
        return declined
    if len(tensor.dims) != rank:
        return Declined(wrong_rank(len(tensor.dims)))
    return tensor


def _match_fc(node: onnx.NodeProto, index: GraphIndex) -> tuple[FcUse, WeightSource] | Declined:
    """(use, source of W[N,K]) for an eligible node."""
    tensor = _weight_tensor(index, node.input[1], 2, lambda r: f"weight has rank {r}; a fully-connected weight is 2-D")
    if isinstance(tensor, Declined):
        return tensor
    if node.op_type == "Gemm":
        if attr(node, "transA", 0):
            return Declined("Gemm with transA=1 is not supported (its input would need a transpose)")
        trans_b = int(attr(node, "transB", 0))
        alpha = float(attr(node, "alpha", 1.0))
        beta = float(attr(node, "beta", 1.0))
        source = WeightSource(tensor, index.base_dir, transpose=not trans_b, alpha=alpha)
        bias = None
        if len(node.input) > 2 and node.input[2]:
            c = index.constant(node.input[2])
            if c is None:
                return Declined("Gemm bias C is not a constant")
            bias = _bias_vector(c, source.shape[0], 2)
            if bias is None:
                return Declined(f"Gemm bias C of shape {list(c.shape)} is not a per-output vector")
            bias = (np.float32(beta) * bias).astype(np.float32)
        use = FcUse(node, "Gemm", node.input[0], node.output[0], bias, trans_b,
                    bias_source=node.input[2] if bias is not None else None)
        return use, source
    # MatMul: Y = X @ B with B [K, N]
    source = WeightSource(tensor, index.base_dir, transpose=True)
    use = FcUse(node, "MatMul", node.input[0], node.output[0], None, 0)
    consumers = index.consumers.get(node.output[0], [])
    if len(consumers) == 1 and node.output[0] not in index.graph_outputs:
        add, pos = consumers[0]
        if add.op_type == "Add" and add.domain in ("", "ai.onnx") and node.output[0] not in index.subgraph_refs:
            other = add.input[1 - pos]
            c = index.constant(other)
            if c is not None:
                bias = _bias_vector(c, source.shape[0], index.shapes.get(node.input[0]))
                if bias is not None:
                    use = FcUse(node, "MatMul+Add", node.input[0], add.output[0], bias, 0, add, other)
    return use, source


WEIGHT_INPUT = {"Gemm": 1, "MatMul": 1, "Conv": 1, "Gather": 0}  # which input of each op is the weight


def _kind_of(node: onnx.NodeProto) -> str:
    return {"Conv": "conv", "Gather": "emb"}.get(node.op_type, "fc")


def find_layers(model: onnx.ModelProto, min_weights: int = 0, base_dir: str | None = None,
                kinds=("fc", "conv", "emb", "other")) -> tuple[list[Layer], list[Skipped]]:
    """Every compressible weight of the main graph, and every weight left alone with its reason.
    `base_dir`: where the model's external data files are (weights are read from them only when used).
    `kinds`: which kinds of tensor to compress (fc, conv, emb, other)."""
    index = GraphIndex(model, base_dir)
    layers: list[Layer] = []
    skipped: list[Skipped] = []
    by_weight: dict[str, list[onnx.NodeProto]] = {}
    for node in index.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in WEIGHT_INPUT:
            continue
        pos = WEIGHT_INPUT[node.op_type]
        if len(node.input) <= pos or not node.input[pos]:
            continue
        if pos == 1 or _is_float_constant(index, node.input[pos]):  # Gather: only a float table is a weight
            by_weight.setdefault(node.input[pos], []).append(node)

    claimed: set[str] = set()  # weights handled (or reported) here, and the biases that stay float32
    fallback: list[tuple[str, str]] = []  # (weight, why its op cannot take it): stored as "other" instead
    for weight_name, nodes in by_weight.items():
        label = nodes[0].op_type
        if not index.is_constant_source(weight_name):
            claimed.add(weight_name)
            if weight_name in index.graph_inputs:  # an activation is not a weight; an overridable one is
                skipped.append(Skipped(weight_name, label, "weight is a graph input (it may be overridden at run time)"))
            continue
        if weight_name in index.subgraph_refs or weight_name in index.graph_outputs:
            claimed.add(weight_name)
            skipped.append(Skipped(weight_name, label, "weight is also used inside a subgraph or as a graph output"))
            continue
        # Every use of the weight must be rewritten, or the dense tensor would have to stay in the file.
        all_uses = index.consumers.get(weight_name, [])
        others = [n for n, i in all_uses if not (n.op_type in WEIGHT_INPUT and i == WEIGHT_INPUT[n.op_type]
                                                 and n.domain in ("", "ai.onnx"))]
        layer_kinds = {_kind_of(n) for n in nodes}
        if len(layer_kinds) > 1 or others:
            other = (others or [n for n in nodes if n.op_type != nodes[0].op_type])[0]
            fallback.append((weight_name, f"also used by {other.op_type} node {other.name or '(unnamed)'}"))
            continue
        (kind,) = layer_kinds
        match = {"conv": _conv_layer, "emb": _emb_layer, "fc": _fc_layer}[kind](weight_name, nodes, index)
        if isinstance(match, Declined) and _fallback_eligible(index.constant_tensor(weight_name)):
            fallback.append((weight_name, match.reason))
            continue
        claimed.add(weight_name)
        layer, reason = (None, match.reason) if isinstance(match, Declined) else (match, None)
        if reason is None and layer.size < min_weights:
            reason = f"{layer.size} weights, below the minimum of {min_weights} (--min-weights)"
        if reason is None and kind not in kinds:
            reason = f"{kind} tensors are not in --kinds"
        if reason:
            skipped.append(Skipped(weight_name, label, reason))
            continue
        layers.append(layer)
        if kind == "fc":
            claimed.update(u.bias_source for u in layer.uses if u.bias_source)
        else:
            claimed.update(n.input[2] for n in nodes if n.op_type == "Conv" and len(n.input) > 2 and n.input[2])

    # Any other large float constant: stored compressed and decoded once per session (DCDecode), so the
    # whole file shrinks; its consumers run unchanged.
    notes = dict(fallback)
    candidates = [t.name for t in index.graph.initializer] + list(index.constant_nodes)
    for name in candidates:
        if name in claimed or name in index.graph_inputs:
            continue
        claimed.add(name)
        tensor = index.constant_tensor(name)
        if not _fallback_eligible(tensor) or not index.consumers.get(name):
            continue
        size = int(np.prod([int(d) for d in tensor.dims], dtype=np.int64))
        users = [n for n, _ in index.consumers[name]]
        label = "/".join(sorted({n.op_type for n in users}))
        if name in index.subgraph_refs or name in index.graph_outputs:
            if name in notes:
                skipped.append(Skipped(name, label, "also used inside a subgraph or as a graph output"))
            continue
        reason = None
        if size < min_weights:
            reason = f"{size} weights, below the minimum of {min_weights} (--min-weights)" if name in notes else ""
        elif "other" not in kinds:
            reason = f"{notes[name]}; other tensors are not in --kinds" if name in notes else ""
        if reason is not None:
            if reason:
                skipped.append(Skipped(name, label, reason))
            continue
        layers.append(Layer(name, "other", WeightSource(tensor, index.base_dir), users,
                            exec="dense", exec_reason=notes.get(name, "")))
    return layers, skipped


def _is_float_constant(index: GraphIndex, name: str) -> bool:
    tensor = index.constant_tensor(name)
    return tensor is not None and tensor.data_type == onnx.TensorProto.FLOAT


def _fallback_eligible(tensor: onnx.TensorProto | None) -> bool:
    """A float32 constant DCDecode can stand for. Rank 2 or more: vectors (biases, BatchNorm and LayerNorm
    parameters) stay float32 like the FC biases — they are small, and onnxruntime fuses them into their
    neighbours only while they are initializers."""
    return (tensor is not None and tensor.data_type == onnx.TensorProto.FLOAT and 2 <= len(tensor.dims) <= 8
            and all(int(d) > 0 for d in tensor.dims))


def _fc_layer(weight_name, nodes, index) -> Layer | Declined:
    uses, sources = [], []
    for node in nodes:
        match = _match_fc(node, index)
        if isinstance(match, Declined):
            return match if len(nodes) == 1 else Declined(f"{node.op_type} node {node.name or '(unnamed)'}: "
                                                          f"{match.reason}")
        uses.append(match[0])
        sources.append(match[1])
    if any((s.transpose, s.alpha) != (sources[0].transpose, sources[0].alpha) for s in sources[1:]):
        return Declined("weight is shared by nodes that use it in different layouts or scales")
    return Layer(weight_name, "fc", sources[0], uses)


def _conv_layer(weight_name, nodes, index) -> Layer | Declined:
    tensor = _weight_tensor(index, weight_name, 4, lambda r: f"Conv weight of rank {r}; only 2-D convolutions "
                                                             "(4-D kernels) are compressed")
    if isinstance(tensor, Declined):
        return tensor
    out_channels = int(tensor.dims[0])
    exec_form, exec_reason = None, ""
    if any(int(attr(node, "group", 1)) != 1 for node in nodes):
        exec_form, exec_reason = "dense", "group > 1: the sparse convolution runs group 1 only"
    bias = None
    if len(nodes) == 1:
        node = nodes[0]
        if len(node.input) > 2 and node.input[2]:
            bias = index.constant(node.input[2])
            bias = bias.astype(np.float32) if bias is not None and bias.shape == (out_channels,) else None
        else:
            bias = np.zeros(out_channels, np.float32)
    layer = Layer(weight_name, "conv", WeightSource(tensor, index.base_dir), list(nodes), conv_bias=bias,
                  exec=exec_form, exec_reason=exec_reason)
    layer.input_dims = [index.dims.get(n.input[0]) for n in nodes]
    return layer


def _emb_layer(weight_name, nodes, index) -> Layer | Declined:
    tensor = _weight_tensor(index, weight_name, 2, lambda r: f"Gather table of rank {r}; DCGather takes 2-D tables")
    if isinstance(tensor, Declined):
        return tensor
    for node in nodes:
        if int(attr(node, "axis", 0)) not in (0, -2):
            return Declined(f"Gather along axis {attr(node, 'axis', 0)}; DCGather gathers rows (axis 0)")
    return Layer(weight_name, "emb", WeightSource(tensor, index.base_dir), list(nodes))
