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

#include <cstdint>
#include <cstring>

#include "gemm.h"

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

// Software prefetch of the execution format kPrefetchBlocks blocks ahead of the one being read (its column
// indices and its codebook value), with no intent to keep it (NTA): the tile kernels' packed X misses L1 on
// most slots, and the hardware prefetcher alone does not keep the stream of blocks ahead. Measured on
// 4096x4096 at 10% (1 thread, CPU time, interleaved medians): batch 8 3-8% faster, batch 1 ~4% (the batch-1
// kernels prefetch the same way). A prefetch never faults, so the address may lie past the arrays' end; it
// is formed as an integer so that no out-of-range pointer is computed. Only for layers of at least
// kPrefetchMinBlocks blocks (~400 KB of format): a smaller one stays in L2, where the prefetches only cost
// (~4% at batch 8-64 on 300x784).
inline constexpr uint64_t kPrefetchBlocks = 64;
inline constexpr uint64_t kPrefetchMinBlocks = uint64_t{1} << 15;
template <typename Col>
inline void PrefetchBlocks(const Col* col, const float* wt, uint64_t i) {
  const uint64_t j = i + kPrefetchBlocks;
  __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(col) + j * kBlock * sizeof(Col)), 0, 0);
  __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(wt) + j * sizeof(float)), 0, 0);
}

inline void FillBias(const float* bias, float* y, uint64_t out_stride, uint64_t r0, uint64_t r1) {
  for (uint64_t n = r0; n < r1; ++n) y[n * out_stride] = bias ? bias[n] : 0.0f;
}

// Output n of `lanes` lanes; contiguous lanes (DCSparseConv's pixels) in one copy.
inline void StoreLanes(const float* out, size_t lanes, float* y, YStrides ys, uint64_t n) {
  float* yn = y + n * ys.out;
  if (ys.lane == 1) {
    std::memcpy(yn, out, lanes * sizeof(float));
  } else {
    for (size_t b = 0; b < lanes; ++b) yn[b * ys.lane] = out[b];
  }
}

// ---- one batch row ---------------------------------------------------------------------------------------

template <typename Col>
void VectorRowsT(const BlockMatrix& w, const float* __restrict x, const float* __restrict bias, float* __restrict y,
                 YStrides ys, uint64_t r0, uint64_t r1) {
  if (w.nnz == 0) return FillBias(bias, y, ys.out, r0, r1);
  const Col* __restrict col = Columns<Col>(w);
  const float* __restrict wt = w.weight.data();
  const uint64_t* __restrict rb = w.row_block.data();
  const bool prefetch = w.blocks >= kPrefetchMinBlocks;
  for (uint64_t n = r0; n < r1; ++n) {
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    uint64_t i = rb[n];
    const uint64_t end = rb[n + 1];
    for (; i + 4 <= end; i += 4) {
      if (prefetch) PrefetchBlocks(col, wt, i);
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
    y[n * ys.out] = v;
  }
}

// ---- tiles of 8 * V batch rows --------------------------------------------------------------------------

// V 8-float vectors per block step, at lane offset `lane` of packed columns W floats wide.
template <typename Col, int V, size_t W>
struct Tile {
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

// Rows [r0, r1) for batch lanes [lane, lane + 8V) of a packed unit W floats wide (valid: real lanes of the
// unit; lanes at or beyond it are not stored).
template <typename Col, int V, size_t W = 8 * V>
void TileRowsT(const BlockMatrix& w, const float* __restrict xt, size_t valid, const float* __restrict bias,
               float* __restrict y, YStrides ys, uint64_t r0, uint64_t r1, size_t lane = 0) {
  if (lane >= valid) return;
  const size_t lanes = valid - lane < 8 * V ? valid - lane : 8 * V;
  y += lane * ys.lane;
  if (w.nnz == 0) {
    for (size_t b = 0; b < lanes; ++b) FillBias(bias, y + b * ys.lane, ys.out, r0, r1);
    return;
  }
  const Tile<Col, V, W> tile{Columns<Col>(w), w.weight.data(), xt + lane};
  const uint64_t* __restrict rb = w.row_block.data();
  const bool prefetch = w.blocks >= kPrefetchMinBlocks;
  for (uint64_t n = r0; n < r1; ++n) {
    V8 a[kChains][V] = {};
    uint64_t i = rb[n];
    const uint64_t end = rb[n + 1];
    for (; i + 4 <= end; i += 4) {
      if (prefetch) PrefetchBlocks(tile.col, tile.wt, i);
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
    StoreLanes(out, lanes, y, ys, n);
  }
}

// ---- the dense form ------------------------------------------------------------------------------------------
// gemm.h: W[n, k] = dense[(n / 8) * K * 8 + k * 8 + n % 8]; per output, partial sums over kDenseBlock columns
// added in column order, then the blocks' sums in order.

// One batch row, lanes = the 8 outputs of a panel; P panels at once (independent chains).
template <int P>
inline void DensePanels(const BlockMatrix& w, const float* __restrict x, uint64_t panel, V8* out) {
  const uint64_t k_all = w.cols;
  const float* __restrict base = w.dense.data() + panel * k_all * kPanel;
  V8 y[P] = {};
  for (uint64_t k0 = 0; k0 < k_all; k0 += kDenseBlock) {
    const uint64_t k1 = k0 + kDenseBlock < k_all ? k0 + kDenseBlock : k_all;
    V8 p[P] = {};
    for (uint64_t k = k0; k < k1; ++k) {
      const float xk = x[k];
      for (int q = 0; q < P; ++q) p[q] = p[q] + LoadV8(base + (q * k_all + k) * kPanel) * xk;
    }
    for (int q = 0; q < P; ++q) y[q] = y[q] + p[q];
  }
  for (int q = 0; q < P; ++q) out[q] = y[q];
}

inline void DenseVectorRows(const BlockMatrix& w, const float* __restrict x, const float* __restrict bias,
                            float* __restrict y, YStrides ys, uint64_t r0, uint64_t r1) {
  const uint64_t p1 = (r1 + kPanel - 1) / kPanel;
  uint64_t p = r0 / kPanel;
  auto store = [&](uint64_t panel, const V8& v) {
    float out[kPanel];
    std::memcpy(out, &v, sizeof out);
    for (uint64_t j = 0; j < kPanel && panel * kPanel + j < r1; ++j) {
      const uint64_t n = panel * kPanel + j;
      y[n * ys.out] = bias ? out[j] + bias[n] : out[j];
    }
  };
  for (; p + 4 <= p1; p += 4) {
    V8 v[4];
    DensePanels<4>(w, x, p, v);
    for (int q = 0; q < 4; ++q) store(p + q, v[q]);
  }
  for (; p < p1; ++p) {
    V8 v[1];
    DensePanels<1>(w, x, p, v);
    store(p, v[0]);
  }
}

// Batch lanes [lane, lane + 8V) of a packed unit W floats wide; R outputs at once (R divides kPanel).
template <int V, int R, size_t W = 8 * V>
void DenseTileRows(const BlockMatrix& w, const float* __restrict xt, size_t valid, const float* __restrict bias,
                   float* __restrict y, YStrides ys, uint64_t r0, uint64_t r1, size_t lane = 0) {
  const uint64_t k_all = w.cols;
  if (lane >= valid) return;
  const size_t lanes = valid - lane < 8 * V ? valid - lane : 8 * V;
  y += lane * ys.lane;
  xt += lane;
  // R x V accumulators in registers over a block of columns (each packed column loaded once for R
  // outputs); the running sums y live in memory, touched once per block.
  for (uint64_t n0 = r0; n0 < r1; n0 += R) {
    const float* __restrict wp = w.dense.data() + (n0 / kPanel) * k_all * kPanel + n0 % kPanel;
    alignas(32) float acc[R][8 * V] = {};
    for (uint64_t k0 = 0; k0 < k_all; k0 += kDenseBlock) {
      const uint64_t k1 = k0 + kDenseBlock < k_all ? k0 + kDenseBlock : k_all;
      V8 p[R][V] = {};
      for (uint64_t k = k0; k < k1; ++k) {
        V8 xv[V];
        for (int v = 0; v < V; ++v) xv[v] = LoadV8(xt + k * W + 8 * v);
        for (int r = 0; r < R; ++r) {
          const float wb = wp[k * kPanel + r];
          for (int v = 0; v < V; ++v) p[r][v] = p[r][v] + wb * xv[v];
        }
      }
      for (int r = 0; r < R; ++r) {
        for (int v = 0; v < V; ++v) {
          const V8 sum = LoadV8(acc[r] + 8 * v) + p[r][v];
          std::memcpy(acc[r] + 8 * v, &sum, sizeof sum);
        }
      }
    }
    for (int r = 0; r < R && n0 + r < r1; ++r) {
      const uint64_t n = n0 + r;
      if (bias) {
        for (size_t b = 0; b < lanes; ++b) acc[r][b] = acc[r][b] + bias[n];
      }
      StoreLanes(acc[r], lanes, y, ys, n);
    }
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
