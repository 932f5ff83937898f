#!/usr/bin/env bash
# Set up (scripts/setup.sh, idempotent), run the whole test suite, then fuzz the C++ payload reader for
# 60 s (scripts/fuzz.sh; ONNX_DC_FUZZ_SECONDS=N changes the time, 0 skips it). Extra arguments go to pytest.
# pytest's exit status 5 (no tests collected) counts as success. The exit status is pytest's if it failed,
# else 1 if the fuzzer failed, else 0; the fuzzer's one-line summary comes after pytest's.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh || { echo "test.sh: set-up failed" >&2; exit 1; }
"${PYTHON:-python3}" -m pytest -q -rfE "$@"
status=$?
if [[ $status -eq 5 ]]; then
  echo "test.sh: pytest collected no tests"
  status=0
fi
fuzz_seconds="${ONNX_DC_FUZZ_SECONDS:-60}"
if [[ "$fuzz_seconds" != 0 ]]; then
  bash scripts/fuzz.sh "$fuzz_seconds"
  fuzz_status=$?
  if [[ $status -eq 0 && $fuzz_status -ne 0 ]]; then status=1; fi
fi
exit $status
