// What the GPU decoder's test programs share (cuda/emulation_test.cc, cuda/harness.cu): the outcome of one
// decode, the CPU reader's decode they hold the GPU path to, the verdict on a pair of outcomes, and the
// random mutation both apply.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "gemm.h"
#include "payload.h"
#include "../tests/test_support.h"

namespace onnx_dc_test {

struct DecodeOutcome {
  bool ok = false;
  bool internal = false;  // std::logic_error: the GPU path rejected what the CPU reader accepts
  std::string error;
};

// The CPU reader's verdict (and, accepted, its execution format: scalar kernels, sparse form).
inline DecodeOutcome CpuDecode(const std::vector<uint8_t>& blob, const onnx_dc::DecodeOptions& o,
                               onnx_dc::BlockMatrix* w) {
  DecodeOutcome r;
  try {
    onnx_dc::GemmOptions g;
    g.kernel = "scalar";
    g.form = "sparse";
    *w = onnx_dc::DecodeBlockMatrix(blob.data(), blob.size(), o, g);
    r.ok = true;
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  return r;
}

// The GPU path's verdict: decode() run, its exception the error. Passthrough propagates (a failure that is
// no verdict on the payload, such as a CUDA error).
struct NoPassthrough {};
template <typename Passthrough = NoPassthrough, typename F>
DecodeOutcome GpuOutcome(F&& decode) {
  DecodeOutcome r;
  try {
    decode();
    r.ok = true;
  } catch (const Passthrough&) {
    throw;
  } catch (const std::logic_error& e) {
    r.internal = true;
    r.error = e.what();
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  return r;
}

// "" when both accept, or both reject with the same message; else what differs (`gpu` names the GPU side).
inline std::string DescribeAgreement(const DecodeOutcome& c, const DecodeOutcome& g, const char* gpu) {
  if (g.internal) return "internal: " + g.error + " [CPU: " + (c.ok ? "accepts" : c.error) + "]";
  if (c.ok != g.ok)
    return std::string("CPU ") + (c.ok ? "accepts" : "rejects (" + c.error + ")") + ", " + gpu + " " +
           (g.ok ? "accepts" : "rejects (" + g.error + ")");
  if (!c.ok && c.error != g.error) return "different errors: CPU '" + c.error + "', GPU '" + g.error + "'";
  return "";
}

// A random mutation of 1 to 4 bytes (checksum not fixed: decode with check_crc off): half the changes in the
// first 512 bytes (header, tables, chunk table), half anywhere; never the identification and total_size
// (rejected before anything else).
inline std::vector<uint8_t> Mutated(const std::vector<uint8_t>& blob, Rng& rng) {
  std::vector<uint8_t> b = blob;
  const uint64_t nbytes = 1 + rng.Below(4);
  for (uint64_t k = 0; k < nbytes; ++k) {
    const uint64_t span = rng.Below(2) ? std::min<uint64_t>(b.size(), 512) : b.size();
    const uint64_t at = rng.Below(span);
    if (at < 16) continue;
    b[at] = rng.Below(3) == 0 ? static_cast<uint8_t>(b[at] ^ (1u << rng.Below(8))) : static_cast<uint8_t>(rng.Next());
  }
  return b;
}

}  // namespace onnx_dc_test
