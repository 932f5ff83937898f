// libFuzzer target for the payload reader and kernels: any byte string must be rejected with PayloadError
// or decode into something the kernels can run on. The checksum is off, so mutations reach the structural
// checks.
//
//   CXX=clang++ cmake -S custom_ops -B build/fuzz -DONNX_DC_BUILD_FUZZER=ON -DONNX_DC_SANITIZE=ON
//       -DONNX_DC_BUILD_ORT_LIBRARY=OFF
//   cmake --build build/fuzz --target fuzz_payload
//   build/fuzz/fuzz_payload -max_len=65536 tests/vectors/      (seed corpus: the checked-in vectors)
//
// Without -fsanitize=fuzzer (e.g. GCC: cmake -DONNX_DC_BUILD_FUZZER=ON) a main() replays the files and
// folders given on the command line through the same function.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "onnx_dc/gemm.h"
#include "onnx_dc/payload.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  onnx_dc::DecodeOptions options;
  options.check_crc = false;
  try {
    const onnx_dc::PayloadInfo info = onnx_dc::ParsePayload(data, size, options);
    if (info.rows() * info.cols() <= (uint64_t{1} << 20)) (void)onnx_dc::DecodeDense(data, size, options);
    if (info.header.rank != 2 || info.cols() >= (uint64_t{1} << 32)) return 0;
    const onnx_dc::SparseMatrix csr = onnx_dc::DecodeSparse(data, size, options);
    // Every kernel set this CPU runs.
    for (const char* kernel : {"scalar", "avx2"}) {
      if (std::string(kernel) == "avx2" && !(onnx_dc::Avx2Kernels() && onnx_dc::CpuHasAvx2())) continue;
      onnx_dc::GemmOptions o;
      o.kernel = kernel;
      const onnx_dc::BlockMatrix w = onnx_dc::BuildBlockMatrix(csr, o);
      if ((w.rows + w.cols) * 17 > (uint64_t{1} << 22)) return 0;
      for (size_t m : {size_t{1}, size_t{9}, size_t{17}}) {
        std::vector<float> x(m * w.cols), bias(w.rows, 1.0f), y(m * w.rows), y_ref(m * w.rows);
        for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7) - 3.0f;
        onnx_dc::SpmmSerial(w, x.data(), m, bias.data(), y.data());
        onnx_dc::SpmmReference(w, x.data(), m, bias.data(), y_ref.data());
        if (std::memcmp(y.data(), y_ref.data(), y.size() * sizeof(float)) != 0) __builtin_trap();  // fast != reference
      }
    }
  } catch (const onnx_dc::PayloadError&) {
  }
  return 0;
}

#ifndef ONNX_DC_LIBFUZZER
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  long runs = 0;
  auto run = [&](const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
    ++runs;
  };
  for (int i = 1; i < argc; ++i) {
    if (fs::is_directory(argv[i])) {
      for (const auto& e : fs::directory_iterator(argv[i]))
        if (e.is_regular_file()) run(e.path());
    } else {
      run(argv[i]);
    }
  }
  std::printf("fuzz_payload: replayed %ld inputs\n", runs);
  return 0;
}
#endif
