"""Export the whole-model test models: a ResNet-style CNN and a BERT-style encoder, built from their
definitions with seeded random weights (nothing is downloaded or trained).

    pip install torch==2.13.0   # CPU build, from local disk
    python models/make_test_models.py

They stand in for real exported models: Conv kernels with folded BatchNorm, 1x1 projections,
a depthwise conv, token / position / segment embedding tables behind `Gather`, and MatMul weights stored
[in, out] as PyTorch's exporter writes them. The converter's tests and `studies/whole_models.py` use the
committed .onnx files; torch is needed only to regenerate them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
OPSET = 17


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.project = None
        if stride != 1 or c_in != c_out:
            self.project = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.project is None else self.project(x)))


class ResNetStyle(nn.Module):
    """CIFAR-sized ResNet: stem, three stages of two basic blocks (32, 64, 128 channels), a depthwise-
    separable block, global average pooling, a 10-way FC."""

    def __init__(self, widths=(32, 64, 128), classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks += [BasicBlock(c, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)]
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.separable = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = self.separable(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class EncoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.ffn_in, self.ffn_out = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)
        self.norm2 = nn.LayerNorm(hidden)

    def forward(self, x, mask_bias):
        b, s, h = x.shape
        d = h // self.heads

        def split(t):
            return t.view(b, s, self.heads, d).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d) + mask_bias
        ctx = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, s, h)
        x = self.norm1(x + self.attn_out(ctx))
        return self.norm2(x + self.ffn_out(nn.functional.gelu(self.ffn_in(x))))


class BertStyle(nn.Module):
    """A small BERT: token, position and segment embeddings, two post-norm encoder layers, mean pooling."""

    def __init__(self, vocab=2000, hidden=128, layers=2, heads=4, ffn=512, max_len=64):
        super().__init__()
        self.tokens = nn.Embedding(vocab, hidden)
        self.positions = nn.Embedding(max_len, hidden)
        self.segments = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads, ffn) for _ in range(layers))

    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
        x = self.norm(self.tokens(input_ids) + self.positions(positions) + self.segments(torch.zeros_like(input_ids)))
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask_bias)
        m = attention_mask.unsqueeze(-1).to(x.dtype)
        return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def _randomise_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    # Untrained BatchNorm is the identity; give it statistics so the folded Conv biases are not all zero.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))


def main() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    facts = {}

    resnet = ResNetStyle().eval()
    _randomise_batchnorm(resnet, gen)
    path = HERE / "resnet_style.onnx"
    torch.onnx.export(resnet, (torch.randn(1, 3, 32, 32),), str(path), dynamo=False, opset_version=OPSET,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    facts["resnet_style.onnx"] = {"parameters": sum(p.numel() for p in resnet.parameters()),
                                  "input": "image float32 [batch, 3, 32, 32]", "output": "logits [batch, 10]"}

    bert = BertStyle().eval()
    path = HERE / "bert_style.onnx"
    ids = torch.randint(0, 2000, (1, 16), generator=gen)
    torch.onnx.export(bert, (ids, torch.ones_like(ids)), str(path), dynamo=False, opset_version=OPSET,
                      input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                    "attention_mask": {0: "batch", 1: "sequence"}, "embedding": {0: "batch"}})
    facts["bert_style.onnx"] = {"parameters": sum(p.numel() for p in bert.parameters()),
                                "input": "input_ids int64 [batch, sequence<=64], attention_mask int64 [batch, sequence]",
                                "output": "embedding [batch, 128]"}
    (HERE / "test_models.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
