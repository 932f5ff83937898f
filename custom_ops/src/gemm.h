// DCSparseGemm's execution format and CPU kernels (src/gemm_cpu.cc, src/gemm_kernels.h, src/gemm_avx2.cc).
//
// Two forms of W[N, K] live here:
//   SparseMatrix  CSR by output row, exactly what the payload stores (DecodeSparse, payload.h); used to
//                 check the decoder and as the input of the execution format.
//   BlockMatrix   the execution format DCSparseGemm runs on, built once per session from a SparseMatrix.
//
// ---- The execution format: codebook blocks ----------------------------------------------------------------
// Within each row the entries are sorted by cluster, then by column, and cut into blocks of kBlock = 4
// entries of one cluster; the last block of every (row, cluster) run is padded with the column index K, a
// "zero column" (every kernel reads x[K] = 0). A block stores its 4 column indices and the codebook value
// of its cluster:
//   row_block  u64 [N + 1]      blocks of row n are [row_block[n], row_block[n + 1])
//   col16      u16 [4 * (blocks + 3)]  column indices, K = padding, when K < 65536   (else col32, u32);
//                                 3 blocks of padding after the last, so kernels may read ahead
//   weight     f32 [blocks + 4]  the block's codebook value (4 zero floats of slack after the end)
// = 2 bytes per slot + 4 per block + 8 per row: 3 bytes per slot, ~3.3 per nonzero at 10% density with a
// 5-bit codebook (~9% of the slots are padding). No dense matrix. Grouping by cluster lets every kernel
// add the 4 inputs of a block first and multiply once per block by its codebook value; the batch-1
// product is bound by loads of x (one per slot) rather than by index or codebook traffic.
//
// ---- Summation order (every kernel, every thread count, every batch size) -----------------------------
// For output Y[b, n] (x = row b of X, with x[K] = 0):
//   a0 = a1 = a2 = a3 = +0.0f
//   for j, block in enumerate(blocks of row n):         // block order as stored
//     t = ((x[c0] + x[c1]) + x[c2]) + x[c3]
//     a[j mod 4] = a[j mod 4] + weight * t
//   y = ((a0 + a1) + (a2 + a3));  y = y + bias[n] if there is a bias
// Every operation is a float32 add or multiply, rounded to nearest; no FMA (std::fma is never used and the
// library is compiled with -ffp-contract=off), so the SIMD kernels, which keep the chains a0..a3 in lanes
// (batch-1 AVX2 kernel) or the batch rows in lanes (tile kernels), are bit-identical to SpmmReference.
// The order does not depend on the batch size or on which rows a task computes, so a row of Y is the same
// whatever else is in the batch and whatever the thread count.
//
// ---- The dense form, for layers where the sparse one cannot win -----------------------------------------
// A layer whose density (nnz / (N * K)) is at least GemmOptions::dense_density (default kDenseDensity) runs
// as a dense fp32 matrix instead: from ~55% density on, with batch rows sharing the loads, K dense products
// per output cost less than the blocks (measured with bench/bench_kernels.py-style runs on 2048^2 and
// 4096^2 layers; at batch 1 a layer whose weights do not fit in cache stays faster sparse up to ~70%):
//   dense   f32 [ceil(N / 8)][K][8]   panels of 8 rows, column by column (rows past N are zero)
// Its summation order, for Y[b, n]:
//   y = +0.0f
//   for each range of kDenseBlock (256) columns [k0, k1):
//     p = +0.0f;  for k in k0 .. k1-1:  p = p + W[n, k] * x[k]
//     y = y + p
//   y = y + bias[n] if there is a bias
// (the same rules: float32, no FMA, one order for every kernel of the form). GemmOptions::form (or the
// environment variable ONNX_DC_FORM=auto|sparse|dense) forces a form; layers sparser than 1/16 always stay
// sparse (so the dense matrix is at most 64 bytes per stored entry, bounded by the payload).
//
// ---- Kernels and dispatch ----------------------------------------------------------------------------------
// A KernelSet is chosen once, when the BlockMatrix is built: "avx2" (AVX2 + BMI1, its own translation unit
// compiled with -mavx2 -mbmi, used when the CPU has both, x86-64 only) or "scalar" (portable C++ with GCC
// vector extensions, the baseline build). GemmOptions::kernel (or the environment variable
// ONNX_DC_KERNEL=auto|scalar|avx2) forces one; forcing avx2 on a CPU without it is an error.
//   vector kernel  one batch row; reads X through a padded copy (K + 1 floats, x[K] = 0).
//   tile kernels   8 or 16 batch rows at once on a packed copy of X: column-major, 8 or 16 floats per
//                  column (one or two 32-byte vectors), K + 1 columns, zero-filled. Every block is decoded
//                  once and applied to all rows of the tile.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "payload.h"

namespace onnx_dc {

// ---- CSR, as decoded --------------------------------------------------------------------------------------

struct SparseMatrix {
  uint64_t rows = 0;  // N
  uint64_t cols = 0;  // K
  uint64_t nnz = 0;
  std::vector<uint64_t> row_ptr;  // rows + 1, or empty when nnz == 0 (every row empty)
  std::vector<uint16_t> col16;    // absolute column, when K <= 65536
  std::vector<uint32_t> col32;    // otherwise
  std::vector<uint8_t> cluster;   // index into codebook
  std::array<float, 256> codebook{};  // zero-padded, so every u8 index is in bounds

  bool wide() const { return cols > 65536; }  // u32 columns
  uint64_t column(uint64_t e) const { return wide() ? col32[e] : col16[e]; }
};

// ---- The execution format ---------------------------------------------------------------------------------

inline constexpr size_t kBlock = 4;     // entries per block
inline constexpr size_t kChains = 4;    // partial sums per output
inline constexpr size_t kMaxParts = 64; // row parts of the thread partition
inline constexpr size_t kPanel = 8;            // rows per panel of the dense form
inline constexpr size_t kDenseBlock = 256;     // columns per partial sum of the dense form
inline constexpr double kDenseDensity = 0.55;  // default density from which a layer runs dense

enum class Form { kSparseBlocks, kDense };
const char* FormName(Form f);

struct KernelSet;

struct GemmOptions {
  std::string kernel = "auto";  // auto | scalar | avx2; "auto" reads ONNX_DC_KERNEL (empty: best available)
  std::string form = "auto";    // auto | sparse | dense; "auto" reads ONNX_DC_FORM, else chooses by density
  double dense_density = kDenseDensity;
  size_t max_parts = kMaxParts;
};

struct BlockMatrix {
  Form form = Form::kSparseBlocks;
  uint64_t rows = 0;   // N
  uint64_t cols = 0;   // K
  uint64_t nnz = 0;    // real entries
  uint64_t blocks = 0;
  std::vector<float> dense;  // the dense form: ceil(N / 8) panels of K x 8 floats (empty for sparse blocks)
  std::vector<uint64_t> row_block;  // rows + 1, or empty when nnz == 0 (every row empty)
  std::vector<uint16_t> col16;   // 4 * (blocks + 3), when cols < 65536
  std::vector<uint32_t> col32;   // 4 * (blocks + 3), otherwise
  std::vector<float> weight;     // blocks + 4
  // Row boundaries of the work partition, balanced by cost (slots + rows): part p is rows
  // [parts[p], parts[p+1]). parts = {0} when rows == 0.
  std::vector<uint64_t> parts;
  const KernelSet* kernels = nullptr;

  bool wide() const { return cols >= 65536; }
  uint64_t slots() const { return blocks * kBlock; }
  size_t ResidentBytes() const;  // bytes of the arrays above (not counting vector slack)
  const char* kernel_name() const;
};

// Build the execution format (throws std::invalid_argument for K >= 2^32 or an unavailable kernel).
BlockMatrix BuildBlockMatrix(const SparseMatrix& csr, const GemmOptions& options = {});
// DecodeSparse + BuildBlockMatrix.
BlockMatrix DecodeBlockMatrix(const uint8_t* data, size_t size, const DecodeOptions& decode = {},
                              const GemmOptions& options = {});

// Kernel sets compiled into this library: "scalar" always, "avx2" on x86-64 builds; and whether this CPU
// can run a set. ResolveKernel applies GemmOptions::kernel / ONNX_DC_KERNEL.
const KernelSet* ScalarKernels();
const KernelSet* Avx2Kernels();  // nullptr when not compiled in
bool CpuHasAvx2();
const KernelSet* ResolveKernel(const std::string& request);
const char* KernelName(const KernelSet* k);

// Cut rows into at most max_parts ranges of about equal cost (slots + 1 per row; for the dense form whole
// panels of equal size); sets w.parts.
void PartitionRows(BlockMatrix& w, size_t max_parts);

// The scalar reference: Y[m, N] = X[m, K] · Wᵀ (+ bias[N] if not null), in the order above, written as
// plainly as possible (one output at a time, x[K] = 0 by a test, no packing).
void SpmmReference(const BlockMatrix& w, const float* x, size_t m, const float* bias, float* y);

// Where the kernels store Y: output n of batch lane b goes to y[b * lane + n * out], y pointing at the
// unit's first lane. DCSparseGemm's Y[m, N] (row-major): {N, 1}. DCSparseConv's Y[M, OH * OW] of one image
// (NCHW; the lanes are output pixels): {1, OH * OW}. Only the stores use it; the summation order does not.
struct YStrides {
  uint64_t lane;
  uint64_t out;
};

// ---- The fast path, as independent tasks --------------------------------------------------------------
// Batch rows go in units: 16-row tiles while at least 9 rows are left, then one 8-row tile for 2..8 rows
// or one single row. Unit u's X rows are packed into scratch (PackUnit) before its tasks run; a task
// computes Y rows of one unit for the outputs of one part, and writes nothing else: task t is
// (unit t / parts, part t % parts) for sparse blocks, (part t / units, unit t % units) for the dense form.
struct SpmmPlan {
  size_t m = 0;        // batch rows
  size_t k = 0;        // columns of X
  size_t full = 0;     // 16-row units (the last may hold 9..16 rows)
  size_t tail = 0;     // width of the unit after them: 0 (none), 1 or 8
  size_t units = 0;
  size_t parts = 0;
  size_t tasks() const { return units * parts; }
  size_t unit_first_row(size_t u) const { return u * 16; }
  size_t unit_rows(size_t u) const { return u < full ? (m - u * 16 < 16 ? m - u * 16 : 16) : m - full * 16; }
  size_t unit_width(size_t u) const { return u < full ? 16 : tail; }
  size_t unit_offset(size_t u) const { return u < full ? u * (k + 1) * 16 : full * (k + 1) * 16; }  // floats
  size_t scratch_floats() const { return full * (k + 1) * 16 + tail * (k + 1); }
};

SpmmPlan PlanSpmm(const BlockMatrix& w, size_t m);
// Pack unit u of X into scratch (which must be 64-byte aligned, scratch_floats() long).
void PackUnit(const BlockMatrix& w, const SpmmPlan& plan, const float* x, size_t unit, float* scratch);
void SpmmTask(const BlockMatrix& w, const SpmmPlan& plan, const float* scratch, const float* bias, float* y,
              size_t task);
// Outputs [r0, r1) (a part's rows) of one packed unit (width 1, 8 or 16, `valid` real lanes) with the
// layer's form and kernel set: what SpmmTask runs, for callers that pack their own units (DCSparseConv).
void RunPacked(const BlockMatrix& w, const float* packed, size_t width, size_t valid, const float* bias, float* y,
               YStrides ys, uint64_t r0, uint64_t r1);
// All of it on the calling thread (allocates its own scratch).
void SpmmSerial(const BlockMatrix& w, const float* x, size_t m, const float* bias, float* y);
// All of it on `threads` std::threads taking tasks in turn (tests of the partition without onnxruntime).
void SpmmThreaded(const BlockMatrix& w, const float* x, size_t m, const float* bias, float* y, size_t threads);

// A 64-byte-aligned float buffer.
class AlignedFloats {
 public:
  AlignedFloats() = default;
  explicit AlignedFloats(size_t n) { Resize(n); }
  ~AlignedFloats();
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  void Resize(size_t n);  // contents are not kept
  float* data() { return data_; }

 private:
  float* data_ = nullptr;
  size_t size_ = 0;
};

// ---- Kernel sets (implemented twice: portable and AVX2) -------------------------------------------------
// Rows [r0, r1) of W. Vector: xpad = one X row padded to K + 1 floats (x[K] = 0), y = that row of Y.
// Tile: xt = packed unit ((K + 1) x width floats), `valid` rows of it are real, y = the unit's first row
// of Y. Every kernel stores output n of lane b at y[b * ys.lane + n * ys.out] (YStrides).
using VectorKernel = void (*)(const BlockMatrix& w, const float* xpad, const float* bias, float* y, YStrides ys,
                             uint64_t r0, uint64_t r1);
using TileKernel = void (*)(const BlockMatrix& w, const float* xt, size_t valid, const float* bias, float* y,
                           YStrides ys, uint64_t r0, uint64_t r1);
struct KernelSet {
  const char* name;
  VectorKernel vector;
  TileKernel tile8;
  TileKernel tile16;
  // Pack `rows` (<= width) rows of X (row stride k) into xt ((k + 1) x width, zero-filled).
  void (*pack)(const float* x, size_t rows, size_t k, size_t width, float* xt);
  // The dense form: the same contracts (r0 and r1 are multiples of kPanel, or r1 = N).
  VectorKernel dense_vector;
  TileKernel dense_tile8;
  TileKernel dense_tile16;
};

}  // namespace onnx_dc
