#!/usr/bin/env bash
# The main job: installs what is missing (idempotent), then runs `airsync-streamer demo`:
# the embedded server with its viewer page, and a box streaming the test picture (or the
# camera) to it. Open the printed URL in a browser; Ctrl-C stops.
#   scripts/run.sh [demo options, e.g. --listen 127.0.0.1:9000 --pipeline pipelines/test.pipeline]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run --release -- demo "$@"
