#!/usr/bin/env bash
# Fuzz the C++ payload reader and kernels (custom_ops/fuzz/fuzz_payload.cc) with libFuzzer for SECONDS
# (default 60), under AddressSanitizer + UndefinedBehaviorSanitizer; exit 1 on any crash, sanitizer report,
# timeout, leak or oversized allocation.
#
#   bash scripts/fuzz.sh [SECONDS] [libFuzzer options...]     e.g. bash scripts/fuzz.sh 3600 -use_value_profile=1
#
# 1. Installs clang and its sanitizer/fuzzer runtimes if missing (apt-get: clang, libclang-rt-<N>-dev; needs
#    root or sudo); CXX names another clang++ if wanted.
# 2. Builds fuzz_payload with -fsanitize=fuzzer,address,undefined into build/fuzz (incrementally).
# 3. Runs it on build/fuzz/corpus (kept between runs, grows with what the fuzzer finds) seeded from
#    custom_ops/fuzz/corpus/ (real payloads: custom_ops/fuzz/make_corpus.py) and tests/vectors/.
#    A crashing input is written to build/fuzz/artifacts/; replay it with build/fuzz/fuzz_payload FILE.
# Quiet: the build and the fuzzer's log go to build/fuzz/*.log; it prints one summary line (and, on failure,
# the end of the fuzzer's log first).
# Environment: ONNX_DC_BUILD_JOBS (default 2), ONNX_DC_FUZZ_RSS_MB (libFuzzer -rss_limit_mb, default 2048),
# ONNX_DC_FUZZ_LOG (the fuzzer's log, default build/fuzz/fuzz.log).
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
seconds="${1:-60}"
[[ $# -gt 0 ]] && shift
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || (( seconds < 1 )); then
  echo "usage: fuzz.sh [SECONDS] [libFuzzer options...]" >&2
  exit 2
fi
dir=build/fuzz
mkdir -p "$dir/corpus" "$dir/artifacts"
log="${ONNX_DC_FUZZ_LOG:-$dir/fuzz.log}"
build_log="$dir/build.log"
: >"$build_log"
fail() { echo "fuzz.sh: FAILED: $*"; exit 1; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "fuzz.sh: needs root for: $*" >>"$build_log"; return 1
  fi
}

# ---- 1. clang with libFuzzer and the sanitizer runtimes --------------------------------------------------
find_clang() {
  if [[ -n "${CXX:-}" && "$(basename "$CXX")" == clang++* ]] && command -v "$CXX" >/dev/null; then echo "$CXX"; return; fi
  if command -v clang++ >/dev/null; then echo clang++; return; fi
  local c
  c="$(compgen -c clang++- | grep -E '^clang\+\+-[0-9]+$' | sort -t- -k2 -n | tail -1)"
  [[ -n "$c" ]] && echo "$c"
}
# Links a trivial fuzz target with the runtimes we need (libclang-rt-<N>-dev may be missing: it is only a
# Recommends of clang on Debian).
runtimes_ok() {
  local probe="$dir/probe"
  printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' >"$probe.cc"
  "$1" -fsanitize=fuzzer,address,undefined "$probe.cc" -o "$probe" >>"$build_log" 2>&1
}
export DEBIAN_FRONTEND=noninteractive
cxx="$(find_clang)"
if [[ -z "$cxx" ]]; then
  echo "fuzz.sh: installing clang" >>"$build_log"
  { as_root apt-get update -q && as_root apt-get install -y -q clang; } >>"$build_log" 2>&1 \
    || fail "could not install clang (apt-get install clang; see $build_log)"
  cxx="$(find_clang)"
  [[ -n "$cxx" ]] || fail "clang++ is still missing after apt-get install clang"
fi
if ! runtimes_ok "$cxx"; then
  major="$("$cxx" -dumpversion | cut -d. -f1)"
  echo "fuzz.sh: installing libclang-rt-$major-dev" >>"$build_log"
  { as_root apt-get update -q && as_root apt-get install -y -q "libclang-rt-$major-dev"; } >>"$build_log" 2>&1 \
    || fail "$cxx cannot link -fsanitize=fuzzer,address,undefined and libclang-rt-$major-dev did not install (see $build_log)"
  runtimes_ok "$cxx" || fail "$cxx cannot link -fsanitize=fuzzer,address,undefined (see $build_log)"
fi

# ---- 2. build ------------------------------------------------------------------------------------------
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
cxx_path="$(command -v "$cxx")"
(
  flock 9
  if [[ -f "$dir/CMakeCache.txt" ]] && ! grep -qx "CMAKE_CXX_COMPILER:[A-Z]*=$cxx_path" "$dir/CMakeCache.txt"; then
    rm -rf "$dir/CMakeCache.txt" "$dir/CMakeFiles"  # another compiler: configure afresh
  fi
  cmake -S custom_ops -B "$dir" "${gen[@]}" -DCMAKE_CXX_COMPILER="$cxx_path" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DONNX_DC_BUILD_FUZZER=ON -DONNX_DC_SANITIZE=ON -DONNX_DC_BUILD_ORT_LIBRARY=OFF -DONNX_DC_BUILD_TESTS=OFF -DONNX_DC_BUILD_CUDA=OFF &&
  cmake --build "$dir" --target fuzz_payload -j "${ONNX_DC_BUILD_JOBS:-2}"
) 9>build/.fuzz.lock >>"$build_log" 2>&1 || { tail -30 "$build_log"; fail "the build failed (log: $build_log)"; }
[[ "$(nm "$dir/fuzz_payload" 2>/dev/null | grep -c ' T LLVMFuzzerRunDriver$')" -ge 1 ]] || fail "$dir/fuzz_payload has no libFuzzer in it"

# ---- 3. run --------------------------------------------------------------------------------------------
# A private copy of the binary, so that a concurrent build (another fuzz.sh) cannot swap it mid-run.
exe="$(mktemp "$dir/fuzz_payload.run.XXXXXX")"
trap 'rm -f "$exe"' EXIT
cp "$dir/fuzz_payload" "$exe" && chmod 755 "$exe"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:symbolize=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
start=$(date +%s)
"$exe" -max_total_time="$seconds" -timeout=25 -rss_limit_mb="${ONNX_DC_FUZZ_RSS_MB:-2048}" -max_len=131072 \
  -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "$@" \
  "$dir/corpus" custom_ops/fuzz/corpus tests/vectors >"$log" 2>&1
status=$?
elapsed=$(( $(date +%s) - start ))
runs="$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)"
[[ -n "$runs" ]] || runs="$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')"
cov="$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)"
corpus_n="$(find "$dir/corpus" -type f | wc -l)"
if [[ $status -ne 0 ]] || grep -qE '^==[0-9]+==ERROR|runtime error:|^SUMMARY: (Address|Undefined|Leak)|Test unit written to' "$log"; then
  echo "---- end of $log ----"
  tail -60 "$log"
  artifact="$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -1 | cut -d' ' -f5)"
  fail "fuzz_payload exited $status after ${runs:-?} runs in ${elapsed} s${artifact:+; input: $artifact (replay: $dir/fuzz_payload $artifact)}"
fi
echo "fuzz.sh: ok: fuzz_payload ran ${runs:-?} inputs in ${elapsed} s, no crash ($cov, corpus $corpus_n files; log $log)"
