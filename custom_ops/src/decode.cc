// The payload reader (docs/FORMAT.md): validation, canonical-Huffman table decoding, and the two
// decoded forms (the DCSparseGemm execution format and the dense tensor).
//
// Trust nothing: every size is checked against the blob before it is used, arithmetic on header values
// is overflow-checked, every allocation is bounded by the blob's size (see payload.h), and every loop is
// bounded by the bits of a stream (each decoded symbol consumes at least one bit).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "gemm.h"
#include "payload.h"

namespace onnx_dc {
namespace {

[[noreturn]] void Fail(const std::string& message) { throw PayloadError("invalid onnx-dc payload: " + message); }

uint16_t LoadU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t LoadU32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t LoadU64(const uint8_t* p) { return LoadU32(p) | (static_cast<uint64_t>(LoadU32(p + 4)) << 32); }
float LoadF32(const uint8_t* p) {
  uint32_t bits = LoadU32(p);
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// a * b, or Fail(what) on overflow of 64 bits.
uint64_t MulChecked(uint64_t a, uint64_t b, const char* what) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) Fail(std::string(what) + " overflows 64 bits");
  return r;
}

// ---- CRC-32 (zlib polynomial, reflected), slicing by 8 ---------------------------------------------

struct CrcTables {
  uint32_t t[8][256];
  CrcTables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
  }
};
const CrcTables& Tables() {
  static const CrcTables tables;
  return tables;
}

// ---- Bit streams: bit i is bit 7 - (i mod 8) of byte i / 8 ------------------------------------------

struct BitStream {
  const uint8_t* data = nullptr;
  uint64_t bytes = 0;
  uint64_t bits = 0;  // 8 * bytes (bytes <= blob size, so no overflow)
};

// The 64 bits starting at bit `pos` (pos <= bits), most significant first; zeros past the end.
inline uint64_t Peek64(const BitStream& s, uint64_t pos) {
  const uint64_t byte = pos >> 3;
  uint64_t v = 0;
  if (byte + 8 <= s.bytes) {
    uint64_t raw;
    std::memcpy(&raw, s.data + byte, 8);
    v = __builtin_bswap64(raw);
  } else {
    for (uint64_t i = 0; byte + i < s.bytes; ++i) v |= static_cast<uint64_t>(s.data[byte + i]) << (56 - 8 * i);
  }
  return v << (pos & 7);
}

// ---- Canonical Huffman decode table -----------------------------------------------------------------

class HuffmanTable {
 public:
  // lengths: one per symbol of the alphabet (n = 2^bits <= 65536). Checks FORMAT.md's rules.
  HuffmanTable(const uint8_t* lengths, size_t n, const char* name) : name_(name) {
    uint32_t count[kMaxCodeLength + 1] = {};
    for (size_t s = 0; s < n; ++s) {
      if (lengths[s] > kMaxCodeLength)
        Fail(std::string(name) + " code lengths: length " + std::to_string(lengths[s]) + " exceeds 16");
      ++count[lengths[s]];
    }
    uint64_t kraft = 0;  // sum of 2^(16 - len), <= 2^16 for a prefix code
    for (unsigned len = 1; len <= kMaxCodeLength; ++len) {
      kraft += static_cast<uint64_t>(count[len]) << (kMaxCodeLength - len);
      if (count[len]) max_len_ = len;
    }
    if (kraft > (uint64_t{1} << kMaxCodeLength))
      Fail(std::string(name) + " code lengths are over-subscribed (Kraft sum > 1)");
    if (max_len_ == 0) return;  // a stream without symbols
    // DEFLATE's canonical assignment (RFC 1951, 3.2.2).
    uint32_t next_code[kMaxCodeLength + 2] = {};
    uint32_t code = 0;
    count[0] = 0;
    for (unsigned len = 1; len <= kMaxCodeLength; ++len) {
      code = (code + count[len - 1]) << 1;
      next_code[len] = code;
    }
    table_.assign(size_t{1} << max_len_, 0);  // 0 = no code has this prefix
    for (size_t s = 0; s < n; ++s) {
      const unsigned len = lengths[s];
      if (!len) continue;
      const uint32_t c = next_code[len]++;
      const unsigned fill = max_len_ - len;
      const size_t first = static_cast<size_t>(c) << fill;
      const uint32_t entry = (static_cast<uint32_t>(s) << 5) | len;
      std::fill(table_.begin() + first, table_.begin() + first + (size_t{1} << fill), entry);
    }
  }

  // Decode one symbol at *pos; checks that it is a code and that it ends within the stream.
  inline uint32_t Decode(const BitStream& s, uint64_t* pos) const {
    if (max_len_ == 0) Fail(std::string("the ") + name_ + " stream has no codes but a symbol is needed");
    const uint32_t e = table_[Peek64(s, *pos) >> (64 - max_len_)];
    const unsigned len = e & 31;
    if (len == 0) Fail(std::string("a bit pattern in the ") + name_ + " stream matches no code");
    if (*pos + len > s.bits) Fail(std::string("the ") + name_ + " stream ends inside a code");
    *pos += len;
    return e >> 5;
  }

 private:
  const char* name_;
  unsigned max_len_ = 0;
  std::vector<uint32_t> table_;
};

// ---- Decoding the streams into a sink ----------------------------------------------------------------

// Row counts: rows fields of row_count_bits bits. Only called with row_count_bits >= 1, where
// rows <= 8 * section bytes bounds the allocation.
std::vector<uint32_t> ReadRowCounts(const uint8_t* blob, const PayloadInfo& info) {
  const unsigned width = info.header.row_count_bits;
  BitStream s{blob + info.row_nnz.offset, info.row_nnz.size, 8 * static_cast<uint64_t>(info.row_nnz.size)};
  std::vector<uint32_t> counts(info.rows());
  uint64_t sum = 0;
  for (uint64_t r = 0; r < info.rows(); ++r) {
    const uint64_t v = Peek64(s, r * width) >> (64 - width);
    if (v > info.cols()) Fail("row " + std::to_string(r) + " has " + std::to_string(v) + " entries but only " +
                              std::to_string(info.cols()) + " columns");
    counts[r] = static_cast<uint32_t>(v);
    sum += v;  // <= rows * cols <= 2^62 (checked in ParsePayload), no overflow
  }
  if (sum != info.nnz())
    Fail("row counts add up to " + std::to_string(sum) + " but nnz is " + std::to_string(info.nnz()));
  return counts;
}

// Calls sink.Entry(entry_index, row, column, cluster) for every real entry, in order, after checking
// the chunk table; throws on any broken rule. Before the first entry, sink.Begin(row_counts) (row
// counts empty when nnz == 0).
template <typename Sink>
void DecodeStreams(const uint8_t* blob, const PayloadInfo& info, Sink& sink) {
  const PayloadHeader& h = info.header;
  const uint64_t rows = h.rows, cols = h.cols;
  HuffmanTable index_code(info.index_lengths.data(), info.index_lengths.size(), "index");
  HuffmanTable weight_code(info.weight_lengths.data(), size_t{1} << h.weight_bits, "weight");

  // Chunk table: row starts 0, strictly increasing, < rows; bit offsets 0, non-decreasing, in the stream.
  const BitStream istream{blob + info.index_stream.offset, info.index_stream.size, 8 * uint64_t{info.index_stream.size}};
  const BitStream wstream{blob + info.weight_stream.offset, info.weight_stream.size, 8 * uint64_t{info.weight_stream.size}};
  std::vector<ChunkEntry> chunks(h.n_chunks);  // 24 bytes each, as many as the blob holds
  for (uint32_t i = 0; i < h.n_chunks; ++i) {
    const uint8_t* p = blob + info.chunk_table.offset + sizeof(ChunkEntry) * size_t{i};
    chunks[i] = {LoadU64(p), LoadU64(p + 8), LoadU64(p + 16)};
    const ChunkEntry& c = chunks[i];
    if (i == 0) {
      if (c.row_start != 0) Fail("the first chunk must start at row 0");
      if (c.index_bit_offset != 0 || c.weight_bit_offset != 0)
        Fail("the first chunk must start at bit 0 of both streams");
    } else {
      const ChunkEntry& prev = chunks[i - 1];
      if (c.row_start <= prev.row_start) Fail("chunk row starts must increase strictly");
      if (c.index_bit_offset < prev.index_bit_offset || c.weight_bit_offset < prev.weight_bit_offset)
        Fail("chunk bit offsets must not decrease");
    }
    if (c.row_start >= rows) Fail("chunk " + std::to_string(i) + " starts at row " + std::to_string(c.row_start) +
                                  " but there are " + std::to_string(rows) + " rows");
    if (c.index_bit_offset > istream.bits || c.weight_bit_offset > wstream.bits)
      Fail("chunk " + std::to_string(i) + " starts beyond the end of a stream");
  }

  std::vector<uint32_t> row_counts;
  if (h.nnz > 0) {
    if (h.row_count_bits == 0) Fail("nnz is " + std::to_string(h.nnz) + " but row counts have 0 bits");
    row_counts = ReadRowCounts(blob, info);
  }
  // nnz == 0: every row count must be 0; with row_count_bits >= 1 they are stored and must say so.
  else if (h.row_count_bits > 0) {
    row_counts = ReadRowCounts(blob, info);  // checks the sum (0)
    row_counts.clear();
  }
  sink.Begin(row_counts);

  const uint32_t filler = (uint32_t{1} << h.index_bits) - 1;
  uint64_t symbols = 0, entry = 0;
  for (uint32_t i = 0; i < h.n_chunks; ++i) {
    uint64_t ipos = chunks[i].index_bit_offset, wpos = chunks[i].weight_bit_offset;
    const uint64_t row_end = i + 1 < h.n_chunks ? chunks[i + 1].row_start : rows;
    if (!row_counts.empty()) {
      for (uint64_t r = chunks[i].row_start; r < row_end; ++r) {
        uint64_t cursor = 0;  // < cols whenever a symbol is read (checked below), so cursor + F never overflows
        for (uint32_t k = 0; k < row_counts[r]; ++k) {
          uint64_t column;
          for (;;) {
            const uint32_t s = index_code.Decode(istream, &ipos);
            if (++symbols > h.n_index_symbols)
              Fail("more index symbols than the header's " + std::to_string(h.n_index_symbols));
            if (s == filler) {
              cursor += filler;
              if (cursor >= cols) Fail("row " + std::to_string(r) + ": fillers run past the last column");
              continue;
            }
            column = cursor + s;
            if (column >= cols)
              Fail("row " + std::to_string(r) + ": an entry's column " + std::to_string(column) + " is >= cols " +
                   std::to_string(cols));
            cursor = column + 1;
            break;
          }
          const uint32_t c = weight_code.Decode(wstream, &wpos);
          if (c >= h.codebook_size)
            Fail("cluster index " + std::to_string(c) + " is outside the codebook of " + std::to_string(h.codebook_size));
          sink.Entry(entry++, r, column, c);
        }
      }
    }
    if (i + 1 < h.n_chunks) {
      if (ipos != chunks[i + 1].index_bit_offset || wpos != chunks[i + 1].weight_bit_offset)
        Fail("chunk " + std::to_string(i) + " does not end where chunk " + std::to_string(i + 1) + " starts");
    } else {
      auto check_end = [](const char* name, uint64_t pos, const BitStream& st) {
        if ((pos + 7) / 8 != st.bytes)
          Fail(std::string("the ") + name + " stream has " + std::to_string(st.bits - pos) + " bits left after decoding");
        if ((pos & 7) && (st.data[st.bytes - 1] & ((1u << (8 - (pos & 7))) - 1)))
          Fail(std::string("the ") + name + " stream's padding bits are not zero");
      };
      check_end("index", ipos, istream);
      check_end("weight", wpos, wstream);
    }
  }
  if (h.n_chunks == 0) {  // rows == 0: nothing to decode, the streams must be empty
    if (istream.bytes || wstream.bytes) Fail("a tensor without rows has non-empty streams");
  }
  if (symbols != h.n_index_symbols)
    Fail("decoded " + std::to_string(symbols) + " index symbols but the header says " + std::to_string(h.n_index_symbols));
  if (entry != h.nnz) Fail("decoded " + std::to_string(entry) + " entries but nnz is " + std::to_string(h.nnz));
}

template <typename Col>
struct SparseSink {
  SparseMatrix& w;
  std::vector<Col>& col;
  void Begin(const std::vector<uint32_t>& row_counts) {
    if (w.nnz == 0) return;
    w.row_ptr.resize(w.rows + 1);
    w.row_ptr[0] = 0;
    for (uint64_t r = 0; r < w.rows; ++r) w.row_ptr[r + 1] = w.row_ptr[r] + row_counts[r];
    col.resize(w.nnz);
    w.cluster.resize(w.nnz);
  }
  void Entry(uint64_t e, uint64_t, uint64_t column, uint32_t c) {
    col[e] = static_cast<Col>(column);
    w.cluster[e] = static_cast<uint8_t>(c);
  }
};

struct DenseSink {
  float* out;
  uint64_t cols;
  const float* codebook;
  void Begin(const std::vector<uint32_t>&) {}
  void Entry(uint64_t, uint64_t row, uint64_t column, uint32_t c) { out[row * cols + column] = codebook[c]; }
};

}  // namespace

uint32_t Crc32(const uint8_t* p, size_t n, uint32_t crc) {
  const auto& t = Tables().t;
  crc = ~crc;
  while (n >= 8) {
    const uint32_t lo = LoadU32(p) ^ crc, hi = LoadU32(p + 4);
    crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^ t[3][hi & 0xFF] ^
          t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) crc = t[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

PayloadInfo ParsePayload(const uint8_t* data, size_t size, const DecodeOptions& options) {
  if (data == nullptr && size != 0) Fail("null data");
  if (size < kHeaderSize + kCrcSize)
    Fail("truncated: " + std::to_string(size) + " bytes, the header and checksum alone need " +
         std::to_string(kHeaderSize + kCrcSize));
  PayloadInfo info;
  PayloadHeader& h = info.header;
  std::memcpy(h.magic, data, 4);
  h.version = LoadU16(data + 4);
  h.header_size = LoadU16(data + 6);
  h.total_size = LoadU64(data + 8);
  h.rank = data[16];
  h.weight_bits = data[17];
  h.index_bits = data[18];
  h.row_count_bits = data[19];
  h.codebook_size = LoadU32(data + 20);
  h.rows = LoadU64(data + 24);
  h.cols = LoadU64(data + 32);
  h.nnz = LoadU64(data + 40);
  h.n_index_symbols = LoadU64(data + 48);
  h.n_chunks = LoadU32(data + 56);
  h.flags = LoadU32(data + 60);
  h.index_stream_bytes = LoadU64(data + 64);
  h.weight_stream_bytes = LoadU64(data + 72);

  // Identification first, then the checksum, then everything else (FORMAT.md, "Byte layout").
  if (std::memcmp(h.magic, kMagic, 4) != 0) Fail("bad magic (not an onnx-dc payload)");
  if (h.version != kVersion)
    Fail("unsupported version " + std::to_string(h.version) + " (this reader knows version 1)");
  if (h.header_size != kHeaderSize) Fail("header_size is " + std::to_string(h.header_size) + ", must be 80");
  if (h.total_size != size)
    Fail("total_size is " + std::to_string(h.total_size) + " but the blob has " + std::to_string(size) +
         " bytes (truncated or padded)");
  if (options.check_crc && Crc32(data, size - kCrcSize) != LoadU32(data + size - kCrcSize))
    Fail("checksum mismatch (the payload is corrupted)");

  if (h.rank < 1 || h.rank > kMaxRank) Fail("rank " + std::to_string(h.rank) + " is outside 1..8");
  if (h.weight_bits < 1 || h.weight_bits > kMaxWeightBits)
    Fail("weight_bits " + std::to_string(h.weight_bits) + " is outside 1..8");
  if (h.index_bits < 1 || h.index_bits > kMaxIndexBits)
    Fail("index_bits " + std::to_string(h.index_bits) + " is outside 1..16");
  if (h.row_count_bits > kMaxRowCountBits)
    Fail("row_count_bits " + std::to_string(h.row_count_bits) + " is outside 0..32");
  if (h.codebook_size < 1 || h.codebook_size > (uint32_t{1} << h.weight_bits))
    Fail("codebook_size " + std::to_string(h.codebook_size) + " is outside 1..2^weight_bits");
  if (h.flags & ~kFlagEntropyCoded) Fail("unknown flag bits are set");

  // Sections, each checked against what is left before the checksum.
  const size_t end = size - kCrcSize;
  size_t pos = kHeaderSize;
  auto take = [&](uint64_t bytes, const char* what) {
    if (bytes > end - pos)
      Fail(std::string("truncated: the ") + what + " section needs " + std::to_string(bytes) + " bytes at offset " +
           std::to_string(pos) + " but only " + std::to_string(end - pos) + " remain");
    Section s{pos, static_cast<size_t>(bytes)};
    pos += static_cast<size_t>(bytes);
    return s;
  };
  const Section dims = take(8 * uint64_t{h.rank}, "dims");
  const Section codebook = take(4 * uint64_t{h.codebook_size}, "codebook");
  const Section wlen = take(uint64_t{1} << h.weight_bits, "weight code lengths");
  const Section ilen = take(uint64_t{1} << h.index_bits, "index code lengths");
  info.chunk_table = take(sizeof(ChunkEntry) * uint64_t{h.n_chunks}, "chunk table");
  const uint64_t row_bits = MulChecked(h.rows, h.row_count_bits, "rows * row_count_bits");
  info.row_nnz = take(row_bits / 8 + (row_bits % 8 != 0), "row counts");
  info.index_stream = take(h.index_stream_bytes, "index stream");
  info.weight_stream = take(h.weight_stream_bytes, "weight stream");
  if (pos != end) Fail(std::to_string(end - pos) + " unexplained bytes after the weight stream");

  // dims: the product (and every partial product) must fit; rows and cols must agree.
  info.dims.resize(h.rank);
  bool has_zero = false;
  for (unsigned i = 0; i < h.rank; ++i) {
    info.dims[i] = LoadU64(data + dims.offset + 8 * i);
    has_zero |= info.dims[i] == 0;
  }
  uint64_t cols = 1;
  bool cols_overflow = false;
  if (std::find(info.dims.begin() + 1, info.dims.end(), uint64_t{0}) != info.dims.end()) {
    cols = 0;
  } else {
    for (unsigned i = 1; i < h.rank; ++i) cols_overflow |= __builtin_mul_overflow(cols, info.dims[i], &cols);
  }
  if (!has_zero) {
    uint64_t elements = info.dims[0];
    for (unsigned i = 1; i < h.rank; ++i) {
      if (__builtin_mul_overflow(elements, info.dims[i], &elements) || elements > kMaxElements)
        Fail("the tensor has more than 2^62 elements");
    }
    if (elements > kMaxElements) Fail("the tensor has more than 2^62 elements");
  }
  if (h.rows != info.dims[0])
    Fail("rows " + std::to_string(h.rows) + " differ from dims[0] " + std::to_string(info.dims[0]));
  if (cols_overflow || h.cols != cols) Fail("cols " + std::to_string(h.cols) + " differ from the product of dims[1:]");
  // rows * cols <= 2^62 now (or one of them is 0).
  if (h.nnz > h.rows * h.cols) Fail("nnz " + std::to_string(h.nnz) + " exceeds rows * cols");
  if (h.nnz / 8 + (h.nnz % 8 != 0) > h.weight_stream_bytes)
    Fail("nnz " + std::to_string(h.nnz) + " cannot fit in a " + std::to_string(h.weight_stream_bytes) +
         "-byte weight stream");
  if (h.n_index_symbols < h.nnz) Fail("n_index_symbols is smaller than nnz");
  if (h.n_index_symbols / 8 + (h.n_index_symbols % 8 != 0) > h.index_stream_bytes)
    Fail("n_index_symbols " + std::to_string(h.n_index_symbols) + " cannot fit in a " +
         std::to_string(h.index_stream_bytes) + "-byte index stream");
  if (h.rows >= 1 ? (h.n_chunks < 1 || h.n_chunks > h.rows) : h.n_chunks != 0)
    Fail(std::to_string(h.n_chunks) + " chunks for " + std::to_string(h.rows) + " rows");

  for (uint32_t i = 0; i < h.codebook_size; ++i) {
    info.codebook[i] = LoadF32(data + codebook.offset + 4 * size_t{i});
    if (!std::isfinite(info.codebook[i])) Fail("codebook value " + std::to_string(i) + " is not finite");
  }
  std::memcpy(info.weight_lengths.data(), data + wlen.offset, wlen.size);
  info.index_lengths.assign(data + ilen.offset, data + ilen.offset + ilen.size);
  return info;
}

namespace {

// The CSR form of any payload (rank and K unchecked); for cols <= 2^32.
template <typename Col>
void DecodeCsr(const uint8_t* data, const PayloadInfo& info, SparseMatrix& w, std::vector<Col>& col) {
  w.rows = info.rows();
  w.cols = info.cols();
  w.nnz = info.nnz();
  w.codebook = info.codebook;
  SparseSink<Col> sink{w, col};
  DecodeStreams(data, info, sink);
}

}  // namespace

SparseMatrix DecodeSparse(const uint8_t* data, size_t size, const DecodeOptions& options) {
  PayloadInfo info = ParsePayload(data, size, options);
  if (info.header.rank != 2)
    Fail("DCSparseGemm needs a rank-2 payload [N, K], this one has rank " + std::to_string(info.header.rank));
  return DecodeSparse(data, info);
}

SparseMatrix DecodeSparse(const uint8_t* data, const PayloadInfo& info) {
  if (info.cols() > (uint64_t{1} << 32)) Fail("K = " + std::to_string(info.cols()) + " exceeds 2^32");
  SparseMatrix w;
  if (info.cols() > 65536) {
    DecodeCsr(data, info, w, w.col32);
  } else {
    DecodeCsr(data, info, w, w.col16);
  }
  return w;
}

DenseTensor DecodeDense(const uint8_t* data, size_t size, const DecodeOptions& options, uint64_t max_elements) {
  PayloadInfo info = ParsePayload(data, size, options);
  const uint64_t elements = info.rows() * info.cols();  // <= 2^62, checked
  if (elements > max_elements || elements > std::numeric_limits<size_t>::max() / sizeof(float))
    Fail("the dense tensor has " + std::to_string(elements) + " elements, more than the limit of " +
         std::to_string(max_elements));
  DenseTensor out;
  out.dims = info.dims;
  // Validate everything before allocating what dims declare: decode into the (blob-bounded) CSR form
  // first, then scatter.
  if (info.cols() <= (uint64_t{1} << 32)) {
    SparseMatrix w;
    DecodeCsr(data, info, w, w.col32);
    out.values.assign(static_cast<size_t>(elements), 0.0f);
    if (w.nnz == 0) return out;
    for (uint64_t r = 0; r < w.rows; ++r) {
      float* row = out.values.data() + r * w.cols;
      for (uint64_t e = w.row_ptr[r]; e < w.row_ptr[r + 1]; ++e) row[w.col32[e]] = w.codebook[w.cluster[e]];
    }
    return out;
  }
  // Over 2^32 columns: a validating pass that stores nothing, then the real one.
  struct NullSink {
    void Begin(const std::vector<uint32_t>&) {}
    void Entry(uint64_t, uint64_t, uint64_t, uint32_t) {}
  } null_sink;
  DecodeStreams(data, info, null_sink);
  out.values.assign(static_cast<size_t>(elements), 0.0f);
  DenseSink sink{out.values.data(), info.cols(), info.codebook.data()};
  DecodeStreams(data, info, sink);
  return out;
}

}  // namespace onnx_dc
