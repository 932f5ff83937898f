#!/usr/bin/env bash
# Set up (scripts/setup.sh, idempotent) and run the whole test suite. Extra arguments go to pytest.
# pytest's exit status 5 (no tests collected) counts as success.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/setup.sh || { echo "test.sh: set-up failed" >&2; exit 1; }
"${PYTHON:-python3}" -m pytest -q -rfE "$@"
status=$?
if [[ $status -eq 5 ]]; then
  echo "test.sh: pytest collected no tests"
  exit 0
fi
exit $status
