/* A small C interface to the payload reader and kernels of libonnx_dc_ops.so, for tests, benchmarks and
 * tools (ctypes). onnxruntime does not use it: it loads the operators through RegisterCustomOps.
 * Every function returns 0 on success; otherwise non-zero and a NUL-terminated message in err (truncated
 * to err_size). None of them crashes on a bad payload. */
#ifndef ONNX_DC_C_API_H_
#define ONNX_DC_C_API_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ONNX_DC_EXPORT __attribute__((visibility("default")))

typedef struct OnnxDcPayloadInfo {
  uint32_t rank;
  uint64_t dims[8];
  uint64_t rows, cols, nnz, n_index_symbols;
  uint32_t weight_bits, index_bits, codebook_size, n_chunks;
  uint64_t index_stream_bytes, weight_stream_bytes, total_size;
} OnnxDcPayloadInfo;

typedef struct OnnxDcSparseStats {
  uint64_t rows, cols, nnz;
  uint64_t resident_bytes;     /* bytes the DCSparseGemm execution format keeps for this payload */
  uint32_t column_index_bytes; /* 2 (K < 65536) or 4 */
  uint32_t parts;              /* row parts (tasks per batch unit) */
  uint64_t blocks;             /* blocks of 4 slots (one cluster each; padding slots read the zero column) */
} OnnxDcSparseStats;

/* Header and section checks only (no stream decoding). */
ONNX_DC_EXPORT int onnx_dc_payload_info(const uint8_t* blob, size_t size, int check_crc, OnnxDcPayloadInfo* info,
                                        char* err, size_t err_size);
/* Full decode to the dense tensor; out_count must equal the number of elements (rows * cols). */
ONNX_DC_EXPORT int onnx_dc_decode_dense(const uint8_t* blob, size_t size, int check_crc, float* out,
                                        size_t out_count, char* err, size_t err_size);
/* Full decode to DCSparseGemm's execution format (rank-2 payloads), with the default options (environment
 * variables apply: see onnx_dc_gemm_create), and what it costs. */
ONNX_DC_EXPORT int onnx_dc_sparse_stats(const uint8_t* blob, size_t size, int check_crc, OnnxDcSparseStats* stats,
                                        char* err, size_t err_size);
/* Y[m, N] = X[m, K] · Wᵀ (+ bias[N] if bias is not NULL) with kernel 0 (scalar reference) or 1 (the fast
 * path DCSparseGemm runs, here on the calling thread). Decodes the payload on every call (for tests). */
ONNX_DC_EXPORT int onnx_dc_spmm(const uint8_t* blob, size_t size, int kernel, const float* x, size_t m,
                                const float* bias, float* y, char* err, size_t err_size);

/* DCDecode's limit on the dense tensor a payload of payload_bytes bytes may decode to, in elements:
 * max(2^26, 65536 * payload_bytes) (saturating at UINT64_MAX). A payload declaring more is refused at session
 * creation (docs/OPERATOR.md, DCDecode). onnx_dc_decode_limit_elements(0) is the always-accepted size. */
ONNX_DC_EXPORT uint64_t onnx_dc_decode_limit_elements(uint64_t payload_bytes);

/* Bit 0: the avx2 kernel set is compiled into this library; bit 1: this CPU can run it (AVX2 + BMI1). */
ONNX_DC_EXPORT uint32_t onnx_dc_cpu_features(void);

/* A decoded layer, as DCSparseGemm holds it, for repeated runs (benchmarks, tests).
 * options: NULL or "" for the defaults, else comma-separated key=value pairs:
 *   kernel=auto|scalar|avx2   the kernel set (auto: ONNX_DC_KERNEL if set, else the best this CPU runs)
 *   form=auto|sparse|dense    the execution format (auto: ONNX_DC_FORM if set, else dense when the layer's
 *                             density is at least dense_density; layers sparser than 1/16 stay sparse)
 *   dense_density=D           the density from which auto picks the dense form (default 0.55)
 *   parts=N                   at most N row parts (default 64)
 * onnxruntime's DCSparseGemm uses the defaults, so ONNX_DC_KERNEL and ONNX_DC_FORM steer it too. */
typedef struct OnnxDcGemm OnnxDcGemm;
typedef struct OnnxDcGemmInfo {
  OnnxDcSparseStats stats;
  char kernel[16]; /* "scalar" or "avx2" */
  char form[16];   /* "sparse-blocks" or "dense" */
} OnnxDcGemmInfo;
ONNX_DC_EXPORT int onnx_dc_gemm_create(const uint8_t* blob, size_t size, const char* options, OnnxDcGemm** out,
                                       char* err, size_t err_size);
ONNX_DC_EXPORT int onnx_dc_gemm_info(const OnnxDcGemm* gemm, OnnxDcGemmInfo* info, char* err, size_t err_size);
/* mode 0: the scalar reference (threads ignored); mode 1: the fast path, its tasks on `threads` threads
 * (1: the calling thread alone). X is [m, K] row-major, Y [m, N]. */
ONNX_DC_EXPORT int onnx_dc_gemm_run(const OnnxDcGemm* gemm, int mode, const float* x, size_t m, const float* bias,
                                    float* y, size_t threads, char* err, size_t err_size);
ONNX_DC_EXPORT void onnx_dc_gemm_free(OnnxDcGemm* gemm);

#ifdef __cplusplus
}
#endif

#endif /* ONNX_DC_C_API_H_ */
