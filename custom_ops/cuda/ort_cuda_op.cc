// DCSparseGemm for onnxruntime's CUDAExecutionProvider (libonnx_dc_ops_cuda.so only; src/register.cc lists it
// in the onnx_dc domain next to the CPU ops when compiled with ONNX_DC_WITH_CUDA), through the same op shell
// (src/op_shell.h) and DCSparseGemm facts (src/ops/sparse_gemm_op.cc) as the CPU operator.
//
// Same name, domain, inputs and outputs as the CPU operator (docs/OPERATOR.md), so one model runs on either
// provider; onnxruntime assigns the node to the CUDA provider when the session has it. The payload input is
// declared as CPU memory (OrtMemTypeCPUInput): it is a constant initializer, validated on the host and
// decoded on the device once, at kernel creation (dc_cuda.h). X, B and Y stay in device memory; Compute
// launches on the session's compute stream (KernelContext_GetGPUComputeStream) and never synchronises or
// copies to the host.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "dc_cuda.h"
#include "ops/ops.h"
#include "payload.h"

namespace onnx_dc {
namespace {

struct DeviceGuard {
  int saved = -1;
  DeviceGuard() {
    if (cudaGetDevice(&saved) != cudaSuccess) saved = -1;
  }
  ~DeviceGuard() {
    if (saved >= 0) cudaSetDevice(saved);
  }
};

// The payload (input 1), copied to host memory if onnxruntime placed it on the device anyway.
std::vector<uint8_t> HostPayload(const OrtKernelInfo* info) {
  const ConstantBlob c = ConstantPayload(info, 1);
  std::vector<uint8_t> blob(c.size);
  if (c.size == 0) return blob;
  const OrtMemoryInfo* mem = nullptr;
  Check(g_api->GetTensorMemoryInfo(c.value, &mem));
  OrtMemoryInfoDeviceType device_type = OrtMemoryInfoDeviceType_CPU;
  g_api->MemoryInfoGetDeviceType(mem, &device_type);
  if (device_type == OrtMemoryInfoDeviceType_CPU)
    std::memcpy(blob.data(), c.data, c.size);
  else
    gpu::ThrowIfCuda(cudaMemcpy(blob.data(), c.data, c.size, cudaMemcpyDeviceToHost), "copying the payload to the host");
  return blob;
}

// The device of the provider this kernel belongs to (its default allocator's).
int ProviderDevice(const OrtKernelInfo* info) {
  OrtAllocator* allocator = nullptr;
  Check(g_api->KernelInfoGetAllocator(info, OrtMemTypeDefault, &allocator));
  int id = 0;
  OrtStatus* s = g_api->MemoryInfoGetId(allocator->Info(allocator), &id);
  g_api->ReleaseAllocator(allocator);
  Check(s);
  return id;
}

struct CudaSparseGemmKernel {
  std::unique_ptr<gpu::SparseGemm> w;

  CudaSparseGemmKernel(const OrtKernelInfo* info, const std::string& who) {
    const std::vector<uint8_t> blob = HostPayload(info);
    DeviceGuard guard;
    gpu::ThrowIfCuda(cudaSetDevice(ProviderDevice(info)), "cudaSetDevice");
    w = gpu::SparseGemm::Create(blob.data(), blob.size(), nullptr);
    if (DebugEnabled()) {
      const gpu::CreateTiming& t = w->timing();
      std::fprintf(stderr,
                   "onnx_dc: %s: %llu x %llu, %llu nonzeros, %llu blocks, %.2f MB on device %d; decoded in %.2f ms "
                   "(chunk kernel %.3f ms, format %.3f ms)\n",
                   who.c_str(), static_cast<unsigned long long>(w->rows()), static_cast<unsigned long long>(w->cols()),
                   static_cast<unsigned long long>(w->nnz()), static_cast<unsigned long long>(w->blocks()),
                   w->device_bytes() / 1e6, w->device(), t.total_ms, t.decode_ms, t.build_ms);
    }
  }

  void Compute(OrtKernelContext* context) {
    const GemmTensors t = BindSparseGemm(context, w->rows(), w->cols());  // device pointers
    if (t.m == 0 || w->rows() == 0) return;
    void* stream = nullptr;
    Check(g_api->KernelContext_GetGPUComputeStream(context, &stream));
    DeviceGuard guard;
    gpu::ThrowIfCuda(cudaSetDevice(w->device()), "cudaSetDevice");
    gpu::ThrowIfCuda(w->Run(t.x, t.m, t.bias, t.y, static_cast<cudaStream_t>(stream)), "DCSparseGemm launch");
  }
};

}  // namespace

// Listed by src/register.cc (ONNX_DC_WITH_CUDA) next to the CPU operators.
const OrtCustomOp* CudaSparseGemmOp() {
  static OpShell<CudaSparseGemmKernel> op([] {
    OpFacts facts = SparseGemmFacts();  // the CPU operator's schema and shape inference
    facts.label = "DCSparseGemm (CUDA)";
    facts.provider = "CUDAExecutionProvider";
    facts.host_inputs = 1u << 1;  // the payload: validated and decoded from the host
    return facts;
  }());
  return &op;
}

}  // namespace onnx_dc
