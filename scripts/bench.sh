#!/usr/bin/env bash
# Benchmarks MRC on this machine, everything on loopback. For each scenario it starts a
# fresh cluster of its own, runs `mrc bench` against it, and stops it:
#
#   nats-server     free port, JetStream in a temporary store dir
#   mrc-center x2
#   mrc-gateway x2  --insecure-dev-auth, per-connection rate limit lifted, larger
#                   outbound queues (the bench is a few users sending a lot)
#
# Results: target/bench/<time>/results.jsonl (JSON lines), bench.txt (what was printed),
# logs/, and with --plot the PNGs of scripts/plot.py. docs/PERFORMANCE.md explains them.
#
# usage: scripts/bench.sh [--quick] [--scenarios LIST] [--no-build] [--plot] [--perf] [--instructions] [--out DIR] [-- ARGS]
#   --quick          short steps and small counts (about a minute in all)
#   --scenarios L    comma-separated: 1to1,multi,group,login-storm,idle,idle-tcp,inbox
#                    (default: all seven; idle-tcp is idle through the gateways' TCP door)
#   --no-build       use the release binaries already built
#   --plot           render PNG plots (installs matplotlib into .tools/py-bench)
#   --perf           also profile one saturated 1to1 (or group) step with `perf record`
#                    (cpu-clock) and draw flame graphs (installs inferno into .tools/inferno)
#   --instructions   also count the instructions both gateways execute per 1:1 message
#                    (valgrind callgrind): a cost figure that does not move with the load
#                    of this shared machine, unlike rates and CPU%
#   --out DIR        where results go (default target/bench/<time>)
#   -- ARGS          passed on to every `mrc bench` run (e.g. -- --users 2000)
#
# Env: MRC_NATS_SERVER (nats-server to use), CARGO_TARGET_DIR, MRC_BENCH_PERF_SCENARIO
# (the profiled scenario: 1to1, multi or group; default 1to1), MRC_BENCH_PERF_RATE
# (offered rate of the profiled step, default 40k; group 150), MRC_BENCH_SERVER_DIR (where
# mrc-center and mrc-gateway come from, default the release dir: point it at another
# build to compare a change before/after with the same `mrc bench`),
# MRC_BENCH_WORKER_THREADS (worker threads of each center and gateway, default 1: five
# processes share this machine's cores; 0 = one per core).
set -euo pipefail
set -m
export MRC_LOG=${MRC_LOG:-warn}
# Read by mrc-center and mrc-gateway (`--worker-threads`), not by `mrc bench`.
export MRC_WORKER_THREADS=${MRC_BENCH_WORKER_THREADS:-1}
cd "$(dirname "$0")/.."
root=$(pwd)

usage() { sed -n '/^# usage:/,/^#$/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d'; }

quick=0 build=1 plot=0 perf=0 instructions=0 out="" scenarios="1to1,multi,group,login-storm,idle,idle-tcp,inbox"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --scenarios) scenarios=$2; shift ;;
    --no-build) build=0 ;;
    --plot) plot=1 ;;
    --perf) perf=1 ;;
    --instructions) instructions=1 ;;
    --out) out=$2; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done

say() { echo "bench.sh: $*" >&2; }

perf_scenario=${MRC_BENCH_PERF_SCENARIO:-1to1}
case "$perf_scenario" in
  1to1|multi) perf_rate=${MRC_BENCH_PERF_RATE:-40k} ;;
  group) perf_rate=${MRC_BENCH_PERF_RATE:-150} ;;
  *) say "MRC_BENCH_PERF_SCENARIO must be 1to1, multi or group"; exit 2 ;;
esac

# One socket per connection on both sides: take the highest open-files limit allowed.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
say "open files limit: $(ulimit -n) (hard $(ulimit -Hn))"

if [ "$build" = 1 ]; then
  scripts/setup.sh >&2
else
  scripts/setup.sh --no-build >&2
fi
bin="${CARGO_TARGET_DIR:-$root/target}/release"
server_bin=${MRC_BENCH_SERVER_DIR:-$bin}
# shellcheck source=scripts/nats-server.sh
. scripts/nats-server.sh
nats_server=$(find_nats_server)
[ -n "$nats_server" ] || { say "no nats-server found"; exit 1; }

out=${out:-"${CARGO_TARGET_DIR:-$root/target}/bench/$(date +%Y%m%d-%H%M%S)"}
mkdir -p "$out/logs"
tmp=$(mktemp -d /tmp/mrc-bench.XXXXXX)
results="$out/results.jsonl"

declare -A pid_of=()
order=()

alive() { kill -0 "$1" 2>/dev/null; }

# Stops every process we started, newest first: SIGTERM, then SIGKILL after 15 s.
cluster_down() {
  local name pid deadline
  for ((i = ${#order[@]} - 1; i >= 0; i--)); do
    name=${order[$i]}
    pid=${pid_of[$name]:-}
    [ -n "$pid" ] || continue
    alive "$pid" && kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    alive "$pid" && { say "$name did not stop, killing"; kill -KILL "$pid" 2>/dev/null || true; }
    wait "$pid" 2>/dev/null || true
  done
  pid_of=()
  order=()
}

cleanup() {
  local status=$?
  trap '' INT TERM HUP
  [ -n "${perf_pid:-}" ] && kill -INT "$perf_pid" 2>/dev/null || true
  cluster_down
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts NAME running the rest, output to logs/NAME.log.
start() {
  local name=$1; shift
  : >"$out/logs/$name.log"   # truncated here, before wait_for can read an old one
  "$@" >>"$out/logs/$name.log" 2>&1 &
  pid_of[$name]=$!
  order+=("$name")
}

# Waits until NAME's log has a line matching PATTERN; prints that line.
wait_for() {
  local name=$1 pattern=$2 deadline=$((SECONDS + 60)) line
  while [ "$SECONDS" -lt "$deadline" ]; do
    line=$(grep -m1 -E "$pattern" "$out/logs/$name.log" 2>/dev/null || true)
    if [ -n "$line" ]; then echo "$line"; return; fi
    alive "${pid_of[$name]}" || { say "$name exited:"; tail -n 20 "$out/logs/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  say "$name not ready after 60s:"; tail -n 20 "$out/logs/$name.log" >&2; exit 1
}

gateway_urls="" tcp_addrs="" procs="" nats_url=""
gw_wrap=()   # a command the gateways run under (valgrind, for --instructions)
cluster_up() {
  local store="$tmp/js-$1" line port
  start nats "$nats_server" -a 127.0.0.1 -p -1 -js -sd "$store"
  line=$(wait_for nats "Listening for client connections on")
  port=${line##*:}
  wait_for nats "Server is ready" >/dev/null
  nats_url="nats://127.0.0.1:$port"
  # Defaults everywhere except: dev auth, no per-connection rate limit (each bench user
  # sends up to ~100 msg/s), and room for bursts in each client's outbound queue.
  local gw_flags=(--insecure-dev-auth --listen 127.0.0.1:0 --tcp-listen 127.0.0.1:0
    --rate-per-sec 1000000 --rate-burst 1000000 --outbound-queue 4096)
  for n in 1 2; do
    start "center-$n" "$server_bin/mrc-center" --nats-url "$nats_url" --id "bench-center-$n"
  done
  for n in 1 2; do wait_for "center-$n" "mrc-center ready" >/dev/null; done
  for n in 1 2; do
    start "gw-$n" "${gw_wrap[@]}" "$server_bin/mrc-gateway" --nats-url "$nats_url" --id "bench-gw-$n" "${gw_flags[@]}"
  done
  gateway_urls="" tcp_addrs=""
  for n in 1 2; do
    line=$(wait_for "gw-$n" "mrc-gateway ready")
    line=" ${line#*ready: } "   # ... ws=URL tcp=ADDR ...
    gateway_urls+="${gateway_urls:+,}$(sed -E 's/.* ws=([^ ]+) .*/\1/' <<<"$line")"
    tcp_addrs+="${tcp_addrs:+,}$(sed -E 's/.* tcp=([^ ]+) .*/\1/' <<<"$line")"
  done
  procs="gw-1=${pid_of[gw-1]},gw-2=${pid_of[gw-2]},center-1=${pid_of[center-1]},center-2=${pid_of[center-2]},nats=${pid_of[nats]}"
  say "cluster up: nats $nats_url, gateways $gateway_urls"
}

bench() {
  "$bin/mrc" --nats-url "$nats_url" bench --gateways "$gateway_urls" --procs "$procs" \
    --json "$results" "$@" "${extra[@]}" 2>&1 | tee -a "$out/bench.txt"
}

if [ "$quick" = 1 ]; then
  load=(--users 200 --steps 2k,10k,20k --step-secs 3 --drain-secs 2 --baseline-secs 2)
  multi=(--users 200 --steps 200,1k,2k --step-secs 3 --drain-secs 2 --baseline-secs 0)
  group=(--group-size 1000 --steps 10,100,300 --step-secs 3 --drain-secs 2 --baseline-secs 2)
  storm=(--storm-users 5000)
  idle=(--idle-users 2000,5000)
  inbox=(--inbox-users 200 --inbox-per-user 10 --users 200 --step-secs 3 --drain-secs 2
    --baseline-secs 2)
else
  load=()
  multi=(--steps 500,1k,2k,4k,8k)
  group=(--group-size 1000 --steps 10,20,50,100,200,400,800)
  storm=()
  idle=()
  inbox=()
fi

IFS=, read -r -a wanted <<<"$scenarios"
for scenario in "${wanted[@]}"; do
  cluster_up "$scenario"
  case "$scenario" in
    1to1) bench --scenario 1to1 "${load[@]}" ;;
    multi) bench --scenario multi "${multi[@]}" ;;
    group) bench --scenario group "${group[@]}" ;;
    login-storm) bench --scenario login-storm "${storm[@]}" ;;
    idle) bench --scenario idle "${idle[@]}" ;;
    idle-tcp) bench --scenario idle --door tcp --tcp-gateways "$tcp_addrs" "${idle[@]}" ;;
    inbox) bench --scenario inbox "${inbox[@]}" ;;
    *) say "unknown scenario $scenario"; exit 2 ;;
  esac
  cluster_down
done

# inferno's collapse and flame graph tools, built once into .tools/inferno.
tools=$root/.tools/inferno/bin
flamegraph_tools() {
  [ -x "$tools/inferno-flamegraph" ] && return 0
  say "installing inferno (flame graphs) into .tools/inferno"
  cargo install --quiet --locked inferno --version 0.12.8 --root "$root/.tools/inferno" ||
    { say "inferno did not install: no flame graphs"; return 1; }
}

if [ "$perf" = 1 ]; then
  command -v perf >/dev/null || { say "perf is not installed"; exit 1; }
  cluster_up perf
  # Profile the middle of one long step: login and ramp-up stay out of the profile. MRC's
  # stacks come from DWARF unwinding (.eh_frame: the release build has no frame
  # pointers); nats-server (Go: frame pointers, no .eh_frame) is recorded with them.
  (
    sleep 12
    perf record -e cpu-clock -F 499 --call-graph dwarf,32768 -o "$out/perf.data" \
      -p "${pid_of[gw-1]},${pid_of[gw-2]},${pid_of[center-1]}" -- sleep 8 \
      >"$out/logs/perf.log" 2>&1 &
    perf record -e cpu-clock -F 499 -g -o "$out/perf-nats.data" -p "${pid_of[nats]}" \
      -- sleep 8 >"$out/logs/perf-nats.log" 2>&1
    wait
  ) &
  perf_pid=$!
  # Its own JSON file, so the long profiled step stays out of results.jsonl's plots.
  bench --scenario "$perf_scenario" --steps "$perf_rate" --step-secs 25 --baseline-secs 0 --json "$out/perf.jsonl"
  wait "$perf_pid" || true
  perf_pid=""
  # With one worker thread a gateway's or center's work runs on its main thread, which
  # bears the process's name; with more, on threads named tokio-rt-worker.
  report() { perf report --stdio --no-children -g none "$@" 2>/dev/null || true; }
  report -i "$out/perf.data" --sort comm,dso >"$out/perf-by-process.txt"
  report -i "$out/perf.data" --sort dso,sym --percent-limit 0.3 >"$out/perf-mrc.txt"
  report -i "$out/perf-nats.data" --sort dso,sym --percent-limit 0.5 >"$out/perf-nats.txt"
  # Flame graphs (inferno, installed under .tools/inferno on first use).
  if flamegraph_tools; then
    for data in perf perf-nats; do
      [ -s "$out/$data.data" ] || continue
      perf script -i "$out/$data.data" 2>/dev/null | "$tools/inferno-collapse-perf" --all \
        >>"$out/perf.folded" || true
    done
    for comm in mrc-gateway mrc-center tokio-rt-worker nats-server; do
      grep -q "^$comm;" "$out/perf.folded" 2>/dev/null || continue
      grep "^$comm;" "$out/perf.folded" | "$tools/inferno-flamegraph" --hash --minwidth 0.5 \
        --title "$comm, $perf_scenario at $perf_rate msg/s" >"$out/flame-$comm.svg" || true
    done
  fi
  say "profile: $out/perf-*.txt, $out/flame-*.svg"
  cluster_down
fi

if [ "$instructions" = 1 ]; then
  command -v callgrind_control >/dev/null || { say "valgrind is not installed"; exit 1; }
  # Both gateways under callgrind. Two runs of the same load but for the number of
  # messages; each is followed by a dump of the counts since the previous one, so their
  # difference is the cost of the extra messages alone (logins, logouts and start-up
  # cancel out). The rate is low: under valgrind a gateway is ~50 times slower.
  gw_wrap=(valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.%p")
  cluster_up instructions
  # Start-up is not a message's cost: the first dump would hold it (install_metrics alone
  # is ~15M instructions per gateway), so the counts start from zero here.
  for n in 1 2; do callgrind_control -z "${pid_of[gw-$n]}" >/dev/null; done
  rate=${MRC_BENCH_INSTRUCTIONS_RATE:-300}
  short=3 long=13
  ir=()
  for secs in "$short" "$long"; do
    bench --scenario 1to1 --users 100 --steps "$rate" --step-secs "$secs" --baseline-secs 0 \
      --drain-secs 10 --json "$out/instructions.jsonl" >/dev/null
    total=0
    for n in 1 2; do
      callgrind_control -d "${pid_of[gw-$n]}" >/dev/null
      sleep 1
      file=$(ls -t "$out"/callgrind."${pid_of[gw-$n]}"* | head -1)
      count=$(sed -n 's/^summary: \([0-9]*\).*/\1/p' "$file")
      total=$((total + count))
    done
    ir+=("$total")
  done
  messages=$(( rate * (long - short) ))
  per=$(( (ir[1] - ir[0]) / messages ))
  echo "instructions: both gateways, per 1:1 message: $per (user space; $messages extra messages, ${ir[0]} then ${ir[1]} instructions)" | tee -a "$out/bench.txt"
  gw_wrap=()
  cluster_down
fi

if [ "$plot" = 1 ]; then
  py="$root/.tools/py-bench"
  if [ ! -f "$py/.installed" ]; then
    say "installing matplotlib into .tools/py-bench"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      --target "$py" "matplotlib>=3.8,<4" && touch "$py/.installed"
  fi
  PYTHONPATH="$py" python3 scripts/plot.py "$results" --out "$out"
fi
say "results in ${out#"$root/"}"
