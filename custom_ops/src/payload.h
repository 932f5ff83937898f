// The onnx-dc weight payload, format version 1: the byte layout of docs/FORMAT.md in one place, and the
// validating reader's interface (implemented in src/decode.cc).
//
// A payload is untrusted input. The reader checks every rule that FORMAT.md marks **must**, checks every
// count, length and offset against the blob's size before using it, and bounds every allocation by what
// the blob justifies (see DecodeSparse / DecodeDense below). Fields are read with explicit little-endian
// loads at the offsets below; the structs document the layout and let the compiler check it, they are
// never cast onto the blob.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace onnx_dc {

// ---------------------------------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------------------------------

inline constexpr uint8_t kMagic[4] = {0x4F, 0x44, 0x43, 0x57};  // "ODCW"
inline constexpr uint16_t kVersion = 1;
inline constexpr uint32_t kMaxRank = 8;
inline constexpr uint32_t kMaxWeightBits = 8;
inline constexpr uint32_t kMaxIndexBits = 16;
inline constexpr uint32_t kMaxRowCountBits = 32;
inline constexpr uint32_t kMaxCodeLength = 16;
inline constexpr uint64_t kMaxElements = uint64_t{1} << 62;
inline constexpr uint32_t kFlagEntropyCoded = 1;
inline constexpr size_t kCrcSize = 4;

// Header, 80 bytes, all integers little-endian. Every field is naturally aligned, so the struct has no
// padding and its offsets are exactly the file's.
struct PayloadHeader {
  uint8_t magic[4];              //  0  "ODCW"
  uint16_t version;              //  4  1
  uint16_t header_size;          //  6  80
  uint64_t total_size;           //  8  == blob length
  uint8_t rank;                  // 16  1..8
  uint8_t weight_bits;           // 17  1..8
  uint8_t index_bits;            // 18  1..16
  uint8_t row_count_bits;        // 19  0..32
  uint32_t codebook_size;        // 20  1..2^weight_bits
  uint64_t rows;                 // 24  == dims[0]
  uint64_t cols;                 // 32  == dims[1] * ... * dims[rank-1] (1 for rank 1)
  uint64_t nnz;                  // 40
  uint64_t n_index_symbols;      // 48  real entries + fillers
  uint32_t n_chunks;             // 56
  uint32_t flags;                // 60  bit 0: entropy coded
  uint64_t index_stream_bytes;   // 64
  uint64_t weight_stream_bytes;  // 72
};
static_assert(sizeof(PayloadHeader) == 80, "FORMAT.md: the header is 80 bytes");
static_assert(offsetof(PayloadHeader, version) == 4);
static_assert(offsetof(PayloadHeader, header_size) == 6);
static_assert(offsetof(PayloadHeader, total_size) == 8);
static_assert(offsetof(PayloadHeader, rank) == 16);
static_assert(offsetof(PayloadHeader, weight_bits) == 17);
static_assert(offsetof(PayloadHeader, index_bits) == 18);
static_assert(offsetof(PayloadHeader, row_count_bits) == 19);
static_assert(offsetof(PayloadHeader, codebook_size) == 20);
static_assert(offsetof(PayloadHeader, rows) == 24);
static_assert(offsetof(PayloadHeader, cols) == 32);
static_assert(offsetof(PayloadHeader, nnz) == 40);
static_assert(offsetof(PayloadHeader, n_index_symbols) == 48);
static_assert(offsetof(PayloadHeader, n_chunks) == 56);
static_assert(offsetof(PayloadHeader, flags) == 60);
static_assert(offsetof(PayloadHeader, index_stream_bytes) == 64);
static_assert(offsetof(PayloadHeader, weight_stream_bytes) == 72);
inline constexpr size_t kHeaderSize = sizeof(PayloadHeader);

// One chunk-table entry, 24 bytes: where a run of rows starts in each stream.
struct ChunkEntry {
  uint64_t row_start;          // first row of the chunk
  uint64_t index_bit_offset;   // bit offset of its first symbol in the index stream
  uint64_t weight_bit_offset;  // bit offset of its first symbol in the weight stream
};
static_assert(sizeof(ChunkEntry) == 24, "FORMAT.md: a chunk-table entry is 24 bytes");
static_assert(offsetof(ChunkEntry, index_bit_offset) == 8);
static_assert(offsetof(ChunkEntry, weight_bit_offset) == 16);

// Sections after the header, in this order (sizes in bytes):
//   dims                8 * rank                 u64 each
//   codebook            4 * codebook_size        float32 each, finite
//   weight_code_lengths 2^weight_bits            u8 each
//   index_code_lengths  2^index_bits             u8 each
//   chunk_table         24 * n_chunks            ChunkEntry each
//   row_nnz             ceil(rows * row_count_bits / 8)   MSB-first bit fields
//   index_stream        index_stream_bytes
//   weight_stream       weight_stream_bytes
//   crc32               4                        CRC-32 (zlib) of every byte before it
//
// Bits per nonzero of the stored streams: (index stream bits + weight stream bits) / nnz. DCSparseGemm
// runs on an execution format built from the decoded CSR (gemm.h: codebook blocks, ~2.5 bytes per slot).

// ---------------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------------

// A payload that breaks FORMAT.md; what() names the rule.
class PayloadError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct DecodeOptions {
  bool check_crc = true;  // false only for fuzzing the structural checks behind the checksum
};

// Section of the blob: [offset, offset + size).
struct Section {
  size_t offset = 0;
  size_t size = 0;
};

// The validated header and the location of every section. Produced by ParsePayload, which checks the
// header rules, the section sizes against the blob, the checksum, the dims, the codebook and the
// code-length tables; the chunk table, row counts and streams are checked while decoding.
struct PayloadInfo {
  PayloadHeader header{};
  std::vector<uint64_t> dims;
  std::array<float, 256> codebook{};  // zero-padded to 2^8, so any u8 cluster index is in bounds
  std::array<uint8_t, 256> weight_lengths{};
  std::vector<uint8_t> index_lengths;  // 2^index_bits entries
  Section chunk_table, row_nnz, index_stream, weight_stream;
  uint64_t rows() const { return header.rows; }
  uint64_t cols() const { return header.cols; }
  uint64_t nnz() const { return header.nnz; }
};

uint32_t Crc32(const uint8_t* data, size_t size, uint32_t crc = 0);

PayloadInfo ParsePayload(const uint8_t* data, size_t size, const DecodeOptions& options = {});

// The CSR form of a rank-2 payload (by output row, narrow column and cluster indices); defined in gemm.h,
// the input of DCSparseGemm's execution format (BuildBlockMatrix). Allocation: (rows + 1) * 8 + nnz * (2 or 4 + 1) bytes, where nnz <= 8 * weight_stream_bytes,
// and rows <= 8 * row_nnz_bytes whenever nnz > 0 (for nnz == 0 nothing per row is allocated). Requires
// cols <= 2^32 (PayloadError otherwise).
struct SparseMatrix;
SparseMatrix DecodeSparse(const uint8_t* data, size_t size, const DecodeOptions& options = {});
// The same for a payload of any rank, already parsed (ParsePayload) from `data`: the matrix view
// [dims[0], dims[1] * ... * dims[rank-1]] (DCSparseConv's [M, C * kH * kW], DCGather's [V, D]).
SparseMatrix DecodeSparse(const uint8_t* data, const PayloadInfo& info);

// The dense float32 tensor (row-major, shape info.dims) a payload stands for. Its size is what dims
// declare (at most 2^62 elements by FORMAT.md); max_elements caps it (PayloadError if exceeded), and
// std::bad_alloc propagates if memory runs out.
struct DenseTensor {
  std::vector<uint64_t> dims;
  std::vector<float> values;
};
DenseTensor DecodeDense(const uint8_t* data, size_t size, const DecodeOptions& options = {},
                        uint64_t max_elements = kMaxElements);

// DCDecode's bound on the dense tensor it allocates (docs/OPERATOR.md): a valid all-pruned payload of a few
// hundred bytes may declare any shape, so the tensor must be justified by the payload's size. 65,536 elements
// per payload byte allows 99.998% sparsity; small tensors (up to 2^26 elements, 256 MiB of float32) are always
// accepted. The C API reports it (onnx_dc_decode_limit_elements), and onnx_dc/graph/decompress.py mirrors it.
inline constexpr uint64_t kDecodeAlwaysElements = uint64_t{1} << 26;
inline constexpr uint64_t kDecodeElementsPerByte = 65536;
// max(kDecodeAlwaysElements, kDecodeElementsPerByte * payload_bytes); saturates instead of wrapping.
inline constexpr uint64_t DecodeLimitElements(uint64_t payload_bytes) {
  const uint64_t justified = payload_bytes > ~uint64_t{0} / kDecodeElementsPerByte
                                 ? ~uint64_t{0}
                                 : payload_bytes * kDecodeElementsPerByte;
  return justified > kDecodeAlwaysElements ? justified : kDecodeAlwaysElements;
}

}  // namespace onnx_dc
