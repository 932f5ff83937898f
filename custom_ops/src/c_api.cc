// The C interface of c_api.h: thin wrappers that turn exceptions into error codes and messages.
#include "onnx_dc/c_api.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <new>
#include <string>

#include "gemm.h"
#include "payload.h"

struct OnnxDcGemm {
  onnx_dc::BlockMatrix w;
};

namespace {

int Report(const char* message, char* err, size_t err_size) {
  if (err && err_size) {
    std::strncpy(err, message, err_size - 1);
    err[err_size - 1] = '\0';
  }
  return 1;
}

template <typename F>
int Guard(F&& f, char* err, size_t err_size) noexcept {
  try {
    f();
    if (err && err_size) err[0] = '\0';
    return 0;
  } catch (const std::bad_alloc&) {
    return Report("out of memory", err, err_size);
  } catch (const std::exception& e) {
    return Report(e.what(), err, err_size);
  } catch (...) {
    return Report("unknown error", err, err_size);
  }
}

onnx_dc::DecodeOptions Options(int check_crc) {
  onnx_dc::DecodeOptions o;
  o.check_crc = check_crc != 0;
  return o;
}

OnnxDcSparseStats Stats(const onnx_dc::BlockMatrix& w) {
  OnnxDcSparseStats s{};
  s.rows = w.rows;
  s.cols = w.cols;
  s.nnz = w.nnz;
  s.resident_bytes = w.ResidentBytes();
  s.column_index_bytes = w.wide() ? 4 : 2;
  s.parts = static_cast<uint32_t>(w.parts.empty() ? 0 : w.parts.size() - 1);
  s.blocks = w.blocks;
  return s;
}

uint64_t PositiveNumber(const std::string& key, const std::string& value) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || v == 0 || value[0] == '-')
    throw std::invalid_argument("option " + key + " needs a positive integer, got '" + value + "'");
  return v;
}

// "kernel=avx2,form=dense,dense_density=0.4,parts=8"
onnx_dc::GemmOptions ParseOptions(const char* text) {
  onnx_dc::GemmOptions o;
  std::string s = text ? text : "";
  size_t pos = 0;
  while (pos < s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    const std::string item = s.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos) throw std::invalid_argument("option '" + item + "' is not key=value");
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "kernel")
      o.kernel = value;
    else if (key == "form")
      o.form = value;
    else if (key == "dense_density") {
      char* end = nullptr;
      o.dense_density = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || !(o.dense_density >= 0.0))
        throw std::invalid_argument("option dense_density needs a number >= 0, got '" + value + "'");
    } else if (key == "parts")
      o.max_parts = static_cast<size_t>(PositiveNumber(key, value));
    else
      throw std::invalid_argument("unknown option '" + key + "' (kernel, form, dense_density, parts)");
  }
  return o;
}

}  // namespace

extern "C" {

int onnx_dc_payload_info(const uint8_t* blob, size_t size, int check_crc, OnnxDcPayloadInfo* out, char* err,
                         size_t err_size) {
  return Guard(
      [&] {
        const onnx_dc::PayloadInfo info = onnx_dc::ParsePayload(blob, size, Options(check_crc));
        const onnx_dc::PayloadHeader& h = info.header;
        OnnxDcPayloadInfo r{};
        r.rank = h.rank;
        for (size_t i = 0; i < info.dims.size(); ++i) r.dims[i] = info.dims[i];
        r.rows = h.rows;
        r.cols = h.cols;
        r.nnz = h.nnz;
        r.n_index_symbols = h.n_index_symbols;
        r.weight_bits = h.weight_bits;
        r.index_bits = h.index_bits;
        r.codebook_size = h.codebook_size;
        r.n_chunks = h.n_chunks;
        r.index_stream_bytes = h.index_stream_bytes;
        r.weight_stream_bytes = h.weight_stream_bytes;
        r.total_size = h.total_size;
        if (out) *out = r;
      },
      err, err_size);
}

int onnx_dc_decode_dense(const uint8_t* blob, size_t size, int check_crc, float* out, size_t out_count, char* err,
                         size_t err_size) {
  return Guard(
      [&] {
        const onnx_dc::PayloadInfo info = onnx_dc::ParsePayload(blob, size, Options(check_crc));
        if (info.rows() * info.cols() != out_count)
          throw std::invalid_argument("output buffer has " + std::to_string(out_count) + " elements, the tensor " +
                                      std::to_string(info.rows() * info.cols()));
        const onnx_dc::DenseTensor t = onnx_dc::DecodeDense(blob, size, Options(check_crc));
        if (out_count) std::memcpy(out, t.values.data(), out_count * sizeof(float));
      },
      err, err_size);
}

int onnx_dc_sparse_stats(const uint8_t* blob, size_t size, int check_crc, OnnxDcSparseStats* stats, char* err,
                         size_t err_size) {
  return Guard(
      [&] {
        const onnx_dc::BlockMatrix w = onnx_dc::DecodeBlockMatrix(blob, size, Options(check_crc));
        if (stats) *stats = Stats(w);
      },
      err, err_size);
}

int onnx_dc_spmm(const uint8_t* blob, size_t size, int kernel, const float* x, size_t m, const float* bias, float* y,
                 char* err, size_t err_size) {
  return Guard(
      [&] {
        const onnx_dc::BlockMatrix w = onnx_dc::DecodeBlockMatrix(blob, size);
        if (kernel == 0)
          onnx_dc::SpmmReference(w, x, m, bias, y);
        else if (kernel == 1)
          onnx_dc::SpmmSerial(w, x, m, bias, y);
        else
          throw std::invalid_argument("kernel must be 0 (reference) or 1 (fast)");
      },
      err, err_size);
}

uint64_t onnx_dc_decode_limit_elements(uint64_t payload_bytes) { return onnx_dc::DecodeLimitElements(payload_bytes); }

uint32_t onnx_dc_cpu_features(void) {
  return (onnx_dc::Avx2Kernels() ? 1u : 0u) | (onnx_dc::Avx2Kernels() && onnx_dc::CpuHasAvx2() ? 2u : 0u);
}

int onnx_dc_gemm_create(const uint8_t* blob, size_t size, const char* options, OnnxDcGemm** out, char* err,
                        size_t err_size) {
  return Guard(
      [&] {
        if (!out) throw std::invalid_argument("out is NULL");
        *out = nullptr;
        const onnx_dc::GemmOptions o = ParseOptions(options);
        auto g = std::make_unique<OnnxDcGemm>();
        g->w = onnx_dc::DecodeBlockMatrix(blob, size, onnx_dc::DecodeOptions{}, o);
        *out = g.release();
      },
      err, err_size);
}

int onnx_dc_gemm_info(const OnnxDcGemm* gemm, OnnxDcGemmInfo* info, char* err, size_t err_size) {
  return Guard(
      [&] {
        if (!gemm || !info) throw std::invalid_argument("gemm or info is NULL");
        OnnxDcGemmInfo r{};
        r.stats = Stats(gemm->w);
        std::snprintf(r.kernel, sizeof r.kernel, "%s", gemm->w.kernel_name());
        std::snprintf(r.form, sizeof r.form, "%s", onnx_dc::FormName(gemm->w.form));
        *info = r;
      },
      err, err_size);
}

int onnx_dc_gemm_run(const OnnxDcGemm* gemm, int mode, const float* x, size_t m, const float* bias, float* y,
                     size_t threads, char* err, size_t err_size) {
  return Guard(
      [&] {
        if (!gemm) throw std::invalid_argument("gemm is NULL");
        if (mode == 0)
          onnx_dc::SpmmReference(gemm->w, x, m, bias, y);
        else if (mode == 1 && threads <= 1)
          onnx_dc::SpmmSerial(gemm->w, x, m, bias, y);
        else if (mode == 1)
          onnx_dc::SpmmThreaded(gemm->w, x, m, bias, y, threads);
        else
          throw std::invalid_argument("mode must be 0 (reference) or 1 (fast)");
      },
      err, err_size);
}

void onnx_dc_gemm_free(OnnxDcGemm* gemm) { delete gemm; }

}  // extern "C"
