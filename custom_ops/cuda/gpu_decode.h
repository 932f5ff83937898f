// The parts of the GPU decoder that run once per chunk or once per row, written once for both sides:
// compiled by nvcc they are the bodies of the decode kernels (src: dc_cuda.cu), compiled by a plain C++
// compiler they are the host emulation that tests/test_cuda.py runs on machines without a GPU
// (emulation_test.cc). Nothing here allocates, throws or reads memory it was not handed with a bound.
//
// Trust: the payload's header, sections, chunk table, row counts and code lengths have been validated on
// the host (ParsePayload in src/decode.cc, then PlanGpuDecode in decode_plan.cc) before any of this runs.
// What is left to check here is what only decoding the streams can tell: bit patterns that match no code,
// codes running past a stream's end or a chunk's end, fillers or entries past the last column, cluster
// indices outside the codebook. Each is reported in the chunk's status (never by reading out of bounds):
//   - stream words are read through Word(), which returns 0 past the copy's end (the host copies each
//     stream into its own zero-padded buffer);
//   - every loop is bounded by the chunk's bits: a symbol is decoded only while the position is before the
//     next chunk's offset (or the stream's end), and every symbol consumes at least one bit;
//   - entries are written at row_ptr[r] + k, k < row_nnz[r], both validated on the host, so every store
//     lands inside the arrays the host sized from them.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define ONNX_DC_HD __host__ __device__ __forceinline__
#else
#define ONNX_DC_HD inline
#endif

namespace onnx_dc {
namespace gpu {

inline constexpr unsigned kMaxCodeBits = 16;
// Codes of up to this many bits decode with one lookup in the primary table (2^11 u32 entries, 8 KiB, in
// shared memory); longer ones (the writer never emits them for weights; fixed-width index codes of 12..16
// bits do) walk the canonical code by length.
inline constexpr unsigned kPrimaryBits = 11;
inline constexpr uint32_t kLongCode = 31;  // primary entry length 31: the prefix of a longer code

// A canonical Huffman code (FORMAT.md, "Entropy coding"), built on the host from validated lengths.
// Codes of length L are the consecutive values [first_code[L], first_code[L] + count[L]); their symbols,
// in canonical order, are sorted[first_index[L] ...].
struct HuffmanCode {
  uint32_t max_len = 0;       // 0: the stream has no codes
  uint32_t primary_bits = 0;  // min(max_len, kPrimaryBits)
  uint32_t count[kMaxCodeBits + 1] = {};
  uint32_t first_code[kMaxCodeBits + 1] = {};
  uint32_t first_index[kMaxCodeBits + 1] = {};
};

// One chunk-table entry, as validated on the host.
struct Chunk {
  uint64_t row_start;
  uint64_t index_bit_offset;
  uint64_t weight_bit_offset;
};

enum ChunkError : uint32_t {
  kOk = 0,
  kNoCodes = 1,            // a symbol is needed but the stream's code has no symbols
  kNoCode = 2,             // a bit pattern matches no code
  kEndsInsideCode = 3,     // a code runs past the stream's last bit
  kPastChunkEnd = 4,       // the chunk needs bits beyond the next chunk's offset
  kFillerPastEnd = 5,      // fillers run past the last column
  kColumnOutOfRange = 6,   // an entry's column is >= cols
  kClusterOutOfRange = 7,  // a cluster index is >= codebook_size
};

// Per chunk, written by the two decoding threads (index and weight stream).
struct ChunkStatus {
  uint32_t index_error;
  uint32_t weight_error;
  uint64_t index_end;   // bit position after the chunk's last index symbol
  uint64_t weight_end;  // bit position after the chunk's last weight symbol
  uint64_t symbols;     // index symbols decoded (fillers included)
  uint64_t index_where;   // the row of an index error
  uint64_t weight_where;  // the entry of a weight error
};

// A stream as 32-bit words in memory order (bytes b0 b1 b2 b3 of the stream in one word), zero-padded.
struct Stream {
  const uint32_t* words;
  uint64_t nwords;  // words readable at `words`
  uint64_t bits;    // 8 * the stream's bytes
};

// Everything the chunk decoders read, and the two arrays they write (CSR in entry order).
struct DecodeArgs {
  const Chunk* chunks;
  uint32_t n_chunks;
  uint64_t rows, cols;
  uint32_t filler;  // 2^index_bits - 1
  uint32_t codebook_size;
  const uint32_t* row_nnz;   // [rows]
  const uint64_t* row_ptr;   // [rows + 1]
  Stream index_stream, weight_stream;
  HuffmanCode index_code, weight_code;
  const uint32_t* index_primary;   // 1 << index_code.primary_bits entries (global copy)
  const uint32_t* weight_primary;  // 1 << weight_code.primary_bits entries (global copy)
  const uint16_t* index_sorted;    // symbols in canonical order
  const uint16_t* weight_sorted;
  uint32_t* col;       // [nnz] absolute column of every entry
  uint8_t* cluster;    // [nnz]
  ChunkStatus* status;  // [n_chunks]
};

ONNX_DC_HD uint32_t LoadWordBigEndian(const uint32_t* p) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(__ldg(p), 0, 0x0123);
#else
  return __builtin_bswap32(*p);
#endif
}

ONNX_DC_HD uint32_t Word(const Stream& s, uint64_t i) { return i < s.nwords ? LoadWordBigEndian(s.words + i) : 0u; }

// The 16 bits starting at bit `pos`, most significant first; zeros past the end.
ONNX_DC_HD uint32_t Peek16(const Stream& s, uint64_t pos) {
  const uint64_t w = pos >> 5;
  const uint64_t v = (static_cast<uint64_t>(Word(s, w)) << 32) | Word(s, w + 1);
  return static_cast<uint32_t>((v << (pos & 31)) >> 48);
}

// Decode one symbol at *pos (primary table `primary`, possibly in shared memory); sets *err and returns 0
// on a broken rule. *pos advances only on success.
ONNX_DC_HD uint32_t DecodeSymbol(const Stream& s, uint64_t* pos, const uint32_t* primary, const HuffmanCode& hc,
                                 const uint16_t* sorted, uint32_t* err) {
  if (hc.max_len == 0) {
    *err = kNoCodes;
    return 0;
  }
  const uint32_t w = Peek16(s, *pos);
  const uint32_t e = primary[w >> (kMaxCodeBits - hc.primary_bits)];
  uint32_t len = e & 31u, sym = e >> 5;
  if (len == 0) {
    *err = kNoCode;
    return 0;
  }
  if (len == kLongCode) {
    len = 0;
    for (uint32_t L = hc.primary_bits + 1; L <= hc.max_len; ++L) {
      const uint32_t d = (w >> (kMaxCodeBits - L)) - hc.first_code[L];  // wraps when below: no match
      if (d < hc.count[L]) {
        sym = sorted[hc.first_index[L] + d];
        len = L;
        break;
      }
    }
    if (len == 0) {
      *err = kNoCode;
      return 0;
    }
  }
  if (*pos + len > s.bits) {
    *err = kEndsInsideCode;
    return 0;
  }
  *pos += len;
  return sym;
}

// Where chunk i ends: its last row + 1, and the bit where its part of each stream ends (the next chunk's start,
// or the stream's end for the last chunk).
struct ChunkEnd {
  uint64_t row, index_bit, weight_bit;
};
ONNX_DC_HD ChunkEnd EndOfChunk(const DecodeArgs& a, uint32_t i) {
  if (i + 1 == a.n_chunks) return {a.rows, a.index_stream.bits, a.weight_stream.bits};
  const Chunk& next = a.chunks[i + 1];
  return {next.row_start, next.index_bit_offset, next.weight_bit_offset};
}

// The index stream of chunk i: columns of its entries. Writes status[i].index_error/index_end/symbols.
ONNX_DC_HD void DecodeChunkIndex(const DecodeArgs& a, uint32_t i, const uint32_t* primary) {
  ChunkStatus& st = a.status[i];
  const Chunk c = a.chunks[i];
  const ChunkEnd end = EndOfChunk(a, i);
  const uint64_t row_end = end.row, limit = end.index_bit;
  uint64_t pos = c.index_bit_offset, symbols = 0;
  uint32_t err = kOk;
  uint64_t r = c.row_start;
  for (; r < row_end && err == kOk; ++r) {
    uint64_t e = a.row_ptr[r];
    const uint32_t n = a.row_nnz[r];
    uint64_t cursor = 0;  // < cols whenever a symbol is read, so cursor + filler never overflows
    for (uint32_t k = 0; k < n && err == kOk; ++k) {
      for (;;) {
        if (pos >= limit) {
          err = kPastChunkEnd;
          break;
        }
        const uint32_t s = DecodeSymbol(a.index_stream, &pos, primary, a.index_code, a.index_sorted, &err);
        if (err != kOk) break;
        ++symbols;
        if (s == a.filler) {
          cursor += a.filler;
          if (cursor >= a.cols) {
            err = kFillerPastEnd;
            break;
          }
          continue;
        }
        const uint64_t column = cursor + s;
        if (column >= a.cols) {
          err = kColumnOutOfRange;
          break;
        }
        a.col[e++] = static_cast<uint32_t>(column);  // cols <= 2^32 (host check)
        cursor = column + 1;
        break;
      }
    }
  }
  st.index_error = err;
  st.index_end = pos;
  st.symbols = symbols;
  if (err != kOk) st.index_where = r - 1;
}

// The weight stream of chunk i: cluster indices of its entries. Writes status[i].weight_error/weight_end.
ONNX_DC_HD void DecodeChunkWeights(const DecodeArgs& a, uint32_t i, const uint32_t* primary) {
  ChunkStatus& st = a.status[i];
  const Chunk c = a.chunks[i];
  const ChunkEnd end = EndOfChunk(a, i);
  const uint64_t row_end = end.row, limit = end.weight_bit;
  const uint64_t e0 = a.row_ptr[c.row_start], e1 = a.row_ptr[row_end];
  uint64_t pos = c.weight_bit_offset;
  uint32_t err = kOk;
  uint64_t e = e0;
  for (; e < e1; ++e) {
    if (pos >= limit) {
      err = kPastChunkEnd;
      break;
    }
    const uint32_t s = DecodeSymbol(a.weight_stream, &pos, primary, a.weight_code, a.weight_sorted, &err);
    if (err != kOk) break;
    if (s >= a.codebook_size) {
      err = kClusterOutOfRange;
      break;
    }
    a.cluster[e] = static_cast<uint8_t>(s);
  }
  st.weight_error = err;
  st.weight_end = pos;
  if (err != kOk) st.weight_where = e;
}

// ---- The execution format, per row (gemm.h's codebook blocks, with a cluster byte per block) -------------
// Entries of a row sorted by cluster, then column (a stable counting sort), cut into blocks of 4 entries of
// one cluster, the last block of each cluster padded with column `cols`. `count` is scratch for
// `ncl` counters at stride `stride` (interleaved per thread in shared memory on the GPU).

ONNX_DC_HD uint64_t RowBlocks(const uint8_t* cluster, uint64_t e0, uint64_t e1, uint32_t ncl, uint64_t* count,
                              uint32_t stride) {
  for (uint32_t c = 0; c < ncl; ++c) count[c * stride] = 0;
  for (uint64_t e = e0; e < e1; ++e) ++count[cluster[e] * stride];  // cluster < ncl (checked while decoding)
  uint64_t blocks = 0;
  for (uint32_t c = 0; c < ncl; ++c) blocks += (count[c * stride] + 3) / 4;
  return blocks;
}

template <typename Col>
ONNX_DC_HD void FillRow(const uint32_t* col, const uint8_t* cluster, uint64_t e0, uint64_t e1, uint32_t ncl,
                        uint64_t* count, uint32_t stride, uint64_t first_block, Col pad, Col* out_col,
                        uint8_t* out_cluster) {
  for (uint32_t c = 0; c < ncl; ++c) count[c * stride] = 0;
  for (uint64_t e = e0; e < e1; ++e) ++count[cluster[e] * stride];
  // count[c] becomes the next slot of cluster c; pad each cluster's last block, label its blocks.
  uint64_t block = first_block;
  for (uint32_t c = 0; c < ncl; ++c) {
    const uint64_t n = count[c * stride];
    if (!n) continue;
    const uint64_t nb = (n + 3) / 4;
    for (uint64_t b = block; b < block + nb; ++b) out_cluster[b] = static_cast<uint8_t>(c);
    for (uint64_t s = block * 4 + n; s < (block + nb) * 4; ++s) out_col[s] = pad;
    count[c * stride] = block * 4;
    block += nb;
  }
  for (uint64_t e = e0; e < e1; ++e) out_col[count[cluster[e] * stride]++] = static_cast<Col>(col[e]);
}

}  // namespace gpu
}  // namespace onnx_dc
