"""DCDecode refuses a huge all-pruned tensor that a small valid payload declares, instead of allocating it.

A few hundred bytes must not cost gigabytes of memory: what the blob cannot justify is refused."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_dc
import payload_surgery as surgery
from onnx_dc.codec import write_payload


def _payload(dims):
    """An all-pruned payload of `dims`, written field by field through the writer on a small mask and
    then given the declared shape (the writer itself would need the mask in memory)."""
    small, _ = write_payload((1, 1), np.zeros((1, 1), bool), np.zeros(0, np.int64), np.zeros(1, np.float32), 1, 1)
    rows, cols = dims[0], int(np.prod(dims[1:]))
    blob = surgery.set_field(surgery.set_field(small, "rows", rows), "cols", cols)
    # dims section (rank 2: 16 bytes) then codebook, lengths, chunk table (1 chunk), row counts (0 bits).
    blob = surgery.patch(blob, surgery.dims_field(0)[0], "<QQ", rows, cols)
    return surgery.reseal(blob)


def _model(blob, dims):
    node = helper.make_node("DCDecode", ["p"], ["y"], domain="onnx_dc")
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims))],
                              [numpy_helper.from_array(np.frombuffer(blob, np.uint8), "p")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("onnx_dc", 1)])


def test_small_all_pruned_payload_decodes():
    blob = _payload((64, 32))
    from onnx_dc.codec import decode_dense

    assert decode_dense(blob).shape == (64, 32)
    y = onnx_dc.make_session(_model(blob, (64, 32)).SerializeToString()).run(None, {})[0]
    assert y.shape == (64, 32) and not y.any()


def test_huge_declared_tensor_is_refused_not_allocated():
    blob = _payload((65536, 65536))  # 2^32 elements (16 GiB) declared by a ~120-byte payload
    assert len(blob) < 1000
    with pytest.raises(Exception, match="more than the limit"):
        onnx_dc.make_session(_model(blob, (65536, 65536)).SerializeToString())
