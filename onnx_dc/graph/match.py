"""Find the layers whose weights can be compressed: match → check (a reason when declining).

A *layer* here is one constant weight tensor together with every node that uses it: a weight shared by
several nodes is compressed once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

FC_OPS = ("Gemm", "MatMul")


@dataclass
class FcUse:
    """One fully-connected node (or MatMul+Add pair) that will become a DCSparseGemm."""

    node: onnx.NodeProto
    op: str  # "Gemm", "MatMul" or "MatMul+Add"
    x: str  # the activation input
    output: str  # the output name the replacement must produce
    bias: np.ndarray | None  # float32 [N], beta already applied
    trans_b: int  # the original layout of the weight: 1 if stored [N, K]
    add_node: onnx.NodeProto | None = None
    bias_source: str | None = None  # name of the constant the bias came from


class WeightSource:
    """Where a weight's values are, loaded only when asked for: a model's weights never need to be in
    memory all at once (a model with external data streams layer by layer). Picklable, for process pools:
    an external tensor travels as its file reference, an inline one with its data."""

    def __init__(self, tensor: onnx.TensorProto, base_dir: str | None, transpose: bool = False, alpha: float = 1.0):
        self.tensor, self.base_dir, self.transpose, self.alpha = tensor, base_dir, transpose, alpha

    def __getstate__(self):
        return {"tensor": self.tensor.SerializeToString(), "base_dir": self.base_dir, "transpose": self.transpose,
                "alpha": self.alpha}

    def __setstate__(self, state):
        self.tensor = onnx.TensorProto()
        self.tensor.ParseFromString(state["tensor"])
        self.base_dir, self.transpose, self.alpha = state["base_dir"], state["transpose"], state["alpha"]

    @property
    def shape(self) -> tuple[int, ...]:
        dims = tuple(int(d) for d in self.tensor.dims)
        return dims[::-1] if self.transpose else dims

    def load(self) -> np.ndarray:
        value = self._mapped() if self.tensor.data_location == onnx.TensorProto.EXTERNAL else None
        if value is None:
            value = numpy_helper.to_array(self.tensor, self.base_dir or "")
        if self.transpose:
            value = value.T
        if self.alpha != 1.0:
            value = np.float32(self.alpha) * value
        return np.ascontiguousarray(value, dtype=np.float32)


    def _mapped(self) -> np.ndarray | None:
        """An external float32 tensor mapped from its file (read-only, no copy in memory), or None."""
        info = {e.key: e.value for e in self.tensor.external_data}
        shape = tuple(int(d) for d in self.tensor.dims)
        count = int(np.prod(shape, dtype=np.int64))
        if self.tensor.data_type != onnx.TensorProto.FLOAT or "location" not in info or count == 0:
            return None
        offset = int(info.get("offset", 0))
        length = int(info.get("length", 4 * count))
        path = Path(self.base_dir or ".") / info["location"]
        if length != 4 * count or offset % 4 or offset + length > path.stat().st_size:
            raise ValueError(f"external data of {self.tensor.name!r} does not match its shape {list(shape)}")
        return np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=shape)


@dataclass
class Layer:
    weight_name: str
    kind: str  # "fc", "conv", "emb" (a Gather table) or "other" (any constant, decoded once per session)
    source: WeightSource  # fc: W [N, K] (alpha applied); others: the tensor as stored
    uses: list = field(default_factory=list)  # FcUse for fc; the consuming nodes otherwise
    conv_bias: np.ndarray | None = None  # conv with one consumer: its bias (zeros if it has none)
    new_conv_bias: np.ndarray | None = None  # set by data-aware compression: the refitted conv bias
    exec: str | None = None  # conv: "sparse" (DCSparseConv) or "dense" (DCDecode + Conv); None: not chosen yet
    exec_reason: str = ""  # why that form (measured times, or what rules the other out)
    input_dims: list | None = None  # conv: the inferred input shape of each consuming node (None: unknown)

    @property
    def weight(self) -> np.ndarray:
        """The weight's values, loaded now (not kept: call once per use)."""
        return self.source.load()

    @property
    def shape(self) -> tuple[int, ...]:
        return self.source.shape

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return 4 * self.size

    @property
    def nodes(self) -> list[onnx.NodeProto]:
        """Every graph node the layer's compression replaces (a fused MatMul+Add: both)."""
        if self.kind != "fc":
            return list(self.uses)
        return [u.node for u in self.uses] + [u.add_node for u in self.uses if u.add_node is not None]

    @property
    def names(self) -> set[str]:
        """Names a user may give in per-layer options: the weight and its nodes."""
        return {self.weight_name} | {n.name for n in self.nodes if n.name}

    @property
    def op_label(self) -> str:
        if self.kind == "fc":
            return "/".join(sorted({u.op for u in self.uses}))
        return "/".join(sorted({n.op_type for n in self.uses}))


@dataclass(frozen=True)
class Skipped:
    name: str  # the weight (or node) name
    op: str
    reason: str


class GraphIndex:
    """Producers, consumers and constants of a model's main graph."""

    def __init__(self, model: onnx.ModelProto, base_dir: str | None = None, infer: bool = True):
        graph = model.graph
        self.graph = graph
        self.base_dir = base_dir
        self.graph_inputs = {i.name for i in graph.input}
        if model.ir_version < 4:
            # Before IR 4 every initializer had to be listed as an input too; they are still constants.
            self.graph_inputs -= {t.name for t in graph.initializer}
        self.graph_outputs = {o.name for o in graph.output}
        self.initializers = {t.name: t for t in graph.initializer}
        self.constant_nodes = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
                self.constant_nodes[node.output[0]] = node
            for i, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, i))
        self.subgraph_refs = names_used_in_subgraphs(graph)
        self.dims = _inferred_dims(model) if infer else {}
        self.shapes = {name: len(d) for name, d in self.dims.items()}  # ranks

    def constant_tensor(self, name: str) -> onnx.TensorProto | None:
        """The TensorProto holding `name` if it is a constant the graph cannot override, else None."""
        if name in self.initializers and name not in self.graph_inputs:
            return self.initializers[name]
        node = self.constant_nodes.get(name)
        if node is not None:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    return attr.t
        return None

    def constant(self, name: str) -> np.ndarray | None:
        """The value of `name` if it is a constant the graph cannot override, else None (loads it)."""
        tensor = self.constant_tensor(name)
        return None if tensor is None else numpy_helper.to_array(tensor, self.base_dir or "")

    def is_constant_source(self, name: str) -> bool:
        return (name in self.initializers and name not in self.graph_inputs) or name in self.constant_nodes


def names_used_in_subgraphs(graph: onnx.GraphProto) -> set[str]:
    used = set()

    def walk(g):
        for node in g.node:
            used.update(n for n in node.input if n)
            for attr in node.attribute:
                for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                    walk(sub)

    for node in graph.node:
        for attr in node.attribute:
            for sub in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                walk(sub)
    return used


def _inferred_dims(model: onnx.ModelProto) -> dict[str, list]:
    """Shape of each value that shape inference knows: a list of ints, or None for a symbolic dimension
    (best effort; an unknown rank is simply absent)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # shape inference is advisory here: a model it cannot handle still compresses
        inferred = model
    dims = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and t.HasField("shape"):
            dims[vi.name] = [int(d.dim_value) if d.HasField("dim_value") else None for d in t.shape.dim]
    return dims


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _bias_vector(value: np.ndarray, n: int, max_rank: int | None) -> np.ndarray | None:
    """`value` as a [N] bias if adding it to a [..., N] tensor only broadcasts along the last axis."""
    if value.dtype != np.float32 or value.ndim > max(1, max_rank or 1):
        return None
    if value.size == 1:
        return np.full(n, value.reshape(()), dtype=np.float32)
    if value.shape[-1] == n and value.size == n:
        return value.reshape(n).astype(np.float32)
    return None


def _check_weight(tensor: onnx.TensorProto | None, name: str) -> str | None:
    """Checks on the tensor's metadata only (its values are read when the layer is compressed; NaN or
    infinity is reported then)."""
    if tensor is None:
        return f"weight {name!r} is not a constant (computed at run time or overridable as a graph input)"
    if tensor.data_type != onnx.TensorProto.FLOAT:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type) if tensor.data_type else "untyped"
        return f"weight {name!r} is {dtype}; only float32 weights are compressed"
    return None


def _match_fc(node: onnx.NodeProto, index: GraphIndex) -> tuple[FcUse | None, WeightSource | None, str | None]:
    """(use, source of W[N,K], None) for an eligible node, or (None, None, reason)."""
    weight_name = node.input[1]
    tensor = index.constant_tensor(weight_name)
    reason = _check_weight(tensor, weight_name)
    if reason:
        return None, None, reason
    if len(tensor.dims) != 2:
        return None, None, f"weight has rank {len(tensor.dims)}; a fully-connected weight is 2-D"
    if node.op_type == "Gemm":
        if _attr(node, "transA", 0):
            return None, None, "Gemm with transA=1 is not supported (its input would need a transpose)"
        trans_b = int(_attr(node, "transB", 0))
        alpha = float(_attr(node, "alpha", 1.0))
        beta = float(_attr(node, "beta", 1.0))
        source = WeightSource(tensor, index.base_dir, transpose=not trans_b, alpha=alpha)
        bias = None
        if len(node.input) > 2 and node.input[2]:
            c = index.constant(node.input[2])
            if c is None:
                return None, None, "Gemm bias C is not a constant"
            bias = _bias_vector(c, source.shape[0], 2)
            if bias is None:
                return None, None, f"Gemm bias C of shape {list(c.shape)} is not a per-output vector"
            bias = (np.float32(beta) * bias).astype(np.float32)
        use = FcUse(node, "Gemm", node.input[0], node.output[0], bias, trans_b,
                    bias_source=node.input[2] if bias is not None else None)
        return use, source, None
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
    return use, source, None


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
        if kind == "conv":
            layer, reason = _conv_layer(weight_name, nodes, index)
        elif kind == "emb":
            layer, reason = _emb_layer(weight_name, nodes, index)
        else:
            layer, reason = _fc_layer(weight_name, nodes, index)
        if layer is None and reason and _fallback_eligible(index.constant_tensor(weight_name)):
            fallback.append((weight_name, reason))
            continue
        claimed.add(weight_name)
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


def _fc_layer(weight_name, nodes, index) -> tuple[Layer | None, str | None]:
    uses, sources = [], []
    for node in nodes:
        use, source, reason = _match_fc(node, index)
        if reason:
            return None, reason if len(nodes) == 1 else f"{node.op_type} node {node.name or '(unnamed)'}: {reason}"
        uses.append(use)
        sources.append(source)
    if any((s.transpose, s.alpha) != (sources[0].transpose, sources[0].alpha) for s in sources[1:]):
        return None, "weight is shared by nodes that use it in different layouts or scales"
    return Layer(weight_name, "fc", sources[0], uses), None


def _conv_layer(weight_name, nodes, index) -> tuple[Layer | None, str | None]:
    tensor = index.constant_tensor(weight_name)
    reason = _check_weight(tensor, weight_name)
    if reason:
        return None, reason
    if len(tensor.dims) != 4:
        return None, f"Conv weight of rank {len(tensor.dims)}; only 2-D convolutions (4-D kernels) are compressed"
    out_channels = int(tensor.dims[0])
    exec_form, exec_reason = None, ""
    if any(int(_attr(node, "group", 1)) != 1 for node in nodes):
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
    return layer, None


def _emb_layer(weight_name, nodes, index) -> tuple[Layer | None, str | None]:
    tensor = index.constant_tensor(weight_name)
    reason = _check_weight(tensor, weight_name)
    if reason:
        return None, reason
    if len(tensor.dims) != 2:
        return None, f"Gather table of rank {len(tensor.dims)}; DCGather takes 2-D tables"
    for node in nodes:
        if int(_attr(node, "axis", 0)) not in (0, -2):
            return None, f"Gather along axis {_attr(node, 'axis', 0)}; DCGather gathers rows (axis 0)"
    return Layer(weight_name, "emb", WeightSource(tensor, index.base_dir), list(nodes)), None
