#!/usr/bin/env bash
# The main job, from a fresh clone: set everything up, then compress the bundled LeNet-300-100 with the
# paper's settings and print the per-layer table, the file-size ratio, accuracy and latency before/after.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
python3 studies/main_job.py
