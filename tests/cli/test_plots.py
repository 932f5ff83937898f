"""`onnx-dc plots`: one PNG per compressed layer."""
import pytest
from click.testing import CliRunner

import onnx_dc
from onnx_dc.cli import main
from repo_paths import MODELS

MLP = MODELS / "lenet_300_100.onnx"


def test_plots_write_one_png_per_layer(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need the optional matplotlib extra")
    onnx_dc.compress(MLP, tmp_path / "dc.onnx", min_weights=0)
    r = CliRunner().invoke(main, ["plots", str(tmp_path / "dc.onnx"), "-o", str(tmp_path / "img"),
                                  "--original", str(MLP)])
    assert r.exit_code == 0, r.output
    pngs = sorted(p.name for p in (tmp_path / "img").iterdir())
    assert pngs == ["fc1.weight.png", "fc2.weight.png", "fc3.weight.png"]
    assert all((tmp_path / "img" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_plots_of_an_uncompressed_model_is_a_clear_error(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need the optional matplotlib extra")
    r = CliRunner().invoke(main, ["plots", str(MLP), "-o", str(tmp_path / "img")])
    assert r.exit_code == 1 and "no onnx-dc compressed layer" in r.stderr
    assert not (tmp_path / "img").exists()
