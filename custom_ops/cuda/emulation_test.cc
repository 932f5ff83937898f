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

#include "decode_agreement.h"
#include "decode_plan.h"
#include "gemm.h"
#include "payload.h"
#include "../tests/test_support.h"

namespace {

using onnx_dc::BlockMatrix;
using onnx_dc::DecodeOptions;

using onnx_dc_test::ReadFile;
using onnx_dc_test::Rng;

using onnx_dc_test::DecodeOutcome;

// "" when both sides agree.
std::string Agree(const std::vector<uint8_t>& blob, const DecodeOptions& o, bool* accepted) {
  BlockMatrix w;
  onnx_dc::gpu::HostFormat f;
  const DecodeOutcome c = onnx_dc_test::CpuDecode(blob, o, &w);
  const DecodeOutcome g =
      onnx_dc_test::GpuOutcome([&] { f = onnx_dc::gpu::EmulateGpuDecode(blob.data(), blob.size(), o); });
  *accepted = c.ok;
  const std::string d = onnx_dc_test::DescribeAgreement(c, g, "GPU decoder");
  if (!d.empty() || !c.ok) return d;
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
          const std::vector<uint8_t> b = onnx_dc_test::Mutated(blob, rng);
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
