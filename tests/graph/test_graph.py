"""The graph rewrite (onnx_dc.graph): what is compressed, what is left alone and why, and the files written.

Every layer variant compresses, and the compressed model (reference oracle) computes what the decompressed
model computes in onnxruntime."""
import dataclasses
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import builders
import onnx_dc
from onnx_dc.config import CompressOptions, PerKind
from onnx_dc.reference import run_reference

OPTS = CompressOptions(sparsity=PerKind(0.7, 0.5), bits=PerKind(4, 6), index_bits=PerKind(3, 4), min_weights=16)


def _roundtrip(tmp_path, model, options=OPTS):
    src = builders.save(model, tmp_path / "in.onnx")
    result = onnx_dc.compress(src, tmp_path / "dc.onnx", options)
    onnx_dc.decompress(tmp_path / "dc.onnx", tmp_path / "dense.onnx")
    return result, onnx.load(str(tmp_path / "dc.onnx")), onnx.load(str(tmp_path / "dense.onnx"))


def _assert_equivalent(tmp_path, compressed, dense, original):
    feeds = builders.random_feeds(original)
    ref = run_reference(compressed, feeds)
    got = ort.InferenceSession(str(tmp_path / "dense.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert [o.name for o in compressed.graph.output] == [o.name for o in original.graph.output]
    assert [i.name for i in compressed.graph.input] == [i.name for i in original.graph.input]
    for r, g in zip(ref, got):
        assert r.shape == g.shape
        np.testing.assert_allclose(r, g, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(g).max())))


VARIANTS = builders.LAYER_VARIANTS


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_compresses_and_matches_decompressed(tmp_path, variant):
    original = VARIANTS[variant]()
    result, compressed, dense = _roundtrip(tmp_path, original)
    onnx.checker.check_model(compressed)
    onnx.checker.check_model(dense)
    ops = {n.op_type for n in compressed.graph.node}
    assert ops & {"DCSparseGemm", "DCDecode"}
    assert not ops & {"Gemm", "MatMul"}
    assert any(o.domain == "onnx_dc" for o in compressed.opset_import)
    assert not any(n.domain == "onnx_dc" for n in dense.graph.node)
    assert result.report["layers"] and not result.skipped
    _assert_equivalent(tmp_path, compressed, dense, original)


def test_fused_matmul_add_is_one_node_with_bias(tmp_path):
    _, compressed, dense = _roundtrip(tmp_path, builders.matmul(bias=True))
    assert [n.op_type for n in compressed.graph.node] == ["DCSparseGemm"]
    assert len(compressed.graph.node[0].input) == 3
    assert [n.op_type for n in dense.graph.node] == ["MatMul", "Add"]
    assert [n.name for n in dense.graph.node] == ["matmul", "add"]


def test_decompress_restores_original_operators_and_layouts(tmp_path):
    original = builders.gemm(trans_b=0)
    _, _, dense = _roundtrip(tmp_path, original)
    (node,) = dense.graph.node
    assert node.op_type == "Gemm" and node.name == "gemm"
    w = {t.name: numpy_helper.to_array(t) for t in dense.graph.initializer}["W"]
    assert w.shape == (64, 48)  # [K, N] as in the original, transB=0


def test_original_weights_are_dropped(tmp_path):
    _, compressed, _ = _roundtrip(tmp_path, builders.mlp((64, 48, 32, 10)))
    names = {t.name for t in compressed.graph.initializer}
    assert not names & {"fc1.weight", "fc2.weight", "fc3.weight", "fc1.bias"}
    assert all(t.data_type in (onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT) for t in compressed.graph.initializer)


def test_shapes_stay_known(tmp_path):
    _, compressed, _ = _roundtrip(tmp_path, builders.mlp((64, 48, 32, 10)))
    known = {v.name for v in compressed.graph.value_info}
    assert {"fc1_out", "fc2_out"} <= known


def test_shared_weight_is_compressed_once(tmp_path):
    original = builders.shared_weight()
    result, compressed, dense = _roundtrip(tmp_path, original)
    payloads = [t for t in compressed.graph.initializer if t.data_type == onnx.TensorProto.UINT8]
    assert len(payloads) == 1
    assert [n.op_type for n in compressed.graph.node] == ["DCSparseGemm", "DCSparseGemm"]
    assert len(result.report["layers"]) == 1
    _assert_equivalent(tmp_path, compressed, dense, original)


def test_transA_weight_is_stored_compressed_and_decoded_with_the_reason(tmp_path):
    m = builders.gemm()
    m.graph.node[0].attribute.append(onnx.helper.make_attribute("transA", 1))
    src = builders.save(m, tmp_path / "in.onnx")
    # Without the "other" kind the Gemm cannot take it: nothing to compress, and the reason says why.
    fc_only = dataclasses.replace(OPTS, kinds=frozenset({"fc", "conv"}))
    with pytest.raises(onnx_dc.NothingToCompress, match="transA"):
        onnx_dc.compress(src, tmp_path / "out.onnx", fc_only)
    assert not (tmp_path / "out.onnx").exists()
    result = onnx_dc.compress(src, tmp_path / "out.onnx", CompressOptions(min_weights=16, allow_unchanged=True,
                                                                          kinds=frozenset({"fc", "conv"})))
    assert "transA" in result.skipped[0].reason and not result.report["layers"]
    # By default it is stored compressed and decoded once per session for the unchanged Gemm.
    result = onnx_dc.compress(src, tmp_path / "out2.onnx", OPTS)
    (layer,) = result.report["layers"]
    assert layer["kind"] == "other" and layer["execution"] == "dense" and "transA" in layer["exec_reason"]
    compressed = onnx.load(tmp_path / "out2.onnx")
    assert [n.op_type for n in compressed.graph.node] == ["DCDecode", "Gemm"]


def test_small_layers_are_left_alone_with_reason(tmp_path):
    src = builders.save(builders.mlp((64, 48, 32, 4)), tmp_path / "in.onnx")
    result = onnx_dc.compress(src, tmp_path / "out.onnx", CompressOptions(min_weights=200))
    reasons = {s.name: s.reason for s in result.skipped}
    assert "fc3.weight" in reasons and "below the minimum" in reasons["fc3.weight"]
    report = onnx_dc.report(tmp_path / "out.onnx")
    assert [s["name"] for s in report["skipped"]] == ["fc3.weight"]


def test_per_layer_overrides_apply(tmp_path):
    src = builders.save(builders.mlp((64, 48, 32, 10)), tmp_path / "in.onnx")
    opts = CompressOptions(sparsity=PerKind(0.5, 0.5), layer_sparsity={"fc1": 0.9, "fc2.weight": 0.25},
                           layer_bits={"fc3": 2}, min_weights=16)
    layers = {l["name"]: l for l in onnx_dc.compress(src, tmp_path / "out.onnx", opts).report["layers"]}
    assert layers["fc1.weight"]["kept_pct"] == pytest.approx(10, abs=0.1)
    assert layers["fc2.weight"]["kept_pct"] == pytest.approx(75, abs=0.1)
    assert layers["fc3.weight"]["weight_bits_pq"] == 2 and layers["fc3.weight"]["kept_pct"] == 50


def test_external_data_models_load_and_save(tmp_path):
    m = builders.mlp((64, 48, 32, 10))
    onnx.save_model(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.bin", size_threshold=0)
    result = onnx_dc.compress(tmp_path / "ext.onnx", tmp_path / "dc.onnx", OPTS)
    assert result.report["file"]["original_bytes"] == (tmp_path / "ext.onnx").stat().st_size + (tmp_path / "ext.bin").stat().st_size
    feeds = builders.random_feeds(m)
    a = run_reference(str(tmp_path / "dc.onnx"), feeds)[0]
    onnx_dc.decompress(tmp_path / "dc.onnx", tmp_path / "dense.onnx")
    b = ort.InferenceSession(str(tmp_path / "dense.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_deterministic_output(tmp_path):
    src = builders.save(builders.mlp((64, 48, 32, 10)), tmp_path / "in.onnx")
    opts = CompressOptions(init="random", seed=3, min_weights=16)
    onnx_dc.compress(src, tmp_path / "a.onnx", opts)
    onnx_dc.compress(src, tmp_path / "b.onnx", opts)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_paper_settings_on_784_300_100_10_are_at_least_35x_smaller(tmp_path):
    src = builders.save(builders.mlp(), tmp_path / "mlp.onnx")
    opts = CompressOptions(sparsity=PerKind(0.92, 0.5), bits=PerKind(6, 8), index_bits=PerKind(5, 5),
                           layer_sparsity={"fc2": 0.91, "fc3": 0.74})
    report = onnx_dc.compress(src, tmp_path / "dc.onnx", opts).report
    ratio = (tmp_path / "mlp.onnx").stat().st_size / (tmp_path / "dc.onnx").stat().st_size
    assert report["file"]["ratio"] == pytest.approx(ratio)
    assert ratio >= 35
    assert report["totals"]["fillers"] > 0 and report["totals"]["filler_bits"] > 0


def test_parallel_jobs_give_the_same_file(tmp_path):
    src = builders.save(builders.mlp((64, 48, 32, 10)), tmp_path / "in.onnx")
    onnx_dc.compress(src, tmp_path / "a.onnx", CompressOptions(min_weights=16))
    onnx_dc.compress(src, tmp_path / "b.onnx", CompressOptions(min_weights=16, jobs=2))
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_external_data_weights_are_streamed_not_loaded(tmp_path, monkeypatch):
    """Data-free compression reads each external weight when it compresses it, and only the tensors that
    stay are read into the output."""
    m = builders.mlp((64, 48, 32, 10))
    onnx.save_model(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.bin", size_threshold=0)
    import onnx_dc.graph.model_io as model_io

    loaded = []
    real = model_io.materialize_external

    def spy(model, base, skip=frozenset(), check_only=False):
        if not check_only:
            loaded.append(set(skip))
        return real(model, base, skip, check_only)

    monkeypatch.setattr(model_io, "materialize_external", spy)
    monkeypatch.setattr("onnx_dc.api.materialize_external", spy)
    onnx_dc.compress(tmp_path / "ext.onnx", tmp_path / "dc.onnx", OPTS)
    assert loaded == [{"fc1.weight", "fc2.weight", "fc3.weight"}]  # one pass, compressed weights skipped
