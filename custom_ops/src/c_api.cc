// The C interface of c_api.h: thin wrappers that turn exceptions into error codes and messages.
#include "onnx_dc/c_api.h"

#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "onnx_dc/gemm.h"
#include "onnx_dc/payload.h"

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
        const onnx_dc::SparseMatrix w = onnx_dc::DecodeSparse(blob, size, Options(check_crc));
        OnnxDcSparseStats s{};
        s.rows = w.rows;
        s.cols = w.cols;
        s.nnz = w.nnz;
        s.resident_bytes = w.ResidentBytes();
        s.column_index_bytes = w.wide() ? 4 : 2;
        s.parts = static_cast<uint32_t>(w.parts.empty() ? 0 : w.parts.size() - 1);
        if (stats) *stats = s;
      },
      err, err_size);
}

int onnx_dc_spmm(const uint8_t* blob, size_t size, int kernel, const float* x, size_t m, const float* bias, float* y,
                 char* err, size_t err_size) {
  return Guard(
      [&] {
        const onnx_dc::SparseMatrix w = onnx_dc::DecodeSparse(blob, size);
        if (kernel == 0)
          onnx_dc::SpmmReference(w, x, m, bias, y);
        else if (kernel == 1)
          onnx_dc::SpmmSerial(w, x, m, bias, y);
        else
          throw std::invalid_argument("kernel must be 0 (reference) or 1 (fast)");
      },
      err, err_size);
}

}  // extern "C"
