// DCGather on the CPU (gather.h): the table kept as decoded CSR, rows expanded on lookup.
#include "gather.h"

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace onnx_dc {

SparseMatrix DecodeGatherTable(const uint8_t* data, size_t size, const DecodeOptions& options) {
  const PayloadInfo info = ParsePayload(data, size, options);
  if (info.header.rank != 2)
    throw PayloadError("DCGather needs a rank-2 payload [V, D], this one has rank " + std::to_string(info.header.rank));
  return DecodeSparse(data, info);
}

namespace {

template <typename Index>
void CheckIndices(const SparseMatrix& table, const Index* indices, size_t count) {
  // A table of more than 2^63 rows (possible only with D = 0: FORMAT.md bounds the product of the dims) takes
  // every int64 index.
  if (table.rows > static_cast<uint64_t>(INT64_MAX)) return;
  const int64_t v = static_cast<int64_t>(table.rows);
  for (size_t i = 0; i < count; ++i) {
    const int64_t index = static_cast<int64_t>(indices[i]);
    if (index < -v || index >= v)
      throw std::out_of_range("index " + std::to_string(index) + " (at position " + std::to_string(i) +
                              " of the indices) is out of range: the table has " + std::to_string(table.rows) +
                              " rows, so indices must lie in [-" + std::to_string(table.rows) + ", " +
                              std::to_string(table.rows) + ")");
  }
}

template <typename Col>
void ExpandRows(const SparseMatrix& table, const Col* col, const int64_t row, float* out) {
  const uint64_t e0 = table.row_ptr[static_cast<uint64_t>(row)], e1 = table.row_ptr[static_cast<uint64_t>(row) + 1];
  for (uint64_t e = e0; e < e1; ++e) out[col[e]] = table.codebook[table.cluster[e]];
}

template <typename Index>
void Gather(const SparseMatrix& table, const Index* indices, size_t first, size_t last, float* out) {
  const uint64_t d = table.cols;
  const int64_t v = static_cast<int64_t>(table.rows);
  for (size_t i = first; i < last; ++i) {
    float* row = out + i * d;
    if (d) std::memset(row, 0, d * sizeof(float));
    if (table.nnz == 0) continue;  // row_ptr is empty: every row is zero
    int64_t r = static_cast<int64_t>(indices[i]);
    if (r < 0) r += v;
    if (table.wide())
      ExpandRows(table, table.col32.data(), r, row);
    else
      ExpandRows(table, table.col16.data(), r, row);
  }
}

}  // namespace

void CheckGatherIndices(const SparseMatrix& table, const int64_t* indices, size_t count) {
  CheckIndices(table, indices, count);
}
void CheckGatherIndices(const SparseMatrix& table, const int32_t* indices, size_t count) {
  CheckIndices(table, indices, count);
}
void GatherRows(const SparseMatrix& table, const int64_t* indices, size_t first, size_t last, float* out) {
  Gather(table, indices, first, last, out);
}
void GatherRows(const SparseMatrix& table, const int32_t* indices, size_t first, size_t last, float* out) {
  Gather(table, indices, first, last, out);
}

}  // namespace onnx_dc
