"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package (IDX files), with the bundled models'
preprocessing. Nothing is downloaded: if the files are missing, the error says which package to install."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path(os.environ.get("ONNX_DC_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
             0x0E: np.dtype(">f8")}


class DatasetError(ValueError):
    """A data set that cannot be read; the message is meant for the user as it is."""


def read_idx(path) -> np.ndarray:
    """An IDX file (gzip-compressed or not) as a numpy array."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DatasetError(f"{path}: not an IDX file")
    dtype, ndim = np.dtype(IDX_TYPES[raw[2]]), raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    count = int(np.prod(dims, dtype=np.int64))
    body = raw[4 + 4 * ndim :]
    if len(body) != count * dtype.itemsize:
        raise DatasetError(f"{path}: {len(body)} data bytes, the header announces {count * dtype.itemsize}")
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def fashion_mnist(split: str = "test", directory=None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 28, 28], labels int64 [n]) of the 'train' or 'test' split."""
    directory = Path(directory or FASHION_MNIST_DIR)
    prefix = {"train": "train", "test": "t10k"}[split]
    images, labels = (directory / f"{prefix}-images-idx3-ubyte.gz", directory / f"{prefix}-labels-idx1-ubyte.gz")
    for f in (images, labels):
        if not f.exists():
            raise DatasetError(f"{f} is missing: install Debian's dataset-fashion-mnist package "
                               "(apt-get install dataset-fashion-mnist) or set ONNX_DC_FASHION_MNIST")
    x, y = read_idx(images), read_idx(labels).astype(np.int64)
    if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise DatasetError(f"{directory}: images {x.shape} and labels {y.shape} do not match")
    return x, y


def preprocess(images: np.ndarray, input_shape) -> np.ndarray:
    """The bundled models' preprocessing: pixels scaled to [0, 1] (x / 255), float32, reshaped to the
    model's input layout ([n, 784] for LeNet-300-100, [n, 1, 28, 28] for LeNet-5)."""
    x = images.astype(np.float32) / 255.0
    tail = [d for d in list(input_shape)[1:]]
    if all(isinstance(d, int) and d > 0 for d in tail):
        x = x.reshape([x.shape[0]] + tail)
    return x
