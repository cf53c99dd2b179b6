#!/usr/bin/env bash
# The browser test alone (tests/it/browser.rs): two gateways serve the demo page
# (`mrc-gateway --demo`) and tests/browser/demo.test.js chats through it as alice and bob
# in headless Chromium. Installs Chromium and the test's npm packages first
# (scripts/setup.sh --browser), then requires the test (MRC_BROWSER_TESTS=1: no skip).
# The screenshot of both windows lands in <target dir>/browser/demo.png.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --no-build --browser
export MRC_BROWSER_TESTS=1
cargo test --test it browser -- --nocapture
