// What every onnxruntime entry point of the library shares (src/register.cc, cuda/ort_cuda_op.cc): the API
// table, errors as exceptions inside and OrtStatus at the boundary, the node's name for messages, the
// constant payload input, and DCSparseGemm's input checks and output allocation (the same rules and
// messages on every provider). Internal: not installed, not part of the C API.
#pragma once

#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "onnx_dc/payload.h"

namespace onnx_dc {

// The C API version this library uses: the headers' own, capped at 21 (onnxruntime 1.21).
inline constexpr uint32_t kOrtApiVersion = ORT_API_VERSION < 21 ? ORT_API_VERSION : 21;

// Set once by RegisterCustomOps.
inline const OrtApi* g_api = nullptr;

inline OrtStatus* MakeError(OrtErrorCode code, const std::string& message) {
  return g_api->CreateStatus(code, message.c_str());
}

// An OrtStatus from an API call, as an exception (caught by Guard).
struct OrtError : std::runtime_error {
  OrtErrorCode code;
  OrtError(OrtErrorCode c, const std::string& m) : std::runtime_error(m), code(c) {}
};
inline void Check(OrtStatus* status) {
  if (!status) return;
  const OrtErrorCode code = g_api->GetErrorCode(status);
  std::string message = g_api->GetErrorMessage(status);
  g_api->ReleaseStatus(status);
  throw OrtError(code, message);
}
// A bad input or attribute of the node: ORT_INVALID_ARGUMENT.
struct InvalidArgument : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Run f, turning every exception into an OrtStatus that names the node: nothing crosses the C boundary.
template <typename F>
OrtStatus* Guard(const std::string& who, F&& f) noexcept {
  try {
    return f();
  } catch (const PayloadError& e) {
    return MakeError(ORT_INVALID_ARGUMENT, who + ": " + e.what());
  } catch (const InvalidArgument& e) {
    return MakeError(ORT_INVALID_ARGUMENT, who + ": " + e.what());
  } catch (const std::invalid_argument& e) {
    return MakeError(ORT_INVALID_ARGUMENT, who + ": " + e.what());
  } catch (const OrtError& e) {
    return MakeError(e.code, who + ": " + e.what());
  } catch (const Ort::Exception& e) {
    return MakeError(e.GetOrtErrorCode(), who + ": " + e.what());
  } catch (const std::bad_alloc&) {
    return MakeError(ORT_FAIL, who + ": out of memory");
  } catch (const std::exception& e) {
    return MakeError(ORT_FAIL, who + ": " + e.what());
  } catch (...) {
    return MakeError(ORT_FAIL, who + ": unknown error");
  }
}

// "DCSparseGemm node 'fc1'" (or "... node" when the node has no name).
inline std::string Describe(const char* op, const OrtKernelInfo* info) {
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
  return std::string(op) + (name.empty() ? std::string(" node") : " node '" + name + "'");
}

struct ConstantBlob {
  const OrtValue* value = nullptr;
  const uint8_t* data = nullptr;  // where onnxruntime keeps it (host memory for the CPU provider)
  size_t size = 0;
};

// The payload input, which must be a constant 1-D uint8 initializer: it is decoded once, at kernel creation.
inline ConstantBlob ConstantPayload(const OrtKernelInfo* info, size_t index) {
  size_t inputs = 0;
  Check(g_api->KernelInfo_GetInputCount(info, &inputs));
  if (index >= inputs) throw InvalidArgument("the payload input is missing");
  int is_constant = 0;
  const OrtValue* value = nullptr;
  Check(g_api->KernelInfoGetConstantInput_tensor(info, index, &is_constant, &value));
  if (!is_constant || value == nullptr)
    throw InvalidArgument("input " + std::to_string(index) +
                          " (the weight payload) must be a constant initializer of the model; onnx_dc decodes it "
                          "once when the session is created and cannot take it as a graph input or computed value");
  OrtTensorTypeAndShapeInfo* type_shape = nullptr;
  Check(g_api->GetTensorTypeAndShape(value, &type_shape));
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  size_t rank = 0, count = 0;
  OrtStatus* s = g_api->GetTensorElementType(type_shape, &type);
  if (!s) s = g_api->GetDimensionsCount(type_shape, &rank);
  if (!s) s = g_api->GetTensorShapeElementCount(type_shape, &count);
  g_api->ReleaseTensorTypeAndShapeInfo(type_shape);
  Check(s);
  if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8) throw InvalidArgument("the payload must be a uint8 tensor");
  if (rank != 1) throw InvalidArgument("the payload must be a 1-D uint8 tensor, got rank " + std::to_string(rank));
  void* data = nullptr;
  Check(g_api->GetTensorMutableData(const_cast<OrtValue*>(value), &data));  // only read
  return {value, static_cast<const uint8_t*>(data), count};
}

// DCSparseGemm's tensors for one call, checked: X float[..., K], optional B float[N], Y float[..., N]
// allocated. Pointers are in the provider's memory; m = the product of X's leading dimensions.
struct GemmTensors {
  const float* x = nullptr;
  const float* bias = nullptr;
  float* y = nullptr;
  uint64_t m = 0;
};

inline GemmTensors BindSparseGemm(OrtKernelContext* context, uint64_t rows, uint64_t cols) {
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
      if (b_rank != 1 || b_len < 0 || static_cast<uint64_t>(b_len) != rows)
        throw InvalidArgument("B must have shape [N] = [" + std::to_string(rows) + "]");
      void* p = nullptr;
      Check(g_api->GetTensorMutableData(const_cast<OrtValue*>(b_value), &p));  // only read
      t.bias = static_cast<const float*>(p);
    }
  }
  if (rows > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) throw InvalidArgument("N is too large");
  shape[rank - 1] = static_cast<int64_t>(rows);
  OrtValue* y_value = nullptr;
  Check(g_api->KernelContext_GetOutput(context, 0, shape, rank, &y_value));
  void* y = nullptr;
  Check(g_api->GetTensorMutableData(y_value, &y));
  t.y = static_cast<float*>(y);
  if (t.m == 0 || rows == 0) return t;  // nothing to read
  void* x = nullptr;
  Check(g_api->GetTensorMutableData(const_cast<OrtValue*>(x_value), &x));  // only read
  t.x = static_cast<const float*>(x);
  return t;
}

}  // namespace onnx_dc
