#!/usr/bin/env bash
# Fetch onnxruntime's C/C++ headers (Debian's libonnxruntime-dev, ORT 1.21, ORT_API_VERSION 21) into
# .deps/onnxruntime/include/ of this repository, for building custom_ops/ (the pip wheel ships no headers).
#
# - Debian 13 (trixie) or later: `apt-get install libonnxruntime-dev` (headers land in
#   /usr/include/onnxruntime, which CMake also finds) and they are copied into .deps as well.
# - Debian 12 (bookworm): the one .deb is downloaded from Debian 13's archive with a throw-away
#   source list, lists dir and cache (nothing is added to the system's apt configuration and
#   nothing is installed), then unpacked with `dpkg -x`.
# Idempotent: does nothing when .deps/onnxruntime/include/onnxruntime_c_api.h already exists.
# Needs root (or sudo-less apt access) only for the apt steps. Environment:
#   ONNX_DC_DEBIAN_MIRROR  archive to download from (default: http://deb.debian.org/debian)
#   ONNX_DC_DEPS_DIR       where to put the headers (default: <repo>/.deps/onnxruntime)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${ONNX_DC_DEPS_DIR:-$repo/.deps/onnxruntime}"
mirror="${ONNX_DC_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
header="onnxruntime_c_api.h"

if [[ -f "$dest/include/$header" ]]; then
  echo "fetch_ort_headers: headers already in $dest/include"
  exit 0
fi

copy_from() {  # copy_from <dir containing onnxruntime_c_api.h>
  mkdir -p "$dest"
  rm -rf "$dest/include.tmp"
  cp -r "$1" "$dest/include.tmp"
  rm -rf "$dest/include"
  mv "$dest/include.tmp" "$dest/include"
  echo "fetch_ort_headers: headers in $dest/include ($(grep -m1 -E '^#define ORT_API_VERSION' "$dest/include/$header"))"
}

if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
  echo "fetch_ort_headers: needs apt-get and dpkg (Debian). Otherwise get onnxruntime's headers" \
       "(1.17 or later, ORT_API_VERSION >= 17) and set ONNXRUNTIME_INCLUDE_DIR to their folder." >&2
  exit 1
fi

version_id="$(. /etc/os-release 2>/dev/null && echo "${VERSION_ID:-}")"
version_id="${version_id%%.*}"

# Debian 13+: the package is in the system's own archive.
if [[ -n "$version_id" && "$version_id" -ge 13 ]] 2>/dev/null; then
  if [[ ! -f "/usr/include/onnxruntime/$header" ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends libonnxruntime-dev \
      || { apt-get update && apt-get install -y --no-install-recommends libonnxruntime-dev; }
  fi
  copy_from /usr/include/onnxruntime
  exit 0
fi

# Debian 12 (or unknown): download the .deb from trixie with a throw-away apt state.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/deb"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if [[ ! -f /usr/share/keyrings/debian-archive-trixie-automatic.gpg ]]; then
  # Keyrings older than Debian 12.x's 2023.3+deb12u2 lack Debian 13's keys: update the keyring package.
  apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends debian-archive-keyring >/dev/null || true
fi
echo "deb [signed-by=$keyring] $mirror trixie main" > "$tmp/sources.list"
opts=(
  -o "Dir::Etc::SourceList=$tmp/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$tmp/lists"
  -o "Dir::Cache=$tmp/cache"
  -o "Dir::Cache::pkgcache=$tmp/cache/pkgcache.bin"
  -o "Dir::Cache::srcpkgcache=$tmp/cache/srcpkgcache.bin"
  -o "APT::Sandbox::User=root"
  -o "Acquire::Languages=none"
)
echo "fetch_ort_headers: downloading libonnxruntime-dev from Debian 13 ($mirror)"
apt-get "${opts[@]}" update -q >/dev/null
(cd "$tmp/deb" && apt-get "${opts[@]}" download libonnxruntime-dev >/dev/null)
deb="$(ls "$tmp"/deb/libonnxruntime-dev_*.deb)"
dpkg -x "$deb" "$tmp/root"
if [[ ! -f "$tmp/root/usr/include/onnxruntime/$header" ]]; then
  echo "fetch_ort_headers: $deb has no usr/include/onnxruntime/$header" >&2
  exit 1
fi
copy_from "$tmp/root/usr/include/onnxruntime"
echo "$(basename "$deb")" > "$dest/SOURCE"
