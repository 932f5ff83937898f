"""onnx-dc: Deep Compression (pruning, trained quantization, Huffman coding) for ONNX models.

The public API: everything the CLI uses is here (docs/ARCHITECTURE.md maps the modules behind it)."""
__version__ = "0.1.0"

from .api import (  # noqa: E402
    SENSITIVITY_KINDS, CompressionResult, NothingToCompress, compress, decompress, report, sensitivity,
)
from .calibration.sensitivity import LayerSensitivity, Point, candidate_prune_method, sensitivity_rows  # noqa: E402
from .calibration.sensitivity import plot as plot_sensitivity  # noqa: E402
from .codec.payload import PayloadError  # noqa: E402
from .config import (  # noqa: E402
    DEFAULT_BITS, DEFAULT_INDEX_BITS, DEFAULT_SPARSITY, OUTPUT_FITS, PRUNE_METHODS, QUANTIZERS, CompressOptions,
    ConfigError, PerKind, index_bits_value, parse_kinds, parse_layer_overrides, parse_per_kind, sparsity_value,
    weight_bits_value,
)
from .datasets import DatasetError  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .graph.model_io import ModelError  # noqa: E402
from .native import get_library_path  # noqa: E402
from .plots import plot_layers  # noqa: E402
from .report import COLUMNS as REPORT_COLUMNS  # noqa: E402
from .report import KIND_LABELS, table_rows  # noqa: E402
from .session import make_session  # noqa: E402

__all__ = [
    "CompressOptions", "CompressionResult", "ConfigError", "DatasetError", "LayerSensitivity", "ModelError",
    "NothingToCompress", "PayloadError", "PerKind", "Point", "compress", "decompress", "evaluate",
    "get_library_path", "make_session", "plot_layers", "plot_sensitivity", "report", "sensitivity",
    "sensitivity_rows", "__version__",
    # option values and parsing, the report's table (the CLI's building blocks)
    "DEFAULT_BITS", "DEFAULT_INDEX_BITS", "DEFAULT_SPARSITY", "KIND_LABELS", "OUTPUT_FITS", "PRUNE_METHODS",
    "QUANTIZERS", "REPORT_COLUMNS", "SENSITIVITY_KINDS", "candidate_prune_method", "index_bits_value",
    "parse_kinds", "parse_layer_overrides", "parse_per_kind", "sparsity_value", "table_rows", "weight_bits_value",
]
