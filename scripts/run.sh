#!/usr/bin/env bash
# The main job: installs what is missing (idempotent), builds, and streams.
#   scripts/run.sh                               nothing configured: `demo`, the embedded server
#                                                with its viewer page and a box streaming the test
#                                                picture (or the camera) to it; open the URL it prints
#   scripts/run.sh --config /etc/airsync-streamer/config.toml   stream to the configured server
#   scripts/run.sh demo --listen 127.0.0.1:9000  any command and its options (see --help)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run --release --quiet -- "$@"
