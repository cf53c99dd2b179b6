#!/usr/bin/env bash
# Syscalls and context switches per routed 1:1 message, per process, at one steady rate:
# below saturation a gateway's CPU is mostly the kernel's (docs/PERFORMANCE.md), and these
# counts barely move with the machine's load, where CPU time moves ±30%.
#
# Runs `scripts/bench.sh --scenarios 1to1` with one step at RATE, attaches `perf stat`
# (raw_syscalls:sys_enter, context-switches, task-clock) to every gateway, center and
# nats-server for SECONDS from the step's third second, and prints one line per process:
#
#   process  syscalls/msg  ctx-switches/msg  cpu-µs/msg  recvfrom writev write sendto epoll_wait
#
# (the last five per message too, where the kernel has those syscalls' tracepoints)
#
# usage: scripts/syscalls.sh [--no-build] [--rate N] [--seconds S] [--out DIR] [-- BENCH ARGS]
#   --no-build   use the release binaries as they are
#   --rate N     messages per second offered (default 10000)
#   --seconds S  how long to count (default 5; the step lasts 10 s)
#   --out DIR    where the bench's results and perf's output go (default: a temporary dir)
#   -- ARGS      more arguments for `mrc bench` (e.g. `-- --users 10`: few busy clients)
#
# Other MRC processes on the machine (a dev cluster) would be counted too: stop them.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '/^# usage:/,/^#$/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d'; }

build=(); rate=10000; seconds=5; out=""; extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; extra=("$@"); break ;;
        --no-build) build=(--no-build) ;;
        --rate) rate="$2"; shift ;;
        --seconds) seconds="$2"; shift ;;
        --out) out="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 64 ;;
    esac
    shift
done
command -v perf >/dev/null || { echo "syscalls.sh: perf is not installed" >&2; exit 1; }
[ "$seconds" -lt 8 ] || { echo "syscalls.sh: --seconds must be below 8 (the step lasts 10 s)" >&2; exit 64; }
[ -n "$out" ] || out=$(mktemp -d /tmp/mrc-syscalls.XXXXXX)
mkdir -p "$out"

scripts/bench.sh "${build[@]}" --scenarios 1to1 --out "$out/bench" -- --steps "$rate" "${extra[@]}" \
    > "$out/bench.log" 2>&1 &
bench=$!
until grep -q "$rate/s t=2s" "$out/bench/bench.txt" 2>/dev/null; do
    kill -0 "$bench" 2>/dev/null || { echo "syscalls.sh: the bench ended early, see $out/bench.log" >&2; exit 1; }
    sleep 0.2
done

# The socket syscalls by kind, where the kernel has their tracepoints.
events=raw_syscalls:sys_enter,context-switches,task-clock
kinds="recvfrom writev write sendto epoll_wait"
if perf list 2>/dev/null | grep 'syscalls:sys_enter_writev ' >/dev/null; then
    for kind in $kinds; do events="$events,syscalls:sys_enter_$kind"; done
fi

counted=()
for name in mrc-gateway mrc-center nats-server; do
    for pid in $(pgrep -x "${name:0:15}" || true); do
        perf stat -x, -e "$events" -p "$pid" -- sleep "$seconds" 2> "$out/perf.$name.$pid" &
        counted+=("$name.$pid")
    done
done
wait "$bench"

messages=$((rate * seconds))
printf '%-22s %14s %18s %12s   %s\n' process syscalls/msg ctx-switches/msg cpu-µs/msg \
    "per msg: $kinds"
for entry in "${counted[@]}"; do
    awk -F, -v name="$entry" -v n="$messages" -v kinds="$kinds" '
        $3 == "raw_syscalls:sys_enter" { sys = $1 }
        $3 == "context-switches" { ctx = $1 }
        $3 == "task-clock" { ms = $1 }
        $3 ~ /^syscalls:sys_enter_/ { kind[substr($3, 20)] = $1 }
        END {
            printf "%-22s %14.2f %18.2f %12.1f  ", name, sys / n, ctx / n, ms * 1000 / n
            split(kinds, k, " ")
            for (i = 1; i in k; i++) if (k[i] in kind) printf " %.2f", kind[k[i]] / n
            printf "\n"
        }
    ' "$out/perf.$entry"
done | tee "$out/syscalls.txt"
echo "syscalls.sh: bench results in $out/bench"
