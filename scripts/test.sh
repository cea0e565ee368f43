#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (idempotent), then
# formatting, lints and every test. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The end-to-end tests each run real pipelines; two at a time suit a 2-core machine.
cargo test --all-targets --locked -- --test-threads=2 "$@"
