"""Train LeNet-300-100 and LeNet-5 (Caffe variant) on Fashion-MNIST and export them to ONNX.

This script is the only place the project trains; tests and the main job use the committed .onnx files.
Needs PyTorch (CPU): `pip install torch==2.13.0`, and Debian's dataset-fashion-mnist package.
Run: python models/train_lenet.py [--epochs-mlp 20] [--epochs-lenet5 15]
Deterministic for a given seed on one machine (fixed seeds, deterministic algorithms, one thread order).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnx_dc.datasets import fashion_mnist, preprocess  # noqa: E402 (the one definition of preprocessing)

HERE = Path(__file__).resolve().parent


class LeNet300100(nn.Module):
    """The paper's LeNet-300-100: 784-300-100-10, ReLU."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    """Caffe's LeNet (the paper's LeNet-5): conv 20@5x5, max-pool, conv 50@5x5, max-pool, FC 500 + ReLU, FC 10.
    As in Caffe's lenet_train_test.prototxt, the convolutions have no ReLU after them."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.conv1(x), 2)
        x = nn.functional.max_pool2d(self.conv2(x), 2)
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred == y).float().mean())


def train(model, x, y, epochs, seed, lr=1e-3, batch=64):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=g)
        start, total = time.time(), 0.0
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        print(f"  epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f} ({time.time() - start:.0f}s)", flush=True)


def export(model, example, path):
    model.eval()
    torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs-mlp", type=int, default=20)
    ap.add_argument("--epochs-lenet5", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    xtr_raw, ytr = fashion_mnist("train")
    xte_raw, yte = fashion_mnist("test")
    results = {}
    for name, cls, shape, epochs in (("lenet_300_100", LeNet300100, ["batch", 784], args.epochs_mlp),
                                     ("lenet5", LeNet5, ["batch", 1, 28, 28], args.epochs_lenet5)):
        print(f"{name}: training {epochs} epochs", flush=True)
        torch.manual_seed(args.seed)
        model = cls()
        xtr = torch.from_numpy(preprocess(xtr_raw, shape))
        xte = torch.from_numpy(preprocess(xte_raw, shape))
        train(model, xtr, torch.from_numpy(ytr), epochs, args.seed)
        acc = accuracy(model, xte, torch.from_numpy(yte))
        export(model, xte[:1], HERE / f"{name}.onnx")
        results[name] = {"test_accuracy": acc, "epochs": epochs, "input_shape": shape}
        print(f"{name}: test accuracy {acc:.4f}", flush=True)
    (HERE / "training_results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    np.random.seed(0)
    main()
