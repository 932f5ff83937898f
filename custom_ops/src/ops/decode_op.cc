// DCDecode on the CPU provider:
//   DCDecode(payload uint8[L] (constant)) -> Y float[dims]
// The dense tensor is decoded once, at session creation, within DecodeLimitElements (payload.h); each call
// copies it into Y.
#include <cstring>
#include <string>
#include <vector>

#include "ops.h"

namespace onnx_dc {
namespace {

struct DecodeKernel {
  std::vector<int64_t> dims;
  std::vector<float> values;

  DecodeKernel(const OrtKernelInfo* info, const std::string&) {
    const ConstantBlob blob = ConstantPayload(info, 0);
    // A valid all-pruned payload of a few hundred bytes may declare any shape: the tensor must be justified
    // by the payload's size.
    DenseTensor t = DecodeDense(blob.data, blob.size, {}, DecodeLimitElements(blob.size));
    for (uint64_t d : t.dims) dims.push_back(OutputDim(d, "a dimension of the payload exceeds int64"));
    values = std::move(t.values);
  }

  void Compute(OrtKernelContext* context) {
    Ort::KernelContext ctx(context);
    Ort::UnownedValue y = ctx.GetOutput(0, dims);
    if (!values.empty()) std::memcpy(y.GetTensorMutableData<float>(), values.data(), values.size() * sizeof(float));
  }
};

}  // namespace

const OrtCustomOp* DecodeOp() {
  static OpShell<DecodeKernel> op(
      {"DCDecode", "DCDecode", kCpuProvider, 1, {ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8}, 0, 0, nullptr});
  return &op;
}

}  // namespace onnx_dc
