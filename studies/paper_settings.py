"""The paper's per-layer settings (Han et al., ICLR 2016, Tables 2 and 3) for the bundled models."""
from onnx_dc.config import CompressOptions, PerKind

# LeNet-300-100 (Table 2): keep 8% / 9% / 26%, 6-bit shared weights, 5-bit relative indices.
LENET_300_100 = CompressOptions(
    sparsity=PerKind(0.92, 0.5), bits=PerKind(6, 8), index_bits=PerKind(5, 5),
    layer_sparsity={"fc2.weight": 0.91, "fc3.weight": 0.74}, min_weights=0,
)
LENET_300_100_CLI = ("--sparsity 0.92 --layer-sparsity fc2.weight=0.91 --layer-sparsity fc3.weight=0.74 "
                     "--bits 6 --index-bits 5 --min-weights 0")

# LeNet-5 (Table 3): conv1 66%, conv2 12%, fc1 8%, fc2 19% kept; 8-bit conv and 5-bit fc codebooks
# (the paper's "8 bits conv, 5 bits fc"), 5-bit relative indices.
LENET5 = CompressOptions(
    sparsity=PerKind(0.92, 0.34), bits=PerKind(5, 8), index_bits=PerKind(5, 5),
    layer_sparsity={"conv2.weight": 0.88, "fc2.weight": 0.81}, min_weights=0,
)
LENET5_CLI = ("--sparsity fc=0.92,conv=0.34 --layer-sparsity conv2.weight=0.88 --layer-sparsity fc2.weight=0.81 "
              "--bits fc=5,conv=8 --index-bits 5 --min-weights 0")
