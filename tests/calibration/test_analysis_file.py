"""A saved sensitivity analysis (`sensitivity --save`) reused by `compress --target-ratio --sensitivity`."""
import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import builders
import onnx_dc
from onnx_dc.calibration import sensitivity as layer_sensitivity
from onnx_dc.cli import main

GRID = "0.5,0.8,0.9"


def _setup(tmp_path, n=300):
    model = builders.mlp((64, 48, 32, 10))
    src = builders.save(model, tmp_path / "in.onnx")
    builders.calibration(model, tmp_path / "cal.npz", n=n)
    return src, str(tmp_path / "cal.npz")


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_saved_analysis_gives_the_same_file_without_measuring_again(tmp_path, monkeypatch):
    src, cal = _setup(tmp_path)
    r = _cli("sensitivity", src, "--calibration", cal, "--sparsities", GRID, "--output-fit", "kl",
             "--save", tmp_path / "s.json", "-q")
    assert r.exit_code == 0, r.output
    assert "--sensitivity" in r.output and "--output-fit kl" in r.output  # how to reuse it
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["format"] == "onnx-dc-sensitivity" and len(doc["points"]) == 3 * 3 * 3  # layers × sparsities × bits
    # In-process analysis with the same settings, passed directly: the reference output.
    sens = onnx_dc.sensitivity(src, cal, sparsities=(0.5, 0.8, 0.9),
                               options=onnx_dc.CompressOptions(output_fit="kl"))
    onnx_dc.compress(src, tmp_path / "direct.onnx", onnx_dc.CompressOptions(calibration=cal, target_ratio=4,
                                                                            output_fit="kl", min_weights=16),
                     sensitivity_data=sens)
    monkeypatch.setattr(layer_sensitivity, "analyse", lambda *a, **k: pytest.fail("analysed again"))
    r = _cli("compress", src, "-o", tmp_path / "out.onnx", "--calibration", cal, "--target-ratio", 4,
             "--output-fit", "kl", "--sensitivity", tmp_path / "s.json", "--min-weights", 16, "-q")
    assert r.exit_code == 0, r.output
    a, b = onnx.load(str(tmp_path / "out.onnx")), onnx.load(str(tmp_path / "direct.onnx"))
    assert [numpy_helper.to_array(t).tobytes() for t in a.graph.initializer] == \
           [numpy_helper.to_array(t).tobytes() for t in b.graph.initializer]


def _changed_model(tmp_path, src):
    model = onnx.load(src)
    w = numpy_helper.to_array(model.graph.initializer[0]).copy()
    w.flat[0] += 1.0
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, model.graph.initializer[0].name))
    return builders.save(model, tmp_path / "changed.onnx")


REFUSED = [
    ("other model", "different model"),
    ("other calibration", "different calibration data"),
    ("other output fit", "output_fit 'kl' (this run: 'mse')"),
    ("other min weights", "points for layers this run does not compress"),
    ("not an analysis", "not a saved sensitivity analysis"),
    ("older version", "analysis format version 1, this onnx-dc reads 2 (write it again with onnx-dc sensitivity"),
    ("not json", "not a readable JSON file"),
    ("missing", "no such file"),
    ("no target ratio", "--sensitivity is used by --target-ratio"),
]


@pytest.mark.parametrize("case,message", REFUSED, ids=[c for c, _ in REFUSED])
def test_a_mismatched_analysis_is_refused_in_one_line(tmp_path, case, message):
    src, cal = _setup(tmp_path)
    r = _cli("sensitivity", src, "--calibration", cal, "--sparsities", GRID, "--output-fit", "kl",
             "--save", tmp_path / "s.json", "-q")
    assert r.exit_code == 0, r.output
    saved = tmp_path / "s.json"
    args = {"model": src, "cal": cal, "fit": "kl", "min": 16, "ratio": ["--target-ratio", 4]}
    if case == "other model":
        args["model"] = _changed_model(tmp_path, src)
    elif case == "other calibration":
        np.savez(tmp_path / "cal2.npz", input=np.load(cal)["input"][:-1])
        args["cal"] = tmp_path / "cal2.npz"
    elif case == "other output fit":
        args["fit"] = "mse"
    elif case == "other min weights":
        args["min"] = 2000  # fc1 (64x48) alone stays compressible
    elif case == "not an analysis":
        saved.write_text(json.dumps({"points": []}))
    elif case == "older version":  # its errors measured the first output only
        saved.write_text(json.dumps({**json.loads(saved.read_text()), "version": 1}))
    elif case == "not json":
        saved.write_bytes(b"\x00\x01 not json")
    elif case == "missing":
        saved = tmp_path / "nope.json"
    elif case == "no target ratio":
        args["ratio"] = []
    out = tmp_path / "out.onnx"
    r = _cli("compress", args["model"], "-o", out, "--calibration", args["cal"], *args["ratio"], "--output-fit",
             args["fit"], "--sensitivity", saved, "--min-weights", args["min"], "-q")
    assert r.exit_code != 0
    assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists()


def test_save_never_overwrites_an_input(tmp_path):
    src, cal = _setup(tmp_path)
    before = (tmp_path / "cal.npz").read_bytes()
    r = _cli("sensitivity", src, "--calibration", cal, "--sparsities", "0.5", "--save", cal, "-q")
    assert r.exit_code != 0 and "would overwrite an input file" in r.output
    assert (tmp_path / "cal.npz").read_bytes() == before
