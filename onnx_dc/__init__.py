"""onnx-dc: Deep Compression (pruning, trained quantization, Huffman coding) for ONNX models."""
__version__ = "0.1.0"

from .api import CompressionResult, NothingToCompress, compress, decompress, report, sensitivity  # noqa: E402
from .config import CompressOptions, ConfigError, PerKind  # noqa: E402
from .graph.model_io import ModelError  # noqa: E402
from .runtime import get_library_path, make_session  # noqa: E402

__all__ = [
    "CompressOptions", "CompressionResult", "ConfigError", "ModelError", "NothingToCompress", "PerKind",
    "compress", "decompress", "get_library_path", "make_session", "report", "sensitivity", "__version__",
]
