// DCGather on the CPU (src/gather_cpu.cc): ONNX Gather (axis 0) on an embedding table [V, D] that stays in the
// compressed row form DCSparseGemm decodes to (SparseMatrix, gemm.h: row pointers, u16/u32 column indices,
// u8 cluster indices and the codebook), about 3 bytes per stored entry + 8 per row. Each looked-up row is
// expanded into its output row: zeros, then the row's entries scattered in. There is no fp32 V x D table, at
// any density: the compressed form is smaller than fp32 even for a table with nothing pruned (3 bytes per
// entry against 4), and expanding a row costs O(D) either way (DCSparseGemm's dense-form rule is about
// arithmetic, which a lookup does not do).
#pragma once

#include <cstddef>
#include <cstdint>

#include "gemm.h"

namespace onnx_dc {

// The table, decoded once. Throws PayloadError for a bad payload or one not of rank 2.
SparseMatrix DecodeGatherTable(const uint8_t* data, size_t size, const DecodeOptions& options = {});

// Every index in [-V, V) (negative ones count from the end, as ONNX Gather's); throws std::out_of_range
// naming the first one that is not, and its position.
void CheckGatherIndices(const SparseMatrix& table, const int64_t* indices, size_t count);
void CheckGatherIndices(const SparseMatrix& table, const int32_t* indices, size_t count);

// Output rows [first, last) (D floats each, out pointing at row 0): row i is table row indices[i] (+ V if
// negative), expanded. Indices must have been checked.
void GatherRows(const SparseMatrix& table, const int64_t* indices, size_t first, size_t last, float* out);
void GatherRows(const SparseMatrix& table, const int32_t* indices, size_t first, size_t last, float* out);

}  // namespace onnx_dc
