// The onnxruntime support every operator of the library shares (src/ops/*.cc, cuda/ort_cuda_op.cc; defined in
// ort_support.cc): the API table, errors as exceptions inside and OrtStatus at the boundary, the node's name for
// messages, attribute reading, the constant payload input, tensor and scratch helpers, and the shape-inference
// helpers. One copy, so every operator reports the same way. Internal: not installed, not part of the C API.
#pragma once

#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include <cstddef>
#include <cstdint>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "payload.h"

static_assert(ORT_API_VERSION >= 17, "onnxruntime headers 1.17 or later are needed (shape inference, ParallelFor)");

namespace onnx_dc {

// The C API version this library uses: the headers' own, capped at 21 (onnxruntime 1.21).
inline constexpr uint32_t kOrtApiVersion = ORT_API_VERSION < 21 ? ORT_API_VERSION : 21;

// Set once by RegisterCustomOps (src/register.cc).
inline const OrtApi* g_api = nullptr;

// ---- errors -------------------------------------------------------------------------------------------------

inline OrtStatus* MakeError(OrtErrorCode code, const std::string& message) {
  return g_api->CreateStatus(code, message.c_str());
}

// An OrtStatus from an API call, as an exception (caught by Guard).
struct OrtError : std::runtime_error {
  OrtErrorCode code;
  OrtError(OrtErrorCode c, const std::string& m) : std::runtime_error(m), code(c) {}
};
void Check(OrtStatus* status);

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

// ---- the node -----------------------------------------------------------------------------------------------

// "DCSparseGemm node 'fc1'" (or "... node" when the node has no name).
std::string Describe(const char* op, const OrtKernelInfo* info);

// ONNX_DC_DEBUG set to anything but "" or "0": one line per layer on stderr at session creation.
bool DebugEnabled();

// Attributes. Absent: false (and the output untouched). Present with another type: InvalidArgument
// ("attribute NAME must be ...").
bool ReadInts(const OrtKernelInfo* info, const char* name, std::vector<int64_t>& values);
std::string ReadString(const OrtKernelInfo* info, const char* name, const std::string& absent);
int64_t ReadInt(const OrtKernelInfo* info, const char* name, int64_t absent);

struct ConstantBlob {
  const OrtValue* value = nullptr;
  const uint8_t* data = nullptr;  // where onnxruntime keeps it (host memory for the CPU provider)
  size_t size = 0;
};

// The payload input, which must be a constant 1-D uint8 initializer: it is decoded once, at kernel creation.
ConstantBlob ConstantPayload(const OrtKernelInfo* info, size_t index);

// ---- tensors ------------------------------------------------------------------------------------------------

// An input's element type and shape.
std::vector<int64_t> TensorShape(const OrtValue* value, ONNXTensorElementDataType* type);

// A tensor's data, for reading only (the C API has no const accessor).
const void* ReadOnlyBytes(const OrtValue* value);
template <typename T>
const T* ReadOnlyData(const OrtValue* value) {
  return static_cast<const T*>(ReadOnlyBytes(value));
}

// Optional input `index`, a float32 vector of `length` elements; nullptr when absent. A wrong shape:
// InvalidArgument(what + " = [length]").
const float* OptionalVector(OrtKernelContext* context, size_t index, uint64_t length, const std::string& what);

// An output dimension from a payload's count; InvalidArgument(message) past int64 (onnxruntime's dims are int64).
int64_t OutputDim(uint64_t value, const char* message);

// Host memory of the CPU provider's default (arena) allocator.
const OrtMemoryInfo* CpuMemoryInfo();

// Scratch floats from the session's allocator, 64-byte aligned, freed on scope exit.
class Scratch {
 public:
  Scratch(OrtKernelContext* context, size_t floats);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* data() const { return data_; }

 private:
  OrtAllocator* allocator_ = nullptr;
  void* allocation_ = nullptr;
  float* data_ = nullptr;
};

// ---- shape inference ----------------------------------------------------------------------------------------
// Shape inference sees types and shapes only, never the payload's bytes (OrtShapeInferContext has no access to
// initializer data in the 1.21 C API), so a dimension that comes from the payload is a fresh symbol; the
// converter's value_info for the output has the concrete value, and onnxruntime merges it over the symbol.
// Errors are not reported there: Compute reports them.

// A fresh symbolic dimension name.
std::string FreshSymbol();

// Input `index`'s dims and symbol names (unknown dims get fresh symbols, dim -1); false for an unknown rank,
// which the C API reports as rank 0.
bool InputDims(OrtShapeInferContext* context, size_t index, std::vector<int64_t>& dims, std::vector<std::string>& names);

// Set output 0 to float32 with these dims (-1: the symbol in names).
void SetFloatOutput(OrtShapeInferContext* context, const std::vector<int64_t>& dims,
                    const std::vector<std::string>& names);

// The node's attributes, best-effort: false when absent or unreadable.
bool ShapeAttributeInts(OrtShapeInferContext* context, const char* name, std::vector<int64_t>& values);
bool ShapeAttributeString(OrtShapeInferContext* context, const char* name, std::string& value);

}  // namespace onnx_dc
