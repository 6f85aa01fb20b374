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
  # A real Label Studio server for the review round trip, in a venv of its own (Django, and its own
  # label-studio-sdk pin), its SQLite database migrated once here (a minute) so a test starts one in
  # seconds; its organization takes legacy tokens (the test's reviewer has one); nothing reaches out
  # (no version check, analytics or Sentry).
  python3 -m venv .venv-ls
  .venv-ls/bin/pip install -q --upgrade pip
  .venv-ls/bin/pip install -q "label-studio>=1.20"
  rm -rf .venv-ls/template
  env LATEST_VERSION_CHECK=false COLLECT_ANALYTICS=false SENTRY_DSN= FRONTEND_SENTRY_DSN= DJANGO_DB=sqlite \
    LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true \
    LABEL_STUDIO_BASE_DATA_DIR=.venv-ls/template .venv-ls/bin/label-studio init --data-dir .venv-ls/template \
    --username setup@localhost --password "$(python3 -c 'import secrets; print(secrets.token_hex(16))')" \
    </dev/null >.venv-ls/init.log 2>&1 || { cat .venv-ls/init.log; exit 1; }
else
  .venv/bin/pip install -q -e .
fi
