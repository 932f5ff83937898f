"""The model's types, as the rest of the package sees a graph: a *layer* (one constant weight tensor with
every node that uses it: a weight shared by several nodes is compressed once), the use of a weight by a
fully-connected node, where a weight's values are (loaded only when asked for), a layer left alone with its
reason, and an index of the graph's producers, consumers and constants."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


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
        self.dims = inferred_dims(model) if infer else {}
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


def inferred_dims(model: onnx.ModelProto) -> dict[str, list]:
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


def attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default
