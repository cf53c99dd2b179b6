#!/usr/bin/env bash
# Fault tests of directory convergence (issue 12; tests/it/convergence.rs): each scenario
# starts its own nats-server(s), centers and gateways, injects a fault (SIGSTOP of a gateway
# or of the directory stream's leader, centers killed), keeps a ledger of the messages sent
# meanwhile and prints one `chaos:` line. This script builds and runs exactly those tests,
# one at a time, and prints the lines as a table:
#
#   scenario              how long the directory took to equal the gateways' sessions
#                         once the fault healed, and the ledger: sent, delivered, offline,
#                         unavailable, refused, lost (reported delivered, never arrived),
#                         dup (arrived twice), stray (reported offline, arrived anyway)
#
# usage: scripts/chaos.sh [--debug] [--no-build] [FILTER]
#   --debug     use the debug profile (what CI tests) instead of release
#   --no-build  do not build first (cargo still checks the test binary is fresh)
#   FILTER      a test-name filter within the convergence tests (default: all of them)
#
# Exit status: that of `cargo test` (the table is printed either way).
# Env: CARGO_TARGET_DIR, MRC_NATS_SERVER (nats-server to use; default .tools/ from setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '/^# usage:/,/^#$/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d'; }

profile=(--release)
build=1
filter=""
while [ $# -gt 0 ]; do
    case "$1" in
        --debug) profile=() ;;
        --no-build) build=0 ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; exit 64 ;;
        *) filter="$1" ;;
    esac
    shift
done

scripts/setup.sh --no-build
if [ "$build" = 1 ]; then
    cargo test "${profile[@]}" --test it --no-run
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test "${profile[@]}" --test it "convergence::${filter}" -- --nocapture --test-threads=1 \
    2>&1 | tee "$log" || status=$?

echo
echo "chaos results (converged = fault healed -> directory equals the gateways' sessions)"
grep -o 'chaos: .*' "$log" | awk '
    BEGIN {
        fmt = "%-22s %10s %6s %9s %7s %11s %7s %4s %3s %5s\n"
        printf fmt, "scenario", "converged", "sent", "delivered", "offline", "unavailable",
            "refused", "lost", "dup", "stray"
    }
    {
        delete f
        for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
        printf fmt, f["scenario"], f["converged_ms"] " ms", f["sent"], f["delivered"],
            f["offline"], f["unavailable"], f["refused"], f["lost"], f["dup"], f["stray"]
        n++
    }
    END { if (n == 0) print "(no scenario finished: see the test output above)" }'
# The test harness lists failed tests, indented, after a `failures:` line.
failed=$(awk '/^failures:$/ { f = 1 } f && /^    convergence::[a-z0-9_]+$/ { print $1 }' "$log" | sort -u)
if [ -n "$failed" ]; then
    echo
    echo "failed (no chaos line, or a broken ledger):"
    echo "$failed" | sed 's/^/  /'
fi
exit "$status"
