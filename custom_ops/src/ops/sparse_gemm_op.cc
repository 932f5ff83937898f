// DCSparseGemm on the CPU provider:
//   DCSparseGemm(X float[..., K], W_payload uint8[L] (constant), B float[N] (optional)) -> Y float[..., N]
// The payload is decoded once into the execution format (gemm.h); each call packs X and runs the row parts on
// onnxruntime's intra-op pool. Also DCSparseGemm's schema, shape inference and tensor binding, which the CUDA
// operator (cuda/ort_cuda_op.cc) shares.
#include <atomic>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "ops.h"

namespace onnx_dc {
namespace {

// Scratch up to this many floats (the padded X row of a batch-1 call on K < 4096) lives on the stack.
constexpr size_t kStackScratch = 4096;

struct SpmmJob {
  const BlockMatrix* w;
  const SpmmPlan* plan;
  const float* x;
  float* scratch;
  const float* bias;
  float* y;
  static void Pack(void* data, size_t unit) {
    auto* j = static_cast<SpmmJob*>(data);
    PackUnit(*j->w, *j->plan, j->x, unit, j->scratch);
  }
  static void Run(void* data, size_t task) {
    auto* j = static_cast<SpmmJob*>(data);
    SpmmTask(*j->w, *j->plan, j->scratch, j->bias, j->y, task);
  }
};

struct SparseGemmKernel {
  BlockMatrix w;

  SparseGemmKernel(const OrtKernelInfo* info, const std::string& who) {
    const ConstantBlob blob = ConstantPayload(info, 1);
    w = DecodeBlockMatrix(blob.data, blob.size);
    ReportForm(who, w);
  }

  void Compute(OrtKernelContext* context) {
    const GemmTensors t = BindSparseGemm(context, w.rows, w.cols);
    if (t.m == 0 || w.rows == 0) return;
    const uint64_t m = t.m;
    const SpmmPlan plan = PlanSpmm(w, static_cast<size_t>(m));
    alignas(64) float stack_scratch[kStackScratch];
    std::optional<Scratch> heap_scratch;
    float* scratch = stack_scratch;
    if (plan.scratch_floats() > kStackScratch) scratch = heap_scratch.emplace(context, plan.scratch_floats()).data();
    SpmmJob job{&w, &plan, t.x, scratch, t.bias, t.y};
    uint64_t work;  // slots + outputs per batch row, times batch rows; saturates instead of wrapping
    if (__builtin_mul_overflow(m, w.slots() + w.rows, &work)) work = ~uint64_t{0};
    if (plan.tasks() <= 1 || work < kParallelMinWork) {
      for (size_t u = 0; u < plan.units; ++u) SpmmJob::Pack(&job, u);
      for (size_t task = 0; task < plan.tasks(); ++task) SpmmJob::Run(&job, task);
      return;
    }
    if (plan.units == 1)
      SpmmJob::Pack(&job, 0);
    else
      Check(g_api->KernelContext_ParallelFor(context, SpmmJob::Pack, plan.units, 0, &job));
    Check(g_api->KernelContext_ParallelFor(context, SpmmJob::Run, plan.tasks(), 0, &job));
  }
};

// Y gets X's leading dimensions and a fresh symbolic last dimension (N is in the payload). Unknown dimensions of
// X also become fresh symbols (the C API would otherwise turn them into a dimension value of -1). For an X of
// unknown rank (reported as rank 0) nothing is set.
OrtStatusPtr InferSparseGemmShape(const OrtCustomOp*, OrtShapeInferContext* context) noexcept {
  try {
    std::vector<int64_t> dims;
    std::vector<std::string> names;
    if (!InputDims(context, 0, dims, names)) return nullptr;
    dims.back() = -1;
    names.back() = FreshSymbol();
    SetFloatOutput(context, dims, names);
  } catch (...) {
    // Leave the output shape unset; onnxruntime then relies on the model's value_info.
  }
  return nullptr;
}

}  // namespace

OpFacts SparseGemmFacts() {
  return {"DCSparseGemm",
          "DCSparseGemm",
          kCpuProvider,
          3,
          {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT},
          /*optional_inputs=*/1u << 2,  // B
          /*host_inputs=*/0,
          InferSparseGemmShape};
}

const OrtCustomOp* SparseGemmOp() {
  static OpShell<SparseGemmKernel> op(SparseGemmFacts());
  return &op;
}

GemmTensors BindSparseGemm(OrtKernelContext* context, uint64_t rows, uint64_t cols) {
  constexpr size_t kMaxStackRank = 16;
  const OrtValue* x_value = nullptr;
  Check(g_api->KernelContext_GetInput(context, 0, &x_value));
  if (!x_value) throw InvalidArgument("X is missing");
  OrtTensorTypeAndShapeInfo* x_info = nullptr;
  Check(g_api->GetTensorTypeAndShape(x_value, &x_info));
  ONNXTensorElementDataType x_type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  size_t rank = 0;
  int64_t small_shape[kMaxStackRank];  // no allocation per call for the usual ranks
  std::vector<int64_t> big_shape;
  int64_t* shape = small_shape;
  OrtStatus* s = g_api->GetTensorElementType(x_info, &x_type);
  if (!s) s = g_api->GetDimensionsCount(x_info, &rank);
  if (!s && rank > kMaxStackRank) {
    big_shape.resize(rank);
    shape = big_shape.data();
  }
  if (!s) s = g_api->GetDimensions(x_info, shape, rank);
  g_api->ReleaseTensorTypeAndShapeInfo(x_info);
  Check(s);
  if (x_type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) throw InvalidArgument("X must be float32");
  if (rank == 0) throw InvalidArgument("X must have rank >= 1, got a scalar");
  if (shape[rank - 1] < 0 || static_cast<uint64_t>(shape[rank - 1]) != cols)
    throw InvalidArgument("X's last dimension is " + std::to_string(shape[rank - 1]) + " but the payload's K is " +
                          std::to_string(cols) + " (X must be [..., K])");
  GemmTensors t;
  t.m = 1;
  for (size_t i = 0; i + 1 < rank; ++i) {
    if (shape[i] < 0 || __builtin_mul_overflow(t.m, static_cast<uint64_t>(shape[i]), &t.m))
      throw InvalidArgument("X has an invalid shape");
  }
  t.bias = OptionalVector(context, 2, rows, "B must have shape [N]");
  shape[rank - 1] = OutputDim(rows, "N is too large");
  OrtValue* y_value = nullptr;
  Check(g_api->KernelContext_GetOutput(context, 0, shape, rank, &y_value));
  void* y = nullptr;
  Check(g_api->GetTensorMutableData(y_value, &y));
  t.y = static_cast<float*>(y);
  if (t.m == 0 || rows == 0) return t;  // nothing to read
  t.x = ReadOnlyData<float>(x_value);
  return t;
}

void ReportForm(const std::string& who, const BlockMatrix& w) {
  if (!DebugEnabled()) return;
  std::fprintf(stderr,
               "onnx_dc: %s: %llu x %llu, %llu nonzeros, form %s, kernel %s, %llu blocks (%.3f slots "
               "per nonzero), %.2f bytes per nonzero, %zu parts\n",
               who.c_str(), static_cast<unsigned long long>(w.rows), static_cast<unsigned long long>(w.cols),
               static_cast<unsigned long long>(w.nnz), FormName(w.form), w.kernel_name(),
               static_cast<unsigned long long>(w.blocks),
               w.nnz ? static_cast<double>(w.slots()) / static_cast<double>(w.nnz) : 0.0,
               w.nnz ? static_cast<double>(w.ResidentBytes()) / static_cast<double>(w.nnz) : 0.0,
               w.parts.empty() ? size_t{0} : w.parts.size() - 1);
}

}  // namespace onnx_dc
