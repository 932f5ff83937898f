// DCSparseGemm for onnxruntime's CUDAExecutionProvider (libonnx_dc_ops_cuda.so only; src/register.cc adds it
// to the onnx_dc domain next to the CPU ops when compiled with ONNX_DC_WITH_CUDA).
//
// Same name, domain, inputs and outputs as the CPU operator (docs/OPERATOR.md), so one model runs on either
// provider; onnxruntime assigns the node to the CUDA provider when the session has it. The payload input is
// declared as CPU memory (OrtMemTypeCPUInput): it is a constant initializer, validated on the host and
// decoded on the device once, at kernel creation (dc_cuda.h). X, B and Y stay in device memory; Compute
// launches on the session's compute stream (KernelContext_GetGPUComputeStream) and never synchronises or
// copies to the host.
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

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

namespace onnx_dc {
namespace {

constexpr uint32_t kOrtApiVersion = ORT_API_VERSION < 21 ? ORT_API_VERSION : 21;
const OrtApi* g_api = nullptr;

struct OrtError : std::runtime_error {
  OrtErrorCode code;
  OrtError(OrtErrorCode c, const std::string& m) : std::runtime_error(m), code(c) {}
};
struct InvalidArgument : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void Check(OrtStatus* status) {
  if (!status) return;
  const OrtErrorCode code = g_api->GetErrorCode(status);
  std::string message = g_api->GetErrorMessage(status);
  g_api->ReleaseStatus(status);
  throw OrtError(code, message);
}

template <typename F>
OrtStatus* Guard(const std::string& who, F&& f) noexcept {
  try {
    return f();
  } catch (const PayloadError& e) {
    return g_api->CreateStatus(ORT_INVALID_ARGUMENT, (who + ": " + e.what()).c_str());
  } catch (const InvalidArgument& e) {
    return g_api->CreateStatus(ORT_INVALID_ARGUMENT, (who + ": " + e.what()).c_str());
  } catch (const std::invalid_argument& e) {
    return g_api->CreateStatus(ORT_INVALID_ARGUMENT, (who + ": " + e.what()).c_str());
  } catch (const OrtError& e) {
    return g_api->CreateStatus(e.code, (who + ": " + e.what()).c_str());
  } catch (const std::bad_alloc&) {
    return g_api->CreateStatus(ORT_FAIL, (who + ": out of memory").c_str());
  } catch (const std::exception& e) {
    return g_api->CreateStatus(ORT_FAIL, (who + ": " + e.what()).c_str());
  } catch (...) {
    return g_api->CreateStatus(ORT_FAIL, (who + ": unknown error").c_str());
  }
}

std::string Describe(const OrtKernelInfo* info) {
  std::string name;
  size_t size = 0;
  if (OrtStatus* s = g_api->KernelInfo_GetNodeName(info, nullptr, &size)) {
    g_api->ReleaseStatus(s);
  } else if (size > 1) {
    name.resize(size);
    if (OrtStatus* s2 = g_api->KernelInfo_GetNodeName(info, &name[0], &size)) {
      g_api->ReleaseStatus(s2);
      name.clear();
    } else {
      name.resize(std::strlen(name.c_str()));
    }
  }
  return std::string("DCSparseGemm (CUDA)") + (name.empty() ? std::string(" node") : " node '" + name + "'");
}

struct DeviceGuard {
  int saved = -1;
  DeviceGuard() {
    if (cudaGetDevice(&saved) != cudaSuccess) saved = -1;
  }
  ~DeviceGuard() {
    if (saved >= 0) cudaSetDevice(saved);
  }
};

// The payload (input 1): a constant 1-D uint8 initializer, copied to host memory if onnxruntime placed it
// on the device anyway.
std::vector<uint8_t> ConstantPayload(const OrtKernelInfo* info) {
  size_t inputs = 0;
  Check(g_api->KernelInfo_GetInputCount(info, &inputs));
  if (inputs < 2) throw InvalidArgument("the payload input is missing");
  int is_constant = 0;
  const OrtValue* value = nullptr;
  Check(g_api->KernelInfoGetConstantInput_tensor(info, 1, &is_constant, &value));
  if (!is_constant || value == nullptr)
    throw InvalidArgument("input 1 (the weight payload) must be a constant initializer of the model");
  OrtTensorTypeAndShapeInfo* ts = nullptr;
  Check(g_api->GetTensorTypeAndShape(value, &ts));
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  size_t rank = 0, count = 0;
  OrtStatus* s = g_api->GetTensorElementType(ts, &type);
  if (!s) s = g_api->GetDimensionsCount(ts, &rank);
  if (!s) s = g_api->GetTensorShapeElementCount(ts, &count);
  g_api->ReleaseTensorTypeAndShapeInfo(ts);
  Check(s);
  if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 || rank != 1) throw InvalidArgument("the payload must be a 1-D uint8 tensor");
  void* data = nullptr;
  Check(g_api->GetTensorMutableData(const_cast<OrtValue*>(value), &data));  // only read
  const OrtMemoryInfo* mem = nullptr;
  Check(g_api->GetTensorMemoryInfo(value, &mem));
  OrtMemoryInfoDeviceType device_type = OrtMemoryInfoDeviceType_CPU;
  g_api->MemoryInfoGetDeviceType(mem, &device_type);
  std::vector<uint8_t> blob(count);
  if (count == 0) return blob;
  if (device_type == OrtMemoryInfoDeviceType_CPU)
    std::memcpy(blob.data(), data, count);
  else
    gpu::ThrowIfCuda(cudaMemcpy(blob.data(), data, count, cudaMemcpyDeviceToHost), "copying the payload to the host");
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
    const OrtValue* x_value = nullptr;
    Check(g_api->KernelContext_GetInput(context, 0, &x_value));
    if (!x_value) throw InvalidArgument("X is missing");
    OrtTensorTypeAndShapeInfo* x_info = nullptr;
    Check(g_api->GetTensorTypeAndShape(x_value, &x_info));
    ONNXTensorElementDataType x_type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    size_t rank = 0;
    OrtStatus* s = g_api->GetTensorElementType(x_info, &x_type);
    if (!s) s = g_api->GetDimensionsCount(x_info, &rank);
    std::vector<int64_t> shape(rank);
    if (!s && rank) s = g_api->GetDimensions(x_info, shape.data(), rank);
    g_api->ReleaseTensorTypeAndShapeInfo(x_info);
    Check(s);
    if (x_type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) throw InvalidArgument("X must be float32");
    if (rank == 0) throw InvalidArgument("X must have rank >= 1, got a scalar");
    if (shape[rank - 1] < 0 || static_cast<uint64_t>(shape[rank - 1]) != w->cols())
      throw InvalidArgument("X's last dimension is " + std::to_string(shape[rank - 1]) + " but the payload's K is " +
                            std::to_string(w->cols()) + " (X must be [..., K])");
    uint64_t m = 1;
    for (size_t i = 0; i + 1 < rank; ++i)
      if (shape[i] < 0 || __builtin_mul_overflow(m, static_cast<uint64_t>(shape[i]), &m))
        throw InvalidArgument("X has an invalid shape");
    const float* bias = nullptr;
    size_t inputs = 0;
    Check(g_api->KernelContext_GetInputCount(context, &inputs));
    if (inputs > 2) {
      const OrtValue* b_value = nullptr;
      Check(g_api->KernelContext_GetInput(context, 2, &b_value));
      if (b_value) {
        OrtTensorTypeAndShapeInfo* b_info = nullptr;
        Check(g_api->GetTensorTypeAndShape(b_value, &b_info));
        size_t b_rank = 0;
        int64_t b_len = -1;
        s = g_api->GetDimensionsCount(b_info, &b_rank);
        if (!s && b_rank == 1) s = g_api->GetDimensions(b_info, &b_len, 1);
        g_api->ReleaseTensorTypeAndShapeInfo(b_info);
        Check(s);
        if (b_rank != 1 || b_len < 0 || static_cast<uint64_t>(b_len) != w->rows())
          throw InvalidArgument("B must have shape [N] = [" + std::to_string(w->rows()) + "]");
        void* p = nullptr;
        Check(g_api->GetTensorMutableData(const_cast<OrtValue*>(b_value), &p));  // device memory, only read
        bias = static_cast<const float*>(p);
      }
    }
    if (w->rows() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) throw InvalidArgument("N is too large");
    shape[rank - 1] = static_cast<int64_t>(w->rows());
    OrtValue* y_value = nullptr;
    Check(g_api->KernelContext_GetOutput(context, 0, shape.data(), rank, &y_value));
    void* y = nullptr;
    Check(g_api->GetTensorMutableData(y_value, &y));
    if (m == 0 || w->rows() == 0) return nullptr;
    void* x = nullptr;
    Check(g_api->GetTensorMutableData(const_cast<OrtValue*>(x_value), &x));  // device memory, only read
    void* stream = nullptr;
    Check(g_api->KernelContext_GetGPUComputeStream(context, &stream));
    DeviceGuard guard;
    gpu::ThrowIfCuda(cudaSetDevice(w->device()), "cudaSetDevice");
    gpu::ThrowIfCuda(w->Run(static_cast<const float*>(x), m, bias, static_cast<float*>(y), static_cast<cudaStream_t>(stream)),
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
    const std::string who = Describe(info);
    return Guard(who, [&]() -> OrtStatus* {
      auto k = std::make_unique<CudaSparseGemmKernel>();
      k->who = who;
      const std::vector<uint8_t> blob = ConstantPayload(info);
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
