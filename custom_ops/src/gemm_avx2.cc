// The "avx2" kernel set: compiled with -mavx2 -mbmi (CMakeLists.txt, this file only) and chosen at run time
// when the CPU has AVX2 and BMI1 (gemm_cpu.cc: ResolveKernel). No FMA: the summation order of gemm.h
// rounds after every multiply and every add, and so does this code (-ffp-contract=off).
//
//   vector  one batch row. The batch-1 product is bound by load slots (two floating-point loads per cycle
//           on this class of core): each block costs one 64-bit load of its 4 u16 columns split with
//           bextr, 4 scalar loads of x added in the block's order, and, for 4 blocks at once, one vector
//           load of their 4 codebook values, one multiply and one add into a vector whose 4 lanes are the
//           4 chains a0..a3 (block j of a row goes to lane j mod 4: the reference's chain j mod 4). A row's
//           1..3 leftover blocks are added to lanes 0..2 with a blend, the other lanes unchanged.
//   tile8/16  gemm_kernels.h's tiles, whose 8-float GCC vectors are single AVX instructions here.
//   pack    8x8 transposes into the packed layout.
//   dense   gemm_kernels.h's dense-form kernels (batch 1: 8 outputs per vector; tiles: batch rows per vector).
#include "gemm.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__BMI__)

#include <immintrin.h>

#define ONNX_DC_KERNEL_NS avx2
#include "gemm_kernels.h"
#undef ONNX_DC_KERNEL_NS

namespace onnx_dc {
namespace avx2 {
namespace {

// BlockSum in lane 0 of an SSE register whose other lanes are zero by construction (movss loads), so that
// no extra instruction clears them before the 4 block sums are interleaved into one vector.
template <typename Col>
inline __m128 Sum4(const float* __restrict x, const Col* __restrict c) {
  size_t k[4];
  Cols4(c, k);
  __m128 t = _mm_add_ss(_mm_load_ss(x + k[0]), _mm_load_ss(x + k[1]));
  t = _mm_add_ss(t, _mm_load_ss(x + k[2]));
  return _mm_add_ss(t, _mm_load_ss(x + k[3]));
}

template <typename Col>
void VectorRowsAvx2(const BlockMatrix& w, const float* __restrict x, const float* __restrict bias,
                    float* __restrict y, YStrides ys, uint64_t r0, uint64_t r1) {
  if (w.nnz == 0) return FillBias(bias, y, ys.out, r0, r1);
  const Col* __restrict col = Columns<Col>(w);
  const float* __restrict wt = w.weight.data();  // blocks + 4 floats: a 4-float load at any block is in bounds
  const uint64_t* __restrict rb = w.row_block.data();
  const __m128 keep[4] = {_mm_castsi128_ps(_mm_setr_epi32(0, 0, 0, 0)), _mm_castsi128_ps(_mm_setr_epi32(-1, 0, 0, 0)),
                          _mm_castsi128_ps(_mm_setr_epi32(-1, -1, 0, 0)),
                          _mm_castsi128_ps(_mm_setr_epi32(-1, -1, -1, 0))};
  const bool prefetch = w.blocks >= kPrefetchMinBlocks;
  for (uint64_t n = r0; n < r1; ++n) {
    __m128 acc = _mm_setzero_ps();
    uint64_t i = rb[n];
    const uint64_t end = rb[n + 1];
    for (; i + 4 <= end; i += 4) {
      if (prefetch) PrefetchBlocks(col, wt, i);
      const __m128 t0 = Sum4(x, col + kBlock * i), t1 = Sum4(x, col + kBlock * (i + 1));
      const __m128 t2 = Sum4(x, col + kBlock * (i + 2)), t3 = Sum4(x, col + kBlock * (i + 3));
      const __m128 t = _mm_movelh_ps(_mm_unpacklo_ps(t0, t1), _mm_unpacklo_ps(t2, t3));
      acc = _mm_add_ps(acc, _mm_mul_ps(_mm_loadu_ps(wt + i), t));
    }
    // The 0..3 leftover blocks, without a branch: the next 3 blocks are always readable (the next row's, or
    // the slack after the last block); lanes past the row keep their value.
    const uint64_t left = end - i;
    const __m128 t0 = Sum4(x, col + kBlock * i), t1 = Sum4(x, col + kBlock * (i + 1));
    const __m128 t2 = Sum4(x, col + kBlock * (i + 2));
    const __m128 t = _mm_movelh_ps(_mm_unpacklo_ps(t0, t1), _mm_unpacklo_ps(t2, _mm_setzero_ps()));
    const __m128 sum = _mm_add_ps(acc, _mm_mul_ps(_mm_loadu_ps(wt + i), t));
    acc = _mm_blendv_ps(acc, sum, keep[left]);
    float a[4];
    _mm_storeu_ps(a, acc);
    float v = (a[0] + a[1]) + (a[2] + a[3]);
    if (bias) v = v + bias[n];
    y[n * ys.out] = v;
  }
}

void Vector(const BlockMatrix& w, const float* x, const float* bias, float* y, YStrides ys, uint64_t r0, uint64_t r1) {
  if (w.wide())
    VectorRowsAvx2<uint32_t>(w, x, bias, y, ys, r0, r1);
  else
    VectorRowsAvx2<uint16_t>(w, x, bias, y, ys, r0, r1);
}

template <int V>
void TileN(const BlockMatrix& w, const float* xt, size_t valid, const float* bias, float* y, YStrides ys, uint64_t r0,
           uint64_t r1) {
  if (w.wide())
    TileRowsT<uint32_t, V>(w, xt, valid, bias, y, ys, r0, r1);
  else
    TileRowsT<uint16_t, V>(w, xt, valid, bias, y, ys, r0, r1);
}

// 8 rows x 8 columns of X (row stride k) -> 8 packed columns of width `width` (lanes lane0 .. lane0 + 7).
inline void Transpose8x8(const float* x, size_t k, float* dst, size_t width) {
  __m256 r0 = _mm256_loadu_ps(x), r1 = _mm256_loadu_ps(x + k), r2 = _mm256_loadu_ps(x + 2 * k),
         r3 = _mm256_loadu_ps(x + 3 * k), r4 = _mm256_loadu_ps(x + 4 * k), r5 = _mm256_loadu_ps(x + 5 * k),
         r6 = _mm256_loadu_ps(x + 6 * k), r7 = _mm256_loadu_ps(x + 7 * k);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
               t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
               t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
               u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
               u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
               u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(dst + 0 * width, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + 1 * width, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * width, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * width, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * width, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * width, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * width, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * width, _mm256_permute2f128_ps(u3, u7, 0x31));
}

void Pack(const float* x, size_t rows, size_t k, size_t width, float* xt) {
  // Full groups of 8 rows by 8x8 transposes; what is left (rows not a multiple of 8, the last k % 8
  // columns, the zero column, the padding lanes) the plain way. Same values either way: this only moves them.
  const size_t full_rows = rows / 8 * 8, full_cols = k / 8 * 8;
  if (full_rows < rows || full_rows < width) std::memset(xt, 0, (k + 1) * width * sizeof(float));
  else std::memset(xt + k * width, 0, width * sizeof(float));
  for (size_t g = 0; g < full_rows; g += 8)
    for (size_t c = 0; c < full_cols; c += 8) Transpose8x8(x + g * k + c, k, xt + c * width + g, width);
  for (size_t b = 0; b < rows; ++b) {
    const size_t c0 = b < full_rows ? full_cols : 0;
    for (size_t c = c0; c < k; ++c) xt[c * width + b] = x[b * k + c];
  }
}

void DenseTile8(const BlockMatrix& w, const float* xt, size_t valid, const float* bias, float* y, YStrides ys,
                uint64_t r0, uint64_t r1) {
  DenseTileRows<1, 8>(w, xt, valid, bias, y, ys, r0, r1);
}
void DenseTile16(const BlockMatrix& w, const float* xt, size_t valid, const float* bias, float* y, YStrides ys,
                 uint64_t r0, uint64_t r1) {
  DenseTileRows<2, 4>(w, xt, valid, bias, y, ys, r0, r1);
}

const KernelSet kAvx2 = {"avx2", Vector, TileN<1>, TileN<2>, Pack, DenseVectorRows, DenseTile8, DenseTile16};

}  // namespace
}  // namespace avx2

const KernelSet* Avx2KernelSet() { return &avx2::kAvx2; }

}  // namespace onnx_dc

#endif
