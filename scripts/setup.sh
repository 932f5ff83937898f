#!/usr/bin/env bash
# The one set-up script for a fresh machine (Debian 12 or 13; CI runs it as root on a clean clone).
# Idempotent: on a machine that is already set up it only checks, and rebuilds what changed.
#   1. apt packages, if missing: g++, cmake (>= 3.18), ninja; dataset-fashion-mnist (the bundled models' data)
#   2. onnxruntime's C/C++ headers into .deps/onnxruntime (scripts/fetch_ort_headers.sh)
#   3. the package with its test extras (pip install .[test], which builds the library into the installed
#      package; run from a checkout, Python imports the checkout's onnx_dc instead, see step 4)
#   4. libonnx_dc_ops.so built from this checkout into onnx_dc/ (scripts/build_native.sh)
# Environment: PYTHON (default python3).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
PY="${PYTHON:-python3}"
export DEBIAN_FRONTEND=noninteractive PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "setup.sh: needs root for: $*" >&2; return 1
  fi
}

# 1. Toolchain.
pkgs=()
command -v g++ >/dev/null || pkgs+=(g++)
command -v ninja >/dev/null || pkgs+=(ninja-build)
cmake_ok() {
  command -v cmake >/dev/null || return 1
  local v
  v="$(cmake --version | head -1 | grep -oE '[0-9]+\.[0-9]+' | head -1)"
  [[ "$(printf '%s\n3.18\n' "$v" | sort -V | head -1)" == "3.18" ]]
}
cmake_ok || pkgs+=(cmake)
# Fashion-MNIST for the bundled models' accuracy (onnx_dc/datasets.py), unless pointed elsewhere.
[[ -d "${ONNX_DC_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}" ]] || pkgs+=(dataset-fashion-mnist)
if (( ${#pkgs[@]} )); then
  echo "setup.sh: installing ${pkgs[*]}"
  as_root apt-get update -q >/dev/null
  as_root apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# 2. onnxruntime headers (the pip wheel ships none).
bash scripts/fetch_ort_headers.sh

# 3. The package and its test dependencies.
if [[ -f "$("$PY" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]]; then
  export PIP_BREAK_SYSTEM_PACKAGES=1  # a distribution's Python: this machine is the project's
fi
"$PY" -m pip install -q "scikit-build-core>=0.10"
# A regular (not editable) install: it builds the library into the installed package, and it leaves no
# import hook behind, so `python -m pytest` in any checkout imports that checkout's onnx_dc (the current
# directory comes first on sys.path) even after another clone on this machine ran this script.
"$PY" -m pip install -q --no-build-isolation ".[test,plots]"

# 4. The native library, into the checkout's package.
bash scripts/build_native.sh
echo "setup.sh: ready ($("$PY" -c 'import onnx_dc.native as n; print(n.get_library_path())'))"
