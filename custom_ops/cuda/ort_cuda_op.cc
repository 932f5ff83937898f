// DCSparseGemm for onnxruntime's CUDAExecutionProvider (libonnx_dc_ops_cuda.so only; src/register.cc adds it
// to the onnx_dc domain next to the CPU ops when compiled with ONNX_DC_WITH_CUDA).
//
// Same name, domain, inputs and outputs as the CPU operator (docs/OPERATOR.md), so one model runs on either
// provider; onnxruntime assigns the node to the CUDA provider when the session has it. The payload input is
// declared as CPU memory (OrtMemTypeCPUInput): it is a constant initializer, validated on the host and
// decoded on the device once, at kernel creation (dc_cuda.h). X, B and Y stay in device memory; Compute
// launches on the session's compute stream (KernelContext_GetGPUComputeStream) and never synchronises or
// copies to the host.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "dc_cuda.h"
#include "onnx_dc/payload.h"
#include "../src/ort_support.h"

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
  std::string who;
  std::unique_ptr<gpu::SparseGemm> w;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return Guard(who, [&]() -> OrtStatus* { return Compute(context); });
  }

  OrtStatus* Compute(OrtKernelContext* context) {
    const GemmTensors t = BindSparseGemm(context, w->rows(), w->cols());  // device pointers
    if (t.m == 0 || w->rows() == 0) return nullptr;
    void* stream = nullptr;
    Check(g_api->KernelContext_GetGPUComputeStream(context, &stream));
    DeviceGuard guard;
    gpu::ThrowIfCuda(cudaSetDevice(w->device()), "cudaSetDevice");
    gpu::ThrowIfCuda(w->Run(t.x, t.m, t.bias, t.y, static_cast<cudaStream_t>(stream)),
                     "DCSparseGemm launch");
    return nullptr;
  }
};

struct CudaSparseGemmOp : Ort::CustomOpBase<CudaSparseGemmOp, CudaSparseGemmKernel, true> {
  explicit CudaSparseGemmOp(OrtStatusPtr(ORT_API_CALL* infer)(const OrtCustomOp*, OrtShapeInferContext*)) {
    OrtCustomOp::version = kOrtApiVersion;
    OrtCustomOp::InferOutputShapeFn = infer;  // the CPU operator's: one schema for both providers
  }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    const std::string who = Describe("DCSparseGemm (CUDA)", info);
    return Guard(who, [&]() -> OrtStatus* {
      auto k = std::make_unique<CudaSparseGemmKernel>();
      k->who = who;
      const std::vector<uint8_t> blob = HostPayload(info);
      DeviceGuard guard;
      gpu::ThrowIfCuda(cudaSetDevice(ProviderDevice(info)), "cudaSetDevice");
      k->w = gpu::SparseGemm::Create(blob.data(), blob.size(), nullptr);
      if (const char* debug = std::getenv("ONNX_DC_DEBUG"); debug && *debug && std::strcmp(debug, "0") != 0) {
        const gpu::CreateTiming& t = k->w->timing();
        std::fprintf(stderr,
                     "onnx_dc: %s: %llu x %llu, %llu nonzeros, %llu blocks, %.2f MB on device %d; decoded in %.2f ms "
                     "(chunk kernel %.3f ms, format %.3f ms)\n",
                     who.c_str(), static_cast<unsigned long long>(k->w->rows()),
                     static_cast<unsigned long long>(k->w->cols()), static_cast<unsigned long long>(k->w->nnz()),
                     static_cast<unsigned long long>(k->w->blocks()), k->w->device_bytes() / 1e6, k->w->device(),
                     t.total_ms, t.decode_ms, t.build_ms);
      }
      *kernel = k.release();
      return nullptr;
    });
  }
  const char* GetName() const { return "DCSparseGemm"; }
  const char* GetExecutionProviderType() const { return "CUDAExecutionProvider"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtMemType GetInputMemoryType(size_t index) const { return index == 1 ? OrtMemTypeCPUInput : OrtMemTypeDefault; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

}  // namespace

// Called by src/register.cc (ONNX_DC_WITH_CUDA) while it builds the onnx_dc domain.
OrtStatus* AddCudaOps(const OrtApi* api, OrtCustomOpDomain* domain, const OrtCustomOp* cpu_sparse_gemm) {
  g_api = api;
  static CudaSparseGemmOp sparse_gemm(cpu_sparse_gemm->InferOutputShapeFn);
  return api->CustomOpDomain_Add(domain, &sparse_gemm);
}

}  // namespace onnx_dc
