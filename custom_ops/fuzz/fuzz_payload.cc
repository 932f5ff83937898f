// libFuzzer target for the payload reader and kernels: any byte string must be rejected with PayloadError
// or decode into something the kernels can run on. The checksum is off (DecodeOptions::check_crc), so
// mutations reach the structural checks.
//
// Every input runs once as it is and, when its header's total_size is not its length (most mutations that
// insert or delete bytes), once more with total_size patched to the length, so that such mutations get
// past the length check to the sections behind it. The checksum is checked once, on the input as it is.
// What is checked beyond "no crash, no sanitizer report, no unbounded allocation":
//   - DecodeDense agrees with DecodeSparse (the dense tensor is the CSR scattered), where both run, and
//     refuses (max_elements) a tensor of more than 2^20 elements before allocating it;
//   - every kernel set this CPU runs (scalar, AVX2), in both execution forms (sparse blocks, dense),
//     equals the scalar reference bit for bit, for batch sizes 1, 5, 9 and 20 (the vector kernel, an
//     8-row tile, a 16-row tile holding 9 rows, 16 + an 8-row tile), with at most 1, 2, 3, 7 or 64 row
//     parts (taken from the input) and the partition checked;
//   - a rank-4 payload with a small kernel runs DCSparseConv (padding, a stride taken from the input): the
//     fast path equals ConvReference bit for bit.
//
// scripts/fuzz.sh [SECONDS] builds it (clang, -fsanitize=fuzzer,address,undefined, into build/fuzz) and runs
// it on the seed corpus custom_ops/fuzz/corpus/ (custom_ops/fuzz/make_corpus.py) and tests/vectors/. By hand:
//   CXX=clang++ cmake -S custom_ops -B build/fuzz -DONNX_DC_BUILD_FUZZER=ON -DONNX_DC_SANITIZE=ON
//       -DONNX_DC_BUILD_ORT_LIBRARY=OFF
//   cmake --build build/fuzz --target fuzz_payload
//   build/fuzz/fuzz_payload -max_len=131072 build/fuzz/corpus custom_ops/fuzz/corpus tests/vectors
//
// Without -fsanitize=fuzzer (e.g. GCC: cmake -DONNX_DC_BUILD_FUZZER=ON) a main() replays the files and
// folders given on the command line through the same function (tests/test_native_corruption.py).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "conv.h"
#include "gemm.h"
#include "payload.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {  // memcmp must not see null pointers
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

constexpr uint64_t kMaxDense = uint64_t{1} << 20;  // elements of a dense tensor decoded here

// DCSparseConv on a rank-4 payload with a small kernel: the fast path (patches packed per unit, with padding and
// a stride that max_parts varies) equals ConvReference bit for bit.
void RunConv(const uint8_t* data, size_t size, const onnx_dc::DecodeOptions& options, const onnx_dc::PayloadInfo& info,
             size_t max_parts) {
  const uint64_t m = info.dims[0], c = info.dims[1], kh = info.dims[2], kw = info.dims[3];
  if (kh == 0 || kw == 0 || kh > 8 || kw > 8 || m > 64 || c > 16) return;
  onnx_dc::GemmOptions o;
  o.max_parts = max_parts;
  const onnx_dc::ConvKernel k = onnx_dc::DecodeConvKernel(data, size, options, o);
  const onnx_dc::IntsAttribute strides{true, {static_cast<int64_t>(1 + max_parts % 2), 1}}, pads{true, {1, 0, 0, 2}};
  const onnx_dc::ConvAttributes a = onnx_dc::CheckConvAttributes(strides, pads, {}, "NOTSET", 1, {}, kh, kw);
  const int64_t x_dims[4] = {2, static_cast<int64_t>(c), static_cast<int64_t>(kh + 4), static_cast<int64_t>(kw + 3)};
  const onnx_dc::ConvShape shape = onnx_dc::ResolveConvShape(k, a, x_dims, 4);  // never empty: input >= kernel
  std::vector<float> x(2 * c * (kh + 4) * (kw + 3)), bias(m, 0.5f), y(2 * m * shape.pixels()), y_ref(y.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 5) - 2.0f;
  onnx_dc::ConvSerial(k, shape, x.data(), bias.data(), y.data());
  onnx_dc::ConvReference(k, shape, x.data(), bias.data(), y_ref.data());
  Check(SameBits(y, y_ref));
}

void RunOne(const uint8_t* data, size_t size, size_t max_parts) {
  onnx_dc::DecodeOptions options;
  options.check_crc = false;
  try {
    const onnx_dc::PayloadInfo info = onnx_dc::ParsePayload(data, size, options);
    const bool small = info.rows() * info.cols() <= kMaxDense;
    onnx_dc::DenseTensor dense;
    if (small) {
      dense = onnx_dc::DecodeDense(data, size, options);
    } else {
      bool refused = false;  // a larger tensor must be refused by the cap, before anything is allocated
      try {
        (void)onnx_dc::DecodeDense(data, size, options, kMaxDense);
      } catch (const onnx_dc::PayloadError&) {
        refused = true;
      }
      Check(refused);
    }
    if (info.header.rank == 4) return RunConv(data, size, options, info, max_parts);
    if (info.header.rank != 2 || info.cols() >= (uint64_t{1} << 32)) return;
    const onnx_dc::SparseMatrix csr = onnx_dc::DecodeSparse(data, size, options);
    // The two decoded forms agree: the dense tensor is the CSR scattered.
    Check(csr.rows == info.rows() && csr.cols == info.cols() && csr.nnz == info.nnz());
    if (small) {
      std::vector<float> scattered(dense.values.size(), 0.0f);
      for (uint64_t r = 0; csr.nnz && r < csr.rows; ++r)
        for (uint64_t e = csr.row_ptr[r]; e < csr.row_ptr[r + 1]; ++e)
          scattered[r * csr.cols + csr.column(e)] = csr.codebook[csr.cluster[e]];
      Check(SameBits(scattered, dense.values));
    }
    // Every kernel set this CPU runs, in both execution forms (sparse blocks; dense where the density allows:
    // the dense form is refused, i.e. sparse blocks are built, below a density of 1/16).
    for (const char* kernel : {"scalar", "avx2"}) {
      if (std::string(kernel) == "avx2" && !(onnx_dc::Avx2Kernels() && onnx_dc::CpuHasAvx2())) continue;
      for (const char* form : {"sparse", "dense"}) {
        onnx_dc::GemmOptions o;
        o.kernel = kernel;
        o.form = form;
        o.max_parts = max_parts;
        const onnx_dc::BlockMatrix w = onnx_dc::BuildBlockMatrix(csr, o);
        Check(w.rows == csr.rows && w.cols == csr.cols && w.nnz == csr.nnz);
        Check(w.form == onnx_dc::Form::kSparseBlocks || csr.nnz * 16 >= csr.rows * csr.cols);
        // The row partition: from 0 to N, increasing, at most max_parts parts.
        Check(!w.parts.empty() && w.parts.front() == 0 && w.parts.back() == w.rows);
        Check(w.parts.size() <= max_parts + 1);
        for (size_t p = 1; p < w.parts.size(); ++p) Check(w.parts[p - 1] < w.parts[p]);
        // Products only where they stay cheap: the X and Y buffers, and the work per batch row.
        const uint64_t work = w.form == onnx_dc::Form::kDense ? w.rows * w.cols : w.slots() + w.rows;
        if ((w.rows + w.cols) * 21 > (uint64_t{1} << 22) || work > (uint64_t{1} << 18)) continue;
        // 1: the vector kernel; 5: an 8-row tile; 9: a 16-row tile holding 9 rows; 20: 16 + an 8-row tile.
        for (size_t m : {size_t{1}, size_t{5}, size_t{9}, size_t{20}}) {
          std::vector<float> x(m * w.cols), bias(w.rows, 1.0f), y(m * w.rows), y_ref(m * w.rows);
          for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7) - 3.0f;
          onnx_dc::SpmmSerial(w, x.data(), m, bias.data(), y.data());
          onnx_dc::SpmmReference(w, x.data(), m, bias.data(), y_ref.data());
          Check(SameBits(y, y_ref));  // fast == reference
        }
      }
    }
  } catch (const onnx_dc::PayloadError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {  // the checksum itself (over whatever length the header's identification lets through)
    (void)onnx_dc::ParsePayload(data, size);
  } catch (const onnx_dc::PayloadError&) {
  }
  static constexpr size_t kParts[] = {64, 1, 2, 3, 7};
  const size_t max_parts = kParts[size % 5];
  RunOne(data, size, max_parts);
  if (size >= 16) {
    uint64_t total = 0;
    for (int i = 0; i < 8; ++i) total |= static_cast<uint64_t>(data[8 + i]) << (8 * i);
    if (total != size) {
      std::vector<uint8_t> copy(data, data + size);  // exactly `size` bytes: ASan sees any overread
      for (int i = 0; i < 8; ++i) copy[8 + i] = static_cast<uint8_t>(static_cast<uint64_t>(size) >> (8 * i));
      RunOne(copy.data(), copy.size(), max_parts);
    }
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
