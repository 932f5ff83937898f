"""Compression policy: what to do with each layer, parsed and validated with clear errors."""
from __future__ import annotations

from dataclasses import dataclass, field

from .codec.cluster import INIT_METHODS
from .calibration.solvers import PRUNE_METHODS, QUANTIZERS

KINDS = ("fc", "conv", "emb", "other")
KIND_NAMES = {"fc": "fully-connected (Gemm, MatMul)", "conv": "convolution kernels", "emb": "embedding tables (Gather)",
              "other": "any other large float constant (decoded once per session)"}
MAX_WEIGHT_BITS = 8
MAX_INDEX_BITS = 16


class ConfigError(ValueError):
    """An option value that cannot be used; the message is meant for the user as it is."""


@dataclass(frozen=True)
class PerKind:
    """One setting with a value per kind of tensor: fully-connected weights, convolution kernels,
    embedding tables and other large constants. `emb` / `other` left as None take the setting's own
    default (CompressOptions fills them in)."""

    fc: float
    conv: float
    emb: float | None = None
    other: float | None = None

    def for_kind(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown kind of tensor {kind!r}")
        return getattr(self, kind)

    def with_defaults(self, default: "PerKind") -> "PerKind":
        return PerKind(*(default.for_kind(k) if self.for_kind(k) is None else self.for_kind(k) for k in KINDS))


def parse_per_kind(text: str, option: str, convert, default: PerKind) -> PerKind:
    """'5' (every kind) or 'fc=5,conv=8,emb=8,other=8' (any of them; an omitted kind keeps its default)."""
    text = str(text).strip()
    if "=" not in text:
        value = convert(text, option)
        return PerKind(value, value, value, value)
    values = {k: default.for_kind(k) for k in KINDS}
    for part in text.split(","):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in KINDS:
            raise ConfigError(f"{option}: expected B or KIND=B,... with KIND one of {', '.join(KINDS)}, got {text!r}")
        values[key] = convert(raw.strip(), option)
    return PerKind(*(values[k] for k in KINDS))


def parse_kinds(text: str, option: str = "--kinds") -> frozenset:
    kinds = {k.strip() for k in str(text).split(",") if k.strip()}
    unknown = kinds - set(KINDS)
    if unknown or not kinds:
        raise ConfigError(f"{option}: expected a comma-separated list of {', '.join(KINDS)}, got {text!r}")
    return frozenset(kinds)


def sparsity_value(raw, option: str = "--sparsity") -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{option}: {raw!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{option}: sparsity is the pruned fraction and must be in [0, 1), got {raw}")
    return value


def _int_in(raw, option: str, lo: int, hi: int, what: str) -> int:
    try:
        value = int(str(raw))
    except ValueError:
        raise ConfigError(f"{option}: {raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{option}: {what} must be in {lo}..{hi}, got {value}")
    return value


def weight_bits_value(raw, option: str = "--bits") -> int:
    return _int_in(raw, option, 1, MAX_WEIGHT_BITS, "weight bits")


def index_bits_value(raw, option: str = "--index-bits") -> int:
    return _int_in(raw, option, 1, MAX_INDEX_BITS, "index bits")


def parse_layer_overrides(items, option: str, convert) -> dict[str, float]:
    """NAME=VALUE items (NAME: a weight initializer or a node name)."""
    out = {}
    for item in items or ():
        name, sep, raw = str(item).rpartition("=")
        if not sep or not name:
            raise ConfigError(f"{option}: expected NAME=VALUE, got {item!r}")
        out[name] = convert(raw, option)
    return out


DEFAULT_SPARSITY = PerKind(0.9, 0.5, 0.5, 0.0)
DEFAULT_BITS = PerKind(5, 8, 8, 8)
DEFAULT_INDEX_BITS = PerKind(5, 8, 4, 4)
CONV_EXEC = ("auto", "sparse", "dense")
OUTPUT_FITS = ("mse", "kl")  # how data-aware compression fits a layer that produces a model output


@dataclass(frozen=True)
class CompressOptions:
    # Paper-like defaults: FC layers keep 10%, 5-bit codebooks, 5-bit relative indices; conv layers keep
    # 50%, 8-bit codebooks, 8-bit relative indices. Beyond the paper: embedding tables keep 50% with 8-bit
    # codebooks; other constants (unknown meaning: a mask, a scale table) are not pruned, only quantized to
    # 8-bit codebooks.
    sparsity: PerKind = DEFAULT_SPARSITY
    bits: PerKind = DEFAULT_BITS
    index_bits: PerKind = DEFAULT_INDEX_BITS
    kinds: frozenset = frozenset(KINDS)  # which kinds of tensor are compressed
    conv_exec: str = "auto"  # conv layers: sparse (DCSparseConv), dense (DCDecode + Conv) or auto (measured)
    layer_sparsity: dict = field(default_factory=dict)
    layer_bits: dict = field(default_factory=dict)
    init: str = "linear"
    huffman: bool = True
    seed: int = 0
    min_weights: int = 256  # smaller layers are left alone: their payload overhead would dominate
    allow_unchanged: bool = False  # write the model even if no layer was compressed
    calibration: str | None = None  # .npz of model inputs: data-aware compression (layer-wise refit)
    prune_method: str = "obs"  # with calibration data: see calibration.solvers.PRUNE_METHODS
    target_ratio: float | None = None  # pick per-layer settings from a sensitivity analysis to reach it
    sensitivity: str | None = None  # with target_ratio: a saved analysis (onnx-dc sensitivity --save) to reuse
    quantizer: str = "gptq"  # with calibration data: gptq (entropy-constrained, error feedback) or kmeans
    output_fit: str = "mse"  # with calibration data, a layer producing a model output: mse (its values) or kl
    #                          (a classifier's predicted distribution; for logits only)
    jobs: int = 1  # data-free layers compressed in parallel worker processes

    def __post_init__(self):
        # Frozen: fill in the per-kind defaults through object.__setattr__ (once, at construction).
        object.__setattr__(self, "sparsity", self.sparsity.with_defaults(DEFAULT_SPARSITY))
        object.__setattr__(self, "bits", self.bits.with_defaults(DEFAULT_BITS))
        object.__setattr__(self, "index_bits", self.index_bits.with_defaults(DEFAULT_INDEX_BITS))
        object.__setattr__(self, "kinds", frozenset(self.kinds))
        if not self.kinds or not self.kinds <= set(KINDS):
            raise ConfigError(f"--kinds: expected some of {', '.join(KINDS)}, got {sorted(self.kinds)}")
        if self.conv_exec not in CONV_EXEC:
            raise ConfigError(f"--conv-exec: expected one of {', '.join(CONV_EXEC)}, got {self.conv_exec!r}")
        for kind in KINDS:
            sparsity_value(self.sparsity.for_kind(kind))
            weight_bits_value(self.bits.for_kind(kind))
            index_bits_value(self.index_bits.for_kind(kind))
        for name, value in self.layer_sparsity.items():
            sparsity_value(value, f"--layer-sparsity {name}")
        for name, value in self.layer_bits.items():
            weight_bits_value(value, f"--layer-bits {name}")
        if self.init not in INIT_METHODS:
            raise ConfigError(f"--init: unknown method {self.init!r}; choose one of {', '.join(INIT_METHODS)}")
        if self.prune_method not in PRUNE_METHODS:
            raise ConfigError(f"--prune-method: unknown method {self.prune_method!r}; choose one of "
                              f"{', '.join(PRUNE_METHODS)}")
        if self.quantizer not in QUANTIZERS:
            raise ConfigError(f"--quantizer: expected one of {', '.join(QUANTIZERS)}, got {self.quantizer!r}")
        if self.output_fit not in OUTPUT_FITS:
            raise ConfigError(f"--output-fit: expected one of {', '.join(OUTPUT_FITS)}, got {self.output_fit!r}")
        if self.target_ratio is not None and not self.target_ratio > 1:
            raise ConfigError(f"--target-ratio must be > 1, got {self.target_ratio}")
        if self.sensitivity is not None and self.target_ratio is None:
            raise ConfigError("--sensitivity is used by --target-ratio; give both")
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be >= 1, got {self.jobs}")
        if self.min_weights < 0:
            raise ConfigError("--min-weights must be >= 0")


@dataclass(frozen=True)
class LayerPolicy:
    sparsity: float
    bits: int
    index_bits: int
