"""The operator set's facts (onnx_dc/operators.py) agree with docs/OPERATOR.md, the numpy reference and the
native library's limits."""
import inspect
import re

import pytest

from onnx_dc import reference
from onnx_dc.operators import (
    CONV_ATTRIBUTES, DECODE_ALWAYS_ELEMENTS, DECODE_ELEMENTS_PER_BYTE, DOMAIN, DOMAIN_VERSION, OPERATORS,
    decode_limit_elements,
)
from repo_paths import REPO

DOC = (REPO / "docs" / "OPERATOR.md").read_text()


def _section(name: str) -> str:
    match = re.search(rf"^## {name}\n(.*?)(?=^## |\Z)", DOC, re.S | re.M)
    assert match, f"docs/OPERATOR.md has no section for {name}"
    return match.group(1)


def test_the_doc_names_the_domain_and_version():
    assert DOC.splitlines()[0] == f"# Operators of the `{DOMAIN}` domain, version {DOMAIN_VERSION}"
    assert set(re.findall(r"^## (\w+)$", DOC, re.M)) == set(OPERATORS)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_the_doc_lists_each_input_and_attribute(name):
    op, text = OPERATORS[name], _section(name)
    for i, input_name in enumerate(op.inputs):
        row = re.search(rf"^\| input {i}( \(optional\))? \| `{input_name}` \|", text, re.M)
        assert row, f"{name}: input {i} `{input_name}` is not in its table"
        assert bool(row.group(1)) == (input_name in op.optional), f"{name}: input {input_name} optional?"
    assert not re.search(rf"^\| input {len(op.inputs)}", text, re.M), f"{name}: the doc lists more inputs"
    documented = set(re.findall(r"^\| `(\w+)` \| (?:ints|int|string) \|", text, re.M))
    assert documented == set(op.attributes), name
    if not op.attributes:
        assert "No attributes." in text


def test_the_doc_states_the_decode_limit():
    text = _section("DCDecode")
    assert "max(2^26, 65536 · L)" in text
    assert DECODE_ALWAYS_ELEMENTS == 2**26 and DECODE_ELEMENTS_PER_BYTE == 65536


def test_the_reference_implements_exactly_the_operators_with_their_inputs():
    by_name = {cls.__name__: cls for cls in reference.CUSTOM_OPS}
    assert set(by_name) == set(OPERATORS)
    for name, op in OPERATORS.items():
        assert by_name[name].op_domain == DOMAIN
        params = list(inspect.signature(by_name[name]._run).parameters)[1:]  # after self
        assert tuple(params[: len(op.inputs)]) == op.inputs, name
        assert tuple(sorted(params[len(op.inputs):])) == tuple(sorted(op.attributes)), name
    assert OPERATORS["DCSparseConv"].attributes == CONV_ATTRIBUTES


@pytest.mark.parametrize("payload_bytes", [0, 1, 1023, 1024, 1025, 4096, 10**6, 2**40])
def test_the_library_applies_the_same_decode_limit(native, payload_bytes):
    assert native.decode_limit_elements(payload_bytes) == decode_limit_elements(payload_bytes)
