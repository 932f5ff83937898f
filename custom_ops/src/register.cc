// The library's onnxruntime entry point: RegisterCustomOps and the list of operators it registers into domain
// "onnx_dc" (version 1). Each operator is one file in src/ops/ (docs/OPERATOR.md); the shell they share is
// op_shell.h, their support ort_support.h.
//
// The library is compiled against the C API of onnxruntime 1.21 (ORT_API_VERSION 21) and asks the runtime for
// exactly that version, so it loads into any onnxruntime >= 1.21. It does not link against libonnxruntime: the
// API table comes from RegisterCustomOps' OrtApiBase.
#include <mutex>
#include <string>

#include "onnx_dc/c_api.h"
#include "ops/ops.h"

namespace onnx_dc {
namespace {

constexpr const char* kDomain = "onnx_dc";

// The operators, in registration order.
const OrtCustomOp* (*const kOperators[])() = {
    SparseGemmOp,
    DecodeOp,
    SparseConvOp,
    GatherOp,
#ifdef ONNX_DC_WITH_CUDA
    CudaSparseGemmOp,  // DCSparseGemm for CUDAExecutionProvider (libonnx_dc_ops_cuda.so, docs/CUDA.md)
#endif
};

// One domain for the whole process, created on first registration and added to every session options that
// registers the library. It is never released: sessions may outlive any caller's handle on it.
OrtStatus* AddDomain(OrtSessionOptions* options) {
  static std::mutex mutex;
  static OrtCustomOpDomain* domain = nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  if (!domain) {
    OrtCustomOpDomain* d = nullptr;
    if (OrtStatus* s = g_api->CreateCustomOpDomain(kDomain, &d)) return s;
    for (auto op : kOperators) {
      if (OrtStatus* s = g_api->CustomOpDomain_Add(d, op())) {
        g_api->ReleaseCustomOpDomain(d);
        return s;
      }
    }
    domain = d;
  }
  return g_api->AddCustomOpDomain(options, domain);
}

}  // namespace
}  // namespace onnx_dc

extern "C" ONNX_DC_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                   const OrtApiBase* api_base) {
  if (api_base == nullptr) return nullptr;  // nothing to report through
  const OrtApi* api = api_base->GetApi(onnx_dc::kOrtApiVersion);
  if (api == nullptr) {
    // Too old a runtime. CreateStatus is the first entry of every OrtApi version, so version 1's table can
    // report it.
    const OrtApi* oldest = api_base->GetApi(1);
    if (oldest == nullptr) return nullptr;
    const std::string message = std::string("libonnx_dc_ops needs onnxruntime 1.21 or later (C API version ") +
                                std::to_string(onnx_dc::kOrtApiVersion) + "); this is onnxruntime " +
                                api_base->GetVersionString();
    return oldest->CreateStatus(ORT_FAIL, message.c_str());
  }
  static std::once_flag once;
  std::call_once(once, [api] {
    onnx_dc::g_api = api;
    Ort::InitApi(api);
  });
  try {
    return onnx_dc::AddDomain(options);
  } catch (...) {
    return api->CreateStatus(ORT_FAIL, "onnx_dc: registering the custom operators failed");
  }
}
