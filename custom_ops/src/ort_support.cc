// The onnxruntime support of ort_support.h: errors, the node's name, attributes, the constant payload,
// tensor and scratch helpers, shape-inference helpers.
#include "ort_support.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace onnx_dc {

void Check(OrtStatus* status) {
  if (!status) return;
  const OrtErrorCode code = g_api->GetErrorCode(status);
  std::string message = g_api->GetErrorMessage(status);
  g_api->ReleaseStatus(status);
  throw OrtError(code, message);
}

std::string Describe(const char* op, const OrtKernelInfo* info) {
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

bool DebugEnabled() {
  const char* debug = std::getenv("ONNX_DC_DEBUG");
  return debug && *debug && std::strcmp(debug, "0") != 0;
}

// ---- attributes ---------------------------------------------------------------------------------------------
// The C API has no "is it there" call: a failed read of the expected type means absent unless a read of another
// type succeeds (then it is there with the wrong type, an error).

namespace {

bool AttributeOfAnotherType(const OrtKernelInfo* info, const char* name) {
  int64_t i = 0;
  float f = 0;
  size_t size = 0;
  auto ok = [](OrtStatus* s) {
    if (!s) return true;
    g_api->ReleaseStatus(s);
    return false;
  };
  return ok(g_api->KernelInfoGetAttribute_int64(info, name, &i)) ||
         ok(g_api->KernelInfoGetAttribute_float(info, name, &f)) ||
         ok(g_api->KernelInfoGetAttribute_string(info, name, nullptr, &size)) ||
         ok(g_api->KernelInfoGetAttributeArray_int64(info, name, nullptr, &size)) ||
         ok(g_api->KernelInfoGetAttributeArray_float(info, name, nullptr, &size));
}

// A failed read of `name`: absent (false), or InvalidArgument when the node has it with another type.
bool Absent(OrtStatus* status, const OrtKernelInfo* info, const char* name, const char* expected) {
  g_api->ReleaseStatus(status);
  if (AttributeOfAnotherType(info, name)) throw InvalidArgument(std::string("attribute ") + name + " must be " + expected);
  return false;
}

}  // namespace

bool ReadInts(const OrtKernelInfo* info, const char* name, std::vector<int64_t>& values) {
  size_t size = 0;
  if (OrtStatus* s = g_api->KernelInfoGetAttributeArray_int64(info, name, nullptr, &size))
    return Absent(s, info, name, "a list of integers");
  // onnxruntime reads a list of floats as an empty list of integers.
  if (size == 0) {
    size_t floats = 0;
    if (OrtStatus* s = g_api->KernelInfoGetAttributeArray_float(info, name, nullptr, &floats)) {
      g_api->ReleaseStatus(s);
    } else if (floats > 0) {
      throw InvalidArgument(std::string("attribute ") + name + " must be a list of integers");
    }
  }
  values.resize(size);
  if (size) Check(g_api->KernelInfoGetAttributeArray_int64(info, name, values.data(), &size));
  return true;
}

std::string ReadString(const OrtKernelInfo* info, const char* name, const std::string& absent) {
  size_t size = 0;
  if (OrtStatus* s = g_api->KernelInfoGetAttribute_string(info, name, nullptr, &size)) {
    Absent(s, info, name, "a string");
    return absent;
  }
  std::string value(size, '\0');
  Check(g_api->KernelInfoGetAttribute_string(info, name, &value[0], &size));
  value.resize(std::strlen(value.c_str()));
  return value;
}

int64_t ReadInt(const OrtKernelInfo* info, const char* name, int64_t absent) {
  int64_t value = 0;
  if (OrtStatus* s = g_api->KernelInfoGetAttribute_int64(info, name, &value)) {
    Absent(s, info, name, "an integer");
    return absent;
  }
  return value;
}

// ---- the payload and tensors --------------------------------------------------------------------------------

ConstantBlob ConstantPayload(const OrtKernelInfo* info, size_t index) {
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
  return {value, ReadOnlyData<uint8_t>(value), count};
}

std::vector<int64_t> TensorShape(const OrtValue* value, ONNXTensorElementDataType* type) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  Check(g_api->GetTensorTypeAndShape(value, &info));
  size_t rank = 0;
  std::vector<int64_t> dims;
  OrtStatus* s = g_api->GetTensorElementType(info, type);
  if (!s) s = g_api->GetDimensionsCount(info, &rank);
  if (!s) {
    dims.resize(rank);
    s = g_api->GetDimensions(info, dims.data(), rank);
  }
  g_api->ReleaseTensorTypeAndShapeInfo(info);
  Check(s);
  return dims;
}

const void* ReadOnlyBytes(const OrtValue* value) {
  void* p = nullptr;
  Check(g_api->GetTensorMutableData(const_cast<OrtValue*>(value), &p));  // only read
  return p;
}

const float* OptionalVector(OrtKernelContext* context, size_t index, uint64_t length, const std::string& what) {
  size_t inputs = 0;
  Check(g_api->KernelContext_GetInputCount(context, &inputs));
  if (index >= inputs) return nullptr;
  const OrtValue* value = nullptr;
  Check(g_api->KernelContext_GetInput(context, index, &value));
  if (!value) return nullptr;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  const std::vector<int64_t> dims = TensorShape(value, &type);
  if (dims.size() != 1 || dims[0] < 0 || static_cast<uint64_t>(dims[0]) != length)
    throw InvalidArgument(what + " = [" + std::to_string(length) + "]");
  return ReadOnlyData<float>(value);
}

int64_t OutputDim(uint64_t value, const char* message) {
  if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) throw InvalidArgument(message);
  return static_cast<int64_t>(value);
}

const OrtMemoryInfo* CpuMemoryInfo() {
  static const OrtMemoryInfo* info = [] {
    OrtMemoryInfo* mi = nullptr;
    Check(g_api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &mi));
    return mi;
  }();
  return info;
}

Scratch::Scratch(OrtKernelContext* context, size_t floats) {
  if (floats > (~size_t{0} - 64) / sizeof(float)) throw std::bad_alloc();
  Check(g_api->KernelContext_GetAllocator(context, CpuMemoryInfo(), &allocator_));
  if (OrtStatus* s = g_api->AllocatorAlloc(allocator_, floats * sizeof(float) + 64, &allocation_)) {
    g_api->ReleaseAllocator(allocator_);
    Check(s);
  }
  data_ = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(allocation_) + 63) / 64 * 64);
}

Scratch::~Scratch() {
  if (OrtStatus* s = g_api->AllocatorFree(allocator_, allocation_)) g_api->ReleaseStatus(s);
  g_api->ReleaseAllocator(allocator_);
}

// ---- shape inference ----------------------------------------------------------------------------------------

std::string FreshSymbol() {
  static std::atomic<uint64_t> next{0};
  return "onnx_dc_unk_" + std::to_string(next.fetch_add(1));
}

bool InputDims(OrtShapeInferContext* context, size_t index, std::vector<int64_t>& dims, std::vector<std::string>& names) {
  size_t inputs = 0;
  Check(g_api->ShapeInferContext_GetInputCount(context, &inputs));
  if (index >= inputs) return false;
  OrtTensorTypeAndShapeInfo* info = nullptr;  // owned by the context
  Check(g_api->ShapeInferContext_GetInputTypeShape(context, index, &info));
  size_t rank = 0;
  Check(g_api->GetDimensionsCount(info, &rank));
  if (rank == 0) return false;
  dims.assign(rank, 0);
  std::vector<const char*> symbols(rank, nullptr);
  Check(g_api->GetDimensions(info, dims.data(), rank));
  Check(g_api->GetSymbolicDimensions(info, symbols.data(), rank));
  names.assign(rank, std::string());
  for (size_t i = 0; i < rank; ++i) {
    if (symbols[i] && symbols[i][0]) {
      names[i] = symbols[i];
      dims[i] = -1;
    } else if (dims[i] < 0) {
      names[i] = FreshSymbol();
    }
  }
  return true;
}

void SetFloatOutput(OrtShapeInferContext* context, const std::vector<int64_t>& dims,
                    const std::vector<std::string>& names) {
  OrtTensorTypeAndShapeInfo* out = nullptr;
  try {
    std::vector<const char*> name_ptrs(dims.size());
    for (size_t i = 0; i < dims.size(); ++i) name_ptrs[i] = names[i].c_str();
    Check(g_api->CreateTensorTypeAndShapeInfo(&out));
    Check(g_api->SetTensorElementType(out, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT));
    Check(g_api->SetDimensions(out, dims.data(), dims.size()));
    Check(g_api->SetSymbolicDimensions(out, name_ptrs.data(), dims.size()));
    Check(g_api->ShapeInferContext_SetOutputTypeShape(context, 0, out));
  } catch (...) {
    if (out) g_api->ReleaseTensorTypeAndShapeInfo(out);
    throw;
  }
  g_api->ReleaseTensorTypeAndShapeInfo(out);
}

namespace {

// The node's attribute `name` as `type`, read in two calls (size, then data) into `out` via `resize`.
template <typename Out, typename Resize>
bool ShapeAttribute(OrtShapeInferContext* context, const char* name, OrtOpAttrType type, Out& out, size_t unit,
                    Resize resize) {
  const OrtOpAttr* attr = nullptr;
  if (OrtStatus* s = g_api->ShapeInferContext_GetAttribute(context, name, &attr)) {
    g_api->ReleaseStatus(s);
    return false;
  }
  if (!attr) return false;
  size_t bytes = 0;
  if (OrtStatus* s = g_api->ReadOpAttr(attr, type, nullptr, 0, &bytes)) g_api->ReleaseStatus(s);
  resize(out, bytes / unit);
  if (out.empty()) return true;
  if (OrtStatus* s = g_api->ReadOpAttr(attr, type, &out[0], out.size() * unit, &bytes)) {
    g_api->ReleaseStatus(s);
    return false;
  }
  return true;
}

}  // namespace

bool ShapeAttributeInts(OrtShapeInferContext* context, const char* name, std::vector<int64_t>& values) {
  return ShapeAttribute(context, name, ORT_OP_ATTR_INTS, values, sizeof(int64_t),
                        [](std::vector<int64_t>& v, size_t n) { v.assign(n, 0); });
}

bool ShapeAttributeString(OrtShapeInferContext* context, const char* name, std::string& value) {
  if (!ShapeAttribute(context, name, ORT_OP_ATTR_STRING, value, 1, [](std::string& v, size_t n) { v.assign(n, '\0'); }))
    return false;
  value.resize(std::strlen(value.c_str()));
  return true;
}

}  // namespace onnx_dc
