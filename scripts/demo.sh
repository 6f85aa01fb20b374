#!/usr/bin/env bash
# A real mining job on demo videos built from the photos inside the ultralytics wheel.
# Offline it uses ../shared/models/yolov8n_int8.onnx when present (or $VIDEO_MINER_MODEL);
# otherwise Ultralytics downloads yolov8n.pt itself.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIDEO_MINER_MODEL:-}" ] && [ -f ../shared/models/yolov8n_int8.onnx ]; then
  export VIDEO_MINER_MODEL=../shared/models/yolov8n_int8.onnx
fi
.venv/bin/python scripts/make_demo_videos.py demo-out/videos
.venv/bin/video-miner run demo-out/videos --config configs/people.yaml --output demo-out/people \
  ${VIDEO_MINER_MODEL:+--model "$VIDEO_MINER_MODEL"} "$@"
