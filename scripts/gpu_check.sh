#!/usr/bin/env bash
# Every GPU check of docs/CUDA.md in one run, for a machine with an NVIDIA GPU and nvcc. Needs neither
# onnxruntime nor CMake: the harness is built with nvcc directly; the payloads come from
# scripts/make_cuda_cases.py (numpy only) unless build/cuda/cases already holds them (carry it).
#
#   bash scripts/gpu_check.sh
#
# Steps (ONNX_DC_GPU_CHECK_STEPS, default "check mutate bench"; "info" always runs first):
#   info    the device, CUDA runtime/driver versions, the cuBLAS library found
#   check   tests/vectors, custom_ops/fuzz/corpus, build/cuda/cases: the GPU decoder accepts/rejects as the CPU
#           reader (same message), builds exactly the CPU execution format, and Y is bit-identical to the
#           CPU scalar reference for batches 1..300 (with and without bias; batch 1 with x in shared memory
#           and through L1)
#   mutate  300 random mutations of each valid payload (checksum off): GPU decoder and CPU reader agree
#   bench   bench_4096x4096_10pct_5bit.bin at batch 1, 8, 64: GPU decode time, DCSparseGemm on the GPU vs
#           cuBLAS SGEMV/SGEMM (fp32 and TF32) of the dense layer; a table, and bench.json
# Output: $OUT (if set) else build/cuda/gpu_check/out: info.log, check.log, mutate.log, bench.log,
# bench.json, build.log, summary.txt. Exit status: 0 every step passed, 1 a step failed, 3 no CUDA device.
#
# Environment: ONNX_DC_CUDA_ARCH (default: the GPU's compute capability from nvidia-smi, else 90), NVCC
# (default nvcc), CXX (default g++, for the CPU reference sources), ONNX_DC_CUBLAS (path of libcublas.so.N;
# default: searched in CUDA's lib64, Python's nvidia/* and torch/lib folders, then the loader's path),
# ONNX_DC_GPU_CHECK_MUTATIONS (default 300), ONNX_DC_BENCH_REPS (default 200).
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="${OUT:-$repo/build/cuda/gpu_check/out}"
mkdir -p "$out"
bin_dir="$repo/build/cuda/gpu_check"
mkdir -p "$bin_dir"
summary="$out/summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }

nvcc_bin="${NVCC:-nvcc}"
if ! command -v "$nvcc_bin" >/dev/null; then
  for c in /usr/local/cuda/bin/nvcc /usr/local/cuda-*/bin/nvcc; do [[ -x $c ]] && nvcc_bin=$c && break; done
fi
if ! command -v "$nvcc_bin" >/dev/null && [[ ! -x $nvcc_bin ]]; then
  note "gpu_check: nvcc not found (set NVCC)"
  exit 1
fi
arch="${ONNX_DC_CUDA_ARCH:-}"
if [[ -z $arch ]] && command -v nvidia-smi >/dev/null; then
  arch="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')"
fi
arch="${arch:-90}"
note "gpu_check: $("$nvcc_bin" --version | tail -2 | head -1), sm_$arch"

# ---- build (parallel translation units) ----------------------------------------------------------------
t0=$(date +%s)
inc=(-Icustom_ops/include -Icustom_ops/src -Icustom_ops/cuda)
cuflags=(-std=c++17 -O3 "-arch=sm_$arch" --fmad=false -Xcompiler -ffp-contract=off,-Wall,-Wno-psabi "${inc[@]}")
cxxflags=(-std=c++17 -O2 -ffp-contract=off -Wall -Wno-psabi "${inc[@]}")
cxx="${CXX:-g++}"
command -v "$cxx" >/dev/null || cxx=""
rm -f "$bin_dir/onnx_dc_cuda_harness"
build_ok=0
{
  pids=()
  "$nvcc_bin" "${cuflags[@]}" -c custom_ops/cuda/dc_cuda.cu -o "$bin_dir/dc_cuda.o" & pids+=($!)
  "$nvcc_bin" "${cuflags[@]}" -c custom_ops/cuda/harness.cu -o "$bin_dir/harness.o" & pids+=($!)
  for src in custom_ops/cuda/decode_plan.cc custom_ops/src/decode.cc custom_ops/src/gemm_cpu.cc; do
    obj="$bin_dir/$(basename "$src" .cc).o"
    if [[ -n $cxx ]]; then
      "$cxx" "${cxxflags[@]}" -c "$src" -o "$obj" & pids+=($!)
    else
      "$nvcc_bin" -x cu "${cuflags[@]}" -c "$src" -o "$obj" & pids+=($!)
    fi
  done
  ok=1
  for p in "${pids[@]}"; do wait "$p" || ok=0; done
  [[ $ok == 1 ]] && "$nvcc_bin" "-arch=sm_$arch" "$bin_dir"/{harness,dc_cuda,decode_plan,decode,gemm_cpu}.o \
    -o "$bin_dir/onnx_dc_cuda_harness" -ldl && build_ok=1
} >"$out/build.log" 2>&1
if [[ $build_ok != 1 ]]; then
  note "gpu_check: build FAILED (build.log)"
  tail -20 "$out/build.log"
  exit 1
fi
note "gpu_check: built $bin_dir/onnx_dc_cuda_harness in $(( $(date +%s) - t0 )) s"
harness="$bin_dir/onnx_dc_cuda_harness"

# ---- cuBLAS -------------------------------------------------------------------------------------------------
if [[ -z ${ONNX_DC_CUBLAS:-} ]]; then
  dirs=(/usr/local/cuda/lib64 /usr/local/cuda-*/lib64 /usr/lib/x86_64-linux-gnu)
  if command -v python3 >/dev/null; then
    while IFS= read -r d; do dirs+=("$d"); done < <(python3 - <<'EOF' 2>/dev/null
import site, sys, glob, os
roots = list(site.getsitepackages()) + [site.getusersitepackages()]
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "**", "lib"), recursive=True)) + [os.path.join(r, "torch", "lib")]:
        if os.path.isdir(d):
            print(d)
EOF
)
  fi
  for d in "${dirs[@]}"; do
    for f in "$d"/libcublas.so.[0-9]*; do
      [[ -e $f && $f != *Lt* ]] && export ONNX_DC_CUBLAS="$f" && break 2
    done
  done
fi
if [[ -n ${ONNX_DC_CUBLAS:-} ]]; then
  export LD_LIBRARY_PATH="$(dirname "$ONNX_DC_CUBLAS")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# ---- info ---------------------------------------------------------------------------------------------------
"$harness" info >"$out/info.log" 2>&1
rc=$?
cat "$out/info.log" | tee -a "$summary"
if [[ $rc == 3 ]]; then
  note "gpu_check: no CUDA device; nothing was run on a GPU"
  exit 3
fi

# ---- payloads -----------------------------------------------------------------------------------------------
cases="$repo/build/cuda/cases"
if [[ ! -f $cases/bench_4096x4096_10pct_5bit.bin ]]; then
  if ! python3 scripts/make_cuda_cases.py "$cases" >"$out/cases.log" 2>&1; then
    note "gpu_check: could not write the payloads (cases.log); checking the committed vectors only"
  fi
fi
paths=(tests/vectors custom_ops/fuzz/corpus)
[[ -d $cases ]] && paths+=("$cases")

# ---- steps --------------------------------------------------------------------------------------------------
status=0
for step in ${ONNX_DC_GPU_CHECK_STEPS:-check mutate bench}; do
  t=$(date +%s)
  case "$step" in
    check) "$harness" check "${paths[@]}" >"$out/check.log" 2>&1 ;;
    mutate) "$harness" mutate --mutations "${ONNX_DC_GPU_CHECK_MUTATIONS:-300}" "${paths[@]}" >"$out/mutate.log" 2>&1 ;;
    bench)
      if [[ -f $cases/bench_4096x4096_10pct_5bit.bin ]]; then
        "$harness" bench --batches 1,8,64 --reps "${ONNX_DC_BENCH_REPS:-200}" --json "$out/bench.json" \
          "$cases/bench_4096x4096_10pct_5bit.bin" >"$out/bench.log" 2>&1
      else
        echo "FAILED: no benchmark payload ($cases/bench_4096x4096_10pct_5bit.bin)" >"$out/bench.log"
        false
      fi
      ;;
    *) echo "FAILED: unknown step $step" >"$out/$step.log"; false ;;
  esac
  rc=$?
  [[ $rc != 0 ]] && status=1
  note "gpu_check: $step: $( [[ $rc == 0 ]] && echo passed || echo "FAILED (rc $rc)" ) in $(( $(date +%s) - t )) s: $(tail -1 "$out/$step.log")"
  [[ $step == bench ]] && cat "$out/bench.log" >>"$summary"
done
[[ -f $out/bench.log ]] && cat "$out/bench.log"
exit $status
