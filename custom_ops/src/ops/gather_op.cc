// DCGather on the CPU provider:
//   DCGather(W_payload uint8[L] (constant, dims [V, D]), indices int64/int32[...]) -> Y float[..., D]
// ONNX Gather (axis 0) on an embedding table kept in compressed row form (gather.h); lookups are cut into tasks
// on onnxruntime's intra-op pool.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "gather.h"
#include "ops.h"

namespace onnx_dc {
namespace {

// Lookups of fewer output floats than this run on the calling thread; more are cut into tasks of about this many.
constexpr uint64_t kGatherTaskFloats = uint64_t{1} << 15;

template <typename Index>
struct GatherJob {
  const SparseMatrix* table;
  const Index* indices;
  size_t count;
  size_t per_task;
  float* y;
  static void Run(void* data, size_t task) {
    const GatherJob& j = *static_cast<const GatherJob*>(data);
    const size_t first = task * j.per_task;
    GatherRows(*j.table, j.indices, first, std::min(j.count, first + j.per_task), j.y);
  }
};

struct GatherKernel {
  SparseMatrix table;

  GatherKernel(const OrtKernelInfo* info, const std::string&) {
    const ConstantBlob blob = ConstantPayload(info, 0);
    table = DecodeGatherTable(blob.data, blob.size);
  }

  void Compute(OrtKernelContext* context) {
    const OrtValue* indices_value = nullptr;
    Check(g_api->KernelContext_GetInput(context, 1, &indices_value));
    if (!indices_value) throw InvalidArgument("indices are missing");
    ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    std::vector<int64_t> dims = TensorShape(indices_value, &type);
    if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 && type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32)
      throw InvalidArgument("indices must be int64 or int32");
    uint64_t count = 1;
    for (int64_t d : dims)
      if (d < 0 || __builtin_mul_overflow(count, static_cast<uint64_t>(d), &count))
        throw InvalidArgument("indices have an invalid shape");
    dims.push_back(OutputDim(table.cols, "D is too large"));
    if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64)
      Lookup(context, ReadOnlyData<int64_t>(indices_value), static_cast<size_t>(count), dims);
    else
      Lookup(context, ReadOnlyData<int32_t>(indices_value), static_cast<size_t>(count), dims);
  }

  template <typename Index>
  void Lookup(OrtKernelContext* context, const Index* indices, size_t count, const std::vector<int64_t>& y_dims) {
    try {
      CheckGatherIndices(table, indices, count);  // before anything is written
    } catch (const std::out_of_range& e) {
      throw InvalidArgument(e.what());
    }
    OrtValue* y_value = nullptr;
    Check(g_api->KernelContext_GetOutput(context, 0, y_dims.data(), y_dims.size(), &y_value));
    void* y = nullptr;
    Check(g_api->GetTensorMutableData(y_value, &y));
    const uint64_t d = std::max<uint64_t>(1, table.cols);
    GatherJob<Index> job{&table, indices, count, static_cast<size_t>(std::max<uint64_t>(1, kGatherTaskFloats / d)),
                         static_cast<float*>(y)};
    const size_t tasks = (count + job.per_task - 1) / job.per_task;
    if (tasks <= 1) {
      GatherRows(table, indices, 0, count, job.y);
    } else {
      Check(g_api->KernelContext_ParallelFor(context, GatherJob<Index>::Run, tasks, 0, &job));
    }
  }
};

// Y = indices' shape + [D]: D is in the payload (a fresh symbol). Scalar indices cannot be told from indices of
// unknown rank (both are rank 0 here): nothing is set then.
OrtStatusPtr InferGatherShape(const OrtCustomOp*, OrtShapeInferContext* context) noexcept {
  try {
    std::vector<int64_t> dims;
    std::vector<std::string> names;
    if (!InputDims(context, 1, dims, names)) return nullptr;
    dims.push_back(-1);
    names.push_back(FreshSymbol());
    SetFloatOutput(context, dims, names);
  } catch (...) {
    // Leave the output shape unset; onnxruntime then relies on the model's value_info.
  }
  return nullptr;
}

}  // namespace

const OrtCustomOp* GatherOp() {
  // Indices: UNDEFINED lets onnxruntime bind int64 and int32 to one kernel; Compute checks which.
  static OpShell<GatherKernel> op({"DCGather",
                                   "DCGather",
                                   kCpuProvider,
                                   2,
                                   {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED},
                                   0,
                                   0,
                                   InferGatherShape});
  return &op;
}

}  // namespace onnx_dc
