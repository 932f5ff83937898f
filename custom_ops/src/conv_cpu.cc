// DCSparseConv on the CPU (conv.h): attributes and geometry by ONNX Conv's rules, the kernel decoded into
// DCSparseGemm's execution format, patches packed one unit at a time, and the tasks the onnxruntime kernel runs.
#include "conv.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

namespace onnx_dc {

namespace {

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

std::string List(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

void Invalid(const std::string& message) { throw std::invalid_argument(message); }

}  // namespace

// ---- attributes and geometry -------------------------------------------------------------------------------

AutoPad ParseAutoPad(const std::string& text) {
  if (text.empty() || text == "NOTSET") return AutoPad::kNotSet;
  if (text == "VALID") return AutoPad::kValid;
  if (text == "SAME_UPPER") return AutoPad::kSameUpper;
  if (text == "SAME_LOWER") return AutoPad::kSameLower;
  Invalid("auto_pad is '" + text + "'; it must be NOTSET, VALID, SAME_UPPER or SAME_LOWER");
  return AutoPad::kNotSet;
}

ConvAttributes CheckConvAttributes(const IntsAttribute& strides, const IntsAttribute& pads,
                                   const IntsAttribute& dilations, const std::string& auto_pad, int64_t group,
                                   const IntsAttribute& kernel_shape, uint64_t kh, uint64_t kw) {
  ConvAttributes a;
  if (group != 1)
    Invalid("group = " + std::to_string(group) + " is not supported: DCSparseConv runs ungrouped convolutions "
            "(group = 1) only");
  a.auto_pad = ParseAutoPad(auto_pad);
  auto pair = [](const IntsAttribute& attr, const char* name, int64_t* out) {
    if (!attr.present) return;
    if (attr.values.size() != 2)
      Invalid(std::string(name) + " must have 2 values (H, W), got " + List(attr.values));
    for (size_t i = 0; i < 2; ++i) {
      if (attr.values[i] < 1) Invalid(std::string(name) + " must be >= 1, got " + List(attr.values));
      out[i] = attr.values[i];
    }
  };
  pair(strides, "strides", a.strides);
  pair(dilations, "dilations", a.dilations);
  if (pads.present) {
    if (pads.values.size() != 4)
      Invalid("pads must have 4 values (top, left, bottom, right), got " + List(pads.values));
    for (size_t i = 0; i < 4; ++i) {
      if (pads.values[i] < 0) Invalid("pads must be >= 0, got " + List(pads.values));
      a.pads[i] = pads.values[i];
    }
    const bool any = a.pads[0] || a.pads[1] || a.pads[2] || a.pads[3];
    if (any && a.auto_pad != AutoPad::kNotSet)
      Invalid("pads " + List(pads.values) + " cannot be combined with auto_pad = " + auto_pad +
              " (ONNX Conv: pads only with auto_pad NOTSET)");
  }
  if (kernel_shape.present) {
    const std::vector<int64_t> want{static_cast<int64_t>(kh), static_cast<int64_t>(kw)};
    if (kernel_shape.values != want)
      Invalid("kernel_shape " + List(kernel_shape.values) + " differs from the payload's kernel " + List(want));
  }
  return a;
}

bool ConvAxis(int64_t in, int64_t kernel, int64_t stride, int64_t dilation, int64_t pad_head, int64_t pad_tail,
              AutoPad mode, int64_t* out, int64_t* head) {
  // 128-bit arithmetic: every attribute is an arbitrary int64.
  using I = __int128;
  if (in < 0 || kernel < 1 || stride < 1 || dilation < 1 || pad_head < 0 || pad_tail < 0) return false;
  const I extent = (I(kernel) - 1) * dilation + 1;  // the dilated kernel
  I o = 0, h = 0;
  if (mode == AutoPad::kSameUpper || mode == AutoPad::kSameLower) {
    o = (I(in) + stride - 1) / stride;
    const I total = std::max<I>(0, (o - 1) * stride + extent - in);
    h = mode == AutoPad::kSameLower ? (total + 1) / 2 : total / 2;
    if (I(in) + total > kInt64Max) return false;
  } else {
    if (mode == AutoPad::kNotSet) {
      h = pad_head;
      const I padded = I(in) + pad_head + pad_tail;
      if (padded > kInt64Max) return false;
      if (padded < extent) return false;
      o = (padded - extent) / stride + 1;
    } else {  // VALID
      if (in < extent) return false;
      o = (I(in) - extent) / stride + 1;
    }
  }
  if (o < 1 || o > kInt64Max || extent > kInt64Max) return false;
  *out = static_cast<int64_t>(o);
  *head = static_cast<int64_t>(h);
  return true;
}

ConvKernel DecodeConvKernel(const uint8_t* data, size_t size, const DecodeOptions& decode, const GemmOptions& options) {
  (void)ResolveKernel(options.kernel);  // a bad request fails before the (longer) decode
  const PayloadInfo info = ParsePayload(data, size, decode);
  if (info.header.rank != 4)
    throw PayloadError("DCSparseConv needs a rank-4 payload [M, C, kH, kW], this one has rank " +
                       std::to_string(info.header.rank));
  ConvKernel k;
  k.m = info.dims[0];
  k.c = info.dims[1];
  k.kh = info.dims[2];
  k.kw = info.dims[3];
  if (k.kh == 0 || k.kw == 0) throw PayloadError("DCSparseConv needs a kernel of at least 1 x 1");
  if (k.m > static_cast<uint64_t>(kInt64Max) || k.kh > static_cast<uint64_t>(kInt64Max) ||
      k.kw > static_cast<uint64_t>(kInt64Max))
    throw PayloadError("a dimension of the payload exceeds int64");
  k.w = BuildBlockMatrix(DecodeSparse(data, info), options);
  return k;
}

ConvShape ResolveConvShape(const ConvKernel& kernel, const ConvAttributes& a, const int64_t* x, size_t rank) {
  if (rank != 4) Invalid("X must be 4-D [N, C, H, W], got rank " + std::to_string(rank));
  for (size_t i = 0; i < 4; ++i)
    if (x[i] < 0) Invalid("X has an invalid shape");
  ConvShape s;
  s.n = static_cast<uint64_t>(x[0]);
  s.c = static_cast<uint64_t>(x[1]);
  s.h = static_cast<uint64_t>(x[2]);
  s.w = static_cast<uint64_t>(x[3]);
  s.m = kernel.m;
  s.kh = kernel.kh;
  s.kw = kernel.kw;
  if (s.c != kernel.c)
    Invalid("X has " + std::to_string(s.c) + " channels but the kernel [M, C, kH, kW] = [" + std::to_string(kernel.m) +
            ", " + std::to_string(kernel.c) + ", " + std::to_string(kernel.kh) + ", " + std::to_string(kernel.kw) +
            "] needs C = " + std::to_string(kernel.c));
  s.stride_h = a.strides[0];
  s.stride_w = a.strides[1];
  s.dilation_h = a.dilations[0];
  s.dilation_w = a.dilations[1];
  int64_t oh = 0, ow = 0;
  const bool ok_h = ConvAxis(x[2], static_cast<int64_t>(s.kh), s.stride_h, s.dilation_h, a.pads[0], a.pads[2],
                             a.auto_pad, &oh, &s.pad_top);
  const bool ok_w = ConvAxis(x[3], static_cast<int64_t>(s.kw), s.stride_w, s.dilation_w, a.pads[1], a.pads[3],
                             a.auto_pad, &ow, &s.pad_left);
  if (!ok_h || !ok_w)
    Invalid("the output would be empty or overflow int64: input " + std::to_string(x[2]) + " x " +
            std::to_string(x[3]) + ", kernel " + std::to_string(s.kh) + " x " + std::to_string(s.kw) + ", strides [" +
            std::to_string(a.strides[0]) + ", " + std::to_string(a.strides[1]) + "], dilations [" +
            std::to_string(a.dilations[0]) + ", " + std::to_string(a.dilations[1]) + "] and the padding give an " +
            "output size of " + (ok_h ? std::to_string(oh) : std::string("invalid")) + " x " +
            (ok_w ? std::to_string(ow) : std::string("invalid")));
  s.oh = static_cast<uint64_t>(oh);
  s.ow = static_cast<uint64_t>(ow);
  // Y's element count and every index into X and Y must fit: N * M * OH * OW and N * C * H * W < 2^62.
  uint64_t y_elems = 0, x_elems = 0;
  if (__builtin_mul_overflow(s.oh, s.ow, &y_elems) || __builtin_mul_overflow(y_elems, s.m, &y_elems) ||
      __builtin_mul_overflow(y_elems, s.n, &y_elems) || y_elems > (uint64_t{1} << 62))
    Invalid("the output is too large");
  if (__builtin_mul_overflow(s.h, s.w, &x_elems) || __builtin_mul_overflow(x_elems, s.c, &x_elems) ||
      __builtin_mul_overflow(x_elems, s.n, &x_elems) || x_elems > (uint64_t{1} << 62))
    Invalid("X is too large");
  return s;
}

// ---- tasks -------------------------------------------------------------------------------------------------

ConvPlan PlanConv(const ConvKernel& kernel, const ConvShape& shape) {
  ConvPlan plan;
  plan.shape = shape;
  plan.pixels = PlanSpmm(kernel.w, static_cast<size_t>(shape.pixels()));
  const uint64_t k = shape.k();
  if (k >= (uint64_t{1} << 40)) throw std::bad_alloc();  // a slot could not be allocated anyway
  plan.slot_floats = static_cast<size_t>((k + 1) * 16);
  plan.parts = kernel.w.parts.empty() ? 0 : kernel.w.parts.size() - 1;
  // Per pixel: the packed patch (K + 1) and, per output, its slots (or K for the dense form) + 1. Saturates.
  const uint64_t per_output = kernel.w.form == Form::kDense ? k : kernel.w.slots() / std::max<uint64_t>(1, shape.m);
  uint64_t per_pixel = 0, work = 0;
  if (__builtin_mul_overflow(shape.m, per_output + 1, &per_pixel) ||
      __builtin_add_overflow(per_pixel, k + 1, &per_pixel) ||
      __builtin_mul_overflow(per_pixel, shape.pixels() * shape.n, &work))
    work = ~uint64_t{0};
  plan.work = work;
  return plan;
}

void PackConvUnit(const ConvPlan& plan, const float* x, uint64_t unit, float* slot) {
  const ConvShape& s = plan.shape;
  const uint64_t image = unit / plan.pixels.units;
  const size_t u = static_cast<size_t>(unit % plan.pixels.units);
  const size_t width = plan.pixels.unit_width(u), rows = plan.pixels.unit_rows(u);
  const uint64_t p0 = plan.pixels.unit_first_row(u);
  const uint64_t plane = s.h * s.w, k = s.k();
  const float* xi = x + image * s.c * plane;
  // Column K (the zero column the padding slots of W point at) and the lanes past the unit's pixels are zero.
  if (rows < width)
    std::memset(slot, 0, (k + 1) * width * sizeof(float));
  else
    std::memset(slot + k * width, 0, width * sizeof(float));
  if (s.pointwise()) {
    for (uint64_t c = 0; c < s.c; ++c) std::memcpy(slot + c * width, xi + c * plane + p0, rows * sizeof(float));
    return;
  }
  // The unit's pixels as runs along output rows (one run per output row it touches; 1 or 2 when OW >= 16):
  // within a run, lane t + 1's window is lane t's moved by the column stride, so each (tap, run) is one
  // strided copy with zeros where it leaves the image, not 16 lookups with bounds checks.
  struct Run {
    size_t lane, length;
    int64_t top, left;  // input coordinates of the first lane's window (may lie in the padding)
  };
  Run runs[16];
  size_t n_runs = 0;
  for (size_t b = 0; b < rows;) {
    const uint64_t p = p0 + b, oh = p / s.ow, ow = p % s.ow;
    const size_t length = static_cast<size_t>(std::min<uint64_t>(rows - b, s.ow - ow));
    runs[n_runs++] = {b, length, static_cast<int64_t>(oh) * s.stride_h - s.pad_top,
                      static_cast<int64_t>(ow) * s.stride_w - s.pad_left};
    b += length;
  }
  const int64_t h_in = static_cast<int64_t>(s.h), w_in = static_cast<int64_t>(s.w), sw = s.stride_w;
  for (uint64_t c = 0; c < s.c; ++c) {
    const float* xc = xi + c * plane;
    for (uint64_t i = 0; i < s.kh; ++i) {
      float* tap_row = slot + (c * s.kh + i) * s.kw * width;  // column k = (c * kH + i) * kW + j
      for (size_t r = 0; r < n_runs; ++r) {
        const Run& run = runs[r];
        const int64_t ih = run.top + static_cast<int64_t>(i) * s.dilation_h;
        if (ih < 0 || ih >= h_in) {  // the whole run reads padding rows
          for (uint64_t j = 0; j < s.kw; ++j) std::memset(tap_row + j * width + run.lane, 0, run.length * sizeof(float));
          continue;
        }
        const float* x_row = xc + ih * w_in;
        const int64_t len = static_cast<int64_t>(run.length);
        for (uint64_t j = 0; j < s.kw; ++j) {
          float* d = tap_row + j * width + run.lane;
          const int64_t iw = run.left + static_cast<int64_t>(j) * s.dilation_w;  // lane 0's input column
          // Lanes [lo, hi) read inside the image: 0 <= iw + t * sw < W (no divisions in the common cases).
          int64_t lo = 0, hi = len;
          if (iw < 0 || iw + (len - 1) * sw >= w_in) {
            if (sw == 1) {
              lo = iw >= 0 ? 0 : -iw;
              hi = w_in - iw;
            } else {
              lo = iw >= 0 ? 0 : (-iw + sw - 1) / sw;
              hi = iw < w_in ? (w_in - iw + sw - 1) / sw : 0;
            }
            hi = std::max<int64_t>(0, std::min(hi, len));
            lo = std::min(lo, hi);
          }
          for (int64_t t = 0; t < lo; ++t) d[t] = 0.0f;
          if (sw == 1) {
            const float* src = x_row + iw;
            for (int64_t t = lo; t < hi; ++t) d[t] = src[t];
          } else {
            for (int64_t t = lo; t < hi; ++t) d[t] = x_row[iw + t * sw];
          }
          for (int64_t t = hi; t < len; ++t) d[t] = 0.0f;
        }
      }
    }
  }
}

void ConvUnitPart(const ConvKernel& kernel, const ConvPlan& plan, const float* slot, const float* bias, float* y,
                  uint64_t unit, size_t part) {
  const ConvShape& s = plan.shape;
  const uint64_t image = unit / plan.pixels.units;
  const size_t u = static_cast<size_t>(unit % plan.pixels.units);
  const uint64_t pixels = s.pixels();
  float* yu = y + image * s.m * pixels + plan.pixels.unit_first_row(u);
  RunPacked(kernel.w, slot, plan.pixels.unit_width(u), plan.pixels.unit_rows(u), bias, yu, YStrides{1, pixels},
            kernel.w.parts[part], kernel.w.parts[part + 1]);
}

void ConvReference(const ConvKernel& kernel, const ConvShape& s, const float* x, const float* bias, float* y) {
  const uint64_t k = s.k(), pixels = s.pixels(), plane = s.h * s.w;
  std::vector<float> patch(k + 1), out(s.m);
  for (uint64_t n = 0; n < s.n; ++n) {
    for (uint64_t p = 0; p < pixels; ++p) {
      const int64_t oh = static_cast<int64_t>(p / s.ow), ow = static_cast<int64_t>(p % s.ow);
      for (uint64_t c = 0, col = 0; c < s.c; ++c)
        for (uint64_t i = 0; i < s.kh; ++i)
          for (uint64_t j = 0; j < s.kw; ++j, ++col) {
            const int64_t ih = oh * s.stride_h - s.pad_top + static_cast<int64_t>(i) * s.dilation_h;
            const int64_t iw = ow * s.stride_w - s.pad_left + static_cast<int64_t>(j) * s.dilation_w;
            const bool inside = ih >= 0 && iw >= 0 && ih < static_cast<int64_t>(s.h) && iw < static_cast<int64_t>(s.w);
            patch[col] = inside ? x[(n * s.c + c) * plane + static_cast<uint64_t>(ih) * s.w + static_cast<uint64_t>(iw)]
                                : 0.0f;
          }
      SpmmReference(kernel.w, patch.data(), 1, bias, out.data());
      for (uint64_t m = 0; m < s.m; ++m) y[(n * s.m + m) * pixels + p] = out[m];
    }
  }
}

void ConvSerial(const ConvKernel& kernel, const ConvShape& shape, const float* x, const float* bias, float* y) {
  const ConvPlan plan = PlanConv(kernel, shape);
  AlignedFloats slot(plan.slot_floats);
  for (uint64_t u = 0; u < plan.units(); ++u) {
    PackConvUnit(plan, x, u, slot.data());
    for (size_t part = 0; part < plan.parts; ++part) ConvUnitPart(kernel, plan, slot.data(), bias, y, u, part);
  }
}

}  // namespace onnx_dc
