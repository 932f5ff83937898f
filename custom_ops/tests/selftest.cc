// onnx_dc_selftest: the payload reader and kernels against valid payloads (written by the Python writer)
// and systematically corrupted copies of them. Built with -DONNX_DC_BUILD_TESTS=ON, and under
// AddressSanitizer + UBSan with -DONNX_DC_SANITIZE=ON, where any out-of-bounds access or undefined
// behaviour aborts the run.
//
//   onnx_dc_selftest [--random N] [--seed S] PAYLOAD...
//
// For every payload file:
//   1. it decodes (checksum on) to a dense tensor and, for rank 2, to the execution format; both agree;
//      the fast kernels are bit-identical to the scalar reference for several batch sizes, with and
//      without bias, and the reference matches a float64 dense product;
//   2. every truncation is rejected (checksum on and off);
//   3. every single-byte change (3 masks per byte, all bytes up to 4 KiB, sampled beyond) is rejected
//      with the checksum on; with it off the decoder rejects it or returns a tensor on which (1) holds;
//   4. header fields, dims and chunk-table entries set to boundary values (checksum recomputed) are
//      rejected or decode consistently;
//   5. N random multi-byte mutations (checksum off, and recomputed) likewise.
// Rank-4 payloads also run DCSparseConv (fast path == ConvReference bit for bit for every kernel set and form,
// over geometries with strides, padding, dilation and SAME padding; the reference close to a float64 direct
// convolution); rank-2 payloads also run DCGather (every row, by positive and negative index, equals the dense
// decode).
// Exit status 0 when every check held; the last line counts the checks.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "conv.h"
#include "gather.h"
#include "gemm.h"
#include "payload.h"
#include "test_support.h"

namespace {

using onnx_dc::DecodeOptions;
using onnx_dc::PayloadError;

constexpr uint64_t kMaxDense = uint64_t{1} << 22;  // mutated dims may be legal but huge: cap what we build

using onnx_dc_test::Rng;

struct Tally {
  long passed = 0, failed = 0;
  void Check(bool ok, const std::string& what) {
    if (ok) {
      ++passed;
    } else {
      ++failed;
      if (failed <= 50) std::fprintf(stderr, "FAILED: %s\n", what.c_str());
    }
  }
};

void FixCrc(std::vector<uint8_t>& b) {
  if (b.size() < 4) return;
  const uint32_t crc = onnx_dc::Crc32(b.data(), b.size() - 4);
  for (int i = 0; i < 4; ++i) b[b.size() - 4 + i] = static_cast<uint8_t>(crc >> (8 * i));
}

// The execution format holds exactly the CSR's entries: per row, blocks of one cluster each (one weight),
// padding = column K, every entry once; and a valid partition.
bool BlocksMatch(const onnx_dc::SparseMatrix& w, const onnx_dc::BlockMatrix& b, const std::vector<float>& dense,
                 std::string* why) {
  if (b.rows != w.rows || b.cols != w.cols || b.nnz != w.nnz) return *why = "block matrix dims", false;
  if (b.parts.empty() || b.parts.front() != 0 || b.parts.back() != b.rows) return *why = "partition", false;
  for (size_t p = 1; p < b.parts.size(); ++p)
    if (b.parts[p] <= b.parts[p - 1]) return *why = "partition not increasing", false;
  if (b.weight.size() != b.blocks + onnx_dc::kBlock) return *why = "weight size", false;
  if (b.form == onnx_dc::Form::kDense) {
    const uint64_t panels = (b.rows + onnx_dc::kPanel - 1) / onnx_dc::kPanel;
    if (b.dense.size() != panels * b.cols * onnx_dc::kPanel || b.blocks != 0) return *why = "dense size", false;
    for (size_t p = 1; p < b.parts.size(); ++p)
      if (b.parts[p] % onnx_dc::kPanel && b.parts[p] != b.rows) return *why = "dense part not on a panel edge", false;
    for (uint64_t r = 0; r < panels * onnx_dc::kPanel; ++r)
      for (uint64_t c = 0; c < b.cols; ++c) {
        const float v = b.dense[(r / onnx_dc::kPanel) * b.cols * onnx_dc::kPanel + c * onnx_dc::kPanel + r % onnx_dc::kPanel];
        const float want = r < b.rows ? dense[r * b.cols + c] : 0.0f;
        if (std::memcmp(&v, &want, sizeof v) != 0) return *why = "dense form differs from the dense decode", false;
      }
    return true;
  }
  if (w.nnz == 0 || w.rows == 0) return b.blocks == 0 ? true : (*why = "blocks without entries", false);
  if (b.row_block.size() != b.rows + 1 || b.row_block.front() != 0 || b.row_block.back() != b.blocks)
    return *why = "row_block", false;
  std::vector<float> scattered(w.rows * w.cols, 0.0f);
  std::vector<uint8_t> seen(w.rows * w.cols, 0);
  uint64_t real = 0;
  for (uint64_t r = 0; r < b.rows; ++r) {
    if (b.row_block[r + 1] < b.row_block[r]) return *why = "row_block decreasing", false;
    for (uint64_t i = b.row_block[r]; i < b.row_block[r + 1]; ++i) {
      int used = 0;
      for (size_t u = 0; u < onnx_dc::kBlock; ++u) {
        const uint64_t c = b.wide() ? b.col32[i * onnx_dc::kBlock + u] : b.col16[i * onnx_dc::kBlock + u];
        if (c == b.cols) continue;
        if (c > b.cols) return *why = "column out of range", false;
        if (seen[r * w.cols + c]++) return *why = "an entry appears twice", false;
        scattered[r * w.cols + c] = b.weight[i];
        ++used;
        ++real;
      }
      if (used == 0) return *why = "an empty block", false;
    }
  }
  if (real != w.nnz) return *why = "the blocks hold " + std::to_string(real) + " entries, not nnz", false;
  if (std::memcmp(scattered.data(), dense.data(), dense.size() * sizeof(float)) != 0)
    return *why = "the blocks differ from the dense decode", false;
  return true;
}

// DCSparseConv on a rank-4 payload (see the top of the file); the valid payload (exhaustive) runs every
// geometry, every kernel set and both forms, a mutated one the first geometry with the default kernel.
bool ConvConsistent(const std::vector<uint8_t>& blob, const DecodeOptions& opt, const onnx_dc::PayloadInfo& info,
                    const std::vector<float>& dense, bool exhaustive, std::string* why) {
  const uint64_t m = info.dims[0], c = info.dims[1], kh = info.dims[2], kw = info.dims[3];
  if (kh == 0 || kw == 0 || kh > 16 || kw > 16 || m > 256 || c > 64) return true;  // too big (or refused) here
  struct Geometry {
    int64_t h, w;
    std::vector<int64_t> strides, pads, dilations;
    const char* auto_pad;
  };
  const int64_t h = static_cast<int64_t>(2 * kh + 3), w = static_cast<int64_t>(2 * kw + 2);
  const Geometry geometries[] = {
      {h, w, {}, {}, {}, "NOTSET"},
      {h, w, {2, 1}, {1, 0, 2, 1}, {1, 2}, "NOTSET"},
      {h + 9, 3, {1, 1}, {}, {2, 1}, "SAME_LOWER"},  // a narrow image: 1-pixel runs of lanes
      {h, w + 7, {2, 3}, {}, {}, "SAME_UPPER"},
  };
  std::vector<std::string> kernels = {"auto"};
  if (exhaustive) {
    kernels = {"scalar"};
    if (onnx_dc::Avx2Kernels() && onnx_dc::CpuHasAvx2()) kernels.push_back("avx2");
  }
  Rng rng{0xC0FFEEull ^ blob.size()};
  for (const std::string& kernel : kernels) {
    for (const char* form : {"sparse", "dense"}) {
      onnx_dc::GemmOptions o;
      o.kernel = kernel;
      o.form = form;
      const onnx_dc::ConvKernel k = onnx_dc::DecodeConvKernel(blob.data(), blob.size(), opt, o);
      for (const Geometry& g : geometries) {
        auto attr = [](const std::vector<int64_t>& v) { return onnx_dc::IntsAttribute{!v.empty(), v}; };
        const onnx_dc::ConvAttributes a = onnx_dc::CheckConvAttributes(
            attr(g.strides), attr(g.pads), attr(g.dilations), g.auto_pad, 1, {}, kh, kw);
        const int64_t x_dims[4] = {2, static_cast<int64_t>(c), g.h, g.w};
        onnx_dc::ConvShape shape;
        try {
          shape = onnx_dc::ResolveConvShape(k, a, x_dims, 4);
        } catch (const std::invalid_argument&) {
          continue;  // no output for this kernel size
        }
        std::vector<float> x(2 * c * g.h * g.w), bias(m), y_ref(2 * m * shape.pixels()), y_fast(y_ref.size(), NAN);
        for (float& v : x) v = rng.Uniform();
        for (float& v : bias) v = rng.Uniform();
        for (int with_bias = 0; with_bias < 2; ++with_bias) {
          const float* b = with_bias ? bias.data() : nullptr;
          onnx_dc::ConvReference(k, shape, x.data(), b, y_ref.data());
          onnx_dc::ConvSerial(k, shape, x.data(), b, y_fast.data());
          if (std::memcmp(y_ref.data(), y_fast.data(), y_ref.size() * sizeof(float)) != 0)
            return *why = std::string("DCSparseConv: ") + k.w.kernel_name() + " " + onnx_dc::FormName(k.w.form) +
                          " differs from ConvReference (" + g.auto_pad + ")",
                   false;
          if (!exhaustive) continue;
          for (uint64_t n = 0; n < 2; ++n)
            for (uint64_t mo = 0; mo < m; ++mo)
              for (uint64_t p = 0; p < shape.pixels(); ++p) {
                double acc = b ? b[mo] : 0.0, mag = b ? std::fabs(b[mo]) : 0.0;
                for (uint64_t ci = 0; ci < c; ++ci)
                  for (uint64_t i = 0; i < kh; ++i)
                    for (uint64_t j = 0; j < kw; ++j) {
                      const int64_t ih = static_cast<int64_t>(p / shape.ow) * shape.stride_h - shape.pad_top +
                                         static_cast<int64_t>(i) * shape.dilation_h;
                      const int64_t iw = static_cast<int64_t>(p % shape.ow) * shape.stride_w - shape.pad_left +
                                         static_cast<int64_t>(j) * shape.dilation_w;
                      if (ih < 0 || iw < 0 || ih >= g.h || iw >= g.w) continue;
                      const double prod = static_cast<double>(dense[((mo * c + ci) * kh + i) * kw + j]) *
                                          x[((n * c + ci) * g.h + ih) * g.w + iw];
                      acc += prod;
                      mag += std::fabs(prod);
                    }
                if (std::fabs(acc - y_ref[(n * m + mo) * shape.pixels() + p]) > 1e-5 * mag + 1e-30)
                  return *why = "DCSparseConv: ConvReference differs from a float64 direct convolution", false;
              }
        }
        if (!exhaustive) return true;
      }
    }
  }
  return true;
}

// DCGather on a rank-2 payload: every row, looked up by its index and by index - V, equals the dense decode.
bool GatherConsistent(const std::vector<uint8_t>& blob, const DecodeOptions& opt, const onnx_dc::PayloadInfo& info,
                      const std::vector<float>& dense, std::string* why) {
  const onnx_dc::SparseMatrix table = onnx_dc::DecodeGatherTable(blob.data(), blob.size(), opt);
  const uint64_t v = info.rows(), d = info.cols();
  std::vector<int64_t> indices;
  for (uint64_t r = 0; r < v; ++r) indices.push_back(static_cast<int64_t>(r));
  for (uint64_t r = 0; r < v; ++r) indices.push_back(static_cast<int64_t>(r) - static_cast<int64_t>(v));
  onnx_dc::CheckGatherIndices(table, indices.data(), indices.size());
  std::vector<float> out(indices.size() * d, NAN);
  onnx_dc::GatherRows(table, indices.data(), 0, indices.size(), out.data());
  for (size_t i = 0; i < indices.size(); ++i)
    if (d && std::memcmp(out.data() + i * d, dense.data() + (i % v) * d, d * sizeof(float)) != 0)
      return *why = "DCGather: a row differs from the dense decode", false;
  const int64_t outside[] = {static_cast<int64_t>(v), -static_cast<int64_t>(v) - 1};
  for (int64_t bad : outside) {
    try {
      onnx_dc::CheckGatherIndices(table, &bad, 1);
      return *why = "DCGather: index " + std::to_string(bad) + " was accepted", false;
    } catch (const std::out_of_range&) {
    }
  }
  return true;
}

// Checks that hold for any payload the reader accepts. Returns false on a violation (details on stderr).
bool Consistent(const std::vector<uint8_t>& blob, const DecodeOptions& opt, bool exhaustive, std::string* why) {
  const onnx_dc::PayloadInfo info = onnx_dc::ParsePayload(blob.data(), blob.size(), opt);
  const uint64_t elements = info.rows() * info.cols();
  if (elements > kMaxDense) return true;  // legal, too big to check here
  const onnx_dc::DenseTensor dense = onnx_dc::DecodeDense(blob.data(), blob.size(), opt);
  if (dense.values.size() != elements) return *why = "dense size", false;
  if (info.header.rank == 4) return ConvConsistent(blob, opt, info, dense.values, exhaustive, why);
  if (info.header.rank != 2) return true;
  if (!GatherConsistent(blob, opt, info, dense.values, why)) return false;
  const onnx_dc::SparseMatrix w = onnx_dc::DecodeSparse(blob.data(), blob.size(), opt);
  if (w.rows != info.rows() || w.cols != info.cols() || w.nnz != info.nnz()) return *why = "sparse dims", false;
  // Scatter the execution format and compare with the dense decode, bit for bit.
  std::vector<float> scattered(elements, 0.0f);
  if (w.nnz) {
    if (w.row_ptr.size() != w.rows + 1 || w.row_ptr.back() != w.nnz) return *why = "row_ptr", false;
    for (uint64_t r = 0; r < w.rows; ++r) {
      uint64_t prev = 0;
      for (uint64_t e = w.row_ptr[r]; e < w.row_ptr[r + 1]; ++e) {
        const uint64_t c = w.wide() ? w.col32[e] : w.col16[e];
        if (c >= w.cols || (e > w.row_ptr[r] && c <= prev)) return *why = "columns not increasing / in range", false;
        prev = c;
        scattered[r * w.cols + c] = w.codebook[w.cluster[e]];
      }
    }
  }
  if (std::memcmp(scattered.data(), dense.values.data(), elements * sizeof(float)) != 0)
    return *why = "execution format differs from the dense decode", false;

  // The execution format for every kernel set this CPU runs (and a coarse partition, to move part edges).
  std::vector<std::string> kernels = {"scalar"};
  if (onnx_dc::Avx2Kernels() && onnx_dc::CpuHasAvx2()) kernels.push_back("avx2");
  std::vector<onnx_dc::BlockMatrix> forms;
  for (const std::string& k : kernels) {
    for (const char* form : {"sparse", "dense"}) {
      for (size_t parts : {size_t{64}, size_t{7}}) {
        onnx_dc::GemmOptions o;
        o.kernel = k;
        o.form = form;
        o.max_parts = parts;
        forms.push_back(onnx_dc::BuildBlockMatrix(w, o));
        if (!exhaustive) break;
      }
    }
    if (!exhaustive) break;
  }
  for (const onnx_dc::BlockMatrix& b : forms) {
    if (!BlocksMatch(w, b, dense.values, why)) return false;
  }

  // Kernels: fast (serial and on 2 threads) == reference bit for bit; reference ~ float64 dense product.
  const size_t batches_all[] = {1, 2, 3, 7, 8, 9, 16, 17, 25};
  const size_t batches_few[] = {1, 3};
  const size_t* batches = exhaustive ? batches_all : batches_few;
  const size_t n_batches = exhaustive ? std::size(batches_all) : std::size(batches_few);
  Rng rng{0x9E3779B97F4A7C15ull ^ blob.size()};
  for (size_t bi = 0; bi < n_batches; ++bi) {
    const size_t m = batches[bi];
    if (m * (w.rows + w.cols) > (size_t{1} << 22)) continue;
    std::vector<float> x(m * w.cols), bias(w.rows), y_ref(m * w.rows), y_fast(m * w.rows, NAN);
    for (float& v : x) v = rng.Uniform();
    for (float& v : bias) v = rng.Uniform();
    for (int with_bias = 0; with_bias < 2; ++with_bias) {
      const float* b = with_bias ? bias.data() : nullptr;
      for (size_t f = 0; f < forms.size(); ++f) {
        const onnx_dc::BlockMatrix& bm = forms[f];
        onnx_dc::SpmmReference(bm, x.data(), m, b, y_ref.data());
        onnx_dc::SpmmSerial(bm, x.data(), m, b, y_fast.data());
        if (std::memcmp(y_ref.data(), y_fast.data(), y_ref.size() * sizeof(float)) != 0)
          return *why = std::string(bm.kernel_name()) + " kernels differ from the reference (m=" + std::to_string(m) + ")",
                 false;
        if (exhaustive) {
          std::fill(y_fast.begin(), y_fast.end(), NAN);
          onnx_dc::SpmmThreaded(bm, x.data(), m, b, y_fast.data(), 2);
          if (std::memcmp(y_ref.data(), y_fast.data(), y_ref.size() * sizeof(float)) != 0)
            return *why = std::string(bm.kernel_name()) + " kernels on 2 threads differ from the reference (m=" +
                          std::to_string(m) + ")",
                   false;
        }
        if (!exhaustive) continue;
        for (size_t i = 0; i < m; ++i) {
          for (uint64_t n = 0; n < w.rows; ++n) {
            double acc = b ? b[n] : 0.0, mag = b ? std::fabs(b[n]) : 0.0;
            for (uint64_t k = 0; k < w.cols; ++k) {
              const double p = static_cast<double>(dense.values[n * w.cols + k]) * x[i * w.cols + k];
              acc += p;
              mag += std::fabs(p);
            }
            if (std::fabs(acc - y_ref[i * w.rows + n]) > 1e-5 * (mag + 1e-30) + 1e-30)
              return *why = "reference differs from the float64 dense product", false;
          }
        }
      }
    }
  }
  return true;
}

// Decode a corrupted blob: either PayloadError, or success and consistency. Anything else is a failure.
// Returns 1 if accepted, 0 if rejected, -1 on a failure.
int Probe(const std::vector<uint8_t>& blob, const DecodeOptions& opt, std::string* why) {
  try {
    const onnx_dc::PayloadInfo info = onnx_dc::ParsePayload(blob.data(), blob.size(), opt);
    if (info.rows() * info.cols() > kMaxDense) {
      // Only the structure can be checked at this size: the sparse form is bounded by the blob.
      if (info.header.rank == 2 && info.cols() < (uint64_t{1} << 32))
        (void)onnx_dc::BuildBlockMatrix(onnx_dc::DecodeSparse(blob.data(), blob.size(), opt));
      return 1;
    }
    return Consistent(blob, opt, false, why) ? 1 : -1;
  } catch (const PayloadError&) {
    return 0;
  } catch (const std::exception& e) {
    *why = std::string("unexpected exception: ") + e.what();
    return -1;
  }
}

void Put(std::vector<uint8_t>& b, size_t off, uint64_t v, size_t width) {
  for (size_t i = 0; i < width && off + i < b.size(); ++i) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}

void RunFile(const std::string& path, long random_iters, uint64_t seed, Tally& t) {
  std::ifstream f(path, std::ios::binary);
  const std::vector<uint8_t> blob((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const std::string name = path.substr(path.find_last_of('/') + 1);
  DecodeOptions crc_on, crc_off;
  crc_off.check_crc = false;
  long accepted = 0, rejected = 0;
  auto probe = [&](const std::vector<uint8_t>& b, const DecodeOptions& o, bool must_reject, const std::string& what) {
    std::string why;
    const int r = Probe(b, o, &why);
    if (r == 1) ++accepted;
    if (r == 0) ++rejected;
    if (r < 0) t.Check(false, name + ": " + what + ": " + why);
    else if (must_reject) t.Check(r == 0, name + ": " + what + " was accepted");
    else t.Check(true, "");
  };

  // 1. The valid payload.
  try {
    std::string why;
    t.Check(Consistent(blob, crc_on, true, &why), name + ": valid payload: " + why);
  } catch (const std::exception& e) {
    t.Check(false, name + ": valid payload rejected: " + e.what());
    return;
  }
  const size_t n = blob.size();
  Rng rng{seed ^ (n * 0x2545F4914F6CDD1Dull)};

  // 2. Truncations.
  for (size_t len = 0; len < n; ++len) {
    if (n > 2048 && len > 1024 && len + 256 < n && rng.Next() % 8) continue;  // sample the middle of big blobs
    std::vector<uint8_t> b(blob.begin(), blob.begin() + len);
    probe(b, crc_on, true, "truncated to " + std::to_string(len));
    probe(b, crc_off, true, "truncated to " + std::to_string(len) + " (no crc)");
  }
  // An extra byte is as bad as a missing one.
  {
    std::vector<uint8_t> b = blob;
    b.push_back(0);
    probe(b, crc_off, true, "padded by one byte");
  }

  // 3. Single-byte changes.
  const uint8_t masks[] = {0x01, 0x80, 0xFF};
  for (size_t pos = 0; pos < n; ++pos) {
    if (n > 4096 && pos >= 512 && rng.Next() % (n / 4096 + 1)) continue;
    for (uint8_t mask : masks) {
      std::vector<uint8_t> b = blob;
      b[pos] ^= mask;
      const std::string what = "byte " + std::to_string(pos) + " ^ " + std::to_string(mask);
      probe(b, crc_on, true, what);
      probe(b, crc_off, false, what + " (no crc)");
    }
  }

  // 4. Boundary values in the header, dims and chunk table, with a valid checksum.
  struct Field {
    size_t off, width;
  };
  std::vector<Field> fields = {{4, 2},  {6, 2},  {8, 8},  {16, 1}, {17, 1}, {18, 1}, {19, 1}, {20, 4}, {24, 8},
                               {32, 8}, {40, 8}, {48, 8}, {56, 4}, {60, 4}, {64, 8}, {72, 8}};
  try {
    const onnx_dc::PayloadInfo info = onnx_dc::ParsePayload(blob.data(), blob.size(), crc_on);
    for (size_t i = 0; i < info.dims.size(); ++i) fields.push_back({80 + 8 * i, 8});
    for (uint32_t c = 0; c < info.header.n_chunks && c < 4; ++c)
      for (size_t k = 0; k < 3; ++k) fields.push_back({info.chunk_table.offset + 24 * c + 8 * k, 8});
  } catch (const std::exception&) {
  }
  for (const Field& fld : fields) {
    uint64_t orig = 0;
    for (size_t i = 0; i < fld.width; ++i) orig |= static_cast<uint64_t>(blob[fld.off + i]) << (8 * i);
    const uint64_t top = fld.width == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * fld.width)) - 1;
    const uint64_t values[] = {0, 1, 2, 3, 7, 8, 9, 16, 17, 255, 256, 65535, 65536, orig - 1, orig + 1, orig * 2,
                               orig / 2, top, top - 1, uint64_t{1} << 31, uint64_t{1} << 32, uint64_t{1} << 62,
                               uint64_t{1} << 63, (uint64_t{1} << 62) + 1};
    for (uint64_t v : values) {
      std::vector<uint8_t> b = blob;
      Put(b, fld.off, v & top, fld.width);
      FixCrc(b);
      probe(b, crc_on, false, "field @" + std::to_string(fld.off) + " = " + std::to_string(v & top));
    }
  }

  // 5. Random mutations.
  for (long it = 0; it < random_iters; ++it) {
    std::vector<uint8_t> b = blob;
    const int edits = 1 + static_cast<int>(rng.Next() % 8);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng.Next() % n;
      b[pos] = static_cast<uint8_t>(rng.Next() % 3 == 0 ? (b[pos] ^ (1u << (rng.Next() % 8))) : rng.Next());
    }
    if (rng.Next() % 2) {
      FixCrc(b);
      probe(b, crc_on, false, "random mutation " + std::to_string(it));
    } else {
      probe(b, crc_off, false, "random mutation " + std::to_string(it) + " (no crc)");
    }
  }
  std::printf("%s: %zu bytes, %ld corrupted variants accepted, %ld rejected\n", name.c_str(), n, accepted, rejected);
}

}  // namespace

int main(int argc, char** argv) {
  long random_iters = 2000;
  uint64_t seed = 1;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--random" && i + 1 < argc) {
      random_iters = std::atol(argv[++i]);
    } else if (a == "--seed" && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "usage: onnx_dc_selftest [--random N] [--seed S] PAYLOAD...\n");
      return 2;
    } else {
      files.push_back(a);
    }
  }
  if (files.empty()) {
    std::fprintf(stderr, "onnx_dc_selftest: no payload files given\n");
    return 2;
  }
  Tally t;
  for (const std::string& f : files) RunFile(f, random_iters, seed, t);
  std::printf("onnx_dc_selftest: %ld checks ok, %ld failed\n", t.passed, t.failed);
  return t.failed ? 1 : 0;
}
