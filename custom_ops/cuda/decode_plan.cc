// Host side of the GPU decoder (decode_plan.h): the checks that need no stream decoding, the canonical
// code tables, and the end-of-chunk rules applied to what the device decoded.
#include "decode_plan.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "gemm.h"

namespace onnx_dc {
namespace gpu {
namespace {

uint64_t LoadU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// The `width`-bit field (width <= 32) starting at bit `pos` of a byte section (MSB first), zeros past its end.
uint64_t BitField(const uint8_t* data, uint64_t bytes, uint64_t pos, unsigned width) {
  const uint64_t byte = pos >> 3;
  uint64_t v = 0;
  for (uint64_t i = 0; i < 8 && byte + i < bytes; ++i) v |= static_cast<uint64_t>(data[byte + i]) << (56 - 8 * i);
  return (v << (pos & 7)) >> (64 - width);
}

// Canonical code from lengths (validated: <= 16, Kraft <= 1). Returns false with *why otherwise.
bool BuildCode(const uint8_t* lengths, size_t n, const char* name, HuffmanCode* hc, std::vector<uint32_t>* primary,
               std::vector<uint16_t>* sorted, std::string* why) {
  uint32_t count[kMaxCodeBits + 1] = {};
  for (size_t s = 0; s < n; ++s) {
    if (lengths[s] > kMaxCodeBits) {
      *why = std::string(name) + " code lengths: a length exceeds 16";
      return false;
    }
    ++count[lengths[s]];
  }
  uint64_t kraft = 0;
  unsigned max_len = 0;
  for (unsigned len = 1; len <= kMaxCodeBits; ++len) {
    kraft += static_cast<uint64_t>(count[len]) << (kMaxCodeBits - len);
    if (count[len]) max_len = len;
  }
  if (kraft > (uint64_t{1} << kMaxCodeBits)) {
    *why = std::string(name) + " code lengths are over-subscribed";
    return false;
  }
  *hc = HuffmanCode{};
  hc->max_len = max_len;
  hc->primary_bits = std::min<unsigned>(max_len, kPrimaryBits);
  primary->assign(size_t{1} << hc->primary_bits, 0u);
  sorted->assign(1, 0);
  if (max_len == 0) return true;
  // DEFLATE's canonical assignment (RFC 1951, 3.2.2), as src/decode.cc.
  uint32_t code = 0, index = 0;
  count[0] = 0;
  for (unsigned len = 1; len <= kMaxCodeBits; ++len) {
    code = (code + count[len - 1]) << 1;
    hc->first_code[len] = code;
    hc->count[len] = count[len];
    hc->first_index[len] = index;
    index += count[len];
  }
  sorted->assign(std::max<uint32_t>(index, 1), 0);
  uint32_t next_code[kMaxCodeBits + 1], next_index[kMaxCodeBits + 1];
  std::memcpy(next_code, hc->first_code, sizeof next_code);
  std::memcpy(next_index, hc->first_index, sizeof next_index);
  const unsigned p = hc->primary_bits;
  for (size_t s = 0; s < n; ++s) {
    const unsigned len = lengths[s];
    if (!len) continue;
    const uint32_t c = next_code[len]++;
    (*sorted)[next_index[len]++] = static_cast<uint16_t>(s);
    if (len <= p) {
      const size_t first = static_cast<size_t>(c) << (p - len), span = size_t{1} << (p - len);
      for (size_t i = first; i < first + span; ++i) (*primary)[i] = (static_cast<uint32_t>(s) << 5) | len;
    } else {
      (*primary)[c >> (len - p)] = kLongCode;  // a prefix-free code: no short code has this prefix
    }
  }
  return true;
}

StreamCopy CopyStream(const uint8_t* data, const Section& s) {
  StreamCopy c;
  c.bits = 8 * static_cast<uint64_t>(s.size);
  c.words.assign((s.size + 3) / 4 + 2, 0u);
  if (s.size) std::memcpy(c.words.data(), data + s.offset, s.size);
  return c;
}

}  // namespace

const char* ChunkErrorName(uint32_t e) {
  switch (e) {
    case kOk: return "ok";
    case kNoCodes: return "a symbol is needed but the stream has no codes";
    case kNoCode: return "a bit pattern matches no code";
    case kEndsInsideCode: return "the stream ends inside a code";
    case kPastChunkEnd: return "the chunk runs past the next chunk's offset";
    case kFillerPastEnd: return "fillers run past the last column";
    case kColumnOutOfRange: return "an entry's column is >= cols";
    case kClusterOutOfRange: return "a cluster index is outside the codebook";
    default: return "unknown chunk error";
  }
}

void RejectWithCpuReader(const uint8_t* data, size_t size, const DecodeOptions& options, const std::string& why) {
  GemmOptions o;
  o.kernel = "scalar";
  o.form = "sparse";
  (void)DecodeBlockMatrix(data, size, options, o);  // throws the CPU path's error
  throw std::logic_error("onnx_dc GPU decoder rejected a payload the CPU reader accepts (" + why + ")");
}

bool PlanGpuDecode(const uint8_t* data, size_t size, const DecodeOptions& options, DecodePlan* plan,
                   std::string* why) {
  DecodePlan& p = *plan;
  p = DecodePlan{};
  p.info = ParsePayload(data, size, options);  // the CPU reader: throws PayloadError
  const PayloadHeader& h = p.info.header;
  if (h.rank != 2 || h.cols >= (uint64_t{1} << 32)) RejectWithCpuReader(data, size, options, "rank or K");
  p.rows = h.rows;
  p.cols = h.cols;
  p.nnz = h.nnz;
  p.wide = h.cols >= 65536;
  if (h.nnz == 0) {
    // Nothing to decode: the CPU reader validates it all (no per-row allocation unless row counts are
    // stored, which the blob bounds).
    GemmOptions o;
    o.kernel = "scalar";
    o.form = "sparse";
    (void)DecodeBlockMatrix(data, size, options, o);
    return true;
  }
  // nnz > 0 implies rows >= 1, cols >= 1 and n_chunks >= 1 (ParsePayload).
  if (!BuildCode(p.info.index_lengths.data(), p.info.index_lengths.size(), "index", &p.index_code, &p.index_primary,
                 &p.index_sorted, why) ||
      !BuildCode(p.info.weight_lengths.data(), size_t{1} << h.weight_bits, "weight", &p.weight_code,
                 &p.weight_primary, &p.weight_sorted, why))
    return false;

  const uint64_t ibits = 8 * static_cast<uint64_t>(p.info.index_stream.size);
  const uint64_t wbits = 8 * static_cast<uint64_t>(p.info.weight_stream.size);
  p.chunks.resize(h.n_chunks);  // 24 bytes each in the blob
  for (uint32_t i = 0; i < h.n_chunks; ++i) {
    const uint8_t* e = data + p.info.chunk_table.offset + sizeof(ChunkEntry) * size_t{i};
    Chunk c{LoadU64(e), LoadU64(e + 8), LoadU64(e + 16)};
    if (i == 0) {
      if (c.row_start != 0 || c.index_bit_offset != 0 || c.weight_bit_offset != 0) {
        *why = "the first chunk must start at row 0 and bit 0";
        return false;
      }
    } else {
      const Chunk& prev = p.chunks[i - 1];
      if (c.row_start <= prev.row_start || c.index_bit_offset < prev.index_bit_offset ||
          c.weight_bit_offset < prev.weight_bit_offset) {
        *why = "chunk table out of order";
        return false;
      }
    }
    if (c.row_start >= h.rows || c.index_bit_offset > ibits || c.weight_bit_offset > wbits) {
      *why = "chunk outside the rows or streams";
      return false;
    }
    p.chunks[i] = c;
  }

  if (h.row_count_bits == 0) {
    *why = "nnz > 0 but row counts have 0 bits";
    return false;
  }
  // rows <= 8 * row count bytes here, so these allocations are bounded by the blob.
  const uint8_t* rc = data + p.info.row_nnz.offset;
  const uint64_t rc_bytes = p.info.row_nnz.size;
  p.row_nnz.resize(h.rows);
  p.row_ptr.resize(h.rows + 1);
  p.row_ptr[0] = 0;
  const unsigned width = h.row_count_bits;
  for (uint64_t r = 0; r < h.rows; ++r) {
    const uint64_t v = BitField(rc, rc_bytes, r * width, width);
    if (v > h.cols) {
      *why = "a row count exceeds cols";
      return false;
    }
    p.row_nnz[r] = static_cast<uint32_t>(v);  // <= cols < 2^32
    p.row_ptr[r + 1] = p.row_ptr[r] + v;       // <= rows * cols <= 2^62
  }
  if (p.row_ptr[h.rows] != h.nnz) {
    *why = "row counts do not add up to nnz";
    return false;
  }
  p.index_stream = CopyStream(data, p.info.index_stream);
  p.weight_stream = CopyStream(data, p.info.weight_stream);
  return true;
}

bool CheckChunkStatuses(const DecodePlan& plan, const uint8_t* data, const std::vector<ChunkStatus>& status,
                        std::string* why) {
  const size_t n = plan.chunks.size();
  if (status.size() != n) {
    *why = "chunk status count";
    return false;
  }
  uint64_t symbols = 0;
  for (size_t i = 0; i < n; ++i) {
    const ChunkStatus& s = status[i];
    if (s.index_error || s.weight_error) {
      *why = "chunk " + std::to_string(i) + ": " + ChunkErrorName(s.index_error ? s.index_error : s.weight_error) +
             " (" + (s.index_error ? "index stream, row " + std::to_string(s.index_where)
                                 : "weight stream, entry " + std::to_string(s.weight_where)) + ")";
      return false;
    }
    symbols += s.symbols;
    if (i + 1 < n) {
      if (s.index_end != plan.chunks[i + 1].index_bit_offset || s.weight_end != plan.chunks[i + 1].weight_bit_offset) {
        *why = "chunk " + std::to_string(i) + " does not end where chunk " + std::to_string(i + 1) + " starts";
        return false;
      }
    }
  }
  if (n) {
    const ChunkStatus& s = status[n - 1];
    auto end_ok = [&](uint64_t pos, const Section& sec) {
      if ((pos + 7) / 8 != sec.size) return false;
      return !((pos & 7) && (data[sec.offset + sec.size - 1] & ((1u << (8 - (pos & 7))) - 1)));
    };
    if (!end_ok(s.index_end, plan.info.index_stream) || !end_ok(s.weight_end, plan.info.weight_stream)) {
      *why = "the last chunk does not end in the last byte of a stream, or its padding bits are not zero";
      return false;
    }
  }
  if (symbols != plan.info.header.n_index_symbols) {
    *why = "decoded " + std::to_string(symbols) + " index symbols, the header says " +
           std::to_string(plan.info.header.n_index_symbols);
    return false;
  }
  return true;
}

HostFormat EmulateGpuDecode(const uint8_t* data, size_t size, const DecodeOptions& options) {
  DecodePlan plan;
  std::string why;
  if (!PlanGpuDecode(data, size, options, &plan, &why)) RejectWithCpuReader(data, size, options, why);
  HostFormat f;
  f.rows = plan.rows;
  f.cols = plan.cols;
  f.nnz = plan.nnz;
  f.wide = plan.wide;
  f.codebook_size = plan.info.header.codebook_size;
  std::memcpy(f.codebook, plan.info.codebook.data(), sizeof f.codebook);
  if (plan.nnz == 0) return f;

  std::vector<uint32_t> col(plan.nnz, 0u);
  std::vector<uint8_t> cluster(plan.nnz, 0u);
  std::vector<ChunkStatus> status(plan.chunks.size(), ChunkStatus{});
  DecodeArgs a{};
  a.chunks = plan.chunks.data();
  a.n_chunks = static_cast<uint32_t>(plan.chunks.size());
  a.rows = plan.rows;
  a.cols = plan.cols;
  a.filler = (uint32_t{1} << plan.info.header.index_bits) - 1;
  a.codebook_size = plan.info.header.codebook_size;
  a.row_nnz = plan.row_nnz.data();
  a.row_ptr = plan.row_ptr.data();
  a.index_stream = {plan.index_stream.words.data(), plan.index_stream.words.size(), plan.index_stream.bits};
  a.weight_stream = {plan.weight_stream.words.data(), plan.weight_stream.words.size(), plan.weight_stream.bits};
  a.index_code = plan.index_code;
  a.weight_code = plan.weight_code;
  a.index_primary = plan.index_primary.data();
  a.weight_primary = plan.weight_primary.data();
  a.index_sorted = plan.index_sorted.data();
  a.weight_sorted = plan.weight_sorted.data();
  a.col = col.data();
  a.cluster = cluster.data();
  a.status = status.data();
  for (uint32_t i = 0; i < a.n_chunks; ++i) {
    DecodeChunkIndex(a, i, plan.index_primary.data());
    DecodeChunkWeights(a, i, plan.weight_primary.data());
  }
  if (!CheckChunkStatuses(plan, data, status, &why)) RejectWithCpuReader(data, size, options, why);

  const uint32_t ncl = f.codebook_size;
  std::vector<uint64_t> count(ncl);
  f.row_block.assign(plan.rows + 1, 0);
  for (uint64_t r = 0; r < plan.rows; ++r)
    f.row_block[r + 1] = f.row_block[r] + RowBlocks(cluster.data(), plan.row_ptr[r], plan.row_ptr[r + 1], ncl,
                                                    count.data(), 1);
  f.blocks = f.row_block[plan.rows];
  f.cluster.assign(f.blocks, 0);
  if (f.wide)
    f.col32.assign(4 * f.blocks, 0);
  else
    f.col16.assign(4 * f.blocks, 0);
  for (uint64_t r = 0; r < plan.rows; ++r) {
    if (f.wide)
      FillRow<uint32_t>(col.data(), cluster.data(), plan.row_ptr[r], plan.row_ptr[r + 1], ncl, count.data(), 1,
                        f.row_block[r], static_cast<uint32_t>(f.cols), f.col32.data(), f.cluster.data());
    else
      FillRow<uint16_t>(col.data(), cluster.data(), plan.row_ptr[r], plan.row_ptr[r + 1], ncl, count.data(), 1,
                        f.row_block[r], static_cast<uint16_t>(f.cols), f.col16.data(), f.cluster.data());
  }
  return f;
}

std::string CompareWithCpuFormat(const HostFormat& f, const BlockMatrix& w) {
  if (w.form != Form::kSparseBlocks) return "the CPU format is not sparse blocks";
  if (f.rows != w.rows || f.cols != w.cols || f.nnz != w.nnz) return "shape or nnz differ";
  if (f.wide != w.wide()) return "column width differs";
  if (f.nnz == 0) return w.blocks == 0 ? "" : "CPU has blocks for an empty matrix";
  if (f.blocks != w.blocks) return "block counts differ: " + std::to_string(f.blocks) + " vs " + std::to_string(w.blocks);
  if (f.row_block != w.row_block) return "row_block differs";
  for (uint64_t b = 0; b < f.blocks; ++b) {
    const float v = f.codebook[f.cluster[b]];
    if (std::memcmp(&v, &w.weight[b], sizeof v) != 0) return "block " + std::to_string(b) + ": value differs";
    for (int u = 0; u < 4; ++u) {
      const uint64_t a = f.wide ? f.col32[4 * b + u] : f.col16[4 * b + u];
      const uint64_t c = w.wide() ? w.col32[4 * b + u] : w.col16[4 * b + u];
      if (a != c) return "block " + std::to_string(b) + ": column " + std::to_string(u) + " differs";
    }
  }
  return "";
}

}  // namespace gpu
}  // namespace onnx_dc
