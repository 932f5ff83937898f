"""Whole models as exporters write them: compressed, they run in onnxruntime + libonnx_dc_ops.so as decompressed.

Constant chains, embeddings, every conv form, other large constants, foreign-domain nodes, opsets 11 to the
newest, and the committed ResNet-style and BERT-style models. The compressed model in onnxruntime +
libonnx_dc_ops.so must equal its decompressed model (max abs difference ≤ 1e-5 of the output's scale) and
pass onnx.checker."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import builders
import onnx_dc
from onnx_dc.config import CompressOptions, PerKind
from onnx_dc.graph.fold import fold_constant_chains
from onnx_dc.reference import run_reference
from onnx_dc.session import make_session
from repo_paths import MODELS

OPTS = CompressOptions(sparsity=PerKind(0.7, 0.5, 0.5, 0.0), bits=PerKind(4, 6, 6, 8), min_weights=16)
# What each variant must turn into (onnx_dc operators), per --conv-exec where it matters.
EXPECTED = {
    "identity_chain": {"DCSparseGemm"}, "cast_fp16_chain": {"DCSparseGemm"}, "transpose_chain": {"DCSparseGemm"},
    "constant_node_transpose": {"DCSparseGemm"},
    "embedding_int64": {"DCGather", "DCSparseGemm"}, "embedding_int32": {"DCGather", "DCSparseGemm"},
    "opset11_embedding": {"DCGather", "DCSparseGemm"},
    "conv_grouped": {"DCDecode"}, "conv_depthwise": {"DCDecode"},
    "large_constants": {"DCDecode"}, "foreign_domains": {"DCSparseGemm"},
}


def _expected(name: str, conv_exec: str) -> set:
    if name in EXPECTED:
        return EXPECTED[name]
    if "conv" in name:
        return {"DCSparseConv"} if conv_exec == "sparse" else {"DCDecode"}
    return {"DCSparseGemm"}


def _max_scaled_diff(a: np.ndarray, b: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(b))), 1e-6)
    return float(np.max(np.abs(a.astype(np.float64) - b))) / scale


def _ort(path, lib=None):
    if lib:
        return make_session(str(path), intra_op_threads=1)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --conv-exec only matters for conv layers: both forms for those, the default for the rest.
CASES = [(name, mode) for name in sorted(builders.QUIRK_VARIANTS)
         for mode in (("sparse", "dense") if "conv" in name else ("sparse",))]


@pytest.mark.parametrize("name,conv_exec", CASES)
def test_variant_compressed_equals_decompressed(lib_path, tmp_path, name, conv_exec):
    original = builders.QUIRK_VARIANTS[name]()
    src = builders.save(original, tmp_path / "in.onnx")
    result = onnx_dc.compress(src, tmp_path / "dc.onnx", dataclasses.replace(OPTS, conv_exec=conv_exec))
    onnx_dc.decompress(tmp_path / "dc.onnx", tmp_path / "dense.onnx")
    dc = onnx.load(str(tmp_path / "dc.onnx"))
    onnx.checker.check_model(dc)
    onnx.checker.check_model(onnx.load(str(tmp_path / "dense.onnx")))
    assert {n.op_type for n in dc.graph.node if n.domain == "onnx_dc"} == _expected(name, conv_exec), result.report
    # Foreign-domain nodes stay exactly as they were.
    foreign = [n for n in original.graph.node if n.domain not in ("", "ai.onnx")]
    assert all(any(n == m for m in dc.graph.node) for n in foreign)
    feeds = builders.random_feeds(original, batch=2, seq=5)
    got = _ort(tmp_path / "dc.onnx", lib_path).run(None, feeds)
    want = _ort(tmp_path / "dense.onnx").run(None, feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape and _max_scaled_diff(g, w) <= 1e-5, name
    # The compressed model computes roughly what the original did (same graph, lossy weights).
    orig_out = _ort(src).run(None, feeds)
    assert all(np.all(np.isfinite(g)) and g.shape == o.shape for g, o in zip(got, orig_out))


@pytest.mark.parametrize("name", ["identity_chain", "cast_fp16_chain", "transpose_chain", "constant_node_transpose",
                                  "embedding_int64", "conv_3x3", "conv_5x5_stride2", "conv_grouped", "large_constants"])
def test_variant_reference_oracle_equals_decompressed(tmp_path, name):
    """Without the native library: the numpy operators (the specification) agree with the dense model."""
    original = builders.QUIRK_VARIANTS[name]()
    src = builders.save(original, tmp_path / "in.onnx")
    onnx_dc.compress(src, tmp_path / "dc.onnx", dataclasses.replace(OPTS, conv_exec="sparse"))
    onnx_dc.decompress(tmp_path / "dc.onnx", tmp_path / "dense.onnx")
    feeds = builders.random_feeds(original, batch=2, seq=5)
    got = run_reference(onnx.load(str(tmp_path / "dc.onnx")), feeds)
    want = _ort(tmp_path / "dense.onnx").run(None, feeds)
    for g, w in zip(got, want):
        assert _max_scaled_diff(g, w) <= 1e-5


def test_constant_chains_fold_without_copies():
    m = builders.constant_chain("identity")
    folded, count = fold_constant_chains(m)
    assert count == 2 and [n.op_type for n in folded.graph.node] == ["MatMul"]
    assert folded.graph.node[0].input[1] == "W0" and [t.name for t in folded.graph.initializer] == ["W0"]
    folded, count = fold_constant_chains(builders.constant_chain("transpose"))
    assert count == 1 and [t.name for t in folded.graph.initializer] == ["W"]
    assert list(folded.graph.initializer[0].dims) == [64, 48]
    # A source read by someone else is not duplicated: the Transpose stays.
    m = builders.constant_chain("transpose")
    m.graph.node.append(onnx.helper.make_node("Identity", ["WT"], ["WT_copy"]))
    m.graph.output.append(onnx.helper.make_tensor_value_info("WT_copy", onnx.TensorProto.FLOAT, [48, 64]))
    folded, count = fold_constant_chains(m)
    assert count == 0 and [n.op_type for n in folded.graph.node] == ["Transpose", "MatMul", "Identity"]


def test_pass_through_identity_between_matmul_and_add_still_fuses(lib_path, tmp_path):
    m = builders.matmul(bias=True)
    (mm, add) = m.graph.node
    mm.output[0] = "mm_raw"
    m.graph.node.insert(1, onnx.helper.make_node("Identity", ["mm_raw"], ["mm"], name="pass"))
    onnx.checker.check_model(m)
    src = builders.save(m, tmp_path / "in.onnx")
    result = onnx_dc.compress(src, tmp_path / "dc.onnx", OPTS)
    dc = onnx.load(str(tmp_path / "dc.onnx"))
    assert [n.op_type for n in dc.graph.node] == ["DCSparseGemm"] and len(dc.graph.node[0].input) == 3
    assert result.report["layers"][0]["op"] == "MatMul+Add"
    onnx_dc.decompress(tmp_path / "dc.onnx", tmp_path / "dense.onnx")
    feeds = builders.random_feeds(m)
    got = make_session(tmp_path / "dc.onnx").run(None, feeds)[0]
    want = _ort(tmp_path / "dense.onnx").run(None, feeds)[0]
    assert _max_scaled_diff(got, want) <= 1e-5


def test_tied_embedding_and_output_projection_share_one_decoded_table(lib_path, tmp_path):
    """A table read by Gather and (transposed) by the output MatMul, as in tied language-model heads: stored
    once, compressed, decoded once for both readers."""
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(0).standard_normal((300, 32)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"]),
             helper.make_node("Transpose", ["table"], ["table_t"], perm=[1, 0]),
             helper.make_node("MatMul", ["emb", "table_t"], ["logits"])]
    graph = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "S"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "S", 300])],
                              [numpy_helper.from_array(table, "table")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src = builders.save(m, tmp_path / "in.onnx")
    result = onnx_dc.compress(src, tmp_path / "dc.onnx", OPTS)
    (layer,) = result.report["layers"]
    assert layer["kind"] == "other" and "also used by" in layer["exec_reason"]
    dc = onnx.load(str(tmp_path / "dc.onnx"))
    assert [n.op_type for n in dc.graph.node].count("DCDecode") == 1
    onnx_dc.decompress(tmp_path / "dc.onnx", tmp_path / "dense.onnx")
    feeds = builders.random_feeds(m, int_high=300)
    got = make_session(tmp_path / "dc.onnx", predecode=False).run(None, feeds)[0]
    want = _ort(tmp_path / "dense.onnx").run(None, feeds)[0]
    assert _max_scaled_diff(got, want) <= 1e-5


def test_kinds_option_limits_what_is_compressed(tmp_path):
    src = builders.save(builders.embedding(), tmp_path / "in.onnx")
    result = onnx_dc.compress(src, tmp_path / "dc.onnx", dataclasses.replace(OPTS, kinds=frozenset({"fc"})))
    assert [layer["kind"] for layer in result.report["layers"]] == ["fc"]
    assert any("emb tensors are not in --kinds" in s.reason for s in result.skipped)
    result = onnx_dc.compress(src, tmp_path / "dc2.onnx", dataclasses.replace(OPTS, kinds=frozenset({"emb"})))
    assert [layer["kind"] for layer in result.report["layers"]] == ["emb"]
    assert set(result.report["totals"]["by_kind"]) == {"emb"}


def test_non_finite_constant_is_left_alone_with_a_reason(tmp_path):
    m = builders.large_constants()
    t = m.graph.initializer[0]
    value = onnx.numpy_helper.to_array(t).copy()
    value[0, 0] = -np.inf  # e.g. an attention mask
    m.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(value, t.name))
    result = onnx_dc.compress(builders.save(m, tmp_path / "in.onnx"), tmp_path / "dc.onnx", OPTS)
    assert [layer["name"] for layer in result.report["layers"]] == ["scale"]
    (s,) = [s for s in result.skipped if s.name == "pos"]
    assert "finite" in s.reason or "inf" in s.reason.lower()


# --- the committed PyTorch exports -------------------------------------------------------------------------

def _bert_feeds(batch=2, seq=12, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq - 3:] = 0
    return {"input_ids": rng.integers(0, 2000, (batch, seq)).astype(np.int64), "attention_mask": mask}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = {}
    for name in ("resnet_style", "bert_style"):
        tmp = tmp_path_factory.mktemp(name)
        result = onnx_dc.compress(MODELS / f"{name}.onnx", tmp / "dc.onnx")
        onnx_dc.decompress(tmp / "dc.onnx", tmp / "dense.onnx")
        out[name] = (result, tmp / "dc.onnx", tmp / "dense.onnx")
    return out


@pytest.mark.parametrize("name", ["resnet_style", "bert_style"])
def test_exported_models_compressed_equals_decompressed(lib_path, exported, name):
    result, dc_path, dense_path = exported[name]
    onnx.checker.check_model(onnx.load(str(dc_path)))
    kinds = set(result.report["totals"]["by_kind"])
    assert kinds == ({"fc", "conv"} if name == "resnet_style" else {"fc", "emb"})
    feeds = _bert_feeds() if name == "bert_style" else \
        {"image": np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)}
    for threads in (1, 2):
        got = make_session(str(dc_path), intra_op_threads=threads).run(None, feeds)
        want = _ort(dense_path).run(None, feeds)
        for g, w in zip(got, want):
            assert _max_scaled_diff(g, w) <= 1e-5
    assert result.report["file"]["ratio"] > (6 if name == "resnet_style" else 10)


def test_resnet_depthwise_conv_is_stored_compressed_and_run_dense(exported):
    result, _, _ = exported["resnet_style"]
    convs = [layer for layer in result.report["layers"] if layer["kind"] == "conv"]
    assert len(convs) == 17  # every Conv kernel, the depthwise one included
    depthwise = [layer for layer in convs if layer["shape"][1] == 1]
    assert len(depthwise) == 1 and depthwise[0]["execution"] == "dense" and "group" in depthwise[0]["exec_reason"]
    assert all(layer["exec_reason"] for layer in convs)  # each choice says why


def test_make_session_predecodes_dense_constants(lib_path, tmp_path):
    """DCDecode constants become plain initializers before onnxruntime optimizes the graph (it never
    constant-folds a custom op); the results are the same as running DCDecode in the session."""
    from onnx_dc.graph.decompress import decode_constant_payloads

    src = builders.save(builders.conv_variant(cin=16, cout=32), tmp_path / "in.onnx")
    onnx_dc.compress(src, tmp_path / "dc.onnx", dataclasses.replace(OPTS, conv_exec="dense"))
    dc = onnx.load(str(tmp_path / "dc.onnx"))
    decoded, count = decode_constant_payloads(dc)
    assert count == 1 and not [n for n in decoded.graph.node if n.domain == "onnx_dc"]
    assert not [t for t in decoded.graph.initializer if t.data_type == onnx.TensorProto.UINT8]
    onnx.checker.check_model(decoded)
    feeds = builders.random_feeds(dc, batch=2)
    a = make_session(tmp_path / "dc.onnx", intra_op_threads=1).run(None, feeds)[0]
    b = make_session(tmp_path / "dc.onnx", intra_op_threads=1, predecode=False).run(None, feeds)[0]
    c = make_session(dc, intra_op_threads=1).run(None, feeds)[0]
    assert _max_scaled_diff(a, b) <= 1e-5 and np.array_equal(a, c)
    assert decode_constant_payloads(onnx.load(src))[1] == 0  # nothing to do: the same model back


def test_data_aware_conv_runs_sparse_with_its_refitted_bias(lib_path, tmp_path):
    original = builders.conv_variant(cin=16, cout=32)
    src = builders.save(original, tmp_path / "in.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", X=rng.standard_normal((64, 16, 12, 12)).astype(np.float32))
    opts = dataclasses.replace(OPTS, conv_exec="sparse", calibration=str(tmp_path / "calib.npz"))
    result = onnx_dc.compress(src, tmp_path / "dc.onnx", opts)
    dc = onnx.load(str(tmp_path / "dc.onnx"))
    (node,) = [n for n in dc.graph.node if n.domain == "onnx_dc"]
    assert node.op_type == "DCSparseConv" and node.input[2] != "B"  # the refitted bias, not the original
    onnx_dc.decompress(tmp_path / "dc.onnx", tmp_path / "dense.onnx")
    feeds = builders.random_feeds(original, batch=2)
    got = make_session(tmp_path / "dc.onnx", intra_op_threads=1).run(None, feeds)[0]
    want = _ort(tmp_path / "dense.onnx").run(None, feeds)[0]
    assert _max_scaled_diff(got, want) <= 1e-5
    assert result.report["layers"][0]["execution"] == "sparse"
