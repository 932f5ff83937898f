// DCSparseGemm CPU kernels over the execution format of gemm.h.
//
// Two fast kernels, both in the canonical summation order of gemm.h (bit-identical to SpmmReference):
//   - vector: one batch row; per output row, four partial sums over its entries (4 independent chains
//     hide the add latency); reads 3 bytes of weights per nonzero and gathers X.
//   - tile: kTile = 8 batch rows at once on a column-major packed copy of X (8 floats per column, one
//     32-byte load per entry); every entry is decoded (codebook lookup, column) once and applied to the
//     8 rows. Written with GCC vector extensions: two SSE ops per step on baseline x86-64, one AVX op
//     where the compiler may use AVX (the later SIMD work adds explicit dispatch here).
#include <algorithm>
#include <cstring>

#include "onnx_dc/gemm.h"

namespace onnx_dc {
namespace {

typedef float V8 __attribute__((vector_size(32)));
static_assert(sizeof(V8) == kTile * sizeof(float), "tile width is one V8");

inline V8 LoadV8(const float* p) {
  V8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename Col>
const Col* Columns(const SparseMatrix& w);
template <>
const uint16_t* Columns<uint16_t>(const SparseMatrix& w) {
  return w.col16.data();
}
template <>
const uint32_t* Columns<uint32_t>(const SparseMatrix& w) {
  return w.col32.data();
}

// Y[n] for n in [r0, r1) of one batch row: y points at that batch row of Y.
template <typename Col>
void VectorRows(const SparseMatrix& w, const float* __restrict x, const float* __restrict bias, float* __restrict y,
                uint64_t r0, uint64_t r1) {
  if (w.nnz == 0) {
    for (uint64_t n = r0; n < r1; ++n) y[n] = bias ? bias[n] : 0.0f;
    return;
  }
  const Col* __restrict col = Columns<Col>(w);
  const uint8_t* __restrict cl = w.cluster.data();
  const float* __restrict cb = w.codebook.data();
  const uint64_t* rp = w.row_ptr.data();
  for (uint64_t n = r0; n < r1; ++n) {
    uint64_t e = rp[n];
    const uint64_t end = rp[n + 1];
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    for (; e + 4 <= end; e += 4) {
      s0 += cb[cl[e]] * x[col[e]];
      s1 += cb[cl[e + 1]] * x[col[e + 1]];
      s2 += cb[cl[e + 2]] * x[col[e + 2]];
      s3 += cb[cl[e + 3]] * x[col[e + 3]];
    }
    if (e < end) s0 += cb[cl[e]] * x[col[e]];
    if (e + 1 < end) s1 += cb[cl[e + 1]] * x[col[e + 1]];
    if (e + 2 < end) s2 += cb[cl[e + 2]] * x[col[e + 2]];
    float v = (s0 + s1) + (s2 + s3);
    if (bias) v += bias[n];
    y[n] = v;
  }
}

// Y[b, n] for the `valid` (<= kTile) batch rows of a packed unit xt (K x kTile) and n in [r0, r1);
// y points at the unit's first batch row of Y, whose rows are w.rows apart.
template <typename Col>
void TileRows(const SparseMatrix& w, const float* __restrict xt, size_t valid, const float* __restrict bias,
              float* __restrict y, uint64_t r0, uint64_t r1) {
  const uint64_t ld = w.rows;
  if (w.nnz == 0) {
    for (size_t b = 0; b < valid; ++b)
      for (uint64_t n = r0; n < r1; ++n) y[b * ld + n] = bias ? bias[n] : 0.0f;
    return;
  }
  const Col* __restrict col = Columns<Col>(w);
  const uint8_t* __restrict cl = w.cluster.data();
  const float* __restrict cb = w.codebook.data();
  const uint64_t* rp = w.row_ptr.data();
  for (uint64_t n = r0; n < r1; ++n) {
    uint64_t e = rp[n];
    const uint64_t end = rp[n + 1];
    V8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (; e + 4 <= end; e += 4) {
      a0 += cb[cl[e]] * LoadV8(xt + size_t{col[e]} * kTile);
      a1 += cb[cl[e + 1]] * LoadV8(xt + size_t{col[e + 1]} * kTile);
      a2 += cb[cl[e + 2]] * LoadV8(xt + size_t{col[e + 2]} * kTile);
      a3 += cb[cl[e + 3]] * LoadV8(xt + size_t{col[e + 3]} * kTile);
    }
    if (e < end) a0 += cb[cl[e]] * LoadV8(xt + size_t{col[e]} * kTile);
    if (e + 1 < end) a1 += cb[cl[e + 1]] * LoadV8(xt + size_t{col[e + 1]} * kTile);
    if (e + 2 < end) a2 += cb[cl[e + 2]] * LoadV8(xt + size_t{col[e + 2]} * kTile);
    V8 v = (a0 + a1) + (a2 + a3);
    if (bias) v += bias[n];
    float out[kTile];
    std::memcpy(out, &v, sizeof out);
    for (size_t b = 0; b < valid; ++b) y[b * ld + n] = out[b];
  }
}

}  // namespace

size_t SparseMatrix::ResidentBytes() const {
  return sizeof(*this) + row_ptr.size() * sizeof(uint64_t) + col16.size() * sizeof(uint16_t) +
         col32.size() * sizeof(uint32_t) + cluster.size() + parts.size() * sizeof(uint64_t);
}

void PartitionRows(SparseMatrix& w, size_t max_parts) {
  constexpr uint64_t kMinPartCost = 4096;  // nonzeros (+ rows) per part, so a part is worth a task
  w.parts.assign(1, 0);
  if (w.rows == 0) return;  // no parts, no tasks
  const uint64_t total = w.nnz + w.rows;
  uint64_t n_parts = std::max<uint64_t>(1, std::min<uint64_t>({max_parts, w.rows, total / kMinPartCost}));
  if (w.nnz == 0) {  // rows may be huge here (no per-row data): cut evenly, O(parts)
    for (uint64_t p = 1; p < n_parts; ++p) w.parts.push_back(w.rows / n_parts * p);
    w.parts.push_back(w.rows);
    return;
  }
  // Greedy: close part p once the cost so far reaches (p + 1) / n_parts of the total.
  uint64_t cost = 0, p = 0;
  for (uint64_t r = 0; r < w.rows && p + 1 < n_parts; ++r) {
    cost += w.row_ptr[r + 1] - w.row_ptr[r] + 1;
    if (cost * n_parts >= (p + 1) * total) {
      w.parts.push_back(r + 1);
      ++p;
    }
  }
  if (w.parts.back() != w.rows) w.parts.push_back(w.rows);
}

void SpmmReference(const SparseMatrix& w, const float* x, size_t m, const float* bias, float* y) {
  const uint64_t n_out = w.rows, k = w.cols;
  for (size_t b = 0; b < m; ++b) {
    const float* xr = x + b * k;
    for (uint64_t n = 0; n < n_out; ++n) {
      float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (w.nnz) {
        for (uint64_t e = w.row_ptr[n], j = 0; e < w.row_ptr[n + 1]; ++e, ++j) {
          const uint64_t c = w.wide() ? w.col32[e] : w.col16[e];
          s[j % 4] += w.codebook[w.cluster[e]] * xr[c];
        }
      }
      float v = (s[0] + s[1]) + (s[2] + s[3]);
      if (bias) v += bias[n];
      y[b * n_out + n] = v;
    }
  }
}

SpmmPlan PlanSpmm(const SparseMatrix& w, size_t m) {
  SpmmPlan plan;
  plan.m = m;
  plan.k = w.cols;
  plan.units = (m + kTile - 1) / kTile;
  plan.parts = w.parts.empty() ? 0 : w.parts.size() - 1;
  plan.needs_packing = m >= 2 && w.nnz > 0;
  return plan;
}

void PackUnit(const SpmmPlan& plan, const float* x, size_t unit, float* scratch) {
  const size_t rows = plan.unit_rows(unit);
  if (!plan.needs_packing || rows == 1) return;
  const size_t k = plan.k;
  const float* xu = x + unit * kTile * k;
  float* xt = scratch + unit * k * kTile;
  for (size_t c = 0; c < k; ++c) {
    float* dst = xt + c * kTile;
    for (size_t b = 0; b < rows; ++b) dst[b] = xu[b * k + c];
    for (size_t b = rows; b < kTile; ++b) dst[b] = 0.0f;
  }
}

void SpmmTask(const SparseMatrix& w, const SpmmPlan& plan, const float* x, const float* scratch, const float* bias,
              float* y, size_t task) {
  const size_t part = task / plan.units, unit = task % plan.units;
  const uint64_t r0 = w.parts[part], r1 = w.parts[part + 1];
  const size_t rows = plan.unit_rows(unit);
  float* yu = y + unit * kTile * w.rows;
  if (rows == 1 || !plan.needs_packing) {
    for (size_t b = 0; b < rows; ++b) {
      const float* xr = x + (unit * kTile + b) * plan.k;
      if (w.wide())
        VectorRows<uint32_t>(w, xr, bias, yu + b * w.rows, r0, r1);
      else
        VectorRows<uint16_t>(w, xr, bias, yu + b * w.rows, r0, r1);
    }
    return;
  }
  const float* xt = scratch + unit * plan.k * kTile;
  if (w.wide())
    TileRows<uint32_t>(w, xt, rows, bias, yu, r0, r1);
  else
    TileRows<uint16_t>(w, xt, rows, bias, yu, r0, r1);
}

void SpmmSerial(const SparseMatrix& w, const float* x, size_t m, const float* bias, float* y) {
  const SpmmPlan plan = PlanSpmm(w, m);
  std::vector<float> scratch(plan.packed_floats());
  for (size_t u = 0; u < plan.units; ++u) PackUnit(plan, x, u, scratch.data());
  for (size_t t = 0; t < plan.tasks(); ++t) SpmmTask(w, plan, x, scratch.data(), bias, y, t);
}

}  // namespace onnx_dc
