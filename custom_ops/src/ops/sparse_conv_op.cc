// DCSparseConv on the CPU provider:
//   DCSparseConv(X float[N, C, H, W], W_payload uint8[L] (constant, dims [M, C, kH, kW]), B float[M] (optional))
//     -> Y float[N, M, OH, OW]; the attributes of ONNX Conv (group = 1)
// The kernel is decoded once (conv.h); each call packs patches a round of units at a time and runs DCSparseGemm's
// kernels on them on onnxruntime's intra-op pool.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "conv.h"
#include "ops.h"

namespace onnx_dc {
namespace {

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

IntsAttribute Ints(const OrtKernelInfo* info, const char* name) {
  IntsAttribute a;
  a.present = ReadInts(info, name, a.values);
  return a;
}

struct SparseConvKernel {
  ConvKernel kernel;
  ConvAttributes attributes;

  SparseConvKernel(const OrtKernelInfo* info, const std::string& who) {
    // Attributes first: a bad one fails before the (longer) decode... except kernel_shape, checked against the
    // payload's dims below.
    const IntsAttribute strides = Ints(info, "strides"), pads = Ints(info, "pads");
    const IntsAttribute dilations = Ints(info, "dilations"), kernel_shape = Ints(info, "kernel_shape");
    const std::string auto_pad = ReadString(info, "auto_pad", "NOTSET");
    const int64_t group = ReadInt(info, "group", 1);
    const ConstantBlob blob = ConstantPayload(info, 1);
    kernel = DecodeConvKernel(blob.data, blob.size);
    try {
      attributes = CheckConvAttributes(strides, pads, dilations, auto_pad, group, kernel_shape, kernel.kh, kernel.kw);
    } catch (const std::invalid_argument& e) {
      throw InvalidArgument(e.what());
    }
    ReportForm(who, kernel.w);
  }

  void Compute(OrtKernelContext* context) {
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
    if (shape.n == 0 || shape.m == 0) return;

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
        ConvJob::PackAndRun(&job, 0);
      } else if (count >= kConvFusedUnits || plan.parts == 1) {
        Check(g_api->KernelContext_ParallelFor(context, ConvJob::PackAndRun, count, 0, &job));
      } else {
        Check(g_api->KernelContext_ParallelFor(context, ConvJob::Pack, count, 0, &job));
        Check(g_api->KernelContext_ParallelFor(context, ConvJob::RunPart, count * plan.parts, 0, &job));
      }
    }
  }
};

// Y [N, M, OH, OW]: N from X; M is in the payload (a fresh symbol); OH and OW are computed when X's H and W are
// known and the node has kernel_shape (else symbols). Attributes are read best-effort: errors are Compute's.
OrtStatusPtr InferSparseConvShape(const OrtCustomOp*, OrtShapeInferContext* context) noexcept {
  try {
    std::vector<int64_t> x;
    std::vector<std::string> x_names;
    if (!InputDims(context, 0, x, x_names) || x.size() != 4) return nullptr;
    std::vector<int64_t> dims{x[0], -1, -1, -1};
    std::vector<std::string> names{x_names[0], FreshSymbol(), FreshSymbol(), FreshSymbol()};
    std::vector<int64_t> kernel_shape;
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

}  // namespace

const OrtCustomOp* SparseConvOp() {
  static OpShell<SparseConvKernel> op(
      {"DCSparseConv",
       "DCSparseConv",
       kCpuProvider,
       3,
       {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT},
       /*optional_inputs=*/1u << 2,  // B
       /*host_inputs=*/0,
       InferSparseConvShape});
  return &op;
}

}  // namespace onnx_dc
