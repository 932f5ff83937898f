"""The CLI against good and hostile input: one-line errors, non-zero exits, nothing written, input untouched."""
import hashlib
import json
import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import builders
from onnx_dc.cli import main
from payload_surgery import flip


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture()
def mlp(tmp_path):
    return builders.save(builders.mlp((64, 48, 32, 10)), tmp_path / "mlp.onnx")


def test_compress_prints_the_report_and_writes_the_model(tmp_path, mlp):
    r = _run("compress", mlp, "-o", tmp_path / "out.onnx", "--sparsity", "0.8", "--bits", "fc=4,conv=8",
             "--index-bits", "4", "--layer-sparsity", "fc3=0.5", "--min-weights", "16")
    assert r.exit_code == 0, r.output
    assert "Compress rate (P+Q+H)" in r.stdout and "fc1.weight" in r.stdout and "smaller" in r.stdout
    onnx.checker.check_model(onnx.load(str(tmp_path / "out.onnx")))


def test_report_json_and_table(tmp_path, mlp):
    assert _run("compress", mlp, "-o", tmp_path / "out.onnx", "-q", "--min-weights", "16").exit_code == 0
    r = _run("report", tmp_path / "out.onnx", "--json")
    data = json.loads(r.stdout)
    assert r.exit_code == 0 and len(data["layers"]) == 3 and data["file"]["ratio"] > 1
    assert {"weights", "kept_pct", "weight_bits_pqh", "index_bits_pqh", "rate_pq", "rate_pqh"} <= set(data["layers"][0])
    r = _run("report", tmp_path / "out.onnx")
    assert r.exit_code == 0 and "Weights% (P)" in r.stdout


def test_compress_json_is_one_object(tmp_path, mlp):
    r = _run("compress", mlp, "-o", tmp_path / "out.onnx", "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["totals"]["weights"] > 0


def test_decompress(tmp_path, mlp):
    _run("compress", mlp, "-o", tmp_path / "out.onnx", "-q")
    r = _run("decompress", tmp_path / "out.onnx", "-o", tmp_path / "dense.onnx")
    assert r.exit_code == 0
    ops = {n.op_type for n in onnx.load(str(tmp_path / "dense.onnx")).graph.node}
    assert ops == {"Gemm", "Relu"}


def _bad_files(tmp_path, mlp):
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "random.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    data = open(mlp, "rb").read()
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "adir").mkdir()
    os.symlink(tmp_path / "loop_b", tmp_path / "loop_a")
    os.symlink(tmp_path / "loop_a", tmp_path / "loop_b")
    m = builders.mlp((64, 48, 32, 10))
    onnx.save_model(m, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.bin", size_threshold=0)
    os.remove(tmp_path / "ext.bin")
    m2 = builders.mlp((64, 48, 32, 10))
    onnx.save_model(m2, str(tmp_path / "escape.onnx"), save_as_external_data=True, location="escape.bin", size_threshold=0)
    esc = onnx.load(str(tmp_path / "escape.onnx"), load_external_data=False)
    for t in esc.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../outside.bin"
    onnx.save(esc, str(tmp_path / "escape.onnx"))
    (tmp_path / "file").write_text("x")
    relu = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])]))
    onnx.save(relu, str(tmp_path / "relu.onnx"))


BAD = [
    # (arguments, exit code, message fragment)
    (["compress", "missing.onnx", "-o", "o.onnx"], 1, "no such file"),
    (["compress", "empty.onnx", "-o", "o.onnx"], 1, "empty"),
    (["compress", "random.onnx", "-o", "o.onnx"], 1, "not a valid ONNX model"),
    (["compress", "truncated.onnx", "-o", "o.onnx"], 1, "not a valid ONNX model"),
    (["compress", "adir", "-o", "o.onnx"], 1, "is a directory"),
    (["compress", "loop_a", "-o", "o.onnx"], 1, "loop_a"),
    (["compress", "ext.onnx", "-o", "o.onnx"], 1, "external data file 'ext.bin' is missing"),
    (["compress", "escape.onnx", "-o", "o.onnx"], 1, "outside the model's folder"),
    (["compress", "relu.onnx", "-o", "o.onnx"], 3, "no layer of the model can be compressed"),
    (["compress", "mlp.onnx", "-o", "mlp.onnx"], 1, "must not be the input"),
    (["compress", "mlp.onnx", "-o", "nodir/o.onnx"], 1, "does not exist"),
    (["compress", "mlp.onnx", "-o", "file/o.onnx"], 1, "does not exist"),
    (["compress", "mlp.onnx", "-o", "adir"], 1, "is a directory"),
    (["compress", "mlp.onnx", "-o", "o.onnx", "--sparsity", "1.0"], 1, "must be in [0, 1)"),
    (["compress", "mlp.onnx", "-o", "o.onnx", "--sparsity", "-0.1"], 1, "must be in [0, 1)"),
    (["compress", "mlp.onnx", "-o", "o.onnx", "--sparsity", "lots"], 1, "not a number"),
    (["compress", "mlp.onnx", "-o", "o.onnx", "--bits", "0"], 1, "weight bits must be in 1..8"),
    (["compress", "mlp.onnx", "-o", "o.onnx", "--bits", "fc=9"], 1, "weight bits must be in 1..8"),
    (["compress", "mlp.onnx", "-o", "o.onnx", "--bits", "dense=4"], 1, "expected B or KIND=B"),
    (["compress", "mlp.onnx", "-o", "o.onnx", "--kinds", "fc,lstm"], 1, "--kinds: expected a comma-separated list"),
    (["compress", "mlp.onnx", "-o", "o.onnx", "--kinds", ""], 1, "--kinds: expected a comma-separated list"),
    (["compress", "mlp.onnx", "-o", "o.onnx", "--sparsity", "emb=1.5"], 1, "sparsity is the pruned fraction"),
    (["compress", "mlp.onnx", "-o", "o.onnx", "--index-bits", "17"], 1, "index bits must be in 1..16"),
    (["compress", "mlp.onnx", "-o", "o.onnx", "--layer-sparsity", "nosuch=0.5"], 1, "no compressible layer is named 'nosuch'"),
    (["compress", "mlp.onnx", "-o", "o.onnx", "--layer-bits", "fc1"], 1, "expected NAME=VALUE"),
    (["compress", "mlp.onnx", "-o", "o.onnx", "--min-weights", "-1"], 1, "--min-weights"),
    (["report", "mlp.onnx"], 1, "no onnx-dc compressed layer"),
    (["report", "random.onnx"], 1, "not a valid ONNX model"),
    (["decompress", "empty.onnx", "-o", "o.onnx"], 1, "empty"),
]


@pytest.mark.parametrize("args,code,message", BAD, ids=[" ".join(a[:2] + a[4:6]) for a, _, _ in BAD])
def test_bad_input_gets_one_line_and_changes_nothing(tmp_path, mlp, monkeypatch, args, code, message):
    _bad_files(tmp_path, mlp)
    monkeypatch.chdir(tmp_path)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir() if p.is_file()}
    r = _run(*args)
    assert r.exit_code == code, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx-dc: error:") and message in lines[0], r.stderr
    assert "Traceback" not in r.output
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # inputs untouched, no output, no temporary left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(before) | {"adir", "loop_a", "loop_b"})


def test_corrupted_payload_fails_decompress_cleanly(tmp_path, mlp):
    _run("compress", mlp, "-o", tmp_path / "out.onnx", "-q")
    m = onnx.load(str(tmp_path / "out.onnx"))
    t = next(t for t in m.graph.initializer if t.data_type == onnx.TensorProto.UINT8)
    t.raw_data = flip(t.raw_data, 200, 0x10)
    onnx.save(m, str(tmp_path / "bad.onnx"))
    r = _run("decompress", tmp_path / "bad.onnx", "-o", tmp_path / "dense.onnx")
    assert r.exit_code == 1 and "checksum mismatch" in r.stderr and not (tmp_path / "dense.onnx").exists()


def test_allow_unchanged_writes_a_model_without_eligible_layers(tmp_path, mlp):
    _bad_files(tmp_path, mlp)
    r = _run("compress", tmp_path / "relu.onnx", "-o", tmp_path / "o.onnx", "--allow-unchanged")
    assert r.exit_code == 0 and (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("extra", [[], ["--output-fit", "kl", "--quantizer", "kmeans"], ["--output-fit", "mse"]])
def test_compress_with_calibration_options(tmp_path, mlp, extra):
    import numpy as np

    np.savez(tmp_path / "calib.npz", input=np.random.default_rng(0).standard_normal((256, 64)).astype(np.float32))
    r = _run("compress", mlp, "-o", tmp_path / "out.onnx", "--min-weights", "16", "--calibration",
             tmp_path / "calib.npz", "-q", *extra)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out.onnx").exists()


def test_unknown_output_fit_is_refused(tmp_path, mlp):
    r = _run("compress", mlp, "-o", tmp_path / "out.onnx", "--output-fit", "logits")
    assert r.exit_code != 0 and "logits" in r.output and not (tmp_path / "out.onnx").exists()
