"""The `onnx_dc` operator set, stated once for Python: the domain, each operator's inputs, attributes and
what it stands for, and the limits the native library enforces (docs/OPERATOR.md says the same in prose;
tests/native/test_operator_facts.py checks the two and the library against this module)."""
from __future__ import annotations

from dataclasses import dataclass

DOMAIN = "onnx_dc"
DOMAIN_VERSION = 1


@dataclass(frozen=True)
class Operator:
    name: str
    inputs: tuple[str, ...]  # ONNX input names, in order
    optional: tuple[str, ...]  # the inputs that may be absent
    payload_input: int  # which input is the payload (a constant uint8 initializer)
    attributes: tuple[str, ...]
    kind: str  # the kind of tensor it carries (config.KINDS)
    replaces: str  # the standard operator it stands for


CONV_ATTRIBUTES = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")

OPERATORS = {op.name: op for op in (
    Operator("DCSparseGemm", ("X", "W_payload", "B"), ("B",), 1, (), "fc", "Gemm / MatMul / MatMul+Add"),
    Operator("DCSparseConv", ("X", "W_payload", "B"), ("B",), 1, CONV_ATTRIBUTES, "conv", "Conv"),
    Operator("DCGather", ("W_payload", "indices"), (), 0, (), "emb", "Gather (axis 0)"),
    Operator("DCDecode", ("payload",), (), 0, (), "other", "a dense constant"),
)}

# Which input of each operator is its payload.
PAYLOAD_INPUT = {name: op.payload_input for name, op in OPERATORS.items()}
# The kind a node of each operator holds when the model's metadata does not say.
DEFAULT_KIND = {name: op.kind for name, op in OPERATORS.items()}

# DCDecode allocates the dense tensor a payload declares only up to what the payload can justify: any
# tensor of up to DECODE_ALWAYS_ELEMENTS elements, beyond that DECODE_ELEMENTS_PER_BYTE elements per payload
# byte (99.998% pruned). A valid all-pruned payload of a few hundred bytes may declare any shape; this keeps
# it from allocating terabytes. The native library's constants are the same (c_api.h).
DECODE_ALWAYS_ELEMENTS = 1 << 26
DECODE_ELEMENTS_PER_BYTE = 65536


def decode_limit_elements(payload_bytes: int) -> int:
    """The most elements DCDecode allocates for a payload of this many bytes."""
    return max(DECODE_ALWAYS_ELEMENTS, DECODE_ELEMENTS_PER_BYTE * payload_bytes)


def is_onnx_dc(node) -> bool:
    return node.domain == DOMAIN
