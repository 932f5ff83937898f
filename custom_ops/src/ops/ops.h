// The onnx_dc operators (one source file each in this folder, plus cuda/ort_cuda_op.cc) as src/register.cc lists
// them, and what the operator files share: DCSparseGemm's schema and tensor binding (the CPU and CUDA kernels
// take the same inputs with the same checks and messages), the parallel-work threshold, the debug report.
// Operator inputs, attributes and semantics: docs/OPERATOR.md.
#pragma once

#include <cstdint>
#include <string>

#include "gemm.h"
#include "op_shell.h"

namespace onnx_dc {

// Each returns its process-wide operator object (created on first call).
const OrtCustomOp* SparseGemmOp();  // sparse_gemm_op.cc
const OrtCustomOp* DecodeOp();      // decode_op.cc
const OrtCustomOp* SparseConvOp();  // sparse_conv_op.cc
const OrtCustomOp* GatherOp();      // gather_op.cc
#ifdef ONNX_DC_WITH_CUDA
const OrtCustomOp* CudaSparseGemmOp();  // cuda/ort_cuda_op.cc (libonnx_dc_ops_cuda.so only, docs/CUDA.md)
#endif

// Products below this much work (slots + outputs, times batch rows or pixels) run on the calling thread: handing
// them to the pool costs more than it saves (DCSparseGemm, DCSparseConv).
inline constexpr uint64_t kParallelMinWork = uint64_t{1} << 17;

// DCSparseGemm's facts on the CPU provider; the CUDA operator changes only label, provider and host inputs,
// so one model runs on either provider.
OpFacts SparseGemmFacts();

// DCSparseGemm's tensors for one call, checked: X float[..., K], optional B float[N], Y float[..., N]
// allocated. Pointers are in the provider's memory; m = the product of X's leading dimensions.
struct GemmTensors {
  const float* x = nullptr;
  const float* bias = nullptr;
  float* y = nullptr;
  uint64_t m = 0;
};
GemmTensors BindSparseGemm(OrtKernelContext* context, uint64_t rows, uint64_t cols);

// ONNX_DC_DEBUG=1: one line per layer on stderr at session creation (form, kernel set, format size).
void ReportForm(const std::string& who, const BlockMatrix& w);

}  // namespace onnx_dc
