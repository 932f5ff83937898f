// The DCSparseGemm kernels as templates over the column index type, in the summation order of gemm.h.
// Included by gemm_cpu.cc (portable build: the "scalar" kernel set) and by gemm_avx2.cc (compiled with
// -mavx2 -mbmi: the tile kernels' GCC vector extensions become AVX instructions), each time inside its own
// namespace (ONNX_DC_KERNEL_NS), so the two instantiations never merge at link time.
//
// Every kernel writes exactly the outputs [r0, r1) of its batch rows and reads W, X (packed or padded) and
// the bias. Bit-identity with SpmmReference: each output is computed by the same float32 operations in the
// same order (gemm.h); lanes of a vector are independent outputs (tile kernels) and never mix.
#ifndef ONNX_DC_KERNEL_NS
#error "define ONNX_DC_KERNEL_NS before including gemm_kernels.h"
#endif

#include <cstring>

#include "onnx_dc/gemm.h"

#if defined(__BMI__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#endif

namespace onnx_dc {
namespace ONNX_DC_KERNEL_NS {

typedef float V8 __attribute__((vector_size(32)));

inline V8 LoadV8(const float* p) {
  V8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename Col>
inline const Col* Columns(const BlockMatrix& w);
template <>
inline const uint16_t* Columns<uint16_t>(const BlockMatrix& w) {
  return w.col16.data();
}
template <>
inline const uint32_t* Columns<uint32_t>(const BlockMatrix& w) {
  return w.col32.data();
}

// The 4 column indices of a block. For u16 columns one 64-bit load and shifts (bextr with BMI1) instead of
// four loads: the batch-1 kernel is bound by load slots.
inline void Cols4(const uint16_t* c, size_t o[4]) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  uint64_t v;
  std::memcpy(&v, c, sizeof v);
#if defined(__BMI__) && defined(__x86_64__)
  o[0] = static_cast<uint16_t>(v);
  o[1] = _bextr_u64(v, 16, 16);
  o[2] = _bextr_u64(v, 32, 16);
#else
  o[0] = static_cast<uint16_t>(v);
  o[1] = static_cast<uint16_t>(v >> 16);
  o[2] = static_cast<uint16_t>(v >> 32);
#endif
  o[3] = static_cast<size_t>(v >> 48);
#else
  for (int i = 0; i < 4; ++i) o[i] = c[i];
#endif
}
inline void Cols4(const uint32_t* c, size_t o[4]) {
  for (int i = 0; i < 4; ++i) o[i] = c[i];
}

// t = ((x[c0] + x[c1]) + x[c2]) + x[c3]
template <typename Col>
inline float BlockSum(const float* __restrict x, const Col* __restrict c) {
  size_t k[4];
  Cols4(c, k);
  float t = x[k[0]] + x[k[1]];
  t = t + x[k[2]];
  t = t + x[k[3]];
  return t;
}

inline void FillBias(const float* bias, float* y, uint64_t r0, uint64_t r1) {
  for (uint64_t n = r0; n < r1; ++n) y[n] = bias ? bias[n] : 0.0f;
}

// ---- one batch row ---------------------------------------------------------------------------------------

template <typename Col>
void VectorRowsT(const BlockMatrix& w, const float* __restrict x, const float* __restrict bias, float* __restrict y,
                 uint64_t r0, uint64_t r1) {
  if (w.nnz == 0) return FillBias(bias, y, r0, r1);
  const Col* __restrict col = Columns<Col>(w);
  const float* __restrict wt = w.weight.data();
  const uint64_t* __restrict rb = w.row_block.data();
  for (uint64_t n = r0; n < r1; ++n) {
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    uint64_t i = rb[n];
    const uint64_t end = rb[n + 1];
    for (; i + 4 <= end; i += 4) {
      a0 = a0 + wt[i] * BlockSum(x, col + kBlock * i);
      a1 = a1 + wt[i + 1] * BlockSum(x, col + kBlock * (i + 1));
      a2 = a2 + wt[i + 2] * BlockSum(x, col + kBlock * (i + 2));
      a3 = a3 + wt[i + 3] * BlockSum(x, col + kBlock * (i + 3));
    }
    if (i < end) a0 = a0 + wt[i] * BlockSum(x, col + kBlock * i);
    if (i + 1 < end) a1 = a1 + wt[i + 1] * BlockSum(x, col + kBlock * (i + 1));
    if (i + 2 < end) a2 = a2 + wt[i + 2] * BlockSum(x, col + kBlock * (i + 2));
    float v = (a0 + a1) + (a2 + a3);
    if (bias) v = v + bias[n];
    y[n] = v;
  }
}

// ---- tiles of 8 * V batch rows --------------------------------------------------------------------------

template <typename Col, int V>
struct Tile {
  static constexpr size_t W = 8 * V;  // floats per packed column
  const Col* __restrict col;
  const float* __restrict wt;
  const float* __restrict xt;

  inline void Block(uint64_t i, V8* acc) const {
    size_t k[4];
    Cols4(col + kBlock * i, k);
    const float* p0 = xt + k[0] * W;
    const float* p1 = xt + k[1] * W;
    const float* p2 = xt + k[2] * W;
    const float* p3 = xt + k[3] * W;
    const float wb = wt[i];
    for (int v = 0; v < V; ++v) {
      V8 t = LoadV8(p0 + 8 * v) + LoadV8(p1 + 8 * v);
      t = t + LoadV8(p2 + 8 * v);
      t = t + LoadV8(p3 + 8 * v);
      acc[v] = acc[v] + wb * t;
    }
  }
};

template <typename Col, int V>
void TileRowsT(const BlockMatrix& w, const float* __restrict xt, size_t valid, const float* __restrict bias,
               float* __restrict y, uint64_t r0, uint64_t r1) {
  const uint64_t ld = w.rows;
  if (w.nnz == 0) {
    for (size_t b = 0; b < valid; ++b) FillBias(bias, y + b * ld, r0, r1);
    return;
  }
  const Tile<Col, V> tile{Columns<Col>(w), w.weight.data(), xt};
  const uint64_t* __restrict rb = w.row_block.data();
  for (uint64_t n = r0; n < r1; ++n) {
    V8 a[kChains][V] = {};
    uint64_t i = rb[n];
    const uint64_t end = rb[n + 1];
    for (; i + 4 <= end; i += 4) {
      tile.Block(i, a[0]);
      tile.Block(i + 1, a[1]);
      tile.Block(i + 2, a[2]);
      tile.Block(i + 3, a[3]);
    }
    if (i < end) tile.Block(i, a[0]);
    if (i + 1 < end) tile.Block(i + 1, a[1]);
    if (i + 2 < end) tile.Block(i + 2, a[2]);
    float out[8 * V];
    for (int v = 0; v < V; ++v) {
      V8 r = (a[0][v] + a[1][v]) + (a[2][v] + a[3][v]);
      if (bias) r = r + bias[n];
      std::memcpy(out + 8 * v, &r, sizeof r);
    }
    for (size_t b = 0; b < valid; ++b) y[b * ld + n] = out[b];
  }
}

// ---- packing ---------------------------------------------------------------------------------------------

inline void PackGeneric(const float* x, size_t rows, size_t k, size_t width, float* xt) {
  std::memset(xt, 0, (k + 1) * width * sizeof(float));
  for (size_t b = 0; b < rows; ++b) {
    const float* xr = x + b * k;
    for (size_t c = 0; c < k; ++c) xt[c * width + b] = xr[c];
  }
}

}  // namespace ONNX_DC_KERNEL_NS
}  // namespace onnx_dc
