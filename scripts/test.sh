#!/usr/bin/env bash
# The whole test suite, exactly what CI runs (.ci/run calls this and nothing else):
# formatting, lints, unit tests and the integration tests, which start their own
# nats-server instances (installed into .tools/ by scripts/setup.sh when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --no-build
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets
