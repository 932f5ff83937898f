// onnx_dc_cuda_emulation_test: the GPU decoder's per-chunk and per-row code (gpu_decode.h) and its host
// checks (decode_plan.cc), run on the CPU, against the CPU reader. Needs no CUDA: tests/test_cuda.py builds
// and runs it everywhere, so the decode logic the device runs is tested on machines without a GPU.
//
//   onnx_dc_cuda_emulation_test [--mutations N] [--seed S] PATH...      (files, or folders of *.bin)
//
// For every payload: the emulated GPU decode accepts exactly when the CPU reader (DecodeBlockMatrix,
// sparse form) accepts, with the same error, and then builds exactly the CPU's execution format (row
// starts, columns, block values). Then N random mutations (1 to 4 bytes; checksum off, as the fuzzers)
// of each valid rank-2 payload: both accept or both reject, and accepted ones give the same format. Exit
// status 0 when every check held.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "decode_plan.h"
#include "onnx_dc/gemm.h"
#include "onnx_dc/payload.h"
#include "../tests/test_support.h"

namespace {

using onnx_dc::BlockMatrix;
using onnx_dc::DecodeOptions;

using onnx_dc_test::ReadFile;
using onnx_dc_test::Rng;

struct Outcome {
  bool ok = false;
  bool internal = false;  // std::logic_error: the GPU path rejected what the CPU reader accepts
  std::string error;
};

Outcome Cpu(const std::vector<uint8_t>& blob, const DecodeOptions& o, BlockMatrix* w) {
  Outcome r;
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

Outcome Emulated(const std::vector<uint8_t>& blob, const DecodeOptions& o, onnx_dc::gpu::HostFormat* f) {
  Outcome r;
  try {
    *f = onnx_dc::gpu::EmulateGpuDecode(blob.data(), blob.size(), o);
    r.ok = true;
  } catch (const std::logic_error& e) {
    r.internal = true;
    r.error = e.what();
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  return r;
}

// "" when both sides agree.
std::string Agree(const std::vector<uint8_t>& blob, const DecodeOptions& o, bool* accepted) {
  BlockMatrix w;
  onnx_dc::gpu::HostFormat f;
  const Outcome c = Cpu(blob, o, &w);
  const Outcome g = Emulated(blob, o, &f);
  *accepted = c.ok;
  if (g.internal) return "internal: " + g.error + " [CPU: " + (c.ok ? "accepts" : c.error) + "]";
  if (c.ok != g.ok) return std::string("CPU ") + (c.ok ? "accepts" : "rejects (" + c.error + ")") + ", GPU decoder " +
                           (g.ok ? "accepts" : "rejects (" + g.error + ")");
  if (!c.ok) return c.error == g.error ? "" : "different errors: CPU '" + c.error + "', GPU '" + g.error + "'";
  return onnx_dc::gpu::CompareWithCpuFormat(f, w);
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t mutations = 0, seed = 1;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--mutations" && i + 1 < argc)
      mutations = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--seed" && i + 1 < argc)
      seed = std::strtoull(argv[++i], nullptr, 10);
    else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "usage: onnx_dc_cuda_emulation_test [--mutations N] [--seed S] PATH...\n");
      return 2;
    } else
      paths.push_back(a);
  }
  size_t failures = 0, checks = 0, files = 0;
  Rng rng{seed * 0x9E3779B97F4A7C15ull + 1};
  try {
    for (const std::string& p : paths) {
      for (const std::string& file : onnx_dc_test::ExpandPaths({p})) {
        ++files;
        const std::vector<uint8_t> blob = ReadFile(file);
        bool accepted = false;
        ++checks;
        const std::string d = Agree(blob, DecodeOptions{}, &accepted);
        if (!d.empty()) {
          ++failures;
          std::printf("FAIL %s: %s\n", file.c_str(), d.c_str());
          continue;
        }
        if (!accepted || mutations == 0) {
          std::printf("ok   %s (%s)\n", file.c_str(), accepted ? "accepted" : "rejected by both");
          continue;
        }
        DecodeOptions no_crc;
        no_crc.check_crc = false;
        size_t acc = 0, bad = 0;
        for (uint64_t m = 0; m < mutations; ++m) {
          std::vector<uint8_t> b = blob;
          const uint64_t nbytes = 1 + rng.Below(4);
          for (uint64_t k = 0; k < nbytes; ++k) {
            // Half the changes in the first 512 bytes (header, tables, chunk table), half anywhere.
            const uint64_t span = rng.Below(2) ? std::min<uint64_t>(b.size(), 512) : b.size();
            const uint64_t at = rng.Below(span);
            if (at < 16) continue;  // identification and total_size: rejected before anything else
            b[at] = rng.Below(3) == 0 ? static_cast<uint8_t>(b[at] ^ (1u << rng.Below(8)))
                                      : static_cast<uint8_t>(rng.Next());
          }
          bool ok = false;
          ++checks;
          const std::string md = Agree(b, no_crc, &ok);
          acc += ok;
          if (!md.empty()) {
            ++failures;
            ++bad;
            if (bad <= 5) std::printf("FAIL %s mutation %llu: %s\n", file.c_str(), static_cast<unsigned long long>(m),
                                      md.c_str());
          }
        }
        std::printf("%s %s (accepted; %llu mutations: %zu accepted, %zu disagreements)\n", bad ? "FAIL" : "ok  ",
                    file.c_str(), static_cast<unsigned long long>(mutations), acc, bad);
      }
    }
  } catch (const std::exception& e) {
    std::printf("FAIL %s\n", e.what());
    return 1;
  }
  std::printf("%s: %zu files, %zu checks, %zu failures\n", failures ? "FAILED" : "PASSED", files, checks, failures);
  return failures ? 1 : 0;
}
