"""`onnx-dc eval`: metrics on .npz data and the Fashion-MNIST shortcut; one-line errors for bad data."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import onnx_dc
from onnx_dc.cli import main
from onnx_dc.datasets import DatasetError, read_idx
from onnx_dc.evaluate import evaluate
from repo_paths import MODELS

MLP = MODELS / "lenet_300_100.onnx"


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture()
def data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((50, 784)).astype(np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, input=x, labels=rng.integers(0, 10, 50))
    return path


def test_accuracy_and_agreement_with_itself(data):
    m = evaluate(MLP, str(data), reference_path=MLP)
    assert m["samples"] == 50 and 0 <= m["accuracy"] <= 1
    assert m["agreement"] == 1.0 and m["max_abs_diff"] == 0.0 and m["cosine_similarity"] == pytest.approx(1.0)


def test_compressed_model_runs_through_the_library(tmp_path, data):
    onnx_dc.compress(MLP, tmp_path / "dc.onnx", sparsity=onnx_dc.PerKind(0.5, 0.5), bits=onnx_dc.PerKind(8, 8))
    r = _run("eval", tmp_path / "dc.onnx", "--data", data, "--reference", MLP, "--json")
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert {"accuracy", "agreement", "max_abs_diff", "mean_abs_diff", "cosine_similarity"} <= set(m)
    assert m["agreement"] > 0.8 and m["cosine_similarity"] > 0.99


def test_fashion_mnist_shortcut():
    try:
        m = evaluate(MLP, "fashion-mnist")
    except DatasetError as exc:
        pytest.skip(str(exc))
    assert m["samples"] == 10000 and m["accuracy"] == pytest.approx(0.9007, abs=1e-4)  # models/README.md


def test_idx_reader_rejects_garbage(tmp_path):
    (tmp_path / "x.idx").write_bytes(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x02" * 3 + b"\x01")
    with pytest.raises(DatasetError, match="announces"):
        read_idx(tmp_path / "x.idx")


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.zeros((2, 784), np.float32)}, "no array named 'input'"),
    ({"input": np.zeros((2, 100), np.float32)}, "has shape [2, 100]"),
    ({"input": np.zeros((2, 784), np.float32), "labels": np.zeros(3)}, "'labels' has shape [3]"),
])
def test_bad_data_gets_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    r = _run("eval", MLP, "--data", tmp_path / "bad.npz")
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_data_that_is_not_an_npz(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    r = _run("eval", MLP, "--data", tmp_path / "x.npz")
    assert r.exit_code == 1 and "not a readable .npz" in r.stderr
    r = _run("eval", MLP, "--data", tmp_path / "missing.npz")
    assert r.exit_code == 1 and "no such file" in r.stderr
