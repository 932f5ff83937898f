"""Reproduce the paper's per-layer tables (Han et al. 2016, Tables 2 and 3) on the bundled models, with
measured Fashion-MNIST accuracy before and after, and write them into docs/results/paper_tables.md.

Run: python studies/paper_tables.py [--no-write]
"""
import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "studies")]  # this checkout's onnx_dc, not an installed copy

import onnx_dc  # noqa: E402
from results_block import write_results_block  # noqa: E402
from onnx_dc.evaluate import evaluate  # noqa: E402
from onnx_dc.report import markdown_table  # noqa: E402
from paper_settings import LENET5, LENET5_CLI, LENET_300_100, LENET_300_100_CLI  # noqa: E402

MODELS = (
    ("LeNet-300-100", "lenet_300_100.onnx", LENET_300_100, LENET_300_100_CLI, "40x, 1.64% → 1.58% top-1 error (MNIST)"),
    ("LeNet-5", "lenet5.onnx", LENET5, LENET5_CLI, "39x, 0.80% → 0.74% top-1 error (MNIST)"),
)


def build() -> str:
    out = [f"Produced by `python studies/paper_tables.py` (one-shot compression: no retraining, no calibration data).\n"]
    tmp = Path(tempfile.mkdtemp(prefix="onnx-dc-paper-"))
    for title, file, options, cli, paper in MODELS:
        original = ROOT / "models" / file
        compressed = tmp / file.replace(".onnx", ".dc.onnx")
        result = onnx_dc.compress(original, compressed, options)
        before = evaluate(original, "fashion-mnist")
        after = evaluate(compressed, "fashion-mnist", reference_path=original)
        f = result.report["file"]
        out.append(f"**{title}** — `onnx-dc compress models/{file} -o out.onnx {cli}`\n")
        out.append(markdown_table(result.report) + "\n")
        out.append(f"File: {f['original_bytes']:,} B → {f['compressed_bytes']:,} B, **{f['ratio']:.1f}x smaller**. "
                   f"Fashion-MNIST top-1 accuracy {before['accuracy']:.2%} → {after['accuracy']:.2%} "
                   f"(agreement with the original {after['agreement']:.2%}). The paper, with retraining: {paper}.\n")
        print(f"{title}: {f['ratio']:.1f}x, accuracy {before['accuracy']:.2%} -> {after['accuracy']:.2%}", flush=True)
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", "--no-readme", dest="no_write", action="store_true",
                    help="print the tables instead of updating docs/results/paper_tables.md")
    args = ap.parse_args()
    text = build()
    if args.no_write:
        print(text)
        return
    print(f"{write_results_block('paper-tables', text).relative_to(ROOT)} updated")


if __name__ == "__main__":
    main()
