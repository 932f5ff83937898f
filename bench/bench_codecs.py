"""Speed of the Python tensor codecs (prune, k-means, encode, decode) on paper-sized layers.

Prints a table; asserts nothing. Run: python bench/bench_codecs.py [--repeat N]
"""
import argparse
import time

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's onnx_dc

from onnx_dc.codec import compress_tensor, read_payload
from onnx_dc.codec.cluster import INIT_METHODS, kmeans_1d
from onnx_dc.codec.prune import prune_mask_by_fraction


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'layer':>12} {'kept':>5} {'step':<22} {'seconds':>8}")
    for shape, keep, bits in (((300, 784), 0.08, 6), ((4096, 4096), 0.10, 5)):
        w = rng.standard_normal(shape).astype(np.float32)
        name = f"{shape[0]}x{shape[1]}"
        mask = prune_mask_by_fraction(w, 1 - keep)
        kept = w[mask]
        rows = [("prune", lambda: prune_mask_by_fraction(w, 1 - keep))]
        for init in INIT_METHODS:
            rows.append((f"k-means k={2**bits} {init}", lambda init=init: kmeans_1d(kept, 2**bits, init=init)))
        rows.append(("compress_tensor (all)", lambda: compress_tensor(w, 1 - keep, bits, 5)))
        payload = compress_tensor(w, 1 - keep, bits, 5).payload
        rows.append(("read_payload (Python)", lambda: read_payload(payload)))
        for step, fn in rows:
            print(f"{name:>12} {keep:>5.0%} {step:<22} {best_of(fn, args.repeat):>8.3f}")
        print(f"{name:>12} {keep:>5.0%} {'payload bytes/nonzero':<22} {len(payload) / kept.size:>8.3f}")


if __name__ == "__main__":
    main()
