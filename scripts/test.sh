#!/usr/bin/env bash
# The whole test suite, exactly what CI runs (.ci/run calls this and nothing else):
# formatting, lints, unit tests and the integration tests, which start their own
# nats-server instances (installed into .tools/ by scripts/setup.sh when missing), and
# the browser test, which CI requires (MRC_BROWSER_TESTS=1: it fails, not skips, when
# Chromium is missing; setup --browser installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --no-build --browser
export MRC_BROWSER_TESTS=1
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets
