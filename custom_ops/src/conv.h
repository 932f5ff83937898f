// DCSparseConv on the CPU (src/conv_cpu.cc): a 2-D convolution whose kernel W[M, C, kH, kW] is a payload, run
// as DCSparseGemm's sparse product (gemm.h) of W's matrix view [M, K = C * kH * kW] with the image's patches.
//
// ---- Patches ---------------------------------------------------------------------------------------------------
// Output pixel p = (oh, ow) of an image has the patch vector (k = (c * kH + kh) * kW + kw, the column order of
// the payload's matrix view)
//   patch[k] = X[c, oh * sH - pad_top + kh * dH, ow * sW - pad_left + kw * dW]   (0 outside the image)
// and Y[m, oh, ow] = row m of W . patch (+ B[m]). An image's pixels go in units exactly as DCSparseGemm's batch
// rows do (PlanSpmm with m = OH * OW: 16-pixel tiles, then one 8-pixel tile or one pixel), and a unit's patches
// are written straight into the packed layout the tile kernels read ((K + 1) x width floats, column K zero):
// im2col one unit at a time, never a whole patch matrix. A 1x1 kernel with stride 1 and no padding needs no
// im2col at all: the patches are the image's own pixels, and packing is one contiguous copy per channel.
// The kernels store with YStrides{1, OH * OW}: a unit's pixels of one output channel are contiguous in NCHW.
//
// ---- Summation order ---------------------------------------------------------------------------------------------
// Every output is one DCSparseGemm output (gemm.h's order, per form) of row m and the pixel's patch, computed by
// one kernel call, so results are bit-identical for any thread count, batch size and kernel set, and equal to
// ConvReference (SpmmReference on each patch).
//
// ---- Tasks -------------------------------------------------------------------------------------------------------
// The units of every image of the batch are numbered image-major (unit u = unit u % units of image u / units).
// PackConvUnit(u) writes unit u's patches into its own scratch slot; ConvUnitPart(u, part) computes the outputs
// of one row part (BlockMatrix::parts) of unit u from its slot. Tasks write disjoint outputs and read only X,
// W and their own slot, so they run on any threads in any order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "gemm.h"

namespace onnx_dc {

enum class AutoPad { kNotSet, kValid, kSameUpper, kSameLower };

// ONNX Conv's attributes for the two spatial axes (H, W), as checked by CheckConvAttributes.
struct ConvAttributes {
  int64_t strides[2] = {1, 1};
  int64_t dilations[2] = {1, 1};
  int64_t pads[4] = {0, 0, 0, 0};  // ONNX order: top, left, bottom, right
  AutoPad auto_pad = AutoPad::kNotSet;
};

// An integer-list attribute as the node has it: absent, or its values.
struct IntsAttribute {
  bool present = false;
  std::vector<int64_t> values;
};

// Check ONNX Conv's attributes for a kernel of spatial size kH x kW (from the payload); throws
// std::invalid_argument naming the attribute. group must be 1; kernel_shape, if present, must be [kH, kW];
// pads must not be combined with an auto_pad other than NOTSET (unless all zero), as ONNX Conv requires.
ConvAttributes CheckConvAttributes(const IntsAttribute& strides, const IntsAttribute& pads,
                                   const IntsAttribute& dilations, const std::string& auto_pad, int64_t group,
                                   const IntsAttribute& kernel_shape, uint64_t kh, uint64_t kw);
AutoPad ParseAutoPad(const std::string& text);  // throws std::invalid_argument

// One spatial axis by ONNX Conv's rules: the output size and the padding before the first input element.
// SAME_UPPER / SAME_LOWER: output ceil(in / stride), total padding max(0, (out - 1) * stride + (kernel - 1) *
// dilation + 1 - in), the odd element at the end (UPPER) or the beginning (LOWER) (as onnx.reference does).
// Returns false when the output would have no element or a size does not fit int64.
bool ConvAxis(int64_t in, int64_t kernel, int64_t stride, int64_t dilation, int64_t pad_head, int64_t pad_tail,
              AutoPad mode, int64_t* out, int64_t* head);

// The geometry of one call.
struct ConvShape {
  uint64_t n = 0, c = 0, h = 0, w = 0;  // X [N, C, H, W]
  uint64_t m = 0, kh = 0, kw = 0;       // W [M, C, kH, kW]
  uint64_t oh = 0, ow = 0;              // Y [N, M, OH, OW]
  int64_t pad_top = 0, pad_left = 0;
  int64_t stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1;
  uint64_t pixels() const { return oh * ow; }
  uint64_t k() const { return c * kh * kw; }
  // 1x1 kernel, stride 1, no padding: the patches are the image's own pixels.
  bool pointwise() const {
    return kh == 1 && kw == 1 && stride_h == 1 && stride_w == 1 && pad_top == 0 && pad_left == 0 && oh == h &&
           ow == w;
  }
};

// The kernel, decoded once: the payload (rank 4, [M, C, kH, kW]) in DCSparseGemm's execution format of its
// matrix view [M, C * kH * kW]. Throws PayloadError for a bad payload or one not of rank 4.
struct ConvKernel {
  BlockMatrix w;
  uint64_t m = 0, c = 0, kh = 0, kw = 0;
};
ConvKernel DecodeConvKernel(const uint8_t* data, size_t size, const DecodeOptions& decode = {},
                            const GemmOptions& options = {});

// X's shape (dims, rank) against the kernel and attributes; throws std::invalid_argument for X not of rank
// 4, X's channels != C, or an output without elements (or too large to address).
ConvShape ResolveConvShape(const ConvKernel& kernel, const ConvAttributes& attributes, const int64_t* x_dims,
                           size_t x_rank);

struct ConvPlan {
  ConvShape shape;
  SpmmPlan pixels;         // one image's units of output pixels
  size_t slot_floats = 0;  // scratch of one unit: (K + 1) * 16 floats, a multiple of 16 (64-byte slots)
  size_t parts = 0;        // row parts of W
  uint64_t units() const { return shape.n * pixels.units; }
  uint64_t tasks() const { return units() * parts; }
  // Multiply-adds and copies of the whole call, roughly (to decide whether threads pay).
  uint64_t work = 0;
};
ConvPlan PlanConv(const ConvKernel& kernel, const ConvShape& shape);

// Write unit u's patches into `slot` (64-byte aligned, slot_floats long).
void PackConvUnit(const ConvPlan& plan, const float* x, uint64_t unit, float* slot);
// Outputs of row part `part` of unit u, from its packed slot, into Y [N, M, OH, OW].
void ConvUnitPart(const ConvKernel& kernel, const ConvPlan& plan, const float* slot, const float* bias, float* y,
                  uint64_t unit, size_t part);
// The scalar reference: one pixel at a time, its patch gathered plainly and multiplied by SpmmReference.
void ConvReference(const ConvKernel& kernel, const ConvShape& shape, const float* x, const float* bias, float* y);
// All of it on the calling thread with the fast kernels (allocates its own scratch).
void ConvSerial(const ConvKernel& kernel, const ConvShape& shape, const float* x, const float* bias, float* y);

}  // namespace onnx_dc
