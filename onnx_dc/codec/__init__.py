"""Tensor codecs: numpy in, numpy/bytes out. Nothing here knows about ONNX."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cluster import INIT_METHODS, kmeans_1d
from .payload import PayloadError, PayloadInfo, WriteStats, decode_dense, read_info, read_payload, write_payload
from .prune import prune_mask_by_fraction, prune_mask_by_threshold

__all__ = [
    "INIT_METHODS", "CompressedTensor", "PayloadError", "PayloadInfo", "compress_tensor", "decode_dense", "pack_tensor",
    "read_info", "read_payload", "write_payload",
]


@dataclass(frozen=True)
class CompressedTensor:
    payload: bytes
    nnz: int
    stats: WriteStats
    shape: tuple
    mask: np.ndarray  # bool [rows, cols]
    labels: np.ndarray
    codebook: np.ndarray

    @property
    def dense(self) -> np.ndarray:
        """The pruned and quantized tensor (float32): exactly what decoding the payload gives. Built on
        demand, so compressing a layer does not hold a second full-size copy of it."""
        dense = np.zeros(self.mask.shape, dtype=np.float32)
        dense[self.mask] = np.asarray(self.codebook, dtype=np.float32)[np.asarray(self.labels, dtype=np.int64)]
        return dense.reshape(self.shape)


def compress_tensor(
    weight: np.ndarray,
    sparsity: float,
    bits: int,
    index_bits: int,
    init: str = "linear",
    seed: int = 0,
    huffman: bool = True,
    threshold: float | None = None,
) -> CompressedTensor:
    """Prune, cluster and pack one weight tensor (rows = dims[0], as in docs/FORMAT.md).

    `sparsity` is the pruned fraction (0.92 keeps 8%); `threshold`, if given, prunes by magnitude instead.
    """
    weight = np.asarray(weight, dtype=np.float32)
    if weight.ndim < 1:
        raise ValueError("a weight must have at least one dimension")
    flat = weight.ravel()
    if not all(np.isfinite(flat[i : i + (1 << 22)]).all() for i in range(0, flat.size, 1 << 22)):
        raise ValueError("weights contain NaN or infinity")
    if threshold is not None:
        mask = prune_mask_by_threshold(weight, threshold)
    else:
        mask = prune_mask_by_fraction(weight, sparsity)
    matrix_mask = mask.reshape(weight.shape[0], -1) if weight.size else mask.reshape(weight.shape[0], 0)
    kept = weight.reshape(matrix_mask.shape)[matrix_mask]  # row-major order, as the payload stores them
    clustering = kmeans_1d(kept, 1 << bits, init=init, seed=seed)
    return pack_tensor(weight.shape, matrix_mask, clustering.labels, clustering.codebook, bits, index_bits, huffman)


def pack_tensor(shape, mask: np.ndarray, labels: np.ndarray, codebook: np.ndarray, bits: int, index_bits: int,
                huffman: bool = True) -> CompressedTensor:
    """Pack an already pruned and clustered tensor: `mask` [rows, cols] (rows = shape[0]), `labels` the
    cluster index of each kept entry in row-major order."""
    matrix_mask = np.asarray(mask, dtype=bool).reshape(shape[0], -1)
    payload, stats = write_payload(tuple(shape), matrix_mask, labels, codebook, bits, index_bits, huffman_coded=huffman)
    return CompressedTensor(payload, int(matrix_mask.sum()), stats, tuple(shape), matrix_mask, labels, codebook)
