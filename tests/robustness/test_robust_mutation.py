"""Mutated compressed models never crash, hang or blow up onnxruntime with the library loaded.

The bundled models are compressed, then mutated (studies/robust_mutation.py: payload bytes flipped, cut,
duplicated, inserted or a header field set to a boundary value, half of them with total_size and the CRC
resealed; the serialized protobuf flipped, cut, duplicated or inserted into; structural changes around the
onnx_dc nodes; valid payloads declaring huge tensors), and every mutated model is loaded and run for one
batch in a worker process under an address-space limit. Each case must end in a clean Python exception or
a correct run (same output, or what the Python reader's decoding of the same payloads gives in plain
onnxruntime). `python studies/robust_mutation.py --cases 1000` is the big run.
"""
from __future__ import annotations

import sys
from collections import Counter

import pytest

from native_lib import run_python
from payload_surgery import flip
from repo_paths import REPO

sys.path.insert(0, str(REPO / "studies"))
import robust_mutation as rm  # noqa: E402

CASES = 400


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, lib_path):
    work = tmp_path_factory.mktemp("mutation")
    models = rm.compress_models(work)
    paths = {name: str(work / f"{name}.dc.onnx") for name in models}
    return work, models, paths


@pytest.fixture(autouse=True)
def _this_library(lib_path, monkeypatch):
    monkeypatch.setenv("ONNX_DC_LIBRARY", lib_path)  # the workers load the library under test


def _describe(results) -> str:
    return "\n".join(f"case {r.id}: {r.outcome}: {r.message} ({r.case})" for r in results)


def test_mutated_models_fail_cleanly_or_run_correctly(compressed):
    work, models, paths = compressed
    cases = rm.make_cases(models, CASES, seed=1, workdir=work)
    results = rm.run_cases(cases, paths, timeout=120, mem_gb=4, log_path=work / "worker.log")
    assert [r.id for r in results] == [c.id for c in cases]
    bad = rm.findings(results)
    assert not bad, f"{len(bad)} of {len(results)} cases went wrong:\n{_describe(bad)}\n\n{rm.summary(results)}"

    # The mutations reached what they aim at (else this test would pass without testing anything).
    by_group = {g: [r for r in results if rm.group_of(r.case) == g]
                for g in ("payload, CRC left", "payload, resealed", "protobuf", "graph")}
    kinds = {g: Counter(r.kind for r in rs if r.outcome == "error") for g, rs in by_group.items()}
    assert all(len(rs) >= 20 for rs in by_group.values()), rm.summary(results)
    # A payload with a wrong checksum or length never loads: every such case is a payload rejection.
    assert all(r.outcome == "error" and "payload rejected" in r.kind for r in by_group["payload, CRC left"]), \
        _describe(by_group["payload, CRC left"])
    assert kinds["payload, CRC left"]["session: payload rejected (checksum)"] > 0, rm.summary(results)
    # Resealed payloads get past the checksum to the structural checks, and some still decode and run.
    assert kinds["payload, resealed"]["session: payload rejected (structure)"] >= 20, rm.summary(results)
    assert not kinds["payload, resealed"]["session: payload rejected (checksum)"], rm.summary(results)
    assert any(r.outcome == "ran-verified" for r in by_group["payload, resealed"]), rm.summary(results)
    # Protobuf mutations: some models no longer parse, some parse and fail later or run.
    assert kinds["protobuf"]["session: InvalidProtobuf"] > 0, rm.summary(results)
    assert any(r.kind != "session: InvalidProtobuf" for r in by_group["protobuf"]), rm.summary(results)
    # Structural changes around the onnx_dc nodes: the operators' own checks answer some of them.
    assert any(r.kind.startswith("run: InvalidArgument") or "payload rejected" in r.kind for r in by_group["graph"]), \
        rm.summary(results)


def test_payloads_declaring_huge_tensors_fail_cleanly(compressed):
    """All-pruned payloads are ~150 bytes whatever dims they declare; the dense tensor (DCDecode), N and K
    (DCSparseGemm) are what they say. Each ends in an onnxruntime error (out of memory under the 4 GiB
    address-space limit, or a size check) or a correct run, never a crash."""
    work, models, paths = compressed
    cases = rm.crafted_cases(models, work, 0)
    results = rm.run_cases(cases, paths, timeout=120, mem_gb=4, log_path=work / "worker_crafted.log")
    assert not rm.findings(results), _describe(rm.findings(results))
    # The two all-pruned layers of their real shape run, checked against the Python reader.
    assert [r.outcome for r in results if r.case["detail"].startswith("runs")] == ["ran-verified"] * 2, _describe(results)
    for r in results:
        if r.case["detail"].startswith("DCDecode"):
            assert r.outcome == "error" and r.kind.startswith("session:"), _describe([r])
    # DCDecode refuses a dense tensor its payload cannot justify (a size check at session creation).
    assert any("more than the limit" in r.message for r in results if r.case["detail"].startswith("DCDecode")), \
        _describe(results)


def test_harness_catches_crashes_hangs_and_memory_blowups(compressed):
    """The runner's own check: a worker that aborts, hangs or allocates past the limit is reported as such
    (the case it had started is the culprit) and replaced, and the cases after it still run."""
    work, models, paths = compressed
    normal = rm.make_cases(models, 4, seed=2, workdir=work)
    cases = []
    for i, op in enumerate(["abort", "hang", "oom"]):
        cases.append(normal[i])
        cases.append(rm.Case(100 + i, "lenet5", "selftest", op, "", False, "", op, paths["lenet5"]))
    cases.append(normal[3])
    results = rm.run_cases(cases, paths, timeout=10, mem_gb=4, log_path=work / "worker_selftest.log")
    outcome = {r.id: r.outcome for r in results}
    assert outcome[100] == "crash" and "signal 6" in results[1].message, _describe(results)
    assert outcome[101] == "hang", _describe(results)
    assert outcome[102] == "memory", _describe(results)
    for c in normal:
        assert outcome[c.id] in rm.OK_OUTCOMES, _describe(results)
    assert {r.outcome for r in rm.findings(results)} == {"crash", "hang", "memory"}


def test_unsealed_payload_mutations_never_load(compressed):
    """Whatever byte of a payload changes, the checksum (or the length) catches it: the generator's
    CRC-left cases are all different from the original payload and all rejected above; here directly on
    every 97th byte of every payload of LeNet-5, one bit each."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    work, models, paths = compressed
    model = onnx.load_from_string(models["lenet5"])
    cases = []
    for name in rm.payload_names(model):
        init = next(t for t in model.graph.initializer if t.name == name)
        blob = numpy_helper.to_array(init).tobytes()
        for pos in range(0, len(blob), 97):
            b = flip(blob, pos, 1 << (pos % 8))
            m = onnx.ModelProto()
            m.CopyFrom(model)
            next(t for t in m.graph.initializer if t.name == name).CopyFrom(
                numpy_helper.from_array(np.frombuffer(b, dtype=np.uint8), name))
            path = work / f"bitflip_{len(cases)}.onnx"
            path.write_bytes(m.SerializeToString())
            cases.append(rm.Case(len(cases), "lenet5", "payload", "flip", "any", False, name, f"bit at {pos}", str(path)))
    results = rm.run_cases(cases, paths, timeout=120, mem_gb=4, log_path=work / "worker_bitflip.log")
    assert len(results) == len(cases) > 50
    assert all(r.outcome == "error" and "payload rejected" in r.kind for r in results), \
        _describe([r for r in results if r.outcome != "error" or "payload rejected" not in r.kind])


def test_reference_decodes_with_the_python_reader(compressed, lib_path):
    """The workers' reference (decompress_model + plain onnxruntime) must not use the library under test:
    with the native reader made to raise, decompressing both models still works."""
    work, models, paths = compressed
    code = f"""
import sys
sys.path.insert(0, {str(REPO / 'studies')!r})
import onnx
import robust_mutation as rm
from onnx_dc.graph.decompress import decompress_model
rm._python_reader_only()
for path in {sorted(paths.values())!r}:
    dense = decompress_model(onnx.load(path))
    assert not any(n.domain == rm.DOMAIN for n in dense.graph.node)
from onnx_dc.native import NativeLibrary
try:
    NativeLibrary().decode_dense(b"")
except RuntimeError as exc:
    print("refused:", exc)
"""
    proc = run_python(code, lib_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: the reference used the native reader" in proc.stdout, proc.stdout
