"""The main job: compress the bundled LeNet-300-100 with the paper's settings and show what changed —
the paper-style per-layer table, the file-size ratio, accuracy and batch-1 latency before and after.

Run: python studies/main_job.py   (scripts/demo.sh does the set-up first)
"""
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "studies")]  # this checkout's onnx_dc, not an installed copy

import onnx_dc  # noqa: E402
from onnx_dc.cli import print_report  # noqa: E402
from onnx_dc.datasets import fashion_mnist, preprocess  # noqa: E402
from onnx_dc.evaluate import evaluate, latency  # noqa: E402
from paper_settings import LENET_300_100, LENET_300_100_CLI  # noqa: E402


def main():
    original = ROOT / "models" / "lenet_300_100.onnx"
    out_dir = Path(tempfile.mkdtemp(prefix="onnx-dc-main-job-"))
    compressed = out_dir / "lenet_300_100.dc.onnx"
    print(f"onnx-dc compress {original.relative_to(ROOT)} -o {compressed} {LENET_300_100_CLI}\n")
    result = onnx_dc.compress(original, compressed, LENET_300_100)
    print_report(result.report)
    before = evaluate(original, "fashion-mnist")
    after = evaluate(compressed, "fashion-mnist", reference_path=original)
    # The same settings, data-aware: 2,000 training images as calibration data (no labels, no training).
    images, _ = fashion_mnist("train")
    calibration = out_dir / "calibration.npz"
    np.savez(calibration, input=preprocess(images[np.random.default_rng(0).choice(len(images), 2000, replace=False)],
                                           ["batch", 784]))
    aware_path = out_dir / "lenet_300_100.dc-calibrated.onnx"
    print(f"\nonnx-dc compress {original.relative_to(ROOT)} -o {aware_path} {LENET_300_100_CLI} --calibration {calibration} "
          "--output-fit kl")
    aware_result = onnx_dc.compress(original, aware_path, dataclasses.replace(LENET_300_100, calibration=str(calibration),
                                                                             output_fit="kl"))
    aware = evaluate(aware_path, "fashion-mnist", reference_path=original)
    x = np.zeros((1, 784), np.float32)
    x[0, ::3] = 0.5
    t_before = latency(original, {"input": x}, runs=2000)
    t_after = latency(compressed, {"input": x}, runs=2000)
    t_aware = latency(aware_path, {"input": x}, runs=2000)
    rows = [
        ("file size (bytes)", f"{result.report['file']['original_bytes']:,}", f"{result.report['file']['compressed_bytes']:,}",
         f"{aware_result.report['file']['compressed_bytes']:,}"),
        ("file size ratio", "1.0x", f"{result.report['file']['ratio']:.1f}x", f"{aware_result.report['file']['ratio']:.1f}x"),
        ("Fashion-MNIST top-1 accuracy", f"{before['accuracy']:.2%}", f"{after['accuracy']:.2%}", f"{aware['accuracy']:.2%}"),
        ("top-1 agreement with the original", "", f"{after['agreement']:.2%}", f"{aware['agreement']:.2%}"),
        ("batch-1 latency, onnxruntime, 1 thread", f"{t_before * 1e6:.1f} µs", f"{t_after * 1e6:.1f} µs",
         f"{t_aware * 1e6:.1f} µs"),
    ]
    print(f"\n{'':40} {'original':>12} {'compressed':>12} {'+calibration':>13}")
    for name, a, b, c in rows:
        print(f"{name:40} {a:>12} {b:>12} {c:>13}")
    print("\ncompressed: one-shot, no data (the paper retrains instead; without it the paper's kept fractions cost "
          "accuracy). +calibration: the same settings fitted layer by layer to 2,000 unlabelled training images.")
    print(f"models: {compressed}, {aware_path}")


if __name__ == "__main__":
    main()
