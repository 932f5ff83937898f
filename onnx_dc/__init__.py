"""onnx-dc: Deep Compression (pruning, trained quantization, Huffman coding) for ONNX models."""
__version__ = "0.1.0"

from .api import CompressionResult, NothingToCompress, compress, decompress, report  # noqa: E402
from .config import CompressOptions, ConfigError, PerKind  # noqa: E402
from .graph.model_io import ModelError  # noqa: E402

__all__ = [
    "CompressOptions", "CompressionResult", "ConfigError", "ModelError", "NothingToCompress", "PerKind",
    "compress", "decompress", "report", "__version__",
]
