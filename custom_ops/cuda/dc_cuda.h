// DCSparseGemm on an NVIDIA GPU: the entry points shared by the onnxruntime CUDA-EP kernel
// (ort_cuda_op.cc) and the standalone harness (harness.cu). Implemented in dc_cuda.cu; see docs/CUDA.md.
//
// Create (once per layer, at kernel creation):
//   1. the host validates the payload with the CPU reader's rules (decode_plan.h: ParsePayload, chunk
//      table, row counts, code lengths) and builds the canonical code tables;
//   2. the streams, tables, row counts and chunk table go to the device;
//   3. one thread block per chunk decodes its rows (two threads: index and weight stream, decode tables in
//      shared memory; gpu_decode.h), writing the CSR of its rows at offsets the host computed;
//   4. the host checks the chunk statuses (the end-of-chunk / end-of-stream rules); on any error the CPU
//      reader is run for the exact error message;
//   5. per row, the device builds the execution format (gemm.h's codebook blocks: 4 entries of one cluster,
//      padded with column K), storing one cluster byte per block instead of its float value:
//        row_block u64[N + 1], columns u16[4 * blocks] (u32 when K >= 65536), cluster u8[blocks]
//      ~9 bytes per block (4 slots), against 12 for the CPU form; the codebook lives in shared memory.
// Run (every call): Y[m, N] = X[m, K] · Wᵀ (+ bias) on the caller's stream, device pointers only, no host
// synchronisation, no host copies. Every output is computed in gemm.h's summation order with
// round-to-nearest float32 adds and multiplies (no FMA), so results are bit-identical to SpmmReference on
// the sparse form.
//   m == 1   one warp per output row, 32 blocks at a time (coalesced index loads), the 4 chains summed in
//            order through warp shuffles; x in shared memory when K + 1 floats fit (else read through L1).
//   m >= 2   X transposed to Xt[K + 1][W] (row K zero) per slab of W batch rows; then either the warp
//            kernel (a warp per output row: 32 blocks loaded at once, handed out by shuffles to 32 / J
//            lane groups that each own whole chains; J lanes across the batch, C columns each, W = J * C)
//            or the group kernel (groups of G = 2..32 lanes per output row, each lane C batch columns,
//            W = G * C); W up to 128.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "decode_plan.h"
#include "payload.h"

namespace onnx_dc {
namespace gpu {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Where the time of Create went (milliseconds; device times from CUDA events).
struct CreateTiming {
  double host_validate_ms = 0;  // ParsePayload + PlanGpuDecode
  double upload_ms = 0;         // allocations and host-to-device copies (host wall time)
  double decode_ms = 0;         // chunk decode kernel
  double build_ms = 0;          // count, scan, fill kernels
  double total_ms = 0;          // Create, wall time
};

// How the batch-1 kernel reads x: 0 automatic (shared memory up to 96 KiB, x and codebook), 1 shared
// memory (when it fits at all), 2 global memory through L1. For tests and tuning; the environment variable
// ONNX_DC_CUDA_VECTOR_X=0|1|2 sets the default of new objects, ONNX_DC_CUDA_VECTOR_BLOCKS_PER_SM (default 4)
// the batch-1 grid.
enum class VectorX { kAuto = 0, kShared = 1, kGlobal = 2 };

// The kernel for batches >= 2: 0 automatic, 1 the group kernel (G lanes per row, one block after another),
// 2 the warp kernel (a warp per row, 32 blocks loaded at once and handed out by shuffles). Both sum in
// SpmmReference's order. ONNX_DC_CUDA_TILE=0|1|2 sets the default of new objects.
enum class TileKernel { kAuto = 0, kGroups = 1, kWarp = 2 };

class SparseGemm {
 public:
  // Decode `blob` (host memory) on the current device, on `stream` (nullptr: a private stream), and wait
  // for it. Throws PayloadError / std::invalid_argument (the CPU reader's errors), CudaError, or
  // std::logic_error if the GPU decoder and the CPU reader disagree (a bug).
  static std::unique_ptr<SparseGemm> Create(const uint8_t* blob, size_t size, cudaStream_t stream,
                                            const DecodeOptions& options = {});
  ~SparseGemm();
  SparseGemm(const SparseGemm&) = delete;
  SparseGemm& operator=(const SparseGemm&) = delete;

  // Y[m, N] = X[m, K] · Wᵀ (+ bias[N] when bias is not null). x, bias, y: device memory of the device
  // this object lives on. Asynchronous on `stream`; returns the first launch or allocation error.
  cudaError_t Run(const float* x, uint64_t m, const float* bias, float* y, cudaStream_t stream) const;

  uint64_t rows() const { return rows_; }
  uint64_t cols() const { return cols_; }
  uint64_t nnz() const { return nnz_; }
  uint64_t blocks() const { return blocks_; }
  int device() const { return device_; }
  size_t device_bytes() const;  // the execution format's device memory (row_block, columns, clusters, codebook)
  const CreateTiming& timing() const { return timing_; }
  void set_vector_x(VectorX v) { vector_x_ = v; }
  void set_tile_kernel(TileKernel k) { tile_kernel_ = k; }
  // The kernel a batch of m rows runs ("vector/shared-x", "tile G=8 C=1", ...).
  std::string KernelFor(uint64_t m) const;
  // The execution format, copied back (tests).
  HostFormat Download() const;

 private:
  SparseGemm() = default;
  void FillOutput(uint64_t m, const float* bias, float* y, cudaStream_t stream, cudaError_t* err) const;
  bool UseSharedX() const;
  bool UseWarpKernel(uint64_t m) const;

  int device_ = 0;
  int sm_count_ = 1;
  size_t max_smem_ = 48 << 10;  // opt-in shared memory per block
  uint64_t rows_ = 0, cols_ = 0, nnz_ = 0, blocks_ = 0;
  bool wide_ = false;
  uint32_t codebook_size_ = 0;
  float codebook_host_[256] = {};
  uint64_t* row_block_ = nullptr;  // device
  void* col_ = nullptr;            // device, uint16_t or uint32_t
  uint8_t* cluster_ = nullptr;     // device
  float* codebook_ = nullptr;      // device, 256 floats (zero-padded)
  cudaMemPool_t pool_ = nullptr;   // scratch (Xt) for batches >= 2, stream-ordered
  VectorX vector_x_ = VectorX::kAuto;
  TileKernel tile_kernel_ = TileKernel::kAuto;
  int vector_blocks_per_sm_ = 4;
  CreateTiming timing_;
};

// cudaGetErrorString, as an exception, when err != cudaSuccess.
void ThrowIfCuda(cudaError_t err, const char* what);

}  // namespace gpu
}  // namespace onnx_dc
