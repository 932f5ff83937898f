#!/usr/bin/env bash
# Build the native side from this checkout, incrementally, and put libonnx_dc_ops.so inside the checkout's
# package (onnx_dc/libonnx_dc_ops.so), where onnx_dc.get_library_path() finds it. The tests use this.
#
#   bash scripts/build_native.sh              Release build in build/native (+ onnx_dc_selftest)
#   bash scripts/build_native.sh --sanitize   ASan + UBSan build in build/asan: onnx_dc_selftest, and
#                                             libonnx_dc_ops.so if the headers are there (not installed;
#                                             load it with LD_PRELOAD=libasan, see tests/test_native_corruption.py)
# Environment: ONNX_DC_BUILD_JOBS (default 2), ONNXRUNTIME_INCLUDE_DIR (see custom_ops/CMakeLists.txt).
# The CUDA targets are never built here (-DONNX_DC_BUILD_CUDA=OFF): scripts/build_cuda.sh builds them.
# Concurrent invocations wait for each other (flock on build/.native.lock).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
mode=release
for arg in "$@"; do
  case "$arg" in
    --sanitize) mode=asan ;;
    *) echo "usage: build_native.sh [--sanitize]" >&2; exit 2 ;;
  esac
done
jobs="${ONNX_DC_BUILD_JOBS:-2}"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
mkdir -p build
exec 9>build/.native.lock
flock 9

have_headers=OFF
for d in "${ONNXRUNTIME_INCLUDE_DIR:-}" .deps/onnxruntime/include /usr/include/onnxruntime; do
  [[ -n "$d" && -f "$d/onnxruntime_c_api.h" ]] && have_headers=ON
done

if [[ $mode == asan ]]; then
  # The self-test, and the library too when onnxruntime's headers are there (for LD_PRELOAD=libasan runs).
  dir=build/asan
  cmake -S custom_ops -B "$dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DONNX_DC_SANITIZE=ON \
    -DONNX_DC_BUILD_TESTS=ON -DONNX_DC_BUILD_FUZZER=ON -DONNX_DC_BUILD_ORT_LIBRARY="$have_headers" -DONNX_DC_BUILD_CUDA=OFF >/dev/null
  cmake --build "$dir" -j "$jobs"
  exit 0
fi

dir=build/native
cmake -S custom_ops -B "$dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DONNX_DC_BUILD_TESTS=ON -DONNX_DC_BUILD_CUDA=OFF >/dev/null
cmake --build "$dir" -j "$jobs"
# Copy only when changed, so an unchanged library keeps its timestamp.
if ! cmp -s "$dir/libonnx_dc_ops.so" onnx_dc/libonnx_dc_ops.so; then
  cp "$dir/libonnx_dc_ops.so" onnx_dc/libonnx_dc_ops.so.tmp
  mv onnx_dc/libonnx_dc_ops.so.tmp onnx_dc/libonnx_dc_ops.so
fi
