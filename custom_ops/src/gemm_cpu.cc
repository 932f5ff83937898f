// DCSparseGemm on the CPU: building the execution format (gemm.h), the thread partition, the scalar
// reference, the portable ("scalar") kernel set, kernel selection, and the task structure the onnxruntime
// kernel and the C API share.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define ONNX_DC_KERNEL_NS portable
#include "gemm_kernels.h"
#undef ONNX_DC_KERNEL_NS

#if defined(__x86_64__) || defined(__i386__)
#define ONNX_DC_X86 1
#endif

namespace onnx_dc {

// ---- kernel sets ----------------------------------------------------------------------------------------

namespace portable {
namespace {

void Vector(const BlockMatrix& w, const float* x, const float* bias, float* y, YStrides ys, uint64_t r0, uint64_t r1) {
  if (w.wide())
    VectorRowsT<uint32_t>(w, x, bias, y, ys, r0, r1);
  else
    VectorRowsT<uint16_t>(w, x, bias, y, ys, r0, r1);
}
void Tile8(const BlockMatrix& w, const float* xt, size_t valid, const float* bias, float* y, YStrides ys, uint64_t r0,
           uint64_t r1) {
  if (w.wide())
    TileRowsT<uint32_t, 1>(w, xt, valid, bias, y, ys, r0, r1);
  else
    TileRowsT<uint16_t, 1>(w, xt, valid, bias, y, ys, r0, r1);
}
// 16-row tiles as two passes of 8 lanes: with 16 SSE registers, 4 chains of 16 lanes would not fit.
void Tile16(const BlockMatrix& w, const float* xt, size_t valid, const float* bias, float* y, YStrides ys, uint64_t r0,
            uint64_t r1) {
  for (size_t lane = 0; lane < 16; lane += 8) {
    if (w.wide())
      TileRowsT<uint32_t, 1, 16>(w, xt, valid, bias, y, ys, r0, r1, lane);
    else
      TileRowsT<uint16_t, 1, 16>(w, xt, valid, bias, y, ys, r0, r1, lane);
  }
}

void DenseTile8(const BlockMatrix& w, const float* xt, size_t valid, const float* bias, float* y, YStrides ys,
                uint64_t r0, uint64_t r1) {
  DenseTileRows<1, 4>(w, xt, valid, bias, y, ys, r0, r1);
}
void DenseTile16(const BlockMatrix& w, const float* xt, size_t valid, const float* bias, float* y, YStrides ys,
                 uint64_t r0, uint64_t r1) {
  for (size_t lane = 0; lane < 16; lane += 8) DenseTileRows<1, 4, 16>(w, xt, valid, bias, y, ys, r0, r1, lane);
}

const KernelSet kScalar = {"scalar", Vector, Tile8, Tile16, PackGeneric, DenseVectorRows, DenseTile8, DenseTile16};

}  // namespace
}  // namespace portable

const KernelSet* ScalarKernels() { return &portable::kScalar; }

#if defined(ONNX_DC_X86) && defined(ONNX_DC_HAVE_AVX2_TU)
const KernelSet* Avx2KernelSet();  // gemm_avx2.cc
const KernelSet* Avx2Kernels() { return Avx2KernelSet(); }
bool CpuHasAvx2() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi");
  }();
  return has;
}
#else
const KernelSet* Avx2Kernels() { return nullptr; }
bool CpuHasAvx2() { return false; }
#endif

const char* KernelName(const KernelSet* k) { return k ? k->name : "none"; }

const char* FormName(Form f) { return f == Form::kDense ? "dense" : "sparse-blocks"; }

const KernelSet* ResolveKernel(const std::string& request) {
  std::string want = request;
  if (want.empty() || want == "auto") {
    const char* env = std::getenv("ONNX_DC_KERNEL");
    want = env && *env ? env : "auto";
  }
  if (want == "scalar") return ScalarKernels();
  if (want == "avx2") {
    if (!Avx2Kernels()) throw std::invalid_argument("the avx2 kernels are not compiled into this library");
    if (!CpuHasAvx2()) throw std::invalid_argument("this CPU lacks AVX2/BMI1, so the avx2 kernels cannot run");
    return Avx2Kernels();
  }
  if (want != "auto")
    throw std::invalid_argument("unknown kernel '" + want + "' (ONNX_DC_KERNEL / kernel= takes auto, scalar or avx2)");
  return Avx2Kernels() && CpuHasAvx2() ? Avx2Kernels() : ScalarKernels();
}

// ---- aligned scratch -----------------------------------------------------------------------------------------

AlignedFloats::~AlignedFloats() { std::free(data_); }

void AlignedFloats::Resize(size_t n) {
  if (n <= size_ && data_) return;
  std::free(data_);
  data_ = nullptr;
  size_ = 0;
  if (n > (~size_t{0} - 64) / sizeof(float)) throw std::bad_alloc();
  const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
  data_ = static_cast<float*>(std::aligned_alloc(64, bytes ? bytes : 64));
  if (!data_) throw std::bad_alloc();
  size_ = n;
}

// ---- building the execution format ----------------------------------------------------------------------

size_t BlockMatrix::ResidentBytes() const {
  return sizeof(*this) + dense.size() * sizeof(float) + row_block.size() * sizeof(uint64_t) + col16.size() * sizeof(uint16_t) +
         col32.size() * sizeof(uint32_t) + weight.size() * sizeof(float) + parts.size() * sizeof(uint64_t);
}

const char* BlockMatrix::kernel_name() const { return KernelName(kernels); }

namespace {

// Fill row_block, the columns and the weights from the CSR (columns src, ascending within a row). Per row: a
// counting sort by cluster (stable, so columns stay ascending within a cluster), each cluster's run padded
// to whole blocks with column K. Clusters are < ncl (1 + the largest in the CSR).
template <typename Col, typename Src>
void FillBlocks(const SparseMatrix& csr, const Src* src, unsigned ncl, BlockMatrix& w, std::vector<Col>& col) {
  const uint8_t* cl = csr.cluster.data();
  const uint64_t* rp = csr.row_ptr.data();
  uint32_t count[256] = {};
  uint64_t next[256] = {};
  // Pass 1: blocks per row.
  w.row_block.assign(w.rows + 1, 0);
  for (uint64_t r = 0; r < w.rows; ++r) {
    for (uint64_t e = rp[r]; e < rp[r + 1]; ++e) ++count[cl[e]];
    uint64_t blocks = 0;
    for (unsigned c = 0; c < ncl; ++c) {
      blocks += (count[c] + kBlock - 1) / kBlock;
      count[c] = 0;
    }
    w.row_block[r + 1] = w.row_block[r] + blocks;
  }
  w.blocks = w.row_block.back();
  // 3 blocks of slack (zero-column padding) after the last, so a kernel may read a row's next 3 blocks
  // unconditionally (gemm.h).
  col.assign((w.blocks + 3) * kBlock, static_cast<Col>(w.cols));
  w.weight.assign(w.blocks + kBlock, 0.0f);
  // Pass 2: the blocks (the padding slots are column K already).
  Col* out = col.data();
  float* weight = w.weight.data();
  for (uint64_t r = 0; r < w.rows; ++r) {
    for (uint64_t e = rp[r]; e < rp[r + 1]; ++e) ++count[cl[e]];
    uint64_t block = w.row_block[r];
    for (unsigned c = 0; c < ncl; ++c) {
      if (!count[c]) continue;
      const uint64_t nb = (count[c] + kBlock - 1) / kBlock;
      next[c] = block * kBlock;
      for (uint64_t b = block; b < block + nb; ++b) weight[b] = csr.codebook[c];
      block += nb;
      count[c] = 0;
    }
    for (uint64_t e = rp[r]; e < rp[r + 1]; ++e) out[next[cl[e]]++] = static_cast<Col>(src[e]);
  }
}

void FillDense(const SparseMatrix& csr, BlockMatrix& w) {
  const uint64_t panels = (w.rows + kPanel - 1) / kPanel;
  w.dense.assign(panels * w.cols * kPanel, 0.0f);
  for (uint64_t r = 0; r < w.rows; ++r) {
    float* panel = w.dense.data() + (r / kPanel) * w.cols * kPanel + r % kPanel;
    for (uint64_t e = csr.row_ptr[r]; e < csr.row_ptr[r + 1]; ++e) panel[csr.column(e) * kPanel] = csr.codebook[csr.cluster[e]];
  }
}

Form ChooseForm(const SparseMatrix& csr, const GemmOptions& options) {
  std::string want = options.form;
  if (want.empty() || want == "auto") {
    const char* env = std::getenv("ONNX_DC_FORM");
    want = env && *env ? env : "auto";
  }
  if (want == "sparse") return Form::kSparseBlocks;
  if (want != "dense" && want != "auto")
    throw std::invalid_argument("unknown form '" + want + "' (ONNX_DC_FORM / form= takes auto, sparse or dense)");
  if (csr.rows == 0 || csr.nnz == 0) return Form::kSparseBlocks;  // nothing to multiply either way
  // The dense matrix is rows * cols floats: at density >= 1/16 that is at most 64 bytes per entry, so the
  // allocation stays bounded by the payload (nnz <= 8 * weight stream bytes). Sparser layers stay sparse
  // even when the dense form is asked for.
  const double elements = static_cast<double>(csr.rows) * static_cast<double>(csr.cols);
  if (static_cast<double>(csr.nnz) * 16.0 < elements) return Form::kSparseBlocks;
  if (want == "dense") return Form::kDense;
  return static_cast<double>(csr.nnz) >= options.dense_density * elements ? Form::kDense : Form::kSparseBlocks;
}

template <typename Col>
void FillBlocks(const SparseMatrix& csr, BlockMatrix& w, std::vector<Col>& col) {
  unsigned ncl = 0;
  for (uint8_t c : csr.cluster) ncl = c >= ncl ? c + 1u : ncl;
  if (csr.wide())
    FillBlocks(csr, csr.col32.data(), ncl, w, col);
  else
    FillBlocks(csr, csr.col16.data(), ncl, w, col);
}

}  // namespace

BlockMatrix BuildBlockMatrix(const SparseMatrix& csr, const GemmOptions& options) {
  if (csr.cols >= (uint64_t{1} << 32))
    throw std::invalid_argument("K = " + std::to_string(csr.cols) +
                                " is too large for DCSparseGemm's execution format (K < 2^32)");
  BlockMatrix w;
  w.kernels = ResolveKernel(options.kernel);
  w.rows = csr.rows;
  w.cols = csr.cols;
  w.nnz = csr.nnz;
  w.weight.assign(kBlock, 0.0f);
  w.form = ChooseForm(csr, options);
  if (w.form == Form::kDense) {
    FillDense(csr, w);
  } else if (w.rows > 0 && w.nnz > 0) {
    if (w.wide())
      FillBlocks(csr, w, w.col32);
    else
      FillBlocks(csr, w, w.col16);
  }
  PartitionRows(w, options.max_parts);
  return w;
}

BlockMatrix DecodeBlockMatrix(const uint8_t* data, size_t size, const DecodeOptions& decode,
                              const GemmOptions& options) {
  (void)ResolveKernel(options.kernel);  // a bad request fails before the (longer) decode
  return BuildBlockMatrix(DecodeSparse(data, size, decode), options);
}

void PartitionRows(BlockMatrix& w, size_t max_parts) {
  constexpr uint64_t kMinPartCost = 4096;  // slots (+ rows) per part, so a part is worth a task
  w.parts.assign(1, 0);
  if (w.rows == 0) return;  // no parts, no tasks
  if (w.form == Form::kDense) {
    // Equal cost per row: whole panels, evenly; parts of at most ~256 KB of W (so that a part's slice stays
    // in L2 while every batch unit runs over it), at least as many as max_parts allows.
    const uint64_t panels = (w.rows + kPanel - 1) / kPanel;
    const uint64_t cost = w.rows * (w.cols + 1);
    const uint64_t panel_bytes = std::max<uint64_t>(1, w.cols * kPanel * sizeof(float));
    const uint64_t l2_parts = (panels * panel_bytes + (uint64_t{256} << 10) - 1) / (uint64_t{256} << 10);
    const uint64_t n_parts = std::max<uint64_t>(
        1, std::min<uint64_t>({std::max<uint64_t>(std::max<size_t>(max_parts, 1), l2_parts), panels,
                               cost / kMinPartCost}));
    for (uint64_t p = 1; p < n_parts; ++p) w.parts.push_back(panels * p / n_parts * kPanel);
    w.parts.push_back(w.rows);
    return;
  }
  const uint64_t total = w.slots() + w.rows;
  const uint64_t n_parts =
      std::max<uint64_t>(1, std::min<uint64_t>({std::max<size_t>(max_parts, 1), w.rows, total / kMinPartCost}));
  if (w.nnz == 0) {  // rows may be huge here (no per-row data): cut evenly, O(parts)
    for (uint64_t p = 1; p < n_parts; ++p) w.parts.push_back(w.rows / n_parts * p);
    w.parts.push_back(w.rows);
    return;
  }
  // Greedy: close part p once the cost so far reaches (p + 1) / n_parts of the total.
  uint64_t cost = 0, p = 0;
  for (uint64_t r = 0; r < w.rows && p + 1 < n_parts; ++r) {
    cost += (w.row_block[r + 1] - w.row_block[r]) * kBlock + 1;
    if (cost * n_parts >= (p + 1) * total) {
      w.parts.push_back(r + 1);
      ++p;
    }
  }
  if (w.parts.back() != w.rows) w.parts.push_back(w.rows);
}

// ---- the reference -----------------------------------------------------------------------------------------

namespace {

void DenseReference(const BlockMatrix& w, const float* x, size_t m, const float* bias, float* y) {
  const uint64_t n_out = w.rows, k_all = w.cols;
  for (size_t b = 0; b < m; ++b) {
    const float* xr = x + b * k_all;
    for (uint64_t n = 0; n < n_out; ++n) {
      const float* wn = w.dense.data() + (n / kPanel) * k_all * kPanel + n % kPanel;  // W[n, k] = wn[k * 8]
      float v = 0.0f;
      for (uint64_t k0 = 0; k0 < k_all; k0 += kDenseBlock) {
        float p = 0.0f;
        for (uint64_t k = k0; k < std::min(k_all, k0 + kDenseBlock); ++k) p = p + wn[k * kPanel] * xr[k];
        v = v + p;
      }
      if (bias) v = v + bias[n];
      y[b * n_out + n] = v;
    }
  }
}

}  // namespace

void SpmmReference(const BlockMatrix& w, const float* x, size_t m, const float* bias, float* y) {
  if (w.form == Form::kDense) return DenseReference(w, x, m, bias, y);
  const uint64_t n_out = w.rows, k = w.cols;
  for (size_t b = 0; b < m; ++b) {
    const float* xr = x + b * k;
    auto xv = [&](uint64_t c) { return c < k ? xr[c] : 0.0f; };  // column K: the zero column
    for (uint64_t n = 0; n < n_out; ++n) {
      float a[kChains] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (w.nnz) {
        for (uint64_t i = w.row_block[n], j = 0; i < w.row_block[n + 1]; ++i, ++j) {
          const uint64_t q = i * kBlock;
          uint64_t c[kBlock];
          for (size_t u = 0; u < kBlock; ++u) c[u] = w.wide() ? w.col32[q + u] : w.col16[q + u];
          float t = xv(c[0]) + xv(c[1]);
          t = t + xv(c[2]);
          t = t + xv(c[3]);
          const float p = w.weight[i] * t;
          a[j % kChains] = a[j % kChains] + p;
        }
      }
      float v = (a[0] + a[1]) + (a[2] + a[3]);
      if (bias) v = v + bias[n];
      y[b * n_out + n] = v;
    }
  }
}

// ---- tasks -------------------------------------------------------------------------------------------------

SpmmPlan PlanSpmm(const BlockMatrix& w, size_t m) {
  SpmmPlan plan;
  plan.m = m;
  plan.k = w.cols;
  plan.full = m / 16;
  size_t rem = m % 16;
  if (rem >= 9) {
    ++plan.full;
    rem = 0;
  }
  plan.tail = rem == 0 ? 0 : rem == 1 ? 1 : 8;
  plan.units = plan.full + (plan.tail ? 1 : 0);
  plan.parts = w.parts.empty() ? 0 : w.parts.size() - 1;
  return plan;
}

void PackUnit(const BlockMatrix& w, const SpmmPlan& plan, const float* x, size_t unit, float* scratch) {
  const size_t k = plan.k, rows = plan.unit_rows(unit), width = plan.unit_width(unit);
  const float* xu = x + plan.unit_first_row(unit) * k;
  float* dst = scratch + plan.unit_offset(unit);
  if (width == 1) {
    if (k) std::memcpy(dst, xu, k * sizeof(float));
    dst[k] = 0.0f;
  } else {
    w.kernels->pack(xu, rows, k, width, dst);
  }
}

void SpmmTask(const BlockMatrix& w, const SpmmPlan& plan, const float* scratch, const float* bias, float* y,
              size_t task) {
  // Sparse blocks: a unit's tasks in a row (its packed X stays in cache while W streams). Dense: a part's
  // tasks in a row (its slice of W, the bigger operand, stays in cache across the units).
  const bool by_unit = w.form != Form::kDense;
  const size_t unit = by_unit ? task / plan.parts : task % plan.units;
  const size_t part = by_unit ? task % plan.parts : task / plan.units;
  RunPacked(w, scratch + plan.unit_offset(unit), plan.unit_width(unit), plan.unit_rows(unit), bias,
            y + plan.unit_first_row(unit) * w.rows, YStrides{w.rows, 1}, w.parts[part], w.parts[part + 1]);
}

void RunPacked(const BlockMatrix& w, const float* packed, size_t width, size_t valid, const float* bias, float* y,
               YStrides ys, uint64_t r0, uint64_t r1) {
  const KernelSet& k = *w.kernels;
  const bool dense = w.form == Form::kDense;
  if (width == 1)
    (dense ? k.dense_vector : k.vector)(w, packed, bias, y, ys, r0, r1);
  else if (width == 8)
    (dense ? k.dense_tile8 : k.tile8)(w, packed, valid, bias, y, ys, r0, r1);
  else
    (dense ? k.dense_tile16 : k.tile16)(w, packed, valid, bias, y, ys, r0, r1);
}

void SpmmSerial(const BlockMatrix& w, const float* x, size_t m, const float* bias, float* y) {
  const SpmmPlan plan = PlanSpmm(w, m);
  AlignedFloats scratch(plan.scratch_floats());
  for (size_t u = 0; u < plan.units; ++u) PackUnit(w, plan, x, u, scratch.data());
  for (size_t t = 0; t < plan.tasks(); ++t) SpmmTask(w, plan, scratch.data(), bias, y, t);
}

void SpmmThreaded(const BlockMatrix& w, const float* x, size_t m, const float* bias, float* y, size_t threads) {
  const SpmmPlan plan = PlanSpmm(w, m);
  AlignedFloats scratch(plan.scratch_floats());
  for (size_t u = 0; u < plan.units; ++u) PackUnit(w, plan, x, u, scratch.data());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t t; (t = next.fetch_add(1)) < plan.tasks();) SpmmTask(w, plan, scratch.data(), bias, y, t);
  };
  std::vector<std::thread> pool;
  for (size_t i = 1; i < std::max<size_t>(threads, 1); ++i) pool.emplace_back(worker);
  worker();
  for (std::thread& th : pool) th.join();
}

}  // namespace onnx_dc
