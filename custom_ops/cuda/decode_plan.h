// Host side of the GPU decoder: everything checked and prepared on the CPU before any device work.
// Plain C++ (no CUDA): used by the CUDA library (dc_cuda.cu) and by the host emulation test.
//
// The CPU reader stays the trust boundary. PlanGpuDecode runs ParsePayload (src/decode.cc: header,
// sections, checksum, dims, codebook) and then the checks that need no stream decoding: the chunk table,
// the row counts and the code lengths (FORMAT.md rules, in the same terms as DecodeStreams). The device
// then decodes the streams chunk by chunk (gpu_decode.h) and CheckChunkStatuses applies the end-of-chunk
// and end-of-stream rules. Whenever anything is rejected, RejectWithCpuReader runs the CPU reader on the
// blob, so the error a caller sees is exactly the CPU path's; if the CPU reader accepts a blob the GPU
// path rejected, that is reported as an internal error (a bug, never silently accepted).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "gpu_decode.h"
#include "gemm.h"
#include "payload.h"

namespace onnx_dc {
namespace gpu {

struct StreamCopy {
  std::vector<uint32_t> words;  // the stream's bytes, then zeros: ceil(bytes / 4) + 2 words
  uint64_t bits = 0;
};

struct DecodePlan {
  PayloadInfo info;
  uint64_t rows = 0, cols = 0, nnz = 0;
  bool wide = false;           // cols >= 65536: 32-bit columns in the execution format (as gemm.h)
  std::vector<Chunk> chunks;   // validated chunk table
  std::vector<uint32_t> row_nnz;
  std::vector<uint64_t> row_ptr;  // rows + 1
  HuffmanCode index_code, weight_code;
  std::vector<uint32_t> index_primary, weight_primary;  // 1 << primary_bits entries each (at least 1)
  std::vector<uint16_t> index_sorted, weight_sorted;    // at least 1 entry each
  StreamCopy index_stream, weight_stream;
};

// Parse and validate everything but the streams. Throws PayloadError (the CPU reader's, for ParsePayload
// and for rank != 2 / K >= 2^32, with DecodeSparse's and BuildBlockMatrix's messages). Returns false, with
// *why set, when a rule checked here fails: the caller then calls RejectWithCpuReader. When nnz == 0 the
// payload is fully validated by the CPU reader here (nothing to decode) and the plan has no rows data.
bool PlanGpuDecode(const uint8_t* data, size_t size, const DecodeOptions& options, DecodePlan* plan,
                   std::string* why);

// After the chunk decoders ran: every chunk error-free, chunk i ending exactly where chunk i + 1 starts,
// the last chunk ending in the last byte of each stream with zero padding bits, the symbol count equal to
// n_index_symbols. Returns false with *why set otherwise.
bool CheckChunkStatuses(const DecodePlan& plan, const uint8_t* data, const std::vector<ChunkStatus>& status,
                        std::string* why);

// Throws the CPU reader's PayloadError (or std::invalid_argument) for this blob; if the CPU reader accepts
// it, throws std::logic_error naming `why` (the GPU path and the CPU reader disagree).
[[noreturn]] void RejectWithCpuReader(const uint8_t* data, size_t size, const DecodeOptions& options,
                                      const std::string& why);

const char* ChunkErrorName(uint32_t e);

// The GPU execution format as host arrays (what the device holds, downloaded or emulated): gemm.h's
// codebook blocks with one cluster byte per block instead of its float value.
struct HostFormat {
  uint64_t rows = 0, cols = 0, nnz = 0, blocks = 0;
  bool wide = false;
  std::vector<uint64_t> row_block;  // rows + 1, or empty when nnz == 0
  std::vector<uint16_t> col16;      // 4 * blocks, when !wide
  std::vector<uint32_t> col32;      // 4 * blocks, when wide
  std::vector<uint8_t> cluster;     // blocks
  float codebook[256] = {};
  uint32_t codebook_size = 0;
};

// The GPU decoder's whole pipeline run on the host with the same per-chunk and per-row code
// (gpu_decode.h), chunk after chunk: what tests check on machines without a GPU. Throws what
// GpuSparseGemm::Create would throw.
HostFormat EmulateGpuDecode(const uint8_t* data, size_t size, const DecodeOptions& options = {});

// "" when `f` is exactly the CPU's execution format `w` (sparse blocks: same row_block, columns and block
// values), else the first difference.
std::string CompareWithCpuFormat(const HostFormat& f, const BlockMatrix& w);

}  // namespace gpu
}  // namespace onnx_dc
