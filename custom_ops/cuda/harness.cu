// onnx_dc_cuda_harness: the CUDA entry points of dc_cuda.h without onnxruntime, against the CPU reader and
// the CPU scalar reference (linked in: src/decode.cc, src/gemm_cpu.cc), and a benchmark against a dense
// cuBLAS SGEMV / SGEMM of the same layer. Run by scripts/gpu_check.sh and by tests/test_cuda.py when a GPU
// is visible.
//
//   onnx_dc_cuda_harness info
//   onnx_dc_cuda_harness check  [--batches LIST] PATH...        (payload files, or folders of *.bin)
//   onnx_dc_cuda_harness mutate [--mutations N] [--seed S] PATH...
//   onnx_dc_cuda_harness bench  [--batches 1,8,64] [--reps N] [--json FILE] PATH...
//
// check:  the GPU decoder accepts exactly the payloads the CPU reader accepts (same error message
//         otherwise) and builds exactly the CPU execution format (downloaded and compared); then, for each
//         batch size, Y from the GPU is bit-identical to SpmmReference (sparse form) with and without bias;
//         batch 1 with x in shared memory and through L1.
// mutate: N random 1..4-byte mutations of every valid rank-2 payload, checksum off: GPU and CPU accept and
//         reject the same ones; accepted ones give the same format and products.
// bench:  GPU decode time (Create) against the CPU decoder, then per batch size: DCSparseGemm on the GPU
//         against cuBLAS fp32 (SGEMV for batch 1, SGEMM otherwise) and TF32 SGEMM on the dense layer;
//         microseconds per call (CUDA events around back-to-back calls), effective GB/s, speedup.
//         cuBLAS is loaded at run time (dlopen): ONNX_DC_CUBLAS=/path/libcublas.so.N, else libcublas.so,
//         .so.13, .so.12 from the loader's path; without it the dense columns say "n/a".
// Exit status: 0 all checks passed, 1 a check failed, 2 usage, 3 no CUDA device.
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dc_cuda.h"
#include "decode_agreement.h"
#include "decode_plan.h"
#include "gemm.h"
#include "payload.h"
#include "../tests/test_support.h"

namespace {

using onnx_dc::BlockMatrix;
using onnx_dc::DecodeOptions;
using onnx_dc::gpu::SparseGemm;
using onnx_dc::gpu::ThrowIfCuda;

// ---- small utilities ------------------------------------------------------------------------------------

using onnx_dc_test::ReadFile;
using onnx_dc_test::Rng;

std::vector<uint64_t> ParseList(const std::string& s) {
  std::vector<uint64_t> v;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    v.push_back(std::strtoull(s.substr(pos, comma - pos).c_str(), nullptr, 10));
    pos = comma + 1;
  }
  return v;
}

template <typename T>
struct Dev {  // a device array
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) { ThrowIfCuda(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)), "cudaMalloc"); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  ~Dev() { cudaFree(p); }
  void Put(const std::vector<T>& v) { ThrowIfCuda(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "upload"); }
  std::vector<T> Get() const {
    std::vector<T> v(n);
    ThrowIfCuda(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return v;
  }
};

using onnx_dc_test::CpuDecode;
using Outcome = onnx_dc_test::DecodeOutcome;

Outcome GpuDecode(const std::vector<uint8_t>& blob, const DecodeOptions& o, cudaStream_t s,
                  std::unique_ptr<SparseGemm>* g) {
  // A CUDA failure is not a verdict on the payload.
  return onnx_dc_test::GpuOutcome<onnx_dc::gpu::CudaError>(
      [&] { *g = SparseGemm::Create(blob.data(), blob.size(), s, o); });
}

std::string DescribeAgreement(const Outcome& c, const Outcome& g) {
  return onnx_dc_test::DescribeAgreement(c, g, "GPU");
}

// Y from the GPU for batch m against SpmmReference, bit for bit. "" when equal.
std::string CheckProduct(const SparseGemm& g, const BlockMatrix& w, uint64_t m, bool with_bias, Rng& rng,
                         cudaStream_t s) {
  const uint64_t N = w.rows, K = w.cols;
  std::vector<float> x(m * K), bias(N), ref(m * N);
  for (float& v : x) v = rng.Below(8) == 0 ? 0.0f : rng.Uniform();
  for (float& v : bias) v = rng.Uniform();
  onnx_dc::SpmmReference(w, x.data(), m, with_bias ? bias.data() : nullptr, ref.data());
  Dev<float> dx(x.size()), db(bias.size()), dy(ref.size());
  dx.Put(x);
  db.Put(bias);
  ThrowIfCuda(cudaMemset(dy.p, 0xFF, dy.n * sizeof(float)), "memset");  // NaN: unwritten outputs show
  ThrowIfCuda(g.Run(dx.p, m, with_bias ? db.p : nullptr, dy.p, s), "Run");
  ThrowIfCuda(cudaStreamSynchronize(s), "Run (execution)");
  const std::vector<float> y = dy.Get();
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    if (std::memcmp(&y[i], &ref[i], sizeof(float)) != 0) {
      if (!bad) first = i;
      ++bad;
    }
  }
  if (!bad) return "";
  char msg[256];
  std::snprintf(msg, sizeof msg, "batch %llu%s: %zu of %zu outputs differ, first Y[%zu, %zu] = %.9g, reference %.9g",
                static_cast<unsigned long long>(m), with_bias ? " +bias" : "", bad, y.size(), first / N, first % N,
                y[first], ref[first]);
  return msg;
}

std::string FormatName(const BlockMatrix& w) {
  return std::to_string(w.rows) + "x" + std::to_string(w.cols) + ", nnz " + std::to_string(w.nnz);
}

// ---- cuBLAS, loaded at run time -----------------------------------------------------------------------------

struct Cublas {
  using Handle = void*;
  void* lib = nullptr;
  std::string path;
  int (*create)(Handle*) = nullptr;
  int (*destroy)(Handle) = nullptr;
  int (*set_stream)(Handle, cudaStream_t) = nullptr;
  int (*set_math_mode)(Handle, int) = nullptr;
  int (*sgemm)(Handle, int, int, int, int, int, const float*, const float*, int, const float*, int, const float*, float*,
               int) = nullptr;
  int (*sgemv)(Handle, int, int, int, const float*, const float*, int, const float*, int, const float*, float*,
               int) = nullptr;
  static constexpr int kOpN = 0, kOpT = 1;          // cublasOperation_t
  static constexpr int kDefaultMath = 0, kTf32 = 3;  // cublasMath_t

  bool Load() {
    std::vector<std::string> names;
    if (const char* e = std::getenv("ONNX_DC_CUBLAS"); e && *e) names.push_back(e);
    for (const char* n : {"libcublas.so", "libcublas.so.13", "libcublas.so.12"}) names.push_back(n);
    for (const std::string& n : names) {
      lib = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!lib) continue;
      create = reinterpret_cast<decltype(create)>(dlsym(lib, "cublasCreate_v2"));
      destroy = reinterpret_cast<decltype(destroy)>(dlsym(lib, "cublasDestroy_v2"));
      set_stream = reinterpret_cast<decltype(set_stream)>(dlsym(lib, "cublasSetStream_v2"));
      set_math_mode = reinterpret_cast<decltype(set_math_mode)>(dlsym(lib, "cublasSetMathMode"));
      sgemm = reinterpret_cast<decltype(sgemm)>(dlsym(lib, "cublasSgemm_v2"));
      sgemv = reinterpret_cast<decltype(sgemv)>(dlsym(lib, "cublasSgemv_v2"));
      if (create && destroy && set_stream && set_math_mode && sgemm && sgemv) {
        path = n;
        return true;
      }
      dlclose(lib);
      lib = nullptr;
    }
    return false;
  }
};

// ---- commands -----------------------------------------------------------------------------------------------

int Info() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::printf("no CUDA device (%s)\n", err != cudaSuccess ? cudaGetErrorString(err) : "device count 0");
    return 3;
  }
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp p;
    ThrowIfCuda(cudaGetDeviceProperties(&p, d), "cudaGetDeviceProperties");
    std::printf("device %d: %s, compute capability %d.%d, %d SMs, %.1f GiB, %zu KiB shared memory per block (opt-in)\n",
                d, p.name, p.major, p.minor, p.multiProcessorCount, p.totalGlobalMem / 1073741824.0,
                p.sharedMemPerBlockOptin / 1024);
  }
  std::printf("CUDA runtime %d, driver %d\n", runtime, driver);
  Cublas cb;
  std::printf("cuBLAS: %s\n", cb.Load() ? cb.path.c_str() : "not found (set ONNX_DC_CUBLAS=/path/to/libcublas.so.N)");
  return 0;
}

bool HaveDevice() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::printf("no CUDA device (%s)\n", err != cudaSuccess ? cudaGetErrorString(err) : "device count 0");
    return false;
  }
  return true;
}

int Check(const std::vector<std::string>& files, const std::vector<uint64_t>& batches) {
  cudaStream_t s;
  ThrowIfCuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  size_t failures = 0, checks = 0;
  Rng rng{0x5EEDull};
  for (const std::string& file : files) {
    const std::vector<uint8_t> blob = ReadFile(file);
    BlockMatrix w;
    std::unique_ptr<SparseGemm> g;
    const Outcome c = CpuDecode(blob, DecodeOptions{}, &w);
    const Outcome o = GpuDecode(blob, DecodeOptions{}, s, &g);
    ++checks;
    std::string d = DescribeAgreement(c, o);
    if (d.empty() && c.ok) d = onnx_dc::gpu::CompareWithCpuFormat(g->Download(), w);
    if (!d.empty()) {
      ++failures;
      std::printf("FAIL %s: decode: %s\n", file.c_str(), d.c_str());
      continue;
    }
    if (!c.ok) {
      std::printf("ok   %s: rejected by both (%s)\n", file.c_str(), c.error.c_str());
      continue;
    }
    size_t file_failures = 0, products = 0;
    const uint64_t work = std::max<uint64_t>(1, w.slots() + w.rows);
    // X and Y are m * (cols + rows) floats on the host and the device. The fuzz corpus declares layers of
    // 2^33 columns or 2^40 rows with nothing stored: decoding them is the test, a product with them is not.
    const uint64_t io_floats = w.rows + w.cols;
    for (uint64_t m : batches) {
      if (m * work > (uint64_t{1} << 31) && m > 1) continue;  // keep the CPU reference affordable
      if (io_floats > (uint64_t{1} << 26) / m) continue;       // at most 256 MiB of X and Y
      using onnx_dc::gpu::TileKernel;
      using onnx_dc::gpu::VectorX;
      struct Variant {
        bool bias;
        VectorX x;
        TileKernel tile;
      };
      std::vector<Variant> variants;
      if (m == 1) {
        variants = {{true, VectorX::kAuto, TileKernel::kAuto},
                    {false, VectorX::kAuto, TileKernel::kAuto},
                    {true, VectorX::kShared, TileKernel::kAuto},
                    {true, VectorX::kGlobal, TileKernel::kAuto}};
      } else {
        // Both batch kernels, whatever the automatic choice.
        variants = {{true, VectorX::kAuto, TileKernel::kGroups}, {true, VectorX::kAuto, TileKernel::kWarp}};
        if (m == 3) {
          variants.push_back({false, VectorX::kAuto, TileKernel::kGroups});
          variants.push_back({false, VectorX::kAuto, TileKernel::kWarp});
        }
      }
      for (const auto& v : variants) {
        g->set_vector_x(v.x);
        g->set_tile_kernel(v.tile);
        ++checks;
        ++products;
        const std::string e = CheckProduct(*g, w, m, v.bias, rng, s);
        if (!e.empty()) {
          ++failures;
          ++file_failures;
          std::printf("FAIL %s: %s [%s]\n", file.c_str(), e.c_str(), g->KernelFor(m).c_str());
        }
      }
      g->set_vector_x(onnx_dc::gpu::VectorX::kAuto);
      g->set_tile_kernel(onnx_dc::gpu::TileKernel::kAuto);
    }
    std::printf("%s %s: %s, %llu blocks, format identical, %zu products%s\n", file_failures ? "FAIL" : "ok  ",
                file.c_str(), FormatName(w).c_str(), static_cast<unsigned long long>(g->blocks()), products,
                file_failures ? " (some differ)"
                : products   ? " bit-identical to the CPU reference"
                             : " (none tried: X and Y would exceed 256 MiB)");
  }
  cudaStreamDestroy(s);
  std::printf("%s: check: %zu files, %zu checks, %zu failures\n", failures ? "FAILED" : "PASSED", files.size(), checks,
              failures);
  return failures ? 1 : 0;
}

int Mutate(const std::vector<std::string>& files, uint64_t mutations, uint64_t seed) {
  cudaStream_t s;
  ThrowIfCuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  Rng rng{seed * 0x9E3779B97F4A7C15ull + 1};
  size_t failures = 0, checks = 0;
  DecodeOptions no_crc;
  no_crc.check_crc = false;
  for (const std::string& file : files) {
    const std::vector<uint8_t> blob = ReadFile(file);
    BlockMatrix w0;
    if (!CpuDecode(blob, DecodeOptions{}, &w0).ok) continue;  // mutate valid rank-2 payloads only
    if (w0.slots() > (uint64_t{1} << 24)) continue;           // large layers: the CPU side would dominate
    size_t accepted = 0, bad = 0;
    for (uint64_t i = 0; i < mutations; ++i) {
      const std::vector<uint8_t> b = onnx_dc_test::Mutated(blob, rng);
      BlockMatrix w;
      std::unique_ptr<SparseGemm> g;
      const Outcome c = CpuDecode(b, no_crc, &w);
      const Outcome o = GpuDecode(b, no_crc, s, &g);
      ++checks;
      std::string d = DescribeAgreement(c, o);
      if (d.empty() && c.ok) {
        ++accepted;
        d = onnx_dc::gpu::CompareWithCpuFormat(g->Download(), w);
        if (d.empty() && w.rows * std::max<uint64_t>(w.cols, 1) <= (uint64_t{1} << 22))
          for (uint64_t m : {uint64_t{1}, uint64_t{3}})
            if (d.empty()) d = CheckProduct(*g, w, m, true, rng, s);
      }
      if (!d.empty()) {
        ++failures;
        if (++bad <= 5) std::printf("FAIL %s mutation %llu: %s\n", file.c_str(), static_cast<unsigned long long>(i), d.c_str());
      }
    }
    std::printf("%s %s: %llu mutations, %zu accepted, %zu disagreements\n", bad ? "FAIL" : "ok  ", file.c_str(),
                static_cast<unsigned long long>(mutations), accepted, bad);
  }
  cudaStreamDestroy(s);
  std::printf("%s: mutate: %zu checks, %zu failures\n", failures ? "FAILED" : "PASSED", checks, failures);
  return failures ? 1 : 0;
}

double TimeUs(cudaStream_t s, int warmup, int reps, const std::function<void()>& call) {
  for (int i = 0; i < warmup; ++i) call();
  cudaEvent_t a, b;
  ThrowIfCuda(cudaEventCreate(&a), "event");
  ThrowIfCuda(cudaEventCreate(&b), "event");
  ThrowIfCuda(cudaEventRecord(a, s), "event");
  for (int i = 0; i < reps; ++i) call();
  ThrowIfCuda(cudaEventRecord(b, s), "event");
  ThrowIfCuda(cudaEventSynchronize(b), "timed calls");
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return 1000.0 * ms / reps;
}

double MaxRelErr(const std::vector<float>& y, const std::vector<float>& ref) {
  double scale = 1e-30, err = 0;
  for (float r : ref) scale = std::max(scale, std::fabs(static_cast<double>(r)));
  for (size_t i = 0; i < y.size(); ++i) err = std::max(err, std::fabs(static_cast<double>(y[i]) - ref[i]));
  return err / scale;
}

int Bench(const std::vector<std::string>& files, const std::vector<uint64_t>& batches, int reps,
          const std::string& json_path) {
  cudaStream_t s;
  ThrowIfCuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  Cublas cb;
  const bool have_cublas = cb.Load();
  Cublas::Handle h = nullptr;
  if (have_cublas) {
    if (cb.create(&h) != 0) throw std::runtime_error("cublasCreate failed");
    cb.set_stream(h, s);
  }
  std::printf("cuBLAS: %s\n", have_cublas ? cb.path.c_str() : "not found (set ONNX_DC_CUBLAS): dense columns n/a");
  std::string json = "[";
  int failures = 0;
  Rng rng{42};
  for (const std::string& file : files) {
    const std::vector<uint8_t> blob = ReadFile(file);
    // CPU decode (the default options: what DCSparseGemm on the CPU does at session creation).
    const auto c0 = std::chrono::steady_clock::now();
    BlockMatrix wcpu = onnx_dc::DecodeBlockMatrix(blob.data(), blob.size());
    const double cpu_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - c0).count();
    BlockMatrix w;
    if (!CpuDecode(blob, DecodeOptions{}, &w).ok) throw std::runtime_error(file + ": not a rank-2 payload");
    // GPU decode: once to warm up the context and module, then timed.
    (void)SparseGemm::Create(blob.data(), blob.size(), s);
    std::unique_ptr<SparseGemm> g = SparseGemm::Create(blob.data(), blob.size(), s);
    const auto& t = g->timing();
    const onnx_dc::PayloadInfo info = onnx_dc::ParsePayload(blob.data(), blob.size());
    const uint64_t N = w.rows, K = w.cols;
    const double dense_bytes = 4.0 * N * K;
    std::printf("\n%s\n  layer %llu x %llu, nnz %llu (%.2f%% kept), %u-bit codebook (%u values), payload %.2f MB\n",
                file.c_str(), static_cast<unsigned long long>(N), static_cast<unsigned long long>(K),
                static_cast<unsigned long long>(w.nnz), 100.0 * w.nnz / std::max(1.0, double(N) * K),
                info.header.weight_bits, info.header.codebook_size, blob.size() / 1e6);
    std::printf("  GPU format %.2f MB (%.2f bytes per nonzero, %llu blocks), dense fp32 %.2f MB\n",
                g->device_bytes() / 1e6, g->device_bytes() / std::max(1.0, double(w.nnz)),
                static_cast<unsigned long long>(g->blocks()), dense_bytes / 1e6);
    std::printf("  decode: CPU %.2f ms (one thread, %s form) | GPU Create %.2f ms = host checks %.2f + upload %.2f + "
                "chunk decode kernel %.3f (%u chunks) + format build %.3f + rest\n",
                cpu_ms, onnx_dc::FormName(wcpu.form), t.total_ms, t.host_validate_ms, t.upload_ms, t.decode_ms,
                info.header.n_chunks, t.build_ms);
    // Dense copy of W for cuBLAS.
    std::unique_ptr<Dev<float>> dw;
    if (have_cublas) {
      const onnx_dc::DenseTensor dense = onnx_dc::DecodeDense(blob.data(), blob.size());
      dw.reset(new Dev<float>(dense.values.size()));
      dw->Put(dense.values);
    }
    std::printf("  %5s | %-28s | %10s | %12s | %12s | %8s | %10s | %10s\n", "batch", "kernel", "sparse us",
                "cuBLAS fp32", "cuBLAS tf32", "speedup", "sparse GB/s", "dense GB/s");
    for (uint64_t m : batches) {
      std::vector<float> x(m * K);
      for (float& v : x) v = rng.Uniform();
      std::vector<float> ref(m * N);
      onnx_dc::SpmmReference(w, x.data(), m, nullptr, ref.data());
      Dev<float> dx(x.size()), dy(m * N);
      dx.Put(x);
      // The dense layer through cuBLAS, once per batch: fp32 (SGEMV at batch 1, SGEMM otherwise) and TF32.
      double fp32_us = -1, tf32_us = -1, fp32_err = -1, tf32_err = -1;
      if (have_cublas) {
        const float one = 1.0f, zero = 0.0f;
        const int in = static_cast<int>(N), ik = static_cast<int>(K), im = static_cast<int>(m);
        cb.set_math_mode(h, Cublas::kDefaultMath);
        auto dense_call = [&] {
          const int st = m == 1 ? cb.sgemv(h, Cublas::kOpT, ik, in, &one, dw->p, ik, dx.p, 1, &zero, dy.p, 1)
                                : cb.sgemm(h, Cublas::kOpT, Cublas::kOpN, in, im, ik, &one, dw->p, ik, dx.p, ik, &zero,
                                           dy.p, in);
          if (st != 0) throw std::runtime_error("cuBLAS call failed with status " + std::to_string(st));
        };
        fp32_us = TimeUs(s, 10, reps, dense_call);
        fp32_err = MaxRelErr(dy.Get(), ref);
        if (m > 1) {
          cb.set_math_mode(h, Cublas::kTf32);
          tf32_us = TimeUs(s, 10, reps, dense_call);
          tf32_err = MaxRelErr(dy.Get(), ref);
          cb.set_math_mode(h, Cublas::kDefaultMath);
        }
      }
      char fp32[32] = "n/a", tf32[32] = "n/a";
      if (fp32_us > 0) std::snprintf(fp32, sizeof fp32, "%.2f", fp32_us);
      if (tf32_us > 0) std::snprintf(tf32, sizeof tf32, "%.2f", tf32_us);
      const double io = 4.0 * (m * K + m * N);
      // Then DCSparseGemm: at batches >= 2 each batch kernel, a row each (Run overwrites all of Y).
      std::vector<onnx_dc::gpu::TileKernel> kernels = {onnx_dc::gpu::TileKernel::kAuto};
      if (m > 1) kernels = {onnx_dc::gpu::TileKernel::kGroups, onnx_dc::gpu::TileKernel::kWarp};
      for (const onnx_dc::gpu::TileKernel kernel : kernels) {
        g->set_tile_kernel(kernel);
        const double sparse_us = TimeUs(s, 10, reps, [&] { ThrowIfCuda(g->Run(dx.p, m, nullptr, dy.p, s), "Run"); });
        const bool exact = std::memcmp(dy.Get().data(), ref.data(), ref.size() * sizeof(float)) == 0;
        if (!exact) ++failures;
        const double sparse_gbs = (g->device_bytes() + io) / (sparse_us * 1e3);
        char speed[32] = "n/a", dgbs[32] = "n/a";
        if (fp32_us > 0) {
          std::snprintf(speed, sizeof speed, "%.2fx", fp32_us / sparse_us);
          std::snprintf(dgbs, sizeof dgbs, "%.0f", (dense_bytes + io) / (fp32_us * 1e3));
        }
        std::printf("  %5llu | %-28s | %10.2f | %12s | %12s | %8s | %10.0f | %10s%s\n",
                    static_cast<unsigned long long>(m), g->KernelFor(m).c_str(), sparse_us, fp32, tf32, speed,
                    sparse_gbs, dgbs, exact ? "" : "  [SPARSE RESULT DIFFERS FROM THE REFERENCE]");
        char rec[768];
        std::snprintf(rec, sizeof rec,
                      "%s{\"file\": \"%s\", \"N\": %llu, \"K\": %llu, \"nnz\": %llu, \"batch\": %llu, "
                      "\"kernel\": \"%s\", \"sparse_us\": %.3f, \"cublas_fp32_us\": %.3f, \"cublas_tf32_us\": %.3f, "
                      "\"cublas_fp32_rel_err\": %.3g, \"cublas_tf32_rel_err\": %.3g, \"sparse_bit_exact\": %s, "
                      "\"format_bytes\": %zu, \"gpu_create_ms\": %.3f, \"gpu_decode_kernel_ms\": %.3f, "
                      "\"cpu_decode_ms\": %.3f}",
                      json.size() > 1 ? ", " : "", file.c_str(), static_cast<unsigned long long>(N),
                      static_cast<unsigned long long>(K), static_cast<unsigned long long>(w.nnz),
                      static_cast<unsigned long long>(m), g->KernelFor(m).c_str(), sparse_us, fp32_us, tf32_us,
                      fp32_err, tf32_err, exact ? "true" : "false", g->device_bytes(), t.total_ms, t.decode_ms, cpu_ms);
        json += rec;
      }
      g->set_tile_kernel(onnx_dc::gpu::TileKernel::kAuto);
    }
    if (have_cublas)
      std::printf("  (cuBLAS results are checked against the reference: fp32 and tf32 max relative errors are in the "
                  "JSON output)\n");
  }
  json += "]\n";
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << json;
  }
  if (h) cb.destroy(h);
  cudaStreamDestroy(s);
  std::printf("%s: bench%s\n", failures ? "FAILED" : "PASSED",
              failures ? " (a sparse result differed from the reference)" : "");
  return failures ? 1 : 0;
}

int Usage() {
  std::fprintf(stderr,
               "usage: onnx_dc_cuda_harness info\n"
               "       onnx_dc_cuda_harness check  [--batches LIST] PATH...\n"
               "       onnx_dc_cuda_harness mutate [--mutations N] [--seed S] PATH...\n"
               "       onnx_dc_cuda_harness bench  [--batches 1,8,64] [--reps N] [--json FILE] PATH...\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage();
  // Line-buffered even into a file: a run killed part-way (memory, time limit) still leaves its log.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::string cmd = argv[1];
  std::vector<uint64_t> batches;
  uint64_t mutations = 200, seed = 1;
  int reps = 200;
  std::string json;
  std::vector<std::string> paths;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--batches" && i + 1 < argc)
      batches = ParseList(argv[++i]);
    else if (a == "--mutations" && i + 1 < argc)
      mutations = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--seed" && i + 1 < argc)
      seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--reps" && i + 1 < argc)
      reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--json" && i + 1 < argc)
      json = argv[++i];
    else if (!a.empty() && a[0] == '-')
      return Usage();
    else
      paths.push_back(a);
  }
  try {
    if (cmd == "info") return Info();
    if (cmd != "check" && cmd != "mutate" && cmd != "bench") return Usage();
    if (!HaveDevice()) return 3;
    const std::vector<std::string> files = onnx_dc_test::ExpandPaths(paths);
    if (files.empty()) return Usage();
    if (cmd == "check") {
      if (batches.empty()) batches = {1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 64, 65, 100, 128, 129, 300};
      return Check(files, batches);
    }
    if (cmd == "mutate") return Mutate(files, mutations, seed);
    if (batches.empty()) batches = {1, 8, 64};
    return Bench(files, batches, reps, json);
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    return 1;
  }
}
