"""The paper-style compression report (Deep Compression, Tables 2–5), computed from a compressed model."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import onnx
from onnx import numpy_helper

from .codec.payload import read_info
from .codec.sparse import filler_symbol
from .graph.rewrite import META_LAYERS, META_ORIGINAL_BYTES, META_SKIPPED, get_metadata
from .operators import DEFAULT_KIND, DOMAIN, PAYLOAD_INPUT


@dataclass
class LayerReport:
    name: str  # the original weight's name
    op: str
    shape: list
    weights: int  # the paper's "#Weights"
    nnz: int
    kept_pct: float  # "Weights% (P)"
    weight_bits_pq: int  # "Weight bits (P+Q)": the codebook index width
    weight_bits_pqh: float  # "Weight bits (P+Q+H)": Huffman-coded bits per nonzero
    index_bits_pq: int  # "Index bits (P+Q)": the relative index width
    index_bits_pqh: float  # "Index bits (P+Q+H)": Huffman-coded index bits per nonzero, fillers included
    fillers: int
    filler_bits: int  # what the fillers cost in the Huffman-coded index stream
    overhead_bytes: int  # header, codebook, code-length tables, chunk table, row counts, checksum
    original_bytes: int  # 4 × #weights
    payload_bytes: int
    rate_pq: float  # "Compress rate (P+Q)": original / (fixed-width payload)
    rate_pqh: float  # "Compress rate (P+Q+H)": original / actual payload
    kind: str = "fc"  # fc, conv, emb or other
    execution: str = ""  # how onnxruntime runs it: sparse (the payload's own kernel) or dense (decoded once)
    exec_reason: str = ""


KIND_LABELS = {"fc": "fully-connected", "conv": "convolution", "emb": "embedding", "other": "other constants"}


def layer_reports(model: onnx.ModelProto) -> list[LayerReport]:
    records = get_metadata(model, META_LAYERS, []) or []
    record_of = {r.get("node"): r for r in records if isinstance(r, dict)}
    payload_users: dict[str, list[tuple[str, str, dict]]] = {}
    for node in model.graph.node:
        if node.domain == DOMAIN and node.op_type in PAYLOAD_INPUT and len(node.input) > PAYLOAD_INPUT[node.op_type]:
            payload = node.input[PAYLOAD_INPUT[node.op_type]]
            rec = dict(record_of.get(node.name, {}))
            rec.setdefault("kind", DEFAULT_KIND[node.op_type])
            rec.setdefault("exec", "dense" if node.op_type == "DCDecode" else "sparse")
            payload_users.setdefault(payload, []).append((rec.get("weight") or payload, rec.get("op") or node.op_type,
                                                          rec))
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for payload, users in payload_users.items():
        if payload not in inits:
            continue
        blob = numpy_helper.to_array(inits[payload]).tobytes()
        info, sections = read_info(blob)
        weights = info.rows * info.cols
        filler_len = int(sections["index_lengths"][filler_symbol(info.index_bits)])
        fixed_bits = info.nnz * info.weight_bits + info.n_index_symbols * info.index_bits + 8 * info.overhead_bytes
        nnz = max(info.nnz, 1)
        rec = users[0][2]
        out.append(LayerReport(
            name=users[0][0], op="/".join(sorted({op for _, op, _ in users})), shape=list(info.dims),
            weights=weights, nnz=info.nnz, kept_pct=100.0 * info.nnz / max(weights, 1),
            weight_bits_pq=info.weight_bits, weight_bits_pqh=8 * info.weight_stream_bytes / nnz,
            index_bits_pq=info.index_bits, index_bits_pqh=8 * info.index_stream_bytes / nnz,
            fillers=info.fillers, filler_bits=info.fillers * filler_len, overhead_bytes=info.overhead_bytes,
            original_bytes=4 * weights, payload_bytes=info.total_size,
            rate_pq=32 * weights / max(fixed_bits, 1), rate_pqh=4 * weights / info.total_size,
            kind=str(rec.get("kind")), execution=str(rec.get("exec")), exec_reason=str(rec.get("exec_reason") or ""),
        ))
    return out


def build_report(model: onnx.ModelProto, compressed_bytes: int | None = None) -> dict:
    """Everything `onnx-dc report` shows, as plain data (also the `--json` output)."""
    layers = layer_reports(model)
    weights = sum(layer.weights for layer in layers)
    nnz = sum(layer.nnz for layer in layers)
    original = sum(layer.original_bytes for layer in layers)
    payload = sum(layer.payload_bytes for layer in layers)
    fixed_bits = sum(32 * layer.weights / layer.rate_pq for layer in layers)
    totals = {
        "weights": weights, "nnz": nnz, "kept_pct": 100.0 * nnz / max(weights, 1),
        "weight_bits_pqh": sum(layer.weight_bits_pqh * layer.nnz for layer in layers) / max(nnz, 1),
        "index_bits_pqh": sum(layer.index_bits_pqh * layer.nnz for layer in layers) / max(nnz, 1),
        "fillers": sum(layer.fillers for layer in layers),
        "filler_bits": sum(layer.filler_bits for layer in layers),
        "original_bytes": original, "payload_bytes": payload,
        "rate_pq": 32 * weights / fixed_bits if fixed_bits else None,
        "rate_pqh": original / payload if payload else None,
    }
    by_kind = {}
    for kind in KIND_LABELS:
        group = [layer for layer in layers if layer.kind == kind]
        if group:
            o, p = sum(x.original_bytes for x in group), sum(x.payload_bytes for x in group)
            by_kind[kind] = {"tensors": len(group), "weights": sum(x.weights for x in group), "original_bytes": o,
                             "payload_bytes": p, "ratio": o / p if p else None,
                             "executed_sparse": sum(x.execution == "sparse" for x in group)}
    totals["by_kind"] = by_kind
    original_file = get_metadata(model, META_ORIGINAL_BYTES)
    file = {"original_bytes": original_file, "compressed_bytes": compressed_bytes,
            "ratio": original_file / compressed_bytes if original_file and compressed_bytes else None}
    return {"layers": [asdict(layer) for layer in layers], "totals": totals,
            "skipped": get_metadata(model, META_SKIPPED, []) or [], "file": file}


COLUMNS = ("Layer", "Op", "Shape", "#Weights", "Weights% (P)", "Weight bits (P+Q)", "Weight bits (P+Q+H)",
           "Index bits (P+Q)", "Index bits (P+Q+H)", "Fillers", "Compress rate (P+Q)", "Compress rate (P+Q+H)")


def _num(x, fmt):
    return "—" if x is None else format(x, fmt)


def table_rows(data: dict) -> tuple[list[list[str]], list[str]]:
    """The report's per-layer rows and its total row, formatted (the CLI and the published tables in docs/results share them)."""
    rows = []
    for layer in data["layers"]:
        rows.append([layer["name"], layer["op"], "×".join(map(str, layer["shape"])), f"{layer['weights']:,}",
                     f"{layer['kept_pct']:.1f}%", str(layer["weight_bits_pq"]), f"{layer['weight_bits_pqh']:.2f}",
                     str(layer["index_bits_pq"]), f"{layer['index_bits_pqh']:.2f}", f"{layer['fillers']:,}",
                     f"{layer['rate_pq']:.1f}x", f"{layer['rate_pqh']:.1f}x"])
    t = data["totals"]
    total = ["Total", "", "", f"{t['weights']:,}", f"{t['kept_pct']:.1f}%", "", _num(t["weight_bits_pqh"], ".2f"),
             "", _num(t["index_bits_pqh"], ".2f"), f"{t['fillers']:,}", _num(t["rate_pq"], ".1f") + "x",
             _num(t["rate_pqh"], ".1f") + "x"]
    return rows, total


def markdown_table(data: dict) -> str:
    rows, total = table_rows(data)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" if i < 3 else "---:" for i in range(len(COLUMNS))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("| " + " | ".join(f"**{c}**" if c else "" for c in total) + " |")
    return "\n".join(lines)
