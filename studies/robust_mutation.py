"""Mutation test of whole compressed models in onnxruntime (prints a table; exit status 1 on any finding).

    python studies/robust_mutation.py [--cases 1000] [--seed 0] [--timeout 60] [--mem-gb 4] [--keep DIR] [--json FILE]

The bundled models (models/lenet_300_100.onnx, models/lenet5.onnx) are compressed
(`onnx_dc.compress(src, out, min_weights=0)`: DCSparseGemm and, for LeNet-5's convolutions, DCDecode), then
mutated, each case one mutation:

- payload: one payload (a uint8 initializer) gets a byte flip, a header/table field set to a boundary
  value, a cut (truncation or a deleted range), a duplicated range or inserted bytes, aimed at the header,
  the tables (dims ... row counts), the streams, the checksum or anywhere. The initializer's shape follows
  its new length, so the model itself stays well-formed and the payload reaches the reader. Half of these
  are *resealed*: total_size set to the new length and the CRC-32 recomputed, so the reader's structural
  checks (not only its checksum) see the damage.
- protobuf: the serialized model itself gets a flip, a cut, a duplicated range or inserted bytes, aimed at
  the graph (everything but the payloads' bytes) or anywhere.
- graph: one structural change around an onnx_dc node, the protobuf well-formed (payloads swapped between
  layers, bias of the wrong length or type, payload of the wrong type, rank or declared length, empty,
  overridable or computed, inputs dropped or added, operator types swapped, a wrong declared N, another
  onnx_dc opset version).
- crafted (after the random cases): valid all-pruned payloads declaring huge tensors (a 16 GiB DCDecode
  output, N = 2^40, K = 2^33, ...): out of memory under the limit is a clean error for these.

Every case runs in a worker process (`--worker`, many cases per process, address space limited by
RLIMIT_AS) that makes an onnxruntime session with the library (`onnx_dc.make_session`) and runs one batch.
A case must end in one of:

- a clean error: a Python exception from onnx / onnxruntime (counted by kind);
- a correct run: the output equals the unmutated model's ("same"), or differs but equals what the Python
  reader's decoding of the same mutated model gives (`decompress_model`, run by plain onnxruntime:
  "verified"). For protobuf, graph and crafted cases, where the Python side cannot decode or plain
  onnxruntime cannot run the decompressed model, a run counts as "different" (unverified).

Findings (exit status 1): a crash (the worker dies on a signal: the case it had started is the culprit,
the worker is restarted), a hang (no answer within --timeout s: the worker is killed), an out-of-memory
error under the address-space limit, a payload mutation that was not resealed yet loaded (the checksum
must catch it), a run whose output disagrees with the Python reader, and the two readers disagreeing
about whether a payload is valid (or the Python reader failing with something other than PayloadError).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = {"lenet_300_100": REPO / "models" / "lenet_300_100.onnx", "lenet5": REPO / "models" / "lenet5.onnx"}
INPUT_SHAPES = {"lenet_300_100": (8, 784), "lenet5": (8, 1, 28, 28)}  # batch 8: with 2 threads, DCSparseGemm fans out
DOMAIN = "onnx_dc"

OK_OUTCOMES = ("error", "ran-same", "ran-verified", "ran-different")
FINDINGS = ("crash", "hang", "memory", "accepted-corrupt", "wrong-output", "disagreement", "python-unclean")


@dataclass
class Case:
    id: int
    model: str
    target: str   # payload | protobuf
    op: str       # flip | field | cut | dup | insert
    region: str   # header | tables | streams | crc | any (payload); graph | any (protobuf)
    reseal: bool  # payload cases: total_size and CRC recomputed
    payload: str  # the mutated payload's initializer name ("" for protobuf cases)
    detail: str
    path: str = ""


@dataclass
class Result:
    id: int
    outcome: str          # one of OK_OUTCOMES or FINDINGS
    kind: str = ""        # for errors: where and what (e.g. "session: payload rejected (structure)")
    message: str = ""
    seconds: float = 0.0
    case: dict = field(default_factory=dict)


# ---- the compressed models and their payloads ---------------------------------------------------------------

def compress_models(workdir: Path) -> dict[str, bytes]:
    import onnx_dc

    out = {}
    for name, src in MODELS.items():
        dst = workdir / f"{name}.dc.onnx"
        onnx_dc.compress(str(src), str(dst), min_weights=0)
        out[name] = dst.read_bytes()
    return out


def payload_names(model) -> list[str]:
    names = []
    for node in model.graph.node:
        if node.domain != DOMAIN or not node.input:
            continue
        name = node.input[1] if node.op_type == "DCSparseGemm" else node.input[0]
        if name not in names:
            names.append(name)
    return names


def payload_regions(blob: bytes) -> dict[str, tuple[int, int]]:
    """[start, end) of the header, the tables (dims .. row counts), the streams and the CRC (of a valid blob)."""
    rank, wb, ib, rcb, cbs = struct.unpack_from("<BBBBI", blob, 16)
    rows, = struct.unpack_from("<Q", blob, 24)
    n_chunks, = struct.unpack_from("<I", blob, 56)
    tables = 8 * rank + 4 * cbs + (1 << wb) + (1 << ib) + 24 * n_chunks + (rows * rcb + 7) // 8
    n = len(blob)
    return {"header": (0, 80), "tables": (80, 80 + tables), "streams": (80 + tables, n - 4), "crc": (n - 4, n),
            "any": (0, n)}


# Header fields (offset, size) and the dims/chunk-table u64s, for "field" mutations.
HEADER_FIELDS = [(4, 2), (6, 2), (8, 8), (16, 1), (17, 1), (18, 1), (19, 1), (20, 4), (24, 8), (32, 8), (40, 8),
                 (48, 8), (56, 4), (60, 4), (64, 8), (72, 8)]


def boundary_values(old: int, size: int, rng: random.Random) -> int:
    top = (1 << (8 * size)) - 1
    choices = [0, 1, 2, top, top >> 1, (top >> 1) + 1, max(old - 1, 0), min(old + 1, top), min(old * 2, top),
               old >> 1, min(1 << rng.randrange(8 * size), top), rng.randrange(top + 1)]
    if size >= 4:
        choices += [1 << 31, (1 << 32) - 1, 1 << 32, 65535, 65536, 65537]
    return min(rng.choice(choices), top)


def mutate_bytes(b: bytes, op: str, lo: int, hi: int, rng: random.Random) -> tuple[bytes, str]:
    """flip / cut / dup / insert within [lo, hi) of b."""
    hi = max(hi, lo + 1)
    i = rng.randrange(lo, min(hi, len(b))) if len(b) > lo else max(len(b) - 1, 0)
    if op == "flip":
        out = bytearray(b)
        k = rng.choice([1, 1, 2, 3])
        spots = sorted({rng.randrange(lo, min(hi, len(b))) for _ in range(k)})
        for p in spots:
            out[p] ^= (1 << rng.randrange(8)) if rng.random() < 0.6 else rng.randrange(1, 256)
        return bytes(out), f"flip at {spots}"
    if op == "cut":
        if rng.random() < 0.4:
            return b[:i], f"truncated to {i} bytes"
        n = rng.choice([1, 1, 2, 3, 4, 7, 8, 16, 24, rng.randrange(1, max(2, hi - lo))])
        return b[:i] + b[i + n:], f"deleted {n} at {i}"
    if op == "dup":
        n = rng.choice([1, 2, 4, 8, 16, 24, rng.randrange(1, max(2, hi - lo))])
        return b[:i + n] + b[i:i + n] + b[i + n:], f"duplicated {n} at {i}"
    if op == "insert":
        n = rng.choice([1, 1, 2, 3, 4, 8, 16])
        fill = rng.choice(["zeros", "ones", "random"])
        data = bytes(n) if fill == "zeros" else b"\xff" * n if fill == "ones" else bytes(rng.randrange(256) for _ in range(n))
        return b[:i] + data + b[i:], f"inserted {n} {fill} at {i}"
    raise ValueError(op)


def reseal(b: bytes) -> bytes:
    out = bytearray(b)
    if len(out) >= 16:
        struct.pack_into("<Q", out, 8, len(out))
    if len(out) >= 4:
        out[-4:] = struct.pack("<I", zlib.crc32(bytes(out[:-4])))
    return bytes(out)


def mutate_payload(blob: bytes, rng: random.Random) -> tuple[bytes, str, str, bool, str]:
    regions = payload_regions(blob)
    region = rng.choices(["header", "tables", "streams", "crc", "any"], [30, 25, 30, 5, 10])[0]
    ops = ["flip", "cut", "dup", "insert"] + (["field", "field"] if region in ("header", "tables") else [])
    op = rng.choice(ops)
    do_reseal = rng.random() < 0.5 and region != "crc"  # resealing would undo a change of the CRC itself
    lo, hi = regions[region]
    for _ in range(100):
        if op == "field":
            if region == "header":
                off, size = rng.choice(HEADER_FIELDS)
            else:  # a u64 of the dims or the chunk table, or a u8 of a code-length table
                off, size = rng.randrange(lo, max(lo + 1, hi - 7)), rng.choice([1, 8])
            old = int.from_bytes(blob[off:off + size], "little")
            new = boundary_values(old, size, rng)
            out = bytearray(blob)
            out[off:off + size] = new.to_bytes(size, "little")
            mutated, detail = bytes(out), f"field at {off} ({size} B): {old} -> {new}"
        else:
            mutated, detail = mutate_bytes(blob, op, lo, hi, rng)
        if do_reseal:
            mutated = reseal(mutated)
        if mutated != blob:
            return mutated, op, region, do_reseal, detail
    raise RuntimeError("could not make a different payload")


def graph_spans(serialized: bytes, payloads: list[bytes]) -> list[tuple[int, int]]:
    """Spans of the serialized model outside the payloads' bytes."""
    taken = []
    for p in payloads:
        at = serialized.find(p)
        if at >= 0:
            taken.append((at, at + len(p)))
    taken.sort()
    spans, pos = [], 0
    for a, b in taken:
        if a > pos:
            spans.append((pos, a))
        pos = max(pos, b)
    if pos < len(serialized):
        spans.append((pos, len(serialized)))
    return spans


GRAPH_OPS = ["swap-payload", "bias-length", "bias-dtype", "payload-dtype", "payload-shape", "payload-empty",
             "payload-overridable", "payload-through-identity", "drop-input", "extra-input", "swap-op-type",
             "output-shape", "opset-version"]


def mutate_graph(model, rng: random.Random):
    """A well-formed protobuf with one structural change around an onnx_dc node: the operator's own checks
    (payload type, rank, constness; bias shape; X against K) and onnxruntime's, not the reader."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    dc = [n for n in g.node if n.domain == DOMAIN]
    gemms = [n for n in dc if n.op_type == "DCSparseGemm"]
    node = rng.choice(dc)
    pidx = 1 if node.op_type == "DCSparseGemm" else 0
    pname = node.input[pidx]
    payload = numpy_helper.to_array(inits[pname])
    op = rng.choice(GRAPH_OPS)

    def replace_init(name, array):
        inits[name].CopyFrom(numpy_helper.from_array(array, name))

    if op == "swap-payload":
        other = rng.choice([p for p in payload_names(m) if p != pname])
        node.input[pidx] = other
        detail = f"{node.name}: payload {pname} -> {other}"
    elif op == "bias-length":
        node = rng.choice(gemms)
        bname = node.input[2]
        bias = numpy_helper.to_array(inits[bname])
        new = rng.choice([bias[:-1], np.concatenate([bias, bias[:1]]), bias[:0], bias.reshape(1, -1),
                          np.float32(1.0)])
        replace_init(bname, np.asarray(new, dtype=np.float32))
        detail = f"{node.name}: bias shape {bias.shape} -> {np.shape(new)}"
    elif op == "bias-dtype":
        node = rng.choice(gemms)
        bname = node.input[2]
        dtype = rng.choice([np.float64, np.float16, np.int32, np.uint8])
        replace_init(bname, numpy_helper.to_array(inits[bname]).astype(dtype))
        detail = f"{node.name}: bias as {np.dtype(dtype).name}"
    elif op == "payload-dtype":
        dtype = rng.choice([np.int8, np.float32, np.uint16])
        raw = payload.tobytes()
        raw = raw[: len(raw) // np.dtype(dtype).itemsize * np.dtype(dtype).itemsize]
        replace_init(pname, np.frombuffer(raw, dtype=dtype))
        detail = f"{pname} as {np.dtype(dtype).name}"
    elif op == "payload-shape":
        shape = rng.choice([(1, payload.size), (payload.size, 1), (payload.size,)])
        if shape == (payload.size,):  # a scalar-length mismatch: the declared dims disagree with the bytes
            t = inits[pname]
            t.dims[0] = payload.size + rng.choice([-1, 1, 1000])
            detail = f"{pname}: dims say {t.dims[0]} bytes, {payload.size} stored"
        else:
            replace_init(pname, payload.reshape(shape))
            detail = f"{pname} shaped {shape}"
    elif op == "payload-empty":
        replace_init(pname, np.zeros(0, dtype=np.uint8))
        detail = f"{pname} empty"
    elif op == "payload-overridable":
        g.input.append(helper.make_tensor_value_info(pname, TensorProto.UINT8, [payload.size]))
        detail = f"{pname} also a graph input"
    elif op == "payload-through-identity":
        g.node.insert(0, helper.make_node("Identity", [pname], [pname + "_copy"], name="copy_payload"))
        node.input[pidx] = pname + "_copy"
        detail = f"{node.name}: payload through Identity"
    elif op == "drop-input":
        keep = rng.randrange(len(node.input))
        del node.input[keep:]
        detail = f"{node.name}: inputs cut to {keep}"
    elif op == "extra-input":
        node.input.append(rng.choice(list(inits)))
        detail = f"{node.name}: extra input {node.input[-1]}"
    elif op == "swap-op-type":
        node.op_type = "DCDecode" if node.op_type == "DCSparseGemm" else "DCSparseGemm"
        detail = f"{node.name}: op_type -> {node.op_type}"
    elif op == "output-shape":
        node = rng.choice(gemms)
        out = node.output[0]
        vi = [v for v in list(g.value_info) + list(g.output) if v.name == out]
        n_real = numpy_helper.to_array(inits[node.input[2]]).size if len(node.input) > 2 and node.input[2] else 1
        new_n = rng.choice([n_real + 1, 1, 0, 10 ** 9])
        if vi:
            dims = vi[0].type.tensor_type.shape.dim
            dims[len(dims) - 1].Clear()
            dims[len(dims) - 1].dim_value = new_n
        else:
            g.value_info.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", new_n]))
        detail = f"{node.name}: declared N {n_real} -> {new_n}"
    else:  # opset-version
        for o in m.opset_import:
            if o.domain == DOMAIN:
                o.version = rng.choice([0, 2, 1000])
                detail = f"onnx_dc opset version {o.version}"
    return m, op, detail


def make_cases(models: dict[str, bytes], count: int, seed: int, workdir: Path,
               shares: tuple[float, float] = (0.5, 0.3)) -> list[Case]:
    """`count` cases (written to workdir/case_N.onnx), deterministic for a seed: a share shares[0] of payload
    mutations, shares[1] of protobuf bytes, the rest structural (graph) mutations."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    rng = random.Random(seed)
    parsed = {name: onnx.load_from_string(data) for name, data in models.items()}
    payloads = {name: {p: numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == p)).tobytes()
                       for p in payload_names(m)} for name, m in parsed.items()}
    spans = {name: graph_spans(models[name], list(payloads[name].values())) for name in models}
    cases = []
    names = sorted(models)
    for i in range(count):
        model = names[i % len(names)]
        path = workdir / f"case_{i}.onnx"
        u = rng.random()
        if u < shares[0]:
            pname = rng.choice(sorted(payloads[model]))
            mutated, op, region, sealed, detail = mutate_payload(payloads[model][pname], rng)
            m = onnx.ModelProto()
            m.CopyFrom(parsed[model])
            init = next(t for t in m.graph.initializer if t.name == pname)
            init.CopyFrom(numpy_helper.from_array(np.frombuffer(mutated, dtype=np.uint8), pname))
            path.write_bytes(m.SerializeToString())
            case = Case(i, model, "payload", op, region, sealed, pname, detail)
        elif u >= shares[0] + shares[1]:
            m, op, detail = mutate_graph(parsed[model], rng)
            path.write_bytes(m.SerializeToString())
            case = Case(i, model, "graph", op, "node", False, "", detail)
        else:
            data = models[model]
            region = "graph" if rng.random() < 0.6 else "any"
            op = rng.choice(["flip", "cut", "dup", "insert"])
            for _ in range(100):
                lo, hi = rng.choice(spans[model]) if region == "graph" else (0, len(data))
                mutated, detail = mutate_bytes(data, op, lo, hi, rng)
                if mutated != data:
                    break
            path.write_bytes(mutated)
            case = Case(i, model, "protobuf", op, region, False, "", detail)
        case.path = str(path)
        cases.append(case)
    return cases


def empty_payload(dims: tuple[int, ...]) -> bytes:
    """A valid payload with every weight pruned and any declared dims (the writer's all-pruned payload of a
    small tensor of the same rank, its dims, rows and cols patched; nothing else depends on them when
    nnz = 0 and row counts take 0 bits)."""
    import numpy as np

    from onnx_dc.codec.payload import write_payload

    small = (2,) + (1,) * (len(dims) - 1)
    blob, _ = write_payload(small, np.zeros((2, 1), dtype=bool), np.zeros(0, dtype=np.int64),
                            np.zeros(1, dtype=np.float32), 1, 2)
    b = bytearray(blob)
    assert b[19] == 0 and struct.unpack_from("<I", b, 56)[0] == 1  # row_count_bits 0, one chunk
    cols = 1
    for d in dims[1:]:
        cols *= d
    struct.pack_into("<QQ", b, 24, dims[0], cols)
    for i, d in enumerate(dims):
        struct.pack_into("<Q", b, 80 + 8 * i, d)
    return reseal(bytes(b))


# Valid payloads whose declared size is far beyond their bytes (all weights pruned), in place of a layer's
# payload: (model, payload initializer, dims, what must happen). The library cannot bound what dims declare
# by the blob's size; it must still fail cleanly (onnxruntime error) or run correctly.
CRAFTED = [
    ("lenet5", "conv1.weight_dc_payload", (20, 1, 5, 5), "runs: an all-pruned conv layer"),
    ("lenet5", "conv1.weight_dc_payload", (1 << 16, 1 << 16), "DCDecode: 16 GiB dense tensor"),
    ("lenet5", "conv1.weight_dc_payload", (1 << 31, 1 << 31), "DCDecode: 2^62 elements"),
    ("lenet5", "conv2.weight_dc_payload", (1 << 20, 1 << 20, 1, 1), "DCDecode: 2^40 elements, rank 4"),
    ("lenet_300_100", "fc1.weight_dc_payload", (300, 784), "runs: an all-pruned layer"),
    ("lenet_300_100", "fc1.weight_dc_payload", (1 << 40, 784), "DCSparseGemm: N = 2^40"),
    ("lenet_300_100", "fc1.weight_dc_payload", (1 << 26, 784), "DCSparseGemm: N = 2^26 (bias is [300])"),
    ("lenet_300_100", "fc1.weight_dc_payload", (300, 1 << 33), "DCSparseGemm: K = 2^33"),
    ("lenet_300_100", "fc3.weight_dc_payload", (10, 1 << 40), "DCSparseGemm: K = 2^40"),
    # The last layer without its bias: nothing stops Y = [3, N] but its size.
    ("lenet_300_100", "fc3.weight_dc_payload", (1 << 24, 100), "DCSparseGemm, no bias: Y is 3 x 2^24"),
    ("lenet_300_100", "fc3.weight_dc_payload", (1 << 40, 100), "DCSparseGemm, no bias: Y is 3 x 2^40"),
]


def crafted_cases(models: dict[str, bytes], workdir: Path, first_id: int) -> list[Case]:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    cases = []
    for i, (model, pname, dims, what) in enumerate(CRAFTED):
        m = onnx.load_from_string(models[model])
        init = next(t for t in m.graph.initializer if t.name == pname)
        init.CopyFrom(numpy_helper.from_array(np.frombuffer(empty_payload(dims), dtype=np.uint8), pname))
        if "no bias" in what:
            node = next(n for n in m.graph.node if n.domain == DOMAIN and pname in n.input)
            del node.input[2:]
            for out in list(m.graph.output) + list(m.graph.value_info):  # the converter's N is wrong now
                if out.name == node.output[0]:
                    d = out.type.tensor_type.shape.dim
                    d[len(d) - 1].Clear()
                    d[len(d) - 1].dim_param = "N"
        path = workdir / f"crafted_{i}.onnx"
        path.write_bytes(m.SerializeToString())
        cases.append(Case(first_id + i, model, "crafted", "empty-payload", "payload", True, pname,
                          f"{what}: dims {dims}", str(path)))
    return cases


# ---- the worker ---------------------------------------------------------------------------------------------

def _error_kind(stage: str, exc: BaseException) -> tuple[str, str]:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = str(exc)
    if isinstance(exc, MemoryError) or "out of memory" in text or "bad_alloc" in text:
        return "memory", message
    if "invalid onnx-dc payload" in text:
        if "checksum mismatch" in text:
            what = "checksum"
        elif any(s in text for s in ("bad magic", "unsupported version", "header_size", "total_size",
                                      "the header and checksum alone")):
            what = "identification"
        else:
            what = "structure"
        return f"{stage}: payload rejected ({what})", message
    return f"{stage}: {type(exc).__name__}", message


def _python_payload_check(model_bytes: bytes) -> tuple[str, object]:
    """("ok", dense model) if the Python reader accepts every payload, ("rejected", message), or
    ("unclean", message) when it fails with anything but PayloadError."""
    import onnx
    from onnx_dc.codec.payload import PayloadError
    from onnx_dc.graph.decompress import decompress_model

    try:
        model = onnx.load_from_string(model_bytes)
        return "ok", decompress_model(model)
    except PayloadError as exc:
        return "rejected", str(exc)
    except Exception as exc:  # noqa: BLE001 - anything else is a finding
        return "unclean", f"{type(exc).__name__}: {exc}"


def _python_reader_only() -> None:
    """The reference must be independent of the library under test: decompress_model decodes payloads with
    the native reader when it is built, so the worker turns that off (the library is still what
    make_session registers), and any native decoding from the Python side raises."""
    import onnx_dc.graph.decompress as dec
    import onnx_dc.native as native
    from onnx_dc.codec.payload import read_payload

    native.native_library = lambda: None
    if hasattr(dec, "decode_dense_fast"):
        dec.decode_dense_fast = lambda blob: read_payload(blob).dense()

    def refuse(*args, **kwargs):
        raise RuntimeError("the reference used the native reader")

    native.NativeLibrary.decode_dense = refuse
    native.NativeLibrary.payload_info = refuse


def worker(models: dict[str, str]) -> None:
    """Reads one JSON case per line on stdin; writes "S <id>" when it starts a case and "R <json>" when done."""
    import numpy as np
    import onnxruntime as ort

    from onnx_dc.session import make_session

    _python_reader_only()

    def options():
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return so

    # The protocol gets its own copy of stdout; everything else written to fd 1 (onnxruntime prints its
    # "EP Error" banners there) goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inputs = {name: np.random.default_rng(3).standard_normal(INPUT_SHAPES[name]).astype(np.float32) for name in models}
    baseline = {}
    for name, path in models.items():
        sess = make_session(path, intra_op_threads=1, sess_options=options())
        baseline[name] = sess.run(None, {sess.get_inputs()[0].name: inputs[name]})
    out.write("READY\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        case = json.loads(line)
        out.write(f"S {case['id']}\n")
        out.flush()
        t0 = time.perf_counter()
        res = _run_case(case, inputs[case["model"]], baseline[case["model"]], make_session, options, np, ort)
        res["seconds"] = time.perf_counter() - t0
        out.write("R " + json.dumps(res) + "\n")
        out.flush()


def _selftest(op: str, np) -> None:
    if op == "abort":
        os.abort()
    elif op == "hang":
        while True:
            time.sleep(3600)
    elif op == "oom":
        np.ones(1 << 31, dtype=np.float32)  # 8 GiB: a MemoryError under the address-space limit


def _run_case(case, x, expected, make_session, options, np, ort) -> dict:
    rid = case["id"]
    model_bytes = Path(case["path"]).read_bytes()
    threads = 2 if rid % 3 == 0 else 1
    stage = "session"
    try:
        if case["target"] == "selftest":  # the harness's own tests (tests/robustness/test_robust_mutation.py)
            _selftest(case["op"], np)
        sess = make_session(model_bytes, intra_op_threads=threads, sess_options=options())
        stage = "run"
        got = sess.run(None, {"input": x})
    except Exception as exc:  # noqa: BLE001 - every exception is a clean error, classified
        kind, message = _error_kind(stage, exc)
        if kind == "memory" and case["target"] == "crafted":  # what the payload declares is too big: say so
            return {"id": rid, "outcome": "error", "kind": f"{stage}: out of memory (declared size)", "message": message}
        if kind == "memory":
            return {"id": rid, "outcome": "memory", "kind": kind, "message": message}
        if case["target"] == "payload" and "payload rejected" in kind and case["reseal"]:
            verdict, detail = _python_payload_check(model_bytes)
            if verdict == "ok":
                return {"id": rid, "outcome": "disagreement", "kind": kind,
                        "message": f"native rejects ({message}), the Python reader accepts"}
            if verdict == "unclean":
                return {"id": rid, "outcome": "python-unclean", "kind": kind, "message": str(detail)}
        return {"id": rid, "outcome": "error", "kind": kind, "message": message}
    if case["target"] == "payload" and not case["reseal"]:
        return {"id": rid, "outcome": "accepted-corrupt", "message": "a payload with a wrong checksum or length loaded"}
    if len(got) == len(expected) and all(np.array_equal(a, b) for a, b in zip(got, expected)):
        return {"id": rid, "outcome": "ran-same"}
    if case["target"] in ("protobuf", "graph", "crafted"):
        # A different model: where the Python reader and plain onnxruntime can run it too, they must agree.
        verdict, detail = _python_payload_check(model_bytes)
        if verdict != "ok":
            return {"id": rid, "outcome": "ran-different", "message": f"no reference: {str(detail)[:200]}"}
        try:
            want = ort.InferenceSession(detail.SerializeToString(), sess_options=options(),
                                        providers=["CPUExecutionProvider"]).run(None, {"input": x})
        except Exception as exc:  # noqa: BLE001
            return {"id": rid, "outcome": "ran-different", "message": f"no reference: {type(exc).__name__}: {exc}"[:300]}
        return _compare(rid, got, want, np)
    # A resealed payload the library accepted: the Python reader must accept it too and mean the same.
    verdict, detail = _python_payload_check(model_bytes)
    if verdict != "ok":
        outcome = "python-unclean" if verdict == "unclean" else "disagreement"
        return {"id": rid, "outcome": outcome, "message": f"native accepts, the Python reader: {detail}"}
    dense = ort.InferenceSession(detail.SerializeToString(), sess_options=options(), providers=["CPUExecutionProvider"])
    return _compare(rid, got, dense.run(None, {"input": x}), np)


def _compare(rid, got, want, np) -> dict:
    if len(got) != len(want) or any(a.shape != b.shape for a, b in zip(got, want)):
        return {"id": rid, "outcome": "wrong-output",
                "message": f"shapes {[a.shape for a in got]} but the reference gives {[b.shape for b in want]}"}
    for a, b in zip(got, want):
        finite = np.isfinite(b)
        if not np.array_equal(np.isfinite(a), finite):
            continue  # overflow in one summation order and not the other: not comparable
        scale = float(np.abs(b[finite]).max()) if finite.any() else 0.0
        if not np.allclose(a[finite], b[finite], rtol=1e-4, atol=1e-4 * (scale + 1.0)):
            return {"id": rid, "outcome": "wrong-output",
                    "message": f"max |native - python| = {float(np.abs(a[finite] - b[finite]).max()):.3g} (scale {scale:.3g})"}
    return {"id": rid, "outcome": "ran-verified"}


# ---- the runner ---------------------------------------------------------------------------------------------

class Worker:
    def __init__(self, models: dict[str, str], mem_bytes: int, log):
        args = [sys.executable, str(Path(__file__).resolve()), "--worker"]
        for name, path in models.items():
            args += ["--model", f"{name}={path}"]

        def limit():
            import resource
            resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))

        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                   OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=REPO,
                                     env=env, preexec_fn=limit)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.buf = b""

    def readline(self, deadline: float) -> str | None:
        """A line, or None at EOF; raises TimeoutError after the deadline."""
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if not self.sel.select(timeout=left):
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def send(self, case: Case) -> None:
        self.proc.stdin.write((json.dumps(asdict(case)) + "\n").encode())
        self.proc.stdin.flush()

    def kill(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def run_cases(cases: list[Case], models: dict[str, str], timeout: float = 60.0, mem_gb: float = 4.0,
              log_path: Path | None = None, progress=None) -> list[Result]:
    """Run every case in worker processes; a worker that dies or hangs is replaced."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL
    mem = int(mem_gb * (1 << 30))
    results: list[Result] = []
    w: Worker | None = None
    startup_timeout = max(timeout, 120.0)
    try:
        for case in cases:
            for attempt in range(2):
                if w is None:
                    w = Worker(models, mem, log)
                    line = w.readline(time.monotonic() + startup_timeout)
                    if line != "READY":
                        code = w.kill()
                        raise RuntimeError(f"the worker did not start (exit {code}, said {line!r}); see {log_path}")
                try:
                    w.send(case)
                    break
                except BrokenPipeError:  # died between cases: start another
                    w.kill()
                    w = None
            t0 = time.monotonic()
            res = None
            started = False
            try:
                while res is None:
                    line = w.readline(t0 + timeout)
                    if line is None:
                        break
                    if line.startswith("S "):
                        started = True
                    elif line.startswith("R "):
                        res = json.loads(line[2:])
            except TimeoutError:
                w.kill()
                w = None
                results.append(Result(case.id, "hang", message=f"no answer within {timeout:.0f} s",
                                      seconds=time.monotonic() - t0, case=asdict(case)))
            else:
                if res is None:  # EOF: the worker died during this case
                    code = w.kill()
                    w = None
                    how = f"signal {-code}" if code < 0 else f"exit status {code}"
                    results.append(Result(case.id, "crash", message=f"the worker died ({how})"
                                          + ("" if started else " before starting the case"),
                                          seconds=time.monotonic() - t0, case=asdict(case)))
                else:
                    results.append(Result(case.id, res["outcome"], res.get("kind", ""), res.get("message", ""),
                                          res.get("seconds", 0.0), asdict(case)))
            if progress:
                progress(results[-1])
    finally:
        if w is not None:
            w.close()
        if log_path:
            log.close()
    return results


# ---- the report ---------------------------------------------------------------------------------------------

def group_of(case: dict) -> str:
    if case["target"] != "payload":
        return case["target"]
    return "payload, resealed" if case["reseal"] else "payload, CRC left"


def summary(results: list[Result]) -> str:
    groups = ["payload, CRC left", "payload, resealed", "protobuf", "graph", "crafted"]
    cols = ["cases", "clean errors", "ran, same output", "ran, verified", "ran, different"] + list(FINDINGS)
    head = {"clean errors": "error", "ran, same output": "ran-same", "ran, verified": "ran-verified",
            "ran, different": "ran-different"}
    lines = ["| group | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for g in groups + ["total"]:
        rs = [r for r in results if g == "total" or group_of(r.case) == g]
        counts = Counter(r.outcome for r in rs)
        row = [str(len(rs))] + [str(counts.get(head.get(c, c), 0)) for c in cols[1:]]
        label = f"**{g}**" if g == "total" else g
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    kinds = Counter((group_of(r.case), r.kind) for r in results if r.outcome == "error")
    lines += ["", "| clean error kind | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]
    for kind in sorted({k for _, k in kinds}, key=lambda k: -sum(kinds[(g, k)] for g in groups)):
        lines.append(f"| {kind} | " + " | ".join(str(kinds.get((g, kind), 0)) for g in groups) + " |")
    ops = Counter((r.case["target"], r.case["op"]) for r in results)
    lines += ["", "mutations: " + ", ".join(f"{t} {o} {n}" for (t, o), n in sorted(ops.items()))]
    return "\n".join(lines)


def findings(results: list[Result]) -> list[Result]:
    return [r for r in results if r.outcome in FINDINGS]


def run(count: int, seed: int, timeout: float, mem_gb: float, keep: Path | None = None, verbose: bool = False):
    workdir = Path(tempfile.mkdtemp(prefix="onnx_dc_mutation_")) if keep is None else keep
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        models = compress_models(workdir)
        cases = make_cases(models, count, seed, workdir)
        cases += crafted_cases(models, workdir, len(cases))
        paths = {name: str(workdir / f"{name}.dc.onnx") for name in models}

        def progress(r: Result):
            if verbose and (r.outcome in FINDINGS or (r.id + 1) % 100 == 0):
                print(f"  case {r.id + 1}/{count}: {r.outcome} {r.kind} {r.message[:100]}", file=sys.stderr, flush=True)

        t0 = time.monotonic()
        results = run_cases(cases, paths, timeout, mem_gb, workdir / "worker.log", progress)
        return results, time.monotonic() - t0, workdir
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--mem-gb", type=float, default=4.0, help="the worker's address-space limit (RLIMIT_AS)")
    ap.add_argument("--keep", type=Path, help="keep the models, cases and worker log in this folder")
    ap.add_argument("--json", type=Path, help="write every case's result here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(dict(m.split("=", 1) for m in args.model))
        return 0
    results, seconds, workdir = run(args.cases, args.seed, args.timeout, args.mem_gb, args.keep, verbose=True)
    print(f"{len(results)} mutated models (seed {args.seed}) in {seconds:.0f} s "
          f"({len(results) / max(seconds, 1e-9):.1f} cases/s), onnxruntime with libonnx_dc_ops.so\n")
    print(summary(results))
    bad = findings(results)
    for r in bad:
        print(f"FINDING case {r.id}: {r.outcome}: {r.message} ({r.case['model']} {r.case['target']} {r.case['op']} "
              f"{r.case['region']} reseal={r.case['reseal']} {r.case['payload']} {r.case['detail']})")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    if bad and args.keep is None:
        print("(rerun with --keep DIR to keep the failing cases' models)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
