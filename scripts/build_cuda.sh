#!/usr/bin/env bash
# Build the CUDA targets of custom_ops/ (docs/CUDA.md) with CMake. Opt-in: scripts/build_native.sh and the
# wheel build never build them.
#
#   bash scripts/build_cuda.sh               onnx_dc_cuda_harness, onnx_dc_cuda_emulation_test and, when
#                                            onnxruntime's headers are there, libonnx_dc_ops_cuda.so
#                                            (CPU ops + DCSparseGemm for CUDAExecutionProvider); needs nvcc
#   bash scripts/build_cuda.sh --install     the same, then copy libonnx_dc_ops_cuda.so into onnx_dc/
#   bash scripts/build_cuda.sh --emulation   only onnx_dc_cuda_emulation_test (the GPU decoder's code on the
#                                            host; plain C++, no CUDA needed)
#
# Environment: ONNX_DC_CUDA_ARCHITECTURES (default "80;90"), ONNX_DC_CUDA_BUILD_DIR (default build/cuda/release,
# build/cuda/emulation for --emulation), ONNX_DC_BUILD_JOBS (default 2), CUDACXX or nvcc on PATH,
# ONNXRUNTIME_INCLUDE_DIR (see custom_ops/CMakeLists.txt). Prints the build folder on the last line.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
mode=cuda
install=0
for arg in "$@"; do
  case "$arg" in
    --emulation) mode=emulation ;;
    --install) install=1 ;;
    *) echo "usage: build_cuda.sh [--emulation] [--install]" >&2; exit 2 ;;
  esac
done
jobs="${ONNX_DC_BUILD_JOBS:-2}"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)

if [[ $mode == emulation ]]; then
  dir="${ONNX_DC_CUDA_BUILD_DIR:-build/cuda/emulation}"
  mkdir -p "$dir"
  exec 9>"$dir.lock"
  flock 9
  cmake -S custom_ops -B "$dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DONNX_DC_BUILD_CUDA=OFF \
    -DONNX_DC_BUILD_ORT_LIBRARY=OFF >/dev/null
  cmake --build "$dir" -j "$jobs" --target onnx_dc_cuda_emulation_test
  echo "$dir"
  exit 0
fi

if [[ -z "${CUDACXX:-}" ]] && ! command -v nvcc >/dev/null; then
  echo "build_cuda.sh: nvcc not found (put it on PATH or set CUDACXX); --emulation builds without CUDA" >&2
  exit 3
fi
have_headers=OFF
for d in "${ONNXRUNTIME_INCLUDE_DIR:-}" .deps/onnxruntime/include /usr/include/onnxruntime; do
  [[ -n "$d" && -f "$d/onnxruntime_c_api.h" ]] && have_headers=ON
done
dir="${ONNX_DC_CUDA_BUILD_DIR:-build/cuda/release}"
mkdir -p "$dir"
exec 9>"$dir.lock"
flock 9
cmake -S custom_ops -B "$dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DONNX_DC_BUILD_CUDA=ON \
  -DONNX_DC_CUDA_ARCHITECTURES="${ONNX_DC_CUDA_ARCHITECTURES:-80;90}" -DONNX_DC_BUILD_ORT_LIBRARY="$have_headers" >/dev/null
targets=(onnx_dc_cuda_harness onnx_dc_cuda_emulation_test)
[[ $have_headers == ON ]] && targets+=(onnx_dc_ops_cuda)
cmake --build "$dir" -j "$jobs" --target "${targets[@]}"
if [[ $install == 1 ]]; then
  if [[ $have_headers != ON ]]; then
    echo "build_cuda.sh: --install needs onnxruntime's headers (scripts/fetch_ort_headers.sh)" >&2
    exit 1
  fi
  if ! cmp -s "$dir/libonnx_dc_ops_cuda.so" onnx_dc/libonnx_dc_ops_cuda.so; then
    cp "$dir/libonnx_dc_ops_cuda.so" onnx_dc/libonnx_dc_ops_cuda.so.tmp
    mv onnx_dc/libonnx_dc_ops_cuda.so.tmp onnx_dc/libonnx_dc_ops_cuda.so
  fi
fi
echo "$dir"
