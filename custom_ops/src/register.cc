// onnxruntime glue: the one file that registers every onnx_dc operator (domain "onnx_dc", version 1).
//
//   DCSparseGemm(X float[..., K], W_payload uint8[L] (constant), B float[N] (optional)) -> Y float[..., N]
//   DCDecode(payload uint8[L] (constant)) -> Y float[dims]
//   DCSparseConv(X float[N, C, H, W], W_payload uint8[L] (constant, dims [M, C, kH, kW]), B float[M] (optional))
//     -> Y float[N, M, OH, OW]; attributes of ONNX Conv (group = 1)
//   DCGather(W_payload uint8[L] (constant, dims [V, D]), indices int64/int32[...]) -> Y float[..., D]
//
// Written against onnxruntime's C++ custom-op API (Ort::CustomOpBase with CreateKernelV2/ComputeV2), not the
// lite API: the lite API's kernel constructor cannot return a status, and a bad payload must become an
// onnxruntime error at session creation, never an exception crossing the C boundary. Every entry point
// below catches everything and returns an OrtStatus.
//
// The library is compiled against the C API of onnxruntime 1.21 (ORT_API_VERSION 21) and asks the
// runtime for exactly that version, so it loads into any onnxruntime >= 1.21. It does not link against
// libonnxruntime: the API table comes from RegisterCustomOps' OrtApiBase.
#include <algorithm>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "onnx_dc/c_api.h"
#include "onnx_dc/conv.h"
#include "onnx_dc/gather.h"
#include "onnx_dc/gemm.h"
#include "onnx_dc/payload.h"
#include "ort_support.h"

static_assert(ORT_API_VERSION >= 17, "onnxruntime headers 1.17 or later are needed (shape inference, ParallelFor)");

#ifdef ONNX_DC_WITH_CUDA
namespace onnx_dc {
// cuda/ort_cuda_op.cc: DCSparseGemm for CUDAExecutionProvider (libonnx_dc_ops_cuda.so only, docs/CUDA.md).
OrtStatus* AddCudaOps(const OrtApi* api, OrtCustomOpDomain* domain, const OrtCustomOp* cpu_sparse_gemm);
}  // namespace onnx_dc
#endif

namespace onnx_dc {
namespace {

constexpr const char* kDomain = "onnx_dc";

// ---- DCSparseGemm ---------------------------------------------------------------------------------------

// Products below this much work (slots + outputs, times batch rows) run on the calling thread: handing
// them to the pool costs more than it saves.
constexpr uint64_t kParallelMinWork = uint64_t{1} << 17;
// Scratch up to this many floats (the padded X row of a batch-1 call on K < 4096) lives on the stack.
constexpr size_t kStackScratch = 4096;

struct SpmmJob {
  const BlockMatrix* w;
  const SpmmPlan* plan;
  const float* x;
  float* scratch;
  const float* bias;
  float* y;
};

struct SparseGemmKernel {
  std::string who;
  BlockMatrix w;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return Guard(who, [&]() -> OrtStatus* { return Compute(context); });
  }

  OrtStatus* Compute(OrtKernelContext* context) {
    const GemmTensors t = BindSparseGemm(context, w.rows, w.cols);
    if (t.m == 0 || w.rows == 0) return nullptr;
    const uint64_t m = t.m;
    const float* xd = t.x;
    const float* bias = t.bias;
    float* y = t.y;

    const SpmmPlan plan = PlanSpmm(w, static_cast<size_t>(m));
    alignas(64) float stack_scratch[kStackScratch];
    float* scratch = stack_scratch;
    OrtAllocator* allocator = nullptr;
    void* allocation = nullptr;
    if (plan.scratch_floats() > kStackScratch) {
      Check(g_api->KernelContext_GetAllocator(context, CpuMemoryInfo(), &allocator));
      if (plan.scratch_floats() > (~size_t{0} - 64) / sizeof(float)) throw std::bad_alloc();
      if (OrtStatus* st = g_api->AllocatorAlloc(allocator, plan.scratch_floats() * sizeof(float) + 64, &allocation)) {
        g_api->ReleaseAllocator(allocator);
        Check(st);
      }
      const uintptr_t a = reinterpret_cast<uintptr_t>(allocation);
      scratch = reinterpret_cast<float*>((a + 63) / 64 * 64);
    }
    SpmmJob job{&w, &plan, xd, scratch, bias, y};
    uint64_t work;  // slots + outputs per batch row, times batch rows; saturates instead of wrapping
    if (__builtin_mul_overflow(m, w.slots() + w.rows, &work)) work = ~uint64_t{0};
    OrtStatus* status = nullptr;
    if (plan.tasks() <= 1 || work < kParallelMinWork) {
      for (size_t u = 0; u < plan.units; ++u) PackUnit(w, plan, xd, u, scratch);
      for (size_t t = 0; t < plan.tasks(); ++t) SpmmTask(w, plan, scratch, bias, y, t);
    } else {
      if (plan.units == 1) {
        PackUnit(w, plan, xd, 0, scratch);
      } else {
        status = g_api->KernelContext_ParallelFor(
            context,
            [](void* data, size_t unit) {
              auto* j = static_cast<SpmmJob*>(data);
              PackUnit(*j->w, *j->plan, j->x, unit, j->scratch);
            },
            plan.units, 0, &job);
      }
      if (!status) {
        status = g_api->KernelContext_ParallelFor(
            context,
            [](void* data, size_t task) {
              auto* j = static_cast<SpmmJob*>(data);
              SpmmTask(*j->w, *j->plan, j->scratch, j->bias, j->y, task);
            },
            plan.tasks(), 0, &job);
      }
    }
    if (allocator) {
      if (OrtStatus* st = g_api->AllocatorFree(allocator, allocation)) g_api->ReleaseStatus(st);
      g_api->ReleaseAllocator(allocator);
    }
    Check(status);
    return nullptr;
  }

  static const OrtMemoryInfo* CpuMemoryInfo() {
    static const OrtMemoryInfo* info = [] {
      OrtMemoryInfo* mi = nullptr;
      Check(g_api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &mi));
      return mi;
    }();
    return info;
  }
};

// ONNX_DC_DEBUG=1: one line per layer on stderr at session creation (form, kernel set, format size).
void ReportForm(const std::string& who, const BlockMatrix& w) {
  const char* debug = std::getenv("ONNX_DC_DEBUG");
  if (!debug || !*debug || std::strcmp(debug, "0") == 0) return;
  std::fprintf(stderr,
               "onnx_dc: %s: %llu x %llu, %llu nonzeros, form %s, kernel %s, %llu blocks (%.3f slots "
               "per nonzero), %.2f bytes per nonzero, %zu parts\n",
               who.c_str(), static_cast<unsigned long long>(w.rows), static_cast<unsigned long long>(w.cols),
               static_cast<unsigned long long>(w.nnz), FormName(w.form), w.kernel_name(),
               static_cast<unsigned long long>(w.blocks),
               w.nnz ? static_cast<double>(w.slots()) / static_cast<double>(w.nnz) : 0.0,
               w.nnz ? static_cast<double>(w.ResidentBytes()) / static_cast<double>(w.nnz) : 0.0,
               w.parts.empty() ? size_t{0} : w.parts.size() - 1);
}

// Shape inference sees types and shapes only, never the payload's bytes (OrtShapeInferContext has no
// access to initializer data in the 1.21 C API), so N is unknown here: Y gets X's leading dimensions and a
// fresh symbolic last dimension. A value_info for Y in the model (the converter writes one) has the
// concrete N, and onnxruntime merges it over the symbol. Unknown dimensions of X also become fresh
// symbols (the C API would otherwise turn them into a dimension value of -1). For an X of unknown rank
// (reported as rank 0) nothing is set. Errors are not reported here: Compute reports them.
OrtStatusPtr InferSparseGemmShape(const OrtCustomOp*, OrtShapeInferContext* context) noexcept {
  static std::atomic<uint64_t> next_symbol{0};
  OrtTensorTypeAndShapeInfo* out = nullptr;
  try {
    size_t inputs = 0;
    Check(g_api->ShapeInferContext_GetInputCount(context, &inputs));
    if (inputs < 1) return nullptr;
    OrtTensorTypeAndShapeInfo* x = nullptr;  // owned by the context
    Check(g_api->ShapeInferContext_GetInputTypeShape(context, 0, &x));
    size_t rank = 0;
    Check(g_api->GetDimensionsCount(x, &rank));
    if (rank == 0) return nullptr;
    std::vector<int64_t> dims(rank);
    std::vector<const char*> symbols(rank, nullptr);
    Check(g_api->GetDimensions(x, dims.data(), rank));
    Check(g_api->GetSymbolicDimensions(x, symbols.data(), rank));
    std::vector<std::string> names(rank);
    for (size_t i = 0; i < rank; ++i) {
      const bool last = i + 1 == rank;
      if (!last && symbols[i] && symbols[i][0]) {
        names[i] = symbols[i];
      } else if (last || dims[i] < 0) {
        names[i] = "onnx_dc_unk_" + std::to_string(next_symbol.fetch_add(1));
        dims[i] = -1;
      }
    }
    std::vector<const char*> name_ptrs(rank);
    for (size_t i = 0; i < rank; ++i) name_ptrs[i] = names[i].c_str();
    Check(g_api->CreateTensorTypeAndShapeInfo(&out));
    Check(g_api->SetTensorElementType(out, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT));
    Check(g_api->SetDimensions(out, dims.data(), rank));
    Check(g_api->SetSymbolicDimensions(out, name_ptrs.data(), rank));
    Check(g_api->ShapeInferContext_SetOutputTypeShape(context, 0, out));
  } catch (...) {
    // Leave the output shape unset; onnxruntime then relies on the model's value_info.
  }
  if (out) g_api->ReleaseTensorTypeAndShapeInfo(out);
  return nullptr;
}

struct SparseGemmOp : Ort::CustomOpBase<SparseGemmOp, SparseGemmKernel, true> {
  SparseGemmOp() {
    OrtCustomOp::version = kOrtApiVersion;
    OrtCustomOp::InferOutputShapeFn = InferSparseGemmShape;
  }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    const std::string who = Describe("DCSparseGemm", info);
    return Guard(who, [&]() -> OrtStatus* {
      auto k = std::make_unique<SparseGemmKernel>();
      k->who = who;
      const ConstantBlob blob = ConstantPayload(info, 1);
      k->w = DecodeBlockMatrix(blob.data, blob.size);
      ReportForm(who, k->w);
      *kernel = k.release();
      return nullptr;
    });
  }
  const char* GetName() const { return "DCSparseGemm"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

// ---- DCDecode ---------------------------------------------------------------------------------------------

struct DecodeKernel {
  std::string who;
  std::vector<int64_t> dims;
  std::vector<float> values;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return Guard(who, [&]() -> OrtStatus* {
      Ort::KernelContext ctx(context);
      Ort::UnownedValue y = ctx.GetOutput(0, dims);
      if (!values.empty()) std::memcpy(y.GetTensorMutableData<float>(), values.data(), values.size() * sizeof(float));
      return nullptr;
    });
  }
};

struct DecodeOp : Ort::CustomOpBase<DecodeOp, DecodeKernel, true> {
  DecodeOp() { OrtCustomOp::version = kOrtApiVersion; }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    const std::string who = Describe("DCDecode", info);
    return Guard(who, [&]() -> OrtStatus* {
      auto k = std::make_unique<DecodeKernel>();
      k->who = who;
      const ConstantBlob blob = ConstantPayload(info, 0);
      // Bound the dense tensor by what the blob can justify: a valid all-pruned payload of a few hundred
      // bytes may declare any shape. 65,536 elements per payload byte allows 99.998% sparsity; small
      // tensors (up to 2^26 elements, 256 MiB) are always accepted.
      const uint64_t justified = std::max<uint64_t>(uint64_t{1} << 26, uint64_t{65536} * blob.size);
      DenseTensor t = DecodeDense(blob.data, blob.size, {}, justified);
      for (uint64_t d : t.dims) {
        if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          throw InvalidArgument("a dimension of the payload exceeds int64");
        k->dims.push_back(static_cast<int64_t>(d));
      }
      k->values = std::move(t.values);
      *kernel = k.release();
      return nullptr;
    });
  }
  const char* GetName() const { return "DCDecode"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8; }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

// ---- helpers of DCSparseConv and DCGather ------------------------------------------------------------------

// An input's element type and shape.
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

template <typename T>
const T* ReadOnlyData(const OrtValue* value) {
  void* p = nullptr;
  Check(g_api->GetTensorMutableData(const_cast<OrtValue*>(value), &p));  // only read
  return static_cast<const T*>(p);
}

// Optional input `index`, a float32 vector of `length` elements; nullptr when absent.
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

// Scratch floats from the session's allocator, 64-byte aligned, freed on scope exit.
class Scratch {
 public:
  Scratch(OrtKernelContext* context, size_t floats) {
    if (floats > (~size_t{0} - 64) / sizeof(float)) throw std::bad_alloc();
    Check(g_api->KernelContext_GetAllocator(context, SparseGemmKernel::CpuMemoryInfo(), &allocator_));
    if (OrtStatus* s = g_api->AllocatorAlloc(allocator_, floats * sizeof(float) + 64, &allocation_)) {
      g_api->ReleaseAllocator(allocator_);
      Check(s);
    }
    data_ = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(allocation_) + 63) / 64 * 64);
  }
  ~Scratch() {
    if (OrtStatus* s = g_api->AllocatorFree(allocator_, allocation_)) g_api->ReleaseStatus(s);
    g_api->ReleaseAllocator(allocator_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* data() const { return data_; }

 private:
  OrtAllocator* allocator_ = nullptr;
  void* allocation_ = nullptr;
  float* data_ = nullptr;
};

// Attributes. The C API has no "is it there" call: a failed read of the expected type means absent unless a
// read of another type succeeds (then it is there with the wrong type, an error).
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

IntsAttribute ReadInts(const OrtKernelInfo* info, const char* name) {
  IntsAttribute a;
  size_t size = 0;
  if (OrtStatus* s = g_api->KernelInfoGetAttributeArray_int64(info, name, nullptr, &size)) {
    g_api->ReleaseStatus(s);
    if (AttributeOfAnotherType(info, name))
      throw InvalidArgument(std::string("attribute ") + name + " must be a list of integers");
    return a;
  }
  // onnxruntime reads a list of floats as an empty list of integers.
  if (size == 0) {
    size_t floats = 0;
    if (OrtStatus* s = g_api->KernelInfoGetAttributeArray_float(info, name, nullptr, &floats)) {
      g_api->ReleaseStatus(s);
    } else if (floats > 0) {
      throw InvalidArgument(std::string("attribute ") + name + " must be a list of integers");
    }
  }
  a.present = true;
  a.values.resize(size);
  if (size) Check(g_api->KernelInfoGetAttributeArray_int64(info, name, a.values.data(), &size));
  return a;
}

std::string ReadString(const OrtKernelInfo* info, const char* name, const std::string& absent) {
  size_t size = 0;
  if (OrtStatus* s = g_api->KernelInfoGetAttribute_string(info, name, nullptr, &size)) {
    g_api->ReleaseStatus(s);
    if (AttributeOfAnotherType(info, name)) throw InvalidArgument(std::string("attribute ") + name + " must be a string");
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
    g_api->ReleaseStatus(s);
    if (AttributeOfAnotherType(info, name)) throw InvalidArgument(std::string("attribute ") + name + " must be an integer");
    return absent;
  }
  return value;
}

// A fresh symbolic dimension name for shape inference.
std::string FreshSymbol() {
  static std::atomic<uint64_t> next{0};
  return "onnx_dc_unk_" + std::to_string(next.fetch_add(1));
}

// Set output 0 of a shape-inference context to float32 with these dims (-1: the symbol in names).
void SetFloatOutput(OrtShapeInferContext* context, std::vector<int64_t> dims, const std::vector<std::string>& names) {
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

// Input `index`'s dims and symbol names (unknown dims get fresh symbols); false for an unknown rank, which the
// C API reports as rank 0.
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

// ---- DCSparseConv -------------------------------------------------------------------------------------------

// Packed patches of at most this many bytes per round (at least one unit): the scratch stays bounded for any
// batch and image size (a whole batch's im2col would be N * OH * OW * (K + 1) floats), and a round still has
// units for every thread (a 3x3 kernel over 64 channels: 113 units of 16 pixels).
constexpr size_t kConvRoundBytes = size_t{4} << 20;
// Rounds of at least this many units run one task per unit (pack, then every row part); smaller rounds, when W
// has several row parts, pack first and then run one task per (unit, part), so that a big kernel over a few
// pixels still uses the threads.
constexpr uint64_t kConvFusedUnits = 8;

struct ConvJob {
  const ConvKernel* kernel;
  const ConvPlan* plan;
  const float* x;
  const float* bias;
  float* y;
  float* scratch;
  uint64_t first;  // the round's first unit
  float* slot(uint64_t i) const { return scratch + i * plan->slot_floats; }
};

struct SparseConvKernel {
  std::string who;
  ConvKernel kernel;
  ConvAttributes attributes;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return Guard(who, [&]() -> OrtStatus* { return Compute(context); });
  }

  OrtStatus* Compute(OrtKernelContext* context) {
    const OrtValue* x_value = nullptr;
    Check(g_api->KernelContext_GetInput(context, 0, &x_value));
    if (!x_value) throw InvalidArgument("X is missing");
    ONNXTensorElementDataType x_type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    const std::vector<int64_t> x_dims = TensorShape(x_value, &x_type);
    if (x_type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) throw InvalidArgument("X must be float32");
    ConvShape shape;
    try {
      shape = ResolveConvShape(kernel, attributes, x_dims.data(), x_dims.size());
    } catch (const std::invalid_argument& e) {
      throw InvalidArgument(e.what());
    }
    const float* bias = OptionalVector(context, 2, kernel.m, "B must have shape [M]");
    const int64_t y_dims[4] = {static_cast<int64_t>(shape.n), static_cast<int64_t>(shape.m),
                               static_cast<int64_t>(shape.oh), static_cast<int64_t>(shape.ow)};
    OrtValue* y_value = nullptr;
    Check(g_api->KernelContext_GetOutput(context, 0, y_dims, 4, &y_value));
    void* y_data = nullptr;
    Check(g_api->GetTensorMutableData(y_value, &y_data));
    if (shape.n == 0 || shape.m == 0) return nullptr;

    const ConvPlan plan = PlanConv(kernel, shape);
    ConvJob job{&kernel, &plan, ReadOnlyData<float>(x_value), bias, static_cast<float*>(y_data), nullptr, 0};
    const uint64_t units = plan.units();
    const bool serial = plan.tasks() <= 1 || plan.work < kParallelMinWork;
    const uint64_t round = serial ? 1
                                  : std::min<uint64_t>(units, std::max<size_t>(1, kConvRoundBytes /
                                                                                       (plan.slot_floats * sizeof(float))));
    Scratch scratch(context, static_cast<size_t>(round) * plan.slot_floats);
    job.scratch = scratch.data();
    for (uint64_t first = 0; first < units; first += round) {
      const uint64_t count = std::min(round, units - first);
      job.first = first;
      if (serial) {
        PackAndRun(&job, 0);
      } else if (count >= kConvFusedUnits || plan.parts == 1) {
        Check(g_api->KernelContext_ParallelFor(context, PackAndRun, count, 0, &job));
      } else {
        Check(g_api->KernelContext_ParallelFor(context, Pack, count, 0, &job));
        Check(g_api->KernelContext_ParallelFor(context, RunPart, count * plan.parts, 0, &job));
      }
    }
    return nullptr;
  }

  // Task i of a round: unit first + i into slot i, then all of its row parts.
  static void PackAndRun(void* data, size_t i) {
    const ConvJob& j = *static_cast<const ConvJob*>(data);
    PackConvUnit(*j.plan, j.x, j.first + i, j.slot(i));
    for (size_t part = 0; part < j.plan->parts; ++part)
      ConvUnitPart(*j.kernel, *j.plan, j.slot(i), j.bias, j.y, j.first + i, part);
  }
  static void Pack(void* data, size_t i) {
    const ConvJob& j = *static_cast<const ConvJob*>(data);
    PackConvUnit(*j.plan, j.x, j.first + i, j.slot(i));
  }
  // Task t: part t % parts of the round's unit t / parts (a unit's parts in a row, its patches stay in cache).
  static void RunPart(void* data, size_t t) {
    const ConvJob& j = *static_cast<const ConvJob*>(data);
    const size_t i = t / j.plan->parts;
    ConvUnitPart(*j.kernel, *j.plan, j.slot(i), j.bias, j.y, j.first + i, t % j.plan->parts);
  }
};

// Y [N, M, OH, OW]: N from X; M is in the payload, which shape inference cannot see (the converter's value_info
// supplies it), so it is a fresh symbol; OH and OW are computed when X's H and W are known and the node has
// kernel_shape (else symbols). Attributes are read best-effort: errors are Compute's to report.
bool ShapeAttributeInts(OrtShapeInferContext* context, const char* name, std::vector<int64_t>& values) {
  const OrtOpAttr* attr = nullptr;
  if (OrtStatus* s = g_api->ShapeInferContext_GetAttribute(context, name, &attr)) {
    g_api->ReleaseStatus(s);
    return false;
  }
  if (!attr) return false;
  size_t bytes = 0;
  if (OrtStatus* s = g_api->ReadOpAttr(attr, ORT_OP_ATTR_INTS, nullptr, 0, &bytes)) g_api->ReleaseStatus(s);
  values.assign(bytes / sizeof(int64_t), 0);
  if (values.empty()) return true;
  if (OrtStatus* s = g_api->ReadOpAttr(attr, ORT_OP_ATTR_INTS, values.data(), values.size() * sizeof(int64_t), &bytes)) {
    g_api->ReleaseStatus(s);
    return false;
  }
  return true;
}

bool ShapeAttributeString(OrtShapeInferContext* context, const char* name, std::string& value) {
  const OrtOpAttr* attr = nullptr;
  if (OrtStatus* s = g_api->ShapeInferContext_GetAttribute(context, name, &attr)) {
    g_api->ReleaseStatus(s);
    return false;
  }
  if (!attr) return false;
  size_t bytes = 0;
  if (OrtStatus* s = g_api->ReadOpAttr(attr, ORT_OP_ATTR_STRING, nullptr, 0, &bytes)) g_api->ReleaseStatus(s);
  value.assign(bytes, '\0');
  if (bytes == 0) return true;
  if (OrtStatus* s = g_api->ReadOpAttr(attr, ORT_OP_ATTR_STRING, &value[0], bytes, &bytes)) {
    g_api->ReleaseStatus(s);
    return false;
  }
  value.resize(std::strlen(value.c_str()));
  return true;
}

OrtStatusPtr InferSparseConvShape(const OrtCustomOp*, OrtShapeInferContext* context) noexcept {
  try {
    std::vector<int64_t> x;
    std::vector<std::string> x_names;
    if (!InputDims(context, 0, x, x_names) || x.size() != 4) return nullptr;
    std::vector<int64_t> dims{x[0], -1, -1, -1};
    std::vector<std::string> names{x_names[0], FreshSymbol(), FreshSymbol(), FreshSymbol()};
    std::vector<int64_t> kernel_shape, strides, pads, dilations;
    std::string auto_pad;
    if (x[2] >= 0 && x[3] >= 0 && ShapeAttributeInts(context, "kernel_shape", kernel_shape) &&
        kernel_shape.size() == 2) {
      IntsAttribute s, p, d, k;
      s.present = ShapeAttributeInts(context, "strides", s.values);
      p.present = ShapeAttributeInts(context, "pads", p.values);
      d.present = ShapeAttributeInts(context, "dilations", d.values);
      if (!ShapeAttributeString(context, "auto_pad", auto_pad)) auto_pad.clear();
      try {
        if (kernel_shape[0] < 1 || kernel_shape[1] < 1) throw std::invalid_argument("kernel_shape");
        const ConvAttributes a = CheckConvAttributes(s, p, d, auto_pad, 1, k, 1, 1);
        int64_t out = 0, head = 0;
        for (int axis = 0; axis < 2; ++axis) {
          if (ConvAxis(x[2 + axis], kernel_shape[axis], a.strides[axis], a.dilations[axis], a.pads[axis],
                       a.pads[axis + 2], a.auto_pad, &out, &head)) {
            dims[2 + axis] = out;
            names[2 + axis].clear();
          }
        }
      } catch (const std::invalid_argument&) {
        // Leave OH and OW symbolic; Compute reports the attribute.
      }
    }
    SetFloatOutput(context, dims, names);
  } catch (...) {
    // Leave the output shape unset; onnxruntime then relies on the model's value_info.
  }
  return nullptr;
}

struct SparseConvOp : Ort::CustomOpBase<SparseConvOp, SparseConvKernel, true> {
  SparseConvOp() {
    OrtCustomOp::version = kOrtApiVersion;
    OrtCustomOp::InferOutputShapeFn = InferSparseConvShape;
  }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    const std::string who = Describe("DCSparseConv", info);
    return Guard(who, [&]() -> OrtStatus* {
      auto k = std::make_unique<SparseConvKernel>();
      k->who = who;
      // Attributes first: a bad one fails before the (longer) decode... except kernel_shape, checked against
      // the payload's dims below.
      const IntsAttribute strides = ReadInts(info, "strides"), pads = ReadInts(info, "pads");
      const IntsAttribute dilations = ReadInts(info, "dilations"), kernel_shape = ReadInts(info, "kernel_shape");
      const std::string auto_pad = ReadString(info, "auto_pad", "NOTSET");
      const int64_t group = ReadInt(info, "group", 1);
      const ConstantBlob blob = ConstantPayload(info, 1);
      k->kernel = DecodeConvKernel(blob.data, blob.size);
      try {
        k->attributes =
            CheckConvAttributes(strides, pads, dilations, auto_pad, group, kernel_shape, k->kernel.kh, k->kernel.kw);
      } catch (const std::invalid_argument& e) {
        throw InvalidArgument(e.what());
      }
      ReportForm(who, k->kernel.w);
      *kernel = k.release();
      return nullptr;
    });
  }
  const char* GetName() const { return "DCSparseConv"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index == 1 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

// ---- DCGather -----------------------------------------------------------------------------------------------

// Lookups of fewer output floats than this run on the calling thread; more are cut into tasks of about this many.
constexpr uint64_t kGatherTaskFloats = uint64_t{1} << 15;

template <typename Index>
struct GatherJob {
  const SparseMatrix* table;
  const Index* indices;
  size_t count;
  size_t per_task;
  float* y;
  static void Run(void* data, size_t task) {
    const GatherJob& j = *static_cast<const GatherJob*>(data);
    const size_t first = task * j.per_task;
    GatherRows(*j.table, j.indices, first, std::min(j.count, first + j.per_task), j.y);
  }
};

struct GatherKernel {
  std::string who;
  SparseMatrix table;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return Guard(who, [&]() -> OrtStatus* { return Compute(context); });
  }

  OrtStatus* Compute(OrtKernelContext* context) {
    const OrtValue* indices_value = nullptr;
    Check(g_api->KernelContext_GetInput(context, 1, &indices_value));
    if (!indices_value) throw InvalidArgument("indices are missing");
    ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    std::vector<int64_t> dims = TensorShape(indices_value, &type);
    if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 && type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32)
      throw InvalidArgument("indices must be int64 or int32");
    uint64_t count = 1;
    for (int64_t d : dims)
      if (d < 0 || __builtin_mul_overflow(count, static_cast<uint64_t>(d), &count))
        throw InvalidArgument("indices have an invalid shape");
    if (table.cols > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) throw InvalidArgument("D is too large");
    dims.push_back(static_cast<int64_t>(table.cols));
    if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64)
      Lookup(context, ReadOnlyData<int64_t>(indices_value), static_cast<size_t>(count), dims);
    else
      Lookup(context, ReadOnlyData<int32_t>(indices_value), static_cast<size_t>(count), dims);
    return nullptr;
  }

  template <typename Index>
  void Lookup(OrtKernelContext* context, const Index* indices, size_t count, const std::vector<int64_t>& y_dims) {
    try {
      CheckGatherIndices(table, indices, count);  // before anything is written
    } catch (const std::out_of_range& e) {
      throw InvalidArgument(e.what());
    }
    OrtValue* y_value = nullptr;
    Check(g_api->KernelContext_GetOutput(context, 0, y_dims.data(), y_dims.size(), &y_value));
    void* y = nullptr;
    Check(g_api->GetTensorMutableData(y_value, &y));
    const uint64_t d = std::max<uint64_t>(1, table.cols);
    GatherJob<Index> job{&table, indices, count, static_cast<size_t>(std::max<uint64_t>(1, kGatherTaskFloats / d)),
                         static_cast<float*>(y)};
    const size_t tasks = (count + job.per_task - 1) / job.per_task;
    if (tasks <= 1) {
      GatherRows(table, indices, 0, count, job.y);
    } else {
      Check(g_api->KernelContext_ParallelFor(context, GatherJob<Index>::Run, tasks, 0, &job));
    }
  }
};

// Y = indices' shape + [D]: D is in the payload (a fresh symbol here; the converter's value_info gives it).
// Scalar indices cannot be told from indices of unknown rank (both are rank 0 here): nothing is set then.
OrtStatusPtr InferGatherShape(const OrtCustomOp*, OrtShapeInferContext* context) noexcept {
  try {
    std::vector<int64_t> dims;
    std::vector<std::string> names;
    if (!InputDims(context, 1, dims, names)) return nullptr;
    dims.push_back(-1);
    names.push_back(FreshSymbol());
    SetFloatOutput(context, dims, names);
  } catch (...) {
    // Leave the output shape unset; onnxruntime then relies on the model's value_info.
  }
  return nullptr;
}

struct GatherOp : Ort::CustomOpBase<GatherOp, GatherKernel, true> {
  GatherOp() {
    OrtCustomOp::version = kOrtApiVersion;
    OrtCustomOp::InferOutputShapeFn = InferGatherShape;
  }
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    const std::string who = Describe("DCGather", info);
    return Guard(who, [&]() -> OrtStatus* {
      auto k = std::make_unique<GatherKernel>();
      k->who = who;
      const ConstantBlob blob = ConstantPayload(info, 0);
      k->table = DecodeGatherTable(blob.data, blob.size);
      *kernel = k.release();
      return nullptr;
    });
  }
  const char* GetName() const { return "DCGather"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 2; }
  // Indices: int64 or int32, checked in Compute (UNDEFINED lets onnxruntime bind either to one kernel).
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

// One domain for the whole process, created on first registration and added to every session options
// that registers the library. It is never released: sessions may outlive any caller's handle on it.
OrtStatus* AddDomain(OrtSessionOptions* options) {
  static SparseGemmOp sparse_gemm;
  static DecodeOp decode;
  static SparseConvOp sparse_conv;
  static GatherOp gather;
  static std::mutex mutex;
  static OrtCustomOpDomain* domain = nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  if (!domain) {
    OrtCustomOpDomain* d = nullptr;
    if (OrtStatus* s = g_api->CreateCustomOpDomain(kDomain, &d)) return s;
    OrtStatus* s = g_api->CustomOpDomain_Add(d, &sparse_gemm);
    if (!s) s = g_api->CustomOpDomain_Add(d, &decode);
    if (!s) s = g_api->CustomOpDomain_Add(d, &sparse_conv);
    if (!s) s = g_api->CustomOpDomain_Add(d, &gather);
#ifdef ONNX_DC_WITH_CUDA
    if (!s) s = AddCudaOps(g_api, d, &sparse_gemm);
#endif
    if (s) {
      g_api->ReleaseCustomOpDomain(d);
      return s;
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
