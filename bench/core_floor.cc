// The least work any sparse kernel must do, timed on its own (bench/core_floor.py builds and drives this file).
//
// A product with an unstructured sparse W reads x[c] once per nonzero (batch 1: one float; batch 8: the 8
// batch rows of column c, one 32-byte vector) and adds it into some accumulator. These loops do exactly that
// and nothing else: no codebook, no multiply, no padding, indices already decoded to what suits each loop
// best. Whatever a real kernel adds (index decoding, codebook values, chains in a fixed order) only costs
// more, so each loop's time is a floor for every kernel on this core, independent of how that kernel is
// written. Compiled with -O2 -fno-tree-vectorize -mavx2 -mfma -mbmi: the scalar loops stay scalar, the intrinsics
// are what they say.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace {
// The index stream 256 entries ahead, as DCSparseGemm's tile kernels prefetch their blocks (the hardware
// prefetcher alone falls behind while X misses L1; at batch 1 the prefetch only costs, so those loops have
// none); a prefetch never faults, so the address may run past the end.
template <typename T>
inline void Prefetch(const T* idx, size_t i) {
  __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(idx) + (i + 256) * sizeof(T)), 0, 0);
}
// The sum of every lane of four vector sums (so that the compiler keeps the loop's work).
inline float Total(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  float out[8];
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float s = 0.0f;
  for (float v : out) s += v;
  return s;
}
}  // namespace

extern "C" {

// Batch 1, u32 indices, one scalar load and add per nonzero into 8 independent sums (2 loads per nonzero:
// the index and x).
float floor_b1_u32(const float* x, const uint32_t* idx, size_t n) {
  float a[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {  // written out: GCC -O2 would keep a[] in memory behind a loop over j
    a[0] += x[idx[i]];
    a[1] += x[idx[i + 1]];
    a[2] += x[idx[i + 2]];
    a[3] += x[idx[i + 3]];
    a[4] += x[idx[i + 4]];
    a[5] += x[idx[i + 5]];
    a[6] += x[idx[i + 6]];
    a[7] += x[idx[i + 7]];
  }
  for (; i < n; ++i) a[0] += x[idx[i]];
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// Batch 1, u16 indices read four at a time (one 64-bit load, split with shifts): 1.25 loads per nonzero.
float floor_b1_u16x4(const float* x, const uint16_t* idx, size_t n) {
  float a[8] = {};
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v0, v1;
    std::memcpy(&v0, idx + i, 8);
    std::memcpy(&v1, idx + i + 4, 8);
    a[0] += x[static_cast<uint16_t>(v0)];
    a[1] += x[_bextr_u64(v0, 16, 16)];
    a[2] += x[_bextr_u64(v0, 32, 16)];
    a[3] += x[v0 >> 48];
    a[4] += x[static_cast<uint16_t>(v1)];
    a[5] += x[_bextr_u64(v1, 16, 16)];
    a[6] += x[_bextr_u64(v1, 32, 16)];
    a[7] += x[v1 >> 48];
  }
  for (; i < n; ++i) a[0] += x[idx[i]];
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// As u16x4, with half of the adds done as fma(x, 1, a) (the same rounding as x + a): a core with two
// add pipes and two FMA pipes then has four pipes for the adds.
float floor_b1_u16x4_fma(const float* x, const uint16_t* idx, size_t n) {
  __m128 a[8];
  for (auto& v : a) v = _mm_setzero_ps();
  const __m128 one = _mm_set_ss(1.0f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v0, v1;
    std::memcpy(&v0, idx + i, 8);
    std::memcpy(&v1, idx + i + 4, 8);
    a[0] = _mm_add_ss(a[0], _mm_load_ss(x + static_cast<uint16_t>(v0)));
    a[1] = _mm_fmadd_ss(_mm_load_ss(x + _bextr_u64(v0, 16, 16)), one, a[1]);
    a[2] = _mm_add_ss(a[2], _mm_load_ss(x + _bextr_u64(v0, 32, 16)));
    a[3] = _mm_fmadd_ss(_mm_load_ss(x + (v0 >> 48)), one, a[3]);
    a[4] = _mm_add_ss(a[4], _mm_load_ss(x + static_cast<uint16_t>(v1)));
    a[5] = _mm_fmadd_ss(_mm_load_ss(x + _bextr_u64(v1, 16, 16)), one, a[5]);
    a[6] = _mm_add_ss(a[6], _mm_load_ss(x + _bextr_u64(v1, 32, 16)));
    a[7] = _mm_fmadd_ss(_mm_load_ss(x + (v1 >> 48)), one, a[7]);
  }
  float s = 0.0f;
  for (const auto& v : a) s += _mm_cvtss_f32(v);
  for (; i < n; ++i) s += x[idx[i]];
  return s;
}

// Batch 1 with AVX2's gather: 8 nonzeros per vgatherdps, 4 vectors in flight.
float floor_b1_gather(const float* x, const uint32_t* idx, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i i0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + i));
    const __m256i i1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + i + 8));
    const __m256i i2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + i + 16));
    const __m256i i3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + i + 24));
    a0 = _mm256_add_ps(a0, _mm256_i32gather_ps(x, i0, 4));
    a1 = _mm256_add_ps(a1, _mm256_i32gather_ps(x, i1, 4));
    a2 = _mm256_add_ps(a2, _mm256_i32gather_ps(x, i2, 4));
    a3 = _mm256_add_ps(a3, _mm256_i32gather_ps(x, i3, 4));
  }
  float s = Total(a0, a1, a2, a3);
  for (; i < n; ++i) s += x[idx[i]];
  return s;
}

// Batch 8: one 32-byte vector of the packed X (column c's 8 batch rows at xt + 8c) per nonzero, added into
// 4 independent vector sums; u16 columns read four at a time, as DCSparseGemm stores them.
float floor_b8(const float* xt, const uint16_t* idx, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    Prefetch(idx, i);
    uint64_t v;
    std::memcpy(&v, idx + i, 8);
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(xt + 8 * static_cast<uint16_t>(v)));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(xt + 8 * _bextr_u64(v, 16, 16)));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(xt + 8 * _bextr_u64(v, 32, 16)));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(xt + 8 * (v >> 48)));
  }
  for (; i < n; ++i) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(xt + 8 * idx[i]));
  return Total(a0, a1, a2, a3);
}

}  // extern "C"
