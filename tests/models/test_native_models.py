"""Every layer variant, compressed by onnx_dc.compress(), runs in onnxruntime + libonnx_dc_ops.so as it should.

The output equals the reference oracle (onnx_dc.reference) and the decompressed dense model, for every layer
variant the converter rewrites, at 1 and 2 intra-op threads (bit-identical between the two)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import builders
import onnx_dc
from onnx_dc.config import CompressOptions, PerKind
from onnx_dc.reference import run_reference
from onnx_dc.session import make_session

OPTS = CompressOptions(sparsity=PerKind(0.7, 0.5), bits=PerKind(4, 6), index_bits=PerKind(3, 4), min_weights=16)

VARIANTS = builders.LAYER_VARIANTS


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def compressed(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    original = VARIANTS[request.param]()
    src = builders.save(original, tmp / "in.onnx")
    onnx_dc.compress(src, tmp / "dc.onnx", OPTS)
    onnx_dc.decompress(tmp / "dc.onnx", tmp / "dense.onnx")
    return request.param, original, tmp / "dc.onnx", tmp / "dense.onnx"


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_native_equals_reference_and_decompressed(lib_path, compressed, batch):
    name, original, dc_path, dense_path = compressed
    dc_model = onnx.load(str(dc_path))
    used = {n.op_type for n in dc_model.graph.node if n.domain == "onnx_dc"}
    assert used, f"{name}: nothing was rewritten"
    feeds = builders.random_feeds(original, batch)
    reference = run_reference(dc_model, feeds)
    dense = ort.InferenceSession(str(dense_path), providers=["CPUExecutionProvider"]).run(None, feeds)
    runs = {t: make_session(dc_path, intra_op_threads=t).run(None, feeds) for t in (1, 2)}
    for i, out in enumerate(runs[1]):
        scale = max(1.0, float(np.abs(reference[i]).max()))
        assert out.shape == reference[i].shape and out.dtype == np.float32
        assert np.abs(out - reference[i]).max() <= 1e-5 * scale, f"{name}: native vs reference"
        assert np.abs(out - dense[i]).max() <= 1e-5 * scale, f"{name}: native vs decompressed"
        assert np.array_equal(out, runs[2][i]), f"{name}: 1 and 2 threads differ"


def test_session_output_shapes_are_known(lib_path, compressed):
    """The converter's value_info gives onnxruntime the full output shapes (symbolic batch, concrete N)."""
    name, original, dc_path, _ = compressed
    sess = make_session(dc_path, intra_op_threads=1)
    expected = [[d.dim_value if d.HasField("dim_value") else d.dim_param for d in o.type.tensor_type.shape.dim]
                for o in original.graph.output]
    assert [o.shape for o in sess.get_outputs()] == expected
