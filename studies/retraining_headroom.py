"""How far could a training loop take the data-aware models? An experiment behind the accuracy target.

The target: ≤ 0.8 point below the original at the paper's kept fractions, without training.

For each bundled model: compress it data-aware at the paper's kept fractions and bits (2,000 calibration
images from the training set, `--output-fit kl`, exactly as studies/data_aware.py), decompress it, keep its
pruning masks, and then let PyTorch train the surviving weights (float32, masks fixed, no re-quantization):
  - distillation on the same 2,000 calibration images (1,600 to fit, 400 to stop early), KL to the original
    model's outputs at temperature 4: what a gradient-based network-level refit of the calibration data
    could add to the layer-wise one;
  - distillation on 20,000 unlabelled training images: the same with ten times the data;
  - retraining with the labels on all 60,000 training images (the paper's recovery step, masks fixed);
and, for reference, the paper's own method from the original model: magnitude pruning to the same kept
fractions in 4 rounds (kept fraction f^(r/4)), retraining with the labels after each round (3, 3, 3 and 8
epochs). Accuracy on the 10,000 test images. Needs PyTorch (`pip install torch==2.13.0`); the converter does not.

Writes the table into docs/results/retraining_headroom.md.

Run: python studies/retraining_headroom.py [--no-write]   (about 20 minutes on 2 cores)
"""
import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "studies"), str(ROOT / "models")]

import onnx_dc  # noqa: E402
from onnx_dc.datasets import fashion_mnist, preprocess  # noqa: E402
from paper_settings import LENET5, LENET_300_100  # noqa: E402
from results_block import write_results_block  # noqa: E402

try:
    import torch
    from torch.nn import functional as F
except ImportError:  # pragma: no cover - the message is the point
    sys.exit("studies/retraining_headroom.py needs PyTorch: pip install torch==2.13.0")
from train_lenet import LeNet5, LeNet300100  # noqa: E402 (the bundled models' own definitions)

MODELS = (("LeNet-300-100", "lenet_300_100.onnx", LENET_300_100, ["b", 784], LeNet300100),
          ("LeNet-5", "lenet5.onnx", LENET5, ["b", 1, 28, 28], LeNet5))


def load_into(module, path: Path) -> None:
    """Copy an ONNX file's weights into the module (onnx-dc's decompressed files name a refitted bias
    '<weight>_dc_bias')."""
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    state = {}
    for name in module.state_dict():
        value = inits.get(name)
        if value is None and name.endswith(".bias"):
            value = inits.get(name[: -len("bias")] + "weight_dc_bias")
        if value is None:
            raise KeyError(f"{path}: no tensor for {name}")
        state[name] = torch.tensor(value.copy())
    module.load_state_dict(state)


def accuracy(module, x, y) -> float:
    with torch.no_grad():
        pred = torch.cat([module(x[i:i + 2000]).argmax(1) for i in range(0, len(x), 2000)])
    return float((pred == y).float().mean())


def masked_training(module, masks, batches, loss_fn, epochs, validate=None, lr=1e-3):
    """Adam on every parameter, pruned weights held at zero; keeps the state with the best validation loss
    (or the last one without validation)."""
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    best, best_state = float("inf"), None
    for _ in range(epochs):
        for xb, tb in batches():
            opt.zero_grad()
            loss_fn(module(xb), tb).backward()
            opt.step()
            with torch.no_grad():
                for name, p in module.named_parameters():
                    if name in masks:
                        p.mul_(masks[name])
        if validate is not None:
            v = validate()
            if v < best:
                best, best_state = v, {k: t.clone() for k, t in module.state_dict().items()}
    if best_state is not None:
        module.load_state_dict(best_state)


def kept_fraction(options, name: str, is_conv: bool) -> float:
    """The paper settings' kept fraction of one weight (its --layer-sparsity, else its kind's)."""
    sparsity = options.layer_sparsity.get(name, options.sparsity.conv if is_conv else options.sparsity.fc)
    return 1.0 - sparsity


def iterative_pruning(module, fractions, batches, rounds=4, epochs=(3, 3, 3, 8)):
    """The paper's recipe: prune by magnitude towards the final kept fractions in rounds, retrain after each."""
    masks = {}
    for r in range(1, rounds + 1):
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name in fractions:
                    drop = int(p.numel() * (1.0 - fractions[name] ** (r / rounds)))
                    threshold = p.abs().flatten().kthvalue(drop).values if drop else -1.0
                    masks[name] = (p.abs() > threshold).float()
                    p.mul_(masks[name])
        masked_training(module, masks, batches, F.cross_entropy, epochs[r - 1], lr=3e-4)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", "--no-readme", dest="no_write", action="store_true",
                    help="print the table only, do not update docs/results/retraining_headroom.md")
    args = ap.parse_args()
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="onnx-dc-headroom-"))
    train_images, train_labels = fashion_mnist("train")
    test_images, test_labels = fashion_mnist("test")
    pick = np.random.default_rng(0).choice(len(train_images), 2000, replace=False)
    extra = np.random.default_rng(5).choice(len(train_images), 20000, replace=False)
    lines = ["| model | surviving weights trained on | test accuracy | change |", "|---|---|---:|---:|"]
    for title, file, paper, shape, cls in MODELS:
        original = ROOT / "models" / file
        cal = preprocess(train_images[pick], shape)
        np.savez(tmp / "cal.npz", input=cal)
        compressed, restored = tmp / f"{file}.dc.onnx", tmp / f"{file}.restored.onnx"
        result = onnx_dc.compress(original, compressed,
                                  dataclasses.replace(paper, calibration=str(tmp / "cal.npz"), output_fit="kl"))
        onnx_dc.decompress(compressed, restored)
        teacher, student = cls(), cls()
        load_into(teacher, original)
        load_into(student, restored)
        teacher.eval()
        masks = {name: (p != 0).float() for name, p in student.named_parameters() if name.endswith("weight")}
        x_test, y_test = torch.tensor(preprocess(test_images, shape)), torch.tensor(test_labels)
        base = accuracy(teacher, x_test, y_test)
        start_state = {k: t.clone() for k, t in student.state_dict().items()}
        rows = [(f"nothing (data-aware onnx-dc, {result.report['file']['ratio']:.1f}x, quantized)",
                 accuracy(student, x_test, y_test))]

        def kl(logits, target, t=4.0):
            return F.kl_div(F.log_softmax(logits / t, 1), F.softmax(target / t, 1), reduction="batchmean")

        def distil(x, epochs, batch):
            student.load_state_dict(start_state)
            x = torch.tensor(x)
            x_fit, x_val = x[400:], x[:400]
            with torch.no_grad():
                t_fit, t_val = teacher(x_fit), teacher(x_val)

            def batches():
                order = torch.randperm(len(x_fit))
                for i in range(0, len(x_fit), batch):
                    yield x_fit[order[i:i + batch]], t_fit[order[i:i + batch]]

            def validate():
                with torch.no_grad():
                    return float(kl(student(x_val), t_val))

            masked_training(student, masks, batches, kl, epochs, validate)
            return accuracy(student, x_test, y_test)

        t0 = time.time()
        rows.append(("distillation, the 2,000 calibration images", distil(cal, 150, 400)))
        rows.append(("distillation, 20,000 unlabelled training images",
                     distil(np.concatenate([cal[:400], preprocess(train_images[extra], shape)]), 15, 400)))
        student.load_state_dict(start_state)
        x_train, y_train = torch.tensor(preprocess(train_images, shape)), torch.tensor(train_labels)

        def labelled():
            order = torch.randperm(len(x_train))
            for i in range(0, len(x_train), 128):
                yield x_train[order[i:i + 128]], y_train[order[i:i + 128]]

        masked_training(student, masks, labelled, F.cross_entropy, 5, lr=3e-4)
        rows.append(("retraining with labels, all 60,000 training images, 5 epochs", accuracy(student, x_test, y_test)))
        load_into(student, original)
        fractions = {name: kept_fraction(paper, name, p.dim() == 4)
                     for name, p in student.named_parameters() if name.endswith("weight")}
        iterative_pruning(student, fractions, labelled)
        rows.append(("(the paper's method: iterative magnitude pruning + retraining with labels from the original, "
                     "17 epochs, not quantized)", accuracy(student, x_test, y_test)))
        print(f"{title}: {time.time() - t0:.0f} s of training", flush=True)
        lines.append(f"| {title} | (original, fp32) | {base:.2%} | |")
        for what, acc in rows:
            lines.append(f"| {title} | {what} | {acc:.2%} | {100 * (acc - base):+.2f} |")
            print(lines[-1], flush=True)
    text = ("Produced by `python studies/retraining_headroom.py` (PyTorch; masks from onnx-dc's data-aware compression "
            "at the paper's settings, surviving weights trained in float32, not re-quantized):\n\n" + "\n".join(lines))
    print(text)
    if not args.no_write:
        print(f"{write_results_block('retraining-headroom', text).relative_to(ROOT)} updated")


if __name__ == "__main__":
    main()
