// DCSparseGemm's execution format and CPU kernels (src/gemm_cpu.cc).
//
// Execution format (built once per session by DecodeSparse, payload.h): CSR of W[N, K] by output row, as
// the payload stores it.
//   row_ptr   u64 [N + 1]       entries of row n are [row_ptr[n], row_ptr[n+1])
//   col16     u16 [nnz]         absolute column, when K <= 65536   (else col32, u32 [nnz])
//   cluster   u8  [nnz]         index into codebook
//   codebook  f32 [256]         zero-padded, so every u8 index is in bounds
// = 3 bytes per nonzero (5 when K > 65536) plus 8 bytes per row; no dense matrix, no fp32 per nonzero.
//
// Summation order (the same in every kernel, so results do not depend on the thread count, the batch
// size, or which kernel ran): entry j of a row (j = 0, 1, ... within the row) is added to partial sum
// s[j mod 4]; y = ((s0 + s1) + (s2 + s3)) + bias. Products and sums are float32, no FMA contraction
// (-ffp-contract=off), so the vectorised kernels are bit-identical to SpmmReference.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "onnx_dc/payload.h"

namespace onnx_dc {

struct SparseMatrix {
  uint64_t rows = 0;  // N
  uint64_t cols = 0;  // K
  uint64_t nnz = 0;
  std::vector<uint64_t> row_ptr;  // rows + 1, or empty when nnz == 0 (every row empty)
  std::vector<uint16_t> col16;
  std::vector<uint32_t> col32;
  std::vector<uint8_t> cluster;
  std::array<float, 256> codebook{};
  // Row boundaries of the work partition, balanced by nnz: part p is rows [parts[p], parts[p+1]).
  std::vector<uint64_t> parts;

  bool wide() const { return cols > 65536; }  // u32 columns
  // Bytes the execution format keeps resident (arrays above, not counting vector slack).
  size_t ResidentBytes() const;
};

// Cut rows into at most max_parts ranges of about equal cost (nnz + 1 per row); sets W.parts.
void PartitionRows(SparseMatrix& w, size_t max_parts);

// The scalar reference: Y[m, N] = X[m, K] · Wᵀ (+ bias[N] if not null), entry by entry.
void SpmmReference(const SparseMatrix& w, const float* x, size_t m, const float* bias, float* y);

// The fast path, in independent tasks (each writes a disjoint block of Y, in a fixed order).
// Batch rows are grouped in units of kTile; a unit of one row runs the single-vector kernel on X as it
// is, a larger unit runs the tile kernel on a packed copy of its X rows (column-major, kTile wide,
// zero-padded), which PackUnit writes into plan.packed_floats() of scratch.
inline constexpr size_t kTile = 8;

struct SpmmPlan {
  size_t m = 0;        // batch rows
  size_t k = 0;        // columns of X
  size_t units = 0;    // ceil(m / kTile)
  size_t parts = 0;    // row parts of W
  bool needs_packing = false;
  size_t tasks() const { return units * parts; }
  size_t packed_floats() const { return needs_packing ? units * k * kTile : 0; }
  size_t unit_rows(size_t unit) const { return m - unit * kTile < kTile ? m - unit * kTile : kTile; }
};

SpmmPlan PlanSpmm(const SparseMatrix& w, size_t m);
// Pack unit u of X (rows [u*kTile, ...)) into scratch; no-op for a one-row unit.
void PackUnit(const SpmmPlan& plan, const float* x, size_t unit, float* scratch);
// Task t = part * units + unit: Y rows of the unit, columns (outputs) of the part.
void SpmmTask(const SparseMatrix& w, const SpmmPlan& plan, const float* x, const float* scratch,
              const float* bias, float* y, size_t task);
// All of it on the calling thread (tests, small problems).
void SpmmSerial(const SparseMatrix& w, const float* x, size_t m, const float* bias, float* y);

}  // namespace onnx_dc
