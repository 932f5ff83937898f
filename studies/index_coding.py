"""How much do filler entries cost once the relative indices are Huffman coded? Measures, on the bundled
models compressed with the paper's settings, the index bits per nonzero of the paper's fixed-width
relative indices with fillers (Huffman coded, as onnx-dc stores them) at several widths, against two
filler-free codings: Huffman over gaps with an escape to a raw column index, and DEFLATE-style gap classes
(Huffman-coded class + raw low bits). Prints a table; sizes are exact Huffman code lengths, not entropies.

docs/results/index_coding.md tabulates this output for the large layers.

Run: python studies/index_coding.py
"""
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "studies")]

import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import onnx_dc  # noqa: E402
from onnx_dc.codec import huffman, read_payload  # noqa: E402
from onnx_dc.codec.sparse import encode_relative  # noqa: E402
from paper_settings import LENET5, LENET_300_100  # noqa: E402


def coded_bits(symbols: np.ndarray, alphabet: int) -> int:
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=alphabet), max(12, int(np.ceil(np.log2(alphabet)))))
    return int(lengths[symbols].sum())


def gaps(mask: np.ndarray) -> np.ndarray:
    r, c = np.nonzero(mask)
    prev = np.zeros(c.size, np.int64)
    if c.size > 1:
        prev[1:] = np.where(r[1:] == r[:-1], c[:-1] + 1, 0)
    return c - prev


def with_fillers(mask, bits):
    return coded_bits(encode_relative(mask, bits).symbols, 1 << bits)


def with_escape(mask, bits):
    g = gaps(mask)
    esc = (1 << bits) - 1
    raw = int(np.ceil(np.log2(max(mask.shape[1], 2))))
    return coded_bits(np.minimum(g, esc), 1 << bits) + int((g >= esc).sum()) * raw


def deflate_classes(mask):
    g = gaps(mask)
    msb = np.floor(np.log2(np.maximum(g, 1))).astype(np.int64)
    cls = np.where(g < 4, g, 2 * msb + ((g >> np.maximum(msb - 1, 0)) & 1))
    extra = np.where(g < 4, 0, msb - 1)
    return coded_bits(cls, 64) + int(extra.sum())


def main():
    tmp = Path(tempfile.mkdtemp())
    widths = (3, 4, 5, 6, 8)
    print(f"{'layer':<24} {'nnz':>6} " + " ".join(f"{'fill' + str(b):>6}" for b in widths)
          + f" {'esc5':>6} {'esc8':>6} {'classes':>7}   (index bits per nonzero)")
    for file, options in (("lenet_300_100.onnx", LENET_300_100), ("lenet5.onnx", LENET5)):
        out = tmp / file
        onnx_dc.compress(ROOT / "models" / file, out, options)
        for t in onnx.load(str(out)).graph.initializer:
            if t.data_type != onnx.TensorProto.UINT8:
                continue
            p = read_payload(numpy_helper.to_array(t).tobytes())
            mask = np.zeros((p.info.rows, p.info.cols), bool)
            mask[np.repeat(np.arange(p.info.rows), p.row_nnz), p.columns] = True
            n = p.info.nnz
            cells = [with_fillers(mask, b) / n for b in widths] + [with_escape(mask, 5) / n, with_escape(mask, 8) / n,
                                                                   deflate_classes(mask) / n]
            name = f"{file.split('.')[0]}/{t.name.replace('_dc_payload', '')}"
            print(f"{name:<24} {n:>6} " + " ".join(f"{c:>6.2f}" for c in cells[:-1]) + f" {cells[-1]:>7.2f}")


if __name__ == "__main__":
    main()
