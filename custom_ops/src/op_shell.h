// The one onnxruntime custom-op shell every onnx_dc operator is registered through (src/ops/*.cc,
// cuda/ort_cuda_op.cc): an operator is its facts (OpFacts: name, provider, inputs, shape inference) and a kernel
// class; OpShell<Kernel> answers onnxruntime's schema questions from the facts and creates and runs the kernel
// inside Guard.
//
// Built on Ort::CustomOpBase with CreateKernelV2/ComputeV2, not onnxruntime's lite API: the lite API's kernel
// constructor cannot return a status, and a bad payload must become an onnxruntime error at session creation,
// never an exception crossing the C boundary.
//
// A kernel class provides
//   Kernel(const OrtKernelInfo* info, const std::string& who)   decode the payload, read the attributes (throws)
//   void Compute(OrtKernelContext* context)                      one call (throws)
// where `who` names the node in messages ("DCSparseGemm node 'fc1'"). Every onnx_dc operator has one float32
// output.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "ort_support.h"

namespace onnx_dc {

inline constexpr size_t kMaxOpInputs = 3;
inline constexpr const char* kCpuProvider = "CPUExecutionProvider";

using ShapeInferFn = OrtStatusPtr(ORT_API_CALL*)(const OrtCustomOp*, OrtShapeInferContext*);

struct OpFacts {
  const char* name;      // the op type in domain onnx_dc
  const char* label;     // how messages name the op: the name, or e.g. "DCSparseGemm (CUDA)"
  const char* provider;  // the execution provider the kernel runs on
  size_t input_count;
  ONNXTensorElementDataType inputs[kMaxOpInputs];  // UNDEFINED: any type, checked by the kernel
  uint32_t optional_inputs;  // bit i: input i may be absent
  uint32_t host_inputs;      // bit i: input i is in host memory on any provider (OrtMemTypeCPUInput)
  ShapeInferFn infer;        // nullptr: no shape inference
};

// A kernel and the name of its node, for Guard's messages.
template <typename Kernel>
struct NamedKernel {
  std::string who;
  Kernel kernel;
  NamedKernel(const OrtKernelInfo* info, const std::string& w) : who(w), kernel(info, who) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return Guard(who, [&]() -> OrtStatus* {
      kernel.Compute(context);
      return nullptr;
    });
  }
};

template <typename Kernel>
class OpShell : public Ort::CustomOpBase<OpShell<Kernel>, NamedKernel<Kernel>, true> {
 public:
  explicit OpShell(const OpFacts& facts) : facts_(facts) {
    OrtCustomOp::version = kOrtApiVersion;
    OrtCustomOp::InferOutputShapeFn = facts.infer;
  }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    const std::string who = Describe(facts_.label, info);
    return Guard(who, [&]() -> OrtStatus* {
      *kernel = new NamedKernel<Kernel>(info, who);
      return nullptr;
    });
  }
  const char* GetName() const { return facts_.name; }
  const char* GetExecutionProviderType() const { return facts_.provider; }
  size_t GetInputTypeCount() const { return facts_.input_count; }
  ONNXTensorElementDataType GetInputType(size_t index) const { return facts_.inputs[index]; }
  OrtMemType GetInputMemoryType(size_t index) const {
    return Bit(facts_.host_inputs, index) ? OrtMemTypeCPUInput : OrtMemTypeDefault;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return Bit(facts_.optional_inputs, index) ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }

 private:
  static bool Bit(uint32_t mask, size_t index) { return index < 32 && ((mask >> index) & 1u); }
  OpFacts facts_;
};

}  // namespace onnx_dc
