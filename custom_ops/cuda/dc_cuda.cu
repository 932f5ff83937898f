// DCSparseGemm's CUDA kernels and the SparseGemm object (dc_cuda.h). Compiled with --fmad=false and with
// every float operation spelled __fadd_rn / __fmul_rn, so no multiply-add is ever contracted: the sums are
// gemm.h's, bit for bit.
#include "dc_cuda.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gpu_decode.h"

namespace onnx_dc {
namespace gpu {

void ThrowIfCuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw CudaError(std::string("onnx_dc CUDA: ") + what + ": " + cudaGetErrorString(err));
}

namespace {

constexpr unsigned kFull = 0xFFFFFFFFu;
constexpr int kDecodeThreads = 64;  // warp 0: index stream, warp 1: weight stream
constexpr int kBuildThreads = 16;   // one row per thread, 256 u64 counters each in shared memory (32 KiB)
constexpr int kScanThreads = 1024;
constexpr int kVectorThreads = 256;
constexpr int kTileThreads = 256;
constexpr uint64_t kMaxSlab = 128;  // batch rows per transposed slab

__device__ __forceinline__ float Add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float Mul(float a, float b) { return __fmul_rn(a, b); }

// ---- decode -------------------------------------------------------------------------------------------

__global__ void __launch_bounds__(kDecodeThreads) DecodeChunksKernel(DecodeArgs a) {
  extern __shared__ uint32_t tables[];  // index primary table, then weight primary table
  const uint32_t ni = 1u << a.index_code.primary_bits, nw = 1u << a.weight_code.primary_bits;
  for (uint32_t i = threadIdx.x; i < ni; i += blockDim.x) tables[i] = a.index_primary[i];
  for (uint32_t i = threadIdx.x; i < nw; i += blockDim.x) tables[ni + i] = a.weight_primary[i];
  __syncthreads();
  const uint32_t chunk = blockIdx.x;
  if (threadIdx.x == 0)
    DecodeChunkIndex(a, chunk, tables);
  else if (threadIdx.x == 32)
    DecodeChunkWeights(a, chunk, tables + ni);
}

__global__ void __launch_bounds__(kBuildThreads)
    CountBlocksKernel(const uint8_t* cluster, const uint64_t* row_ptr, uint64_t rows, uint32_t ncl, uint64_t* blocks) {
  extern __shared__ uint64_t counters[];  // ncl * kBuildThreads, interleaved by thread
  for (uint64_t r = uint64_t{blockIdx.x} * kBuildThreads + threadIdx.x; r < rows;
       r += uint64_t{gridDim.x} * kBuildThreads)
    blocks[r] = RowBlocks(cluster, row_ptr[r], row_ptr[r + 1], ncl, counters + threadIdx.x, kBuildThreads);
}

// out[0] = 0, out[i + 1] = in[0] + ... + in[i]: one block walking tiles of 1024.
__global__ void __launch_bounds__(kScanThreads) ScanKernel(const uint64_t* in, uint64_t n, uint64_t* out) {
  __shared__ uint64_t warp_sums[kScanThreads / 32];
  __shared__ uint64_t carry;
  const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (threadIdx.x == 0) {
    carry = 0;
    out[0] = 0;
  }
  __syncthreads();
  for (uint64_t base = 0; base < n; base += kScanThreads) {
    const uint64_t i = base + threadIdx.x;
    uint64_t x = i < n ? in[i] : 0;
    for (unsigned o = 1; o < 32; o <<= 1) {
      const uint64_t y = __shfl_up_sync(kFull, x, o);
      if (lane >= o) x += y;
    }
    if (lane == 31) warp_sums[warp] = x;
    __syncthreads();
    if (warp == 0) {
      uint64_t s = warp_sums[lane];
      for (unsigned o = 1; o < 32; o <<= 1) {
        const uint64_t y = __shfl_up_sync(kFull, s, o);
        if (lane >= o) s += y;
      }
      warp_sums[lane] = s;
    }
    __syncthreads();
    const uint64_t inclusive = carry + x + (warp ? warp_sums[warp - 1] : 0);
    if (i < n) out[i + 1] = inclusive;
    __syncthreads();
    if (threadIdx.x == kScanThreads - 1) carry = inclusive;
    __syncthreads();
  }
}

template <typename Col>
__global__ void __launch_bounds__(kBuildThreads)
    FillBlocksKernel(const uint32_t* col, const uint8_t* cluster, const uint64_t* row_ptr, const uint64_t* row_block,
                     uint64_t rows, uint32_t ncl, Col pad, Col* out_col, uint8_t* out_cluster) {
  extern __shared__ uint64_t counters[];
  for (uint64_t r = uint64_t{blockIdx.x} * kBuildThreads + threadIdx.x; r < rows;
       r += uint64_t{gridDim.x} * kBuildThreads)
    FillRow<Col>(col, cluster, row_ptr[r], row_ptr[r + 1], ncl, counters + threadIdx.x, kBuildThreads, row_block[r],
                 pad, out_col, out_cluster);
}

// ---- products -----------------------------------------------------------------------------------------

__device__ __forceinline__ void LoadCols(const uint16_t* cols, uint64_t b, uint32_t c[4]) {
  const uint2 v = __ldg(reinterpret_cast<const uint2*>(cols) + b);
  c[0] = v.x & 0xFFFFu;
  c[1] = v.x >> 16;
  c[2] = v.y & 0xFFFFu;
  c[3] = v.y >> 16;
}
__device__ __forceinline__ void LoadCols(const uint32_t* cols, uint64_t b, uint32_t c[4]) {
  const uint4 v = __ldg(reinterpret_cast<const uint4*>(cols) + b);
  c[0] = v.x;
  c[1] = v.y;
  c[2] = v.z;
  c[3] = v.w;
}

struct Format {
  const uint64_t* row_block;
  const void* col;
  const uint8_t* cluster;
  const float* codebook;
  uint32_t codebook_size;
  uint64_t rows, cols;
};

// Batch 1: one warp per output row. Lane l takes block b0 + base + l (32 consecutive blocks: coalesced
// column and cluster loads), so its block belongs to chain l mod 4; the chains then add the 32 products in
// block order through shuffles (8 steps), exactly as SpmmReference's a[j mod 4] += weight * t.
template <typename Col, bool kSharedX>
__global__ void __launch_bounds__(kVectorThreads)
    SpmvKernel(Format w, const float* __restrict__ x, const float* __restrict__ bias, float* __restrict__ y) {
  extern __shared__ float smem[];
  float* cb = smem;         // 256
  float* xs = smem + 256;   // K + 1 when kSharedX
  for (uint32_t i = threadIdx.x; i < w.codebook_size; i += blockDim.x) cb[i] = w.codebook[i];
  if (kSharedX) {
    for (uint64_t i = threadIdx.x; i < w.cols; i += blockDim.x) xs[i] = __ldg(x + i);
    if (threadIdx.x == 0) xs[w.cols] = 0.0f;
  }
  __syncthreads();
  const Col* cols = static_cast<const Col*>(w.col);
  const unsigned lane = threadIdx.x & 31;
  const uint64_t warps = (uint64_t{gridDim.x} * blockDim.x) >> 5;
  const uint64_t K = w.cols;
  auto xv = [&](uint32_t c) -> float {
    if (kSharedX) return xs[c];
    return c < K ? __ldg(x + c) : 0.0f;
  };
  for (uint64_t n = (uint64_t{blockIdx.x} * blockDim.x + threadIdx.x) >> 5; n < w.rows; n += warps) {
    const uint64_t b0 = __ldg(w.row_block + n), b1 = __ldg(w.row_block + n + 1);
    float a = 0.0f;  // this lane's chain: lane mod 4
    for (uint64_t base = b0; base < b1; base += 32) {
      const uint64_t b = base + lane;
      float p = 0.0f;
      if (b < b1) {
        uint32_t c[4];
        LoadCols(cols, b, c);
        float t = Add(xv(c[0]), xv(c[1]));
        t = Add(t, xv(c[2]));
        t = Add(t, xv(c[3]));
        p = Mul(cb[__ldg(w.cluster + b)], t);
      }
      const uint64_t left = b1 - base;
      const unsigned count = left < 32 ? static_cast<unsigned>(left) : 32u;
#pragma unroll
      for (unsigned s = 0; s < 8; ++s) {
        const unsigned idx = 4 * s + (lane & 3);
        const float v = __shfl_sync(kFull, p, idx);
        if (idx < count) a = Add(a, v);
      }
    }
    const float a0 = __shfl_sync(kFull, a, 0), a1 = __shfl_sync(kFull, a, 1);
    const float a2 = __shfl_sync(kFull, a, 2), a3 = __shfl_sync(kFull, a, 3);
    if (lane == 0) {
      float v = Add(Add(a0, a1), Add(a2, a3));
      if (bias) v = Add(v, __ldg(bias + n));
      y[n] = v;
    }
  }
}

// X[first .. first + count) rows -> xt[(K + 1) x ld], column-major by batch row (xt[k * ld + j] = X[first + j, k]),
// zero for k = K and j >= count.
__global__ void TransposeKernel(const float* __restrict__ x, uint64_t K, uint64_t first, uint64_t count, uint64_t ld,
                                float* __restrict__ xt) {
  __shared__ float tile[32][33];
  const uint64_t k0 = uint64_t{blockIdx.x} * 32, j0 = uint64_t{blockIdx.y} * 32;
  for (unsigned dy = threadIdx.y; dy < 32; dy += blockDim.y) {
    const uint64_t j = j0 + dy, k = k0 + threadIdx.x;
    tile[dy][threadIdx.x] = (j < count && k < K) ? __ldg(x + (first + j) * K + k) : 0.0f;
  }
  __syncthreads();
  for (unsigned dy = threadIdx.y; dy < 32; dy += blockDim.y) {
    const uint64_t k = k0 + dy, j = j0 + threadIdx.x;
    if (k <= K && j < ld) xt[k * ld + j] = tile[threadIdx.x][dy];
  }
}

// acc[c] += weight * (((x[k0] + x[k1]) + x[k2]) + x[k3]) for the batch columns sub + c * stride of Xt (row
// length ld): one block applied to C columns, in SpmmReference's order.
template <int C>
__device__ __forceinline__ void ApplyBlock(const float* __restrict__ xt, uint64_t ld, unsigned sub, unsigned stride,
                                           const uint32_t k[4], float weight, float* acc) {
  const float* x0 = xt + k[0] * ld + sub;
  const float* x1 = xt + k[1] * ld + sub;
  const float* x2 = xt + k[2] * ld + sub;
  const float* x3 = xt + k[3] * ld + sub;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    float t = Add(__ldg(x0 + c * stride), __ldg(x1 + c * stride));
    t = Add(t, __ldg(x2 + c * stride));
    t = Add(t, __ldg(x3 + c * stride));
    acc[c] = Add(acc[c], Mul(weight, t));
  }
}

// Batch >= 2: groups of G lanes per output row; lane s of a group computes batch columns s, s + G, ...,
// s + (C - 1) G of the slab, each with its own 4 chains, blocks in stored order.
template <typename Col, int G, int C>
__global__ void __launch_bounds__(kTileThreads)
    SpmmTileKernel(Format w, const float* __restrict__ xt, uint64_t first, uint64_t count,
                   const float* __restrict__ bias, float* __restrict__ y) {
  __shared__ float cb[256];
  for (uint32_t i = threadIdx.x; i < w.codebook_size; i += blockDim.x) cb[i] = w.codebook[i];
  __syncthreads();
  constexpr uint64_t ld = uint64_t{G} * C;
  const Col* cols = static_cast<const Col*>(w.col);
  const unsigned sub = threadIdx.x % G;
  const uint64_t groups = uint64_t{gridDim.x} * (kTileThreads / G);
  for (uint64_t n = (uint64_t{blockIdx.x} * blockDim.x + threadIdx.x) / G; n < w.rows; n += groups) {
    const uint64_t b0 = __ldg(w.row_block + n), b1 = __ldg(w.row_block + n + 1);
    float a[4][C];
#pragma unroll
    for (int q = 0; q < 4; ++q)
#pragma unroll
      for (int c = 0; c < C; ++c) a[q][c] = 0.0f;
    auto step = [&](uint64_t b, float* acc) {
      uint32_t k[4];
      LoadCols(cols, b, k);
      ApplyBlock<C>(xt, ld, sub, G, k, cb[__ldg(w.cluster + b)], acc);
    };
    uint64_t b = b0;
    for (; b + 4 <= b1; b += 4) {
      step(b, a[0]);
      step(b + 1, a[1]);
      step(b + 2, a[2]);
      step(b + 3, a[3]);
    }
    if (b < b1) step(b, a[0]);
    if (b + 1 < b1) step(b + 1, a[1]);
    if (b + 2 < b1) step(b + 2, a[2]);
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const uint64_t j = sub + uint64_t{G} * c;
      if (j < count) {
        float v = Add(Add(a[0][c], a[1][c]), Add(a[2][c], a[3][c]));
        if (bias) v = Add(v, __ldg(bias + n));
        y[(first + j) * w.rows + n] = v;
      }
    }
  }
}

// The block's 4 columns as loaded (16-bit: two words, 32-bit: four), so a warp can hand them out with
// 2 or 4 shuffles.
struct RawCols {
  uint32_t w[4];
};
__device__ __forceinline__ void LoadRaw(const uint16_t* cols, uint64_t b, RawCols* r) {
  const uint2 v = __ldg(reinterpret_cast<const uint2*>(cols) + b);
  r->w[0] = v.x;
  r->w[1] = v.y;
}
__device__ __forceinline__ void LoadRaw(const uint32_t* cols, uint64_t b, RawCols* r) {
  const uint4 v = __ldg(reinterpret_cast<const uint4*>(cols) + b);
  r->w[0] = v.x;
  r->w[1] = v.y;
  r->w[2] = v.z;
  r->w[3] = v.w;
}
__device__ __forceinline__ void ShuffleCols(const uint16_t*, const RawCols& r, unsigned src, uint32_t k[4]) {
  const uint32_t lo = __shfl_sync(kFull, r.w[0], src), hi = __shfl_sync(kFull, r.w[1], src);
  k[0] = lo & 0xFFFFu;
  k[1] = lo >> 16;
  k[2] = hi & 0xFFFFu;
  k[3] = hi >> 16;
}
__device__ __forceinline__ void ShuffleCols(const uint32_t*, const RawCols& r, unsigned src, uint32_t k[4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) k[i] = __shfl_sync(kFull, r.w[i], src);
}

// Batch >= 2, one warp per output row. The warp loads 32 of the row's blocks at once (coalesced, as the
// batch-1 kernel) and hands them out by shuffles, so the x loads of those 32 blocks are independent of one
// another; the group kernel above walks a row's blocks one dependent load after another and waits on L2
// latency. Lane = grp * J + sub: the Q = 32 / J groups split the blocks by index mod Q, so each group owns
// whole chains (chain = block index mod 4, as SpmmReference) and keeps L = 4 / Q of them; lane sub of a
// group takes batch columns sub, sub + J, ..., sub + (C - 1) J. At the end the chains meet by shuffles and
// group 0 writes (a0 + a1) + (a2 + a3) (+ bias).
template <typename Col, int J, int C>
__global__ void __launch_bounds__(kTileThreads)
    SpmmWarpKernel(Format w, const float* __restrict__ xt, uint64_t first, uint64_t count,
                   const float* __restrict__ bias, float* __restrict__ y) {
  constexpr unsigned Q = 32 / J;
  constexpr unsigned L = 4 / Q;
  constexpr uint64_t ld = uint64_t{J} * C;
  __shared__ float cb[256];
  for (uint32_t i = threadIdx.x; i < w.codebook_size; i += blockDim.x) cb[i] = w.codebook[i];
  __syncthreads();
  const Col* cols = static_cast<const Col*>(w.col);
  const unsigned lane = threadIdx.x & 31, grp = lane / J, sub = lane % J;
  const uint64_t warps = (uint64_t{gridDim.x} * blockDim.x) >> 5;
  for (uint64_t n = (uint64_t{blockIdx.x} * blockDim.x + threadIdx.x) >> 5; n < w.rows; n += warps) {
    const uint64_t b0 = __ldg(w.row_block + n), b1 = __ldg(w.row_block + n + 1);
    float a[L][C];
#pragma unroll
    for (unsigned l = 0; l < L; ++l)
#pragma unroll
      for (int c = 0; c < C; ++c) a[l][c] = 0.0f;
    for (uint64_t base = b0; base < b1; base += 32) {
      RawCols raw = {{0, 0, 0, 0}};
      float wt = 0.0f;
      if (base + lane < b1) {
        LoadRaw(cols, base + lane, &raw);
        wt = cb[__ldg(w.cluster + base + lane)];
      }
      const uint64_t left = b1 - base;
      const unsigned avail = left < 32 ? static_cast<unsigned>(left) : 32u;
      const unsigned steps = (avail + Q - 1) / Q;  // the same for every lane
      // Step t hands block base + t * Q + grp to group grp: chain (t * Q + grp) mod 4, local index t mod L.
#pragma unroll
      for (unsigned t0 = 0; t0 < 32 / Q; t0 += L) {
        if (t0 >= steps) break;
#pragma unroll
        for (unsigned l = 0; l < L; ++l) {
          const unsigned t = t0 + l;
          if (t < steps) {
            const unsigned src = t * Q + grp;
            uint32_t k[4];
            ShuffleCols(cols, raw, src, k);
            const float wv = __shfl_sync(kFull, wt, src);
            if (src < avail) ApplyBlock<C>(xt, ld, sub, J, k, wv, a[l]);
          }
        }
      }
    }
#pragma unroll
    for (int c = 0; c < C; ++c) {
      float ch[4];
#pragma unroll
      for (unsigned q = 0; q < 4; ++q) ch[q] = __shfl_sync(kFull, a[q / Q][c], (q % Q) * J + sub);
      const uint64_t j = sub + uint64_t{J} * c;
      if (grp == 0 && j < count) {
        float v = Add(Add(ch[0], ch[1]), Add(ch[2], ch[3]));
        if (bias) v = Add(v, __ldg(bias + n));
        y[(first + j) * w.rows + n] = v;
      }
    }
  }
}

// Y = bias (or 0) for a layer without entries.
__global__ void FillKernel(uint64_t m, uint64_t n, const float* __restrict__ bias, float* __restrict__ y) {
  const uint64_t total = m * n;
  for (uint64_t i = uint64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < total; i += uint64_t{gridDim.x} * blockDim.x)
    y[i] = bias ? Add(0.0f, bias[i % n]) : 0.0f;  // as SpmmReference: (0 + 0) + (0 + 0) + bias
}

// ---- helpers -----------------------------------------------------------------------------------------------

struct DeviceBuffer {
  void* p = nullptr;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (p) cudaFree(p);
  }
  template <typename T>
  T* get() const {
    return static_cast<T*>(p);
  }
  void* release() {
    void* q = p;
    p = nullptr;
    return q;
  }
};

void Alloc(DeviceBuffer& b, size_t bytes, const char* what) { ThrowIfCuda(cudaMalloc(&b.p, std::max<size_t>(bytes, 16)), what); }

template <typename T>
void Upload(DeviceBuffer& b, const std::vector<T>& v, cudaStream_t s, const char* what) {
  Alloc(b, v.size() * sizeof(T), what);
  if (!v.empty()) ThrowIfCuda(cudaMemcpyAsync(b.p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice, s), what);
}

unsigned GridFor(uint64_t items, uint64_t per_block, uint64_t cap) {
  const uint64_t g = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(std::max<uint64_t>(1, std::min<uint64_t>(g, cap)));
}

double Ms(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

struct DeviceGuard {  // restores the current device
  int saved = -1;
  DeviceGuard() { cudaGetDevice(&saved); }
  ~DeviceGuard() {
    if (saved >= 0) cudaSetDevice(saved);
  }
};

struct StreamHolder {
  cudaStream_t s = nullptr;
  bool own = false;
  ~StreamHolder() {
    if (own && s) cudaStreamDestroy(s);
  }
};

struct EventPair {
  cudaEvent_t a = nullptr, b = nullptr;
  EventPair() {
    cudaEventCreate(&a);
    cudaEventCreate(&b);
  }
  ~EventPair() {
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
  }
  double Ms() const {
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    return ms;
  }
};

// Batch 1 keeps x in shared memory automatically up to this size (x plus the codebook), so that at least
// two blocks fit on an SM; above it x is read through L1. Untuned.
constexpr size_t kAutoSharedX = 96 << 10;

// Blocks per SM of the batch-1 kernel (each block loads x once): ONNX_DC_CUDA_VECTOR_BLOCKS_PER_SM, default 4.
// Untuned.
int VectorBlocksPerSm() {
  const char* e = std::getenv("ONNX_DC_CUDA_VECTOR_BLOCKS_PER_SM");
  const int v = e ? std::atoi(e) : 0;
  return v > 0 ? v : 4;
}

VectorX DefaultVectorX() {
  const char* e = std::getenv("ONNX_DC_CUDA_VECTOR_X");
  if (e && e[0] == '1') return VectorX::kShared;
  if (e && e[0] == '2') return VectorX::kGlobal;
  return VectorX::kAuto;
}

// The tile shape for a slab of `m` rows: G lanes per output, C columns per lane.
void TileShape(uint64_t m, int* g, int* c) {
  if (m > 64) {
    *g = 32, *c = 4;
  } else if (m > 32) {
    *g = 32, *c = 2;
  } else {
    int p = 2;
    while (static_cast<uint64_t>(p) < m) p <<= 1;
    *g = p, *c = 1;
  }
}

// The warp kernel's shape for a slab of `m` rows: J lanes across the batch (32 / J groups of chains),
// C columns per lane.
void WarpShape(uint64_t m, int* j, int* c) {
  if (m > 64) {
    *j = 32, *c = 4;
  } else if (m > 32) {
    *j = 32, *c = 2;
  } else if (m > 16) {
    *j = 32, *c = 1;
  } else if (m > 8) {
    *j = 16, *c = 1;
  } else {
    *j = 8, *c = 1;
  }
}

// ONNX_DC_CUDA_TILE=1 (group kernel) or 2 (warp kernel) sets the default of new objects; 0 or unset: auto.
TileKernel DefaultTileKernel() {
  const char* e = std::getenv("ONNX_DC_CUDA_TILE");
  if (e && e[0] == '1') return TileKernel::kGroups;
  if (e && e[0] == '2') return TileKernel::kWarp;
  return TileKernel::kAuto;
}

// The shape of a batch of m rows (slabs of at most kMaxSlab): J and C of the warp kernel, or G and C of the
// group kernel; the slab width is g * c.
void BatchShape(bool warp, uint64_t m, int* g, int* c) {
  if (warp)
    WarpShape(std::min<uint64_t>(m, kMaxSlab), g, c);
  else
    TileShape(std::min<uint64_t>(m, kMaxSlab), g, c);
}

// Both batch kernels: the same arguments, a grid of `lanes` threads per output row (capped at 16 blocks per SM).
using BatchKernel = void (*)(Format, const float*, uint64_t, uint64_t, const float*, float*);

cudaError_t LaunchBatch(BatchKernel kernel, unsigned lanes, const Format& f, const float* xt, uint64_t first,
                        uint64_t count, const float* bias, float* y, int sm_count, cudaStream_t s) {
  const unsigned grid = GridFor(f.rows * lanes, kTileThreads, uint64_t{static_cast<unsigned>(sm_count)} * 16);
  kernel<<<grid, kTileThreads, 0, s>>>(f, xt, first, count, bias, y);
  return cudaGetLastError();
}

// The instantiation for a shape: warp kernel (lanes J across the batch, C columns each) or group kernel
// (G lanes per row, C columns each).
template <typename Col>
BatchKernel WarpKernelFor(int j, int c) {
  if (c == 4) return SpmmWarpKernel<Col, 32, 4>;
  if (c == 2) return SpmmWarpKernel<Col, 32, 2>;
  if (j == 8) return SpmmWarpKernel<Col, 8, 1>;
  if (j == 16) return SpmmWarpKernel<Col, 16, 1>;
  return SpmmWarpKernel<Col, 32, 1>;
}

template <typename Col>
BatchKernel GroupKernelFor(int g, int c) {
  if (c == 4) return SpmmTileKernel<Col, 32, 4>;
  if (c == 2) return SpmmTileKernel<Col, 32, 2>;
  switch (g) {
    case 2: return SpmmTileKernel<Col, 2, 1>;
    case 4: return SpmmTileKernel<Col, 4, 1>;
    case 8: return SpmmTileKernel<Col, 8, 1>;
    case 16: return SpmmTileKernel<Col, 16, 1>;
    default: return SpmmTileKernel<Col, 32, 1>;
  }
}

}  // namespace

// ---- SparseGemm ------------------------------------------------------------------------------------------------

std::unique_ptr<SparseGemm> SparseGemm::Create(const uint8_t* blob, size_t size, cudaStream_t stream,
                                               const DecodeOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  DecodePlan plan;
  std::string why;
  if (!PlanGpuDecode(blob, size, options, &plan, &why)) RejectWithCpuReader(blob, size, options, why);
  const auto t1 = std::chrono::steady_clock::now();

  std::unique_ptr<SparseGemm> g(new SparseGemm());
  g->timing_.host_validate_ms = Ms(t0, t1);
  g->vector_x_ = DefaultVectorX();
  g->tile_kernel_ = DefaultTileKernel();
  g->vector_blocks_per_sm_ = VectorBlocksPerSm();
  ThrowIfCuda(cudaGetDevice(&g->device_), "cudaGetDevice");
  ThrowIfCuda(cudaDeviceGetAttribute(&g->sm_count_, cudaDevAttrMultiProcessorCount, g->device_), "device attributes");
  int optin = 0;
  ThrowIfCuda(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, g->device_), "device attributes");
  g->max_smem_ = static_cast<size_t>(std::max(optin, 48 << 10));
  g->rows_ = plan.rows;
  g->cols_ = plan.cols;
  g->nnz_ = plan.nnz;
  g->wide_ = plan.wide;
  g->codebook_size_ = plan.info.header.codebook_size;
  std::memcpy(g->codebook_host_, plan.info.codebook.data(), sizeof g->codebook_host_);

  cudaMemPoolProps props = {};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = g->device_;
  ThrowIfCuda(cudaMemPoolCreate(&g->pool_, &props), "cudaMemPoolCreate");
  uint64_t keep = ~uint64_t{0};
  ThrowIfCuda(cudaMemPoolSetAttribute(g->pool_, cudaMemPoolAttrReleaseThreshold, &keep), "cudaMemPoolSetAttribute");

  StreamHolder sh;
  sh.s = stream;
  if (!sh.s) {
    ThrowIfCuda(cudaStreamCreateWithFlags(&sh.s, cudaStreamNonBlocking), "cudaStreamCreate");
    sh.own = true;
  }
  cudaStream_t s = sh.s;

  DeviceBuffer codebook;
  {
    std::vector<float> cb(plan.info.codebook.begin(), plan.info.codebook.end());
    Upload(codebook, cb, s, "codebook");
  }
  if (plan.nnz == 0) {
    ThrowIfCuda(cudaStreamSynchronize(s), "codebook upload");
    g->codebook_ = codebook.get<float>();
    codebook.release();
    g->timing_.total_ms = Ms(t0, std::chrono::steady_clock::now());
    return g;
  }

  // Upload what the chunk decoders read.
  DeviceBuffer chunks, row_nnz, row_ptr, istream, wstream, iprim, wprim, isort, wsort, col, cluster, status;
  Upload(chunks, plan.chunks, s, "chunk table");
  Upload(row_nnz, plan.row_nnz, s, "row counts");
  Upload(row_ptr, plan.row_ptr, s, "row offsets");
  Upload(istream, plan.index_stream.words, s, "index stream");
  Upload(wstream, plan.weight_stream.words, s, "weight stream");
  Upload(iprim, plan.index_primary, s, "index table");
  Upload(wprim, plan.weight_primary, s, "weight table");
  Upload(isort, plan.index_sorted, s, "index symbols");
  Upload(wsort, plan.weight_sorted, s, "weight symbols");
  Alloc(col, plan.nnz * sizeof(uint32_t), "columns");
  Alloc(cluster, plan.nnz, "clusters");
  ThrowIfCuda(cudaMemsetAsync(cluster.p, 0, plan.nnz, s), "clusters");
  Alloc(status, plan.chunks.size() * sizeof(ChunkStatus), "chunk status");
  ThrowIfCuda(cudaMemsetAsync(status.p, 0, plan.chunks.size() * sizeof(ChunkStatus), s), "chunk status");
  const auto t2 = std::chrono::steady_clock::now();
  g->timing_.upload_ms = Ms(t1, t2);

  DecodeArgs a{};
  a.chunks = chunks.get<Chunk>();
  a.n_chunks = static_cast<uint32_t>(plan.chunks.size());
  a.rows = plan.rows;
  a.cols = plan.cols;
  a.filler = (uint32_t{1} << plan.info.header.index_bits) - 1;
  a.codebook_size = plan.info.header.codebook_size;
  a.row_nnz = row_nnz.get<uint32_t>();
  a.row_ptr = row_ptr.get<uint64_t>();
  a.index_stream = {istream.get<uint32_t>(), plan.index_stream.words.size(), plan.index_stream.bits};
  a.weight_stream = {wstream.get<uint32_t>(), plan.weight_stream.words.size(), plan.weight_stream.bits};
  a.index_code = plan.index_code;
  a.weight_code = plan.weight_code;
  a.index_primary = iprim.get<uint32_t>();
  a.weight_primary = wprim.get<uint32_t>();
  a.index_sorted = isort.get<uint16_t>();
  a.weight_sorted = wsort.get<uint16_t>();
  a.col = col.get<uint32_t>();
  a.cluster = cluster.get<uint8_t>();
  a.status = status.get<ChunkStatus>();

  EventPair ev_decode, ev_build;
  const size_t table_bytes = (plan.index_primary.size() + plan.weight_primary.size()) * sizeof(uint32_t);
  ThrowIfCuda(cudaEventRecord(ev_decode.a, s), "event");
  DecodeChunksKernel<<<a.n_chunks, kDecodeThreads, table_bytes, s>>>(a);
  ThrowIfCuda(cudaGetLastError(), "chunk decode launch");
  ThrowIfCuda(cudaEventRecord(ev_decode.b, s), "event");
  std::vector<ChunkStatus> st(plan.chunks.size());
  ThrowIfCuda(cudaMemcpyAsync(st.data(), status.p, st.size() * sizeof(ChunkStatus), cudaMemcpyDeviceToHost, s),
              "chunk status download");
  ThrowIfCuda(cudaStreamSynchronize(s), "chunk decode");
  g->timing_.decode_ms = ev_decode.Ms();
  if (!CheckChunkStatuses(plan, blob, st, &why)) RejectWithCpuReader(blob, size, options, why);

  // The execution format: blocks per row, their prefix sums, then the rows.
  const uint32_t ncl = plan.info.header.codebook_size;
  const size_t counter_bytes = size_t{ncl} * kBuildThreads * sizeof(uint64_t);
  const unsigned build_grid = GridFor(plan.rows, kBuildThreads, 1u << 20);
  DeviceBuffer row_blocks, row_block;
  Alloc(row_blocks, plan.rows * sizeof(uint64_t), "blocks per row");
  Alloc(row_block, (plan.rows + 1) * sizeof(uint64_t), "row_block");
  ThrowIfCuda(cudaEventRecord(ev_build.a, s), "event");
  CountBlocksKernel<<<build_grid, kBuildThreads, counter_bytes, s>>>(a.cluster, a.row_ptr, plan.rows, ncl,
                                                                     row_blocks.get<uint64_t>());
  ThrowIfCuda(cudaGetLastError(), "block count launch");
  ScanKernel<<<1, kScanThreads, 0, s>>>(row_blocks.get<uint64_t>(), plan.rows, row_block.get<uint64_t>());
  ThrowIfCuda(cudaGetLastError(), "scan launch");
  uint64_t blocks = 0;
  ThrowIfCuda(cudaMemcpyAsync(&blocks, row_block.get<uint64_t>() + plan.rows, sizeof blocks, cudaMemcpyDeviceToHost, s),
              "block total");
  ThrowIfCuda(cudaStreamSynchronize(s), "block count");
  g->blocks_ = blocks;
  DeviceBuffer out_col, out_cluster;
  Alloc(out_col, 4 * blocks * (plan.wide ? 4 : 2), "block columns");
  Alloc(out_cluster, blocks, "block clusters");
  if (plan.wide)
    FillBlocksKernel<uint32_t><<<build_grid, kBuildThreads, counter_bytes, s>>>(
        a.col, a.cluster, a.row_ptr, row_block.get<uint64_t>(), plan.rows, ncl, static_cast<uint32_t>(plan.cols),
        out_col.get<uint32_t>(), out_cluster.get<uint8_t>());
  else
    FillBlocksKernel<uint16_t><<<build_grid, kBuildThreads, counter_bytes, s>>>(
        a.col, a.cluster, a.row_ptr, row_block.get<uint64_t>(), plan.rows, ncl, static_cast<uint16_t>(plan.cols),
        out_col.get<uint16_t>(), out_cluster.get<uint8_t>());
  ThrowIfCuda(cudaGetLastError(), "block fill launch");
  ThrowIfCuda(cudaEventRecord(ev_build.b, s), "event");
  ThrowIfCuda(cudaStreamSynchronize(s), "block fill");
  g->timing_.build_ms = ev_build.Ms();

  // Kernel attributes for the batch-1 kernel's dynamic shared memory (x in shared memory).
  const int smem_limit = static_cast<int>(g->max_smem_);
  ThrowIfCuda(cudaFuncSetAttribute(SpmvKernel<uint16_t, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_limit),
              "kernel attributes");
  ThrowIfCuda(cudaFuncSetAttribute(SpmvKernel<uint32_t, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_limit),
              "kernel attributes");

  g->row_block_ = row_block.get<uint64_t>();
  row_block.release();
  g->col_ = out_col.release();
  g->cluster_ = out_cluster.get<uint8_t>();
  out_cluster.release();
  g->codebook_ = codebook.get<float>();
  codebook.release();
  g->timing_.total_ms = Ms(t0, std::chrono::steady_clock::now());
  return g;  // the temporaries are freed here (cudaFree synchronises)
}

SparseGemm::~SparseGemm() {
  DeviceGuard guard;
  cudaSetDevice(device_);
  if (row_block_) cudaFree(row_block_);
  if (col_) cudaFree(col_);
  if (cluster_) cudaFree(cluster_);
  if (codebook_) cudaFree(codebook_);
  if (pool_) cudaMemPoolDestroy(pool_);
}

size_t SparseGemm::device_bytes() const {
  if (nnz_ == 0) return 256 * sizeof(float);
  return (rows_ + 1) * sizeof(uint64_t) + 4 * blocks_ * (wide_ ? 4 : 2) + blocks_ + 256 * sizeof(float);
}

std::string SparseGemm::KernelFor(uint64_t m) const {
  if (nnz_ == 0) return "fill (no entries)";
  if (m == 1) {
    return UseSharedX() ? "vector, x in shared memory" : "vector, x through L1";
  }
  int g, c;
  const bool warp = UseWarpKernel(m);
  BatchShape(warp, m, &g, &c);
  return std::string(warp ? "warp J=" : "tile G=") + std::to_string(g) + " C=" + std::to_string(c) + " (" +
         std::to_string((m + uint64_t{static_cast<unsigned>(g * c)} - 1) / static_cast<unsigned>(g * c)) + " slab" +
         (m > static_cast<uint64_t>(g * c) ? "s)" : ")");
}

// Measured on an H200 (docs/CUDA.md), 4096 x 4096 at 10% kept: the warp kernel takes batch 2..16 in about
// half the group kernel's time and is level at 32..64; from 128 the group kernel is 2-10% faster.
bool SparseGemm::UseWarpKernel(uint64_t m) const {
  if (tile_kernel_ == TileKernel::kAuto) return m <= 64;
  return tile_kernel_ == TileKernel::kWarp;
}

bool SparseGemm::UseSharedX() const {
  const size_t need = (256 + cols_ + 1) * sizeof(float);
  if (need > max_smem_ || vector_x_ == VectorX::kGlobal) return false;
  return vector_x_ == VectorX::kShared || need <= kAutoSharedX;
}

void SparseGemm::FillOutput(uint64_t m, const float* bias, float* y, cudaStream_t stream, cudaError_t* err) const {
  const unsigned grid = GridFor(m * rows_, 256, uint64_t{static_cast<unsigned>(sm_count_)} * 8);
  FillKernel<<<grid, 256, 0, stream>>>(m, rows_, bias, y);
  *err = cudaGetLastError();
}

cudaError_t SparseGemm::Run(const float* x, uint64_t m, const float* bias, float* y, cudaStream_t stream) const {
  if (m == 0 || rows_ == 0) return cudaSuccess;
  cudaError_t err = cudaSuccess;
  if (nnz_ == 0) {
    FillOutput(m, bias, y, stream, &err);
    return err;
  }
  const Format f{row_block_, col_, cluster_, codebook_, codebook_size_, rows_, cols_};
  if (m == 1) {
    const size_t need = (256 + cols_ + 1) * sizeof(float);
    const unsigned grid = GridFor(rows_ * 32, kVectorThreads,
                                  uint64_t{static_cast<unsigned>(sm_count_)} * static_cast<unsigned>(vector_blocks_per_sm_));
    if (UseSharedX()) {
      if (wide_)
        SpmvKernel<uint32_t, true><<<grid, kVectorThreads, need, stream>>>(f, x, bias, y);
      else
        SpmvKernel<uint16_t, true><<<grid, kVectorThreads, need, stream>>>(f, x, bias, y);
    } else {
      if (wide_)
        SpmvKernel<uint32_t, false><<<grid, kVectorThreads, 256 * sizeof(float), stream>>>(f, x, bias, y);
      else
        SpmvKernel<uint16_t, false><<<grid, kVectorThreads, 256 * sizeof(float), stream>>>(f, x, bias, y);
    }
    return cudaGetLastError();
  }
  int g, c;
  const bool warp = UseWarpKernel(m);
  BatchShape(warp, m, &g, &c);
  const uint64_t ld = static_cast<uint64_t>(g) * c;
  const BatchKernel kernel = warp ? (wide_ ? WarpKernelFor<uint32_t>(g, c) : WarpKernelFor<uint16_t>(g, c))
                                  : (wide_ ? GroupKernelFor<uint32_t>(g, c) : GroupKernelFor<uint16_t>(g, c));
  float* xt = nullptr;
  err = cudaMallocFromPoolAsync(reinterpret_cast<void**>(&xt), (cols_ + 1) * ld * sizeof(float), pool_, stream);
  if (err != cudaSuccess) return err;
  for (uint64_t first = 0; first < m && err == cudaSuccess; first += ld) {
    const uint64_t count = std::min(ld, m - first);
    const dim3 tgrid(static_cast<unsigned>((cols_ + 1 + 31) / 32), static_cast<unsigned>((ld + 31) / 32));
    TransposeKernel<<<tgrid, dim3(32, 8), 0, stream>>>(x, cols_, first, count, ld, xt);
    err = cudaGetLastError();
    if (err != cudaSuccess) break;
    err = LaunchBatch(kernel, warp ? 32u : static_cast<unsigned>(g), f, xt, first, count, bias, y, sm_count_, stream);
  }
  const cudaError_t free_err = cudaFreeAsync(xt, stream);
  return err != cudaSuccess ? err : free_err;
}

HostFormat SparseGemm::Download() const {
  DeviceGuard guard;
  ThrowIfCuda(cudaSetDevice(device_), "cudaSetDevice");
  HostFormat f;
  f.rows = rows_;
  f.cols = cols_;
  f.nnz = nnz_;
  f.blocks = blocks_;
  f.wide = wide_;
  f.codebook_size = codebook_size_;
  ThrowIfCuda(cudaMemcpy(f.codebook, codebook_, sizeof f.codebook, cudaMemcpyDeviceToHost), "download codebook");
  if (nnz_ == 0) return f;
  f.row_block.resize(rows_ + 1);
  ThrowIfCuda(cudaMemcpy(f.row_block.data(), row_block_, f.row_block.size() * 8, cudaMemcpyDeviceToHost), "download");
  f.cluster.resize(blocks_);
  ThrowIfCuda(cudaMemcpy(f.cluster.data(), cluster_, blocks_, cudaMemcpyDeviceToHost), "download");
  if (wide_) {
    f.col32.resize(4 * blocks_);
    ThrowIfCuda(cudaMemcpy(f.col32.data(), col_, f.col32.size() * 4, cudaMemcpyDeviceToHost), "download");
  } else {
    f.col16.resize(4 * blocks_);
    ThrowIfCuda(cudaMemcpy(f.col16.data(), col_, f.col16.size() * 2, cudaMemcpyDeviceToHost), "download");
  }
  return f;
}

}  // namespace gpu
}  // namespace onnx_dc
