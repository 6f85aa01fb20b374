#!/usr/bin/env bash
# Creates .venv and installs video-miner into it (with the test tools when given --test).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# Plain pip (not uv/poetry) so the torch build this machine caches is used.
.venv/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1"
if [ "${1:-}" = "--test" ]; then
  .venv/bin/pip install -q -e ".[test]"
  # The labelling tools the export tests load their formats with, in a venv of their own: they pin
  # versions (numpy, opencv) the miner's environment cannot share.
  python3 -m venv .venv-tools
  .venv-tools/bin/pip install -q --upgrade pip
  .venv-tools/bin/pip install -q "fiftyone>=1.5" "label-studio-sdk>=2" "labelformat>=0.1.17"
else
  .venv/bin/pip install -q -e .
fi
