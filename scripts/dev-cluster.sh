#!/usr/bin/env bash
# One command for a working local MRC cluster, everything on loopback:
#
#   nats-server     nats-config/single.conf, or with --cluster the 3 nodes of
#                   nats-config/cluster/ (JetStream R3)
#   mrc-center x2   center-1, center-2 (with --cluster: --replicas 3 and all 3 URLs),
#                   probes and metrics on http://127.0.0.1:9090 and :9091
#   mrc-gateway x2  gw-1 on ws://127.0.0.1:8080/ws, gw-2 on ws://127.0.0.1:8081/ws, both
#                   with --insecure-dev-auth (log in with a bare user id, no token) and
#                   --demo: open http://127.0.0.1:8080/ (and :8081/) in a browser, log in
#                   as alice in one window and bob in the other, and chat
#
# It runs scripts/setup.sh first (installs nats-server into .tools/ when missing, builds
# the binaries), waits until every process is ready, then stays in the foreground.
# Ctrl-C or SIGTERM stops what it started: gateways, then centers, then nats-server.
# (Started with `&` from a non-interactive shell, bash ignores SIGINT: use SIGTERM.)
#
# usage: scripts/dev-cluster.sh [--debug] [--cluster] [--no-build] [--fresh]
#   --debug     build and run debug binaries (target/debug) instead of release
#   --cluster   3-node nats-server cluster instead of one node
#   --no-build  do not build; use the binaries already in target/<profile>
#   --fresh     delete the JetStream data in .dev/nats/ first (the directory is soft
#               state: nothing is lost that the gateways do not re-create)
#
# Logs: .dev/logs/<process>.log (overwritten on each run). JetStream data: .dev/nats/.
# Env: MRC_NATS_SERVER (nats-server to use), CARGO_TARGET_DIR, MRC_LOG (log filter of
# the MRC processes, default info), MRC_DEV_READY_TIMEOUT (seconds each process gets to
# become ready, default 60).
set -euo pipefail
# Job control: every child gets its own process group, so a Ctrl-C in the terminal
# reaches only this script, which then stops the children in order.
set -m
cd "$(dirname "$0")/.."
root=$(pwd)

# The usage text is the option block of the header above.
usage() { sed -n '/^# usage:/,/^#$/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d'; }

profile=release
build=1
cluster=0
fresh=0
for arg in "$@"; do
  case "$arg" in
    --debug) profile=debug ;;
    --cluster) cluster=1 ;;
    --no-build) build=0 ;;
    --fresh) fresh=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

ready_timeout=${MRC_DEV_READY_TIMEOUT:-60}
dev="$root/.dev"
logs="$dev/logs"
pidfile="$dev/dev-cluster.pids"
bin="${CARGO_TARGET_DIR:-$root/target}/$profile"
# How to show the binaries in the help text: relative to the repo root when inside it.
shown_bin=${bin#"$root/"}

say() { echo "dev-cluster: $*" >&2; }

# --- state of what we started --------------------------------------------------------

declare -A pid_of=()   # process name -> pid
nats_names=() center_names=() gateway_names=()

log_of() { echo "$logs/$1.log"; }

alive() { kill -0 "$1" 2>/dev/null; }

# Prints the last lines of a process's log.
show_log() {
  local log
  log=$(log_of "$1")
  echo "---- last lines of ${log#"$root/"} ----" >&2
  tail -n 25 "$log" >&2 || true
  echo "----" >&2
}

# Reports a failed process and exits non-zero (the EXIT trap stops the rest).
fail() {
  local name=$1; shift
  say "$name: $*"
  show_log "$name"
  exit 1
}

# Stops the named processes: SIGTERM, then SIGKILL after `grace` seconds.
stop() {
  local grace=$1; shift
  local name pid deadline left
  for name in "$@"; do
    pid=${pid_of[$name]:-}
    [ -n "$pid" ] && alive "$pid" && kill -TERM "$pid" 2>/dev/null || true
  done
  deadline=$((SECONDS + grace))
  while :; do
    left=()
    for name in "$@"; do
      pid=${pid_of[$name]:-}
      [ -n "$pid" ] && alive "$pid" && left+=("$name")
    done
    [ ${#left[@]} -eq 0 ] && break
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "still running after ${grace}s, killing: ${left[*]}"
      for name in "${left[@]}"; do kill -KILL "${pid_of[$name]}" 2>/dev/null || true; done
      break
    fi
    sleep 0.1
  done
  for name in "$@"; do
    pid=${pid_of[$name]:-}
    [ -n "$pid" ] && { wait "$pid" 2>/dev/null || true; }
    unset "pid_of[$name]"
  done
}

cleanup() {
  local status=$?
  trap '' INT TERM HUP
  if [ ${#pid_of[@]} -gt 0 ]; then
    say "stopping: gateways, then centers, then nats-server"
    # Gateways close their sessions and purge them from the directory (10 s grace).
    stop 15 "${gateway_names[@]}"
    stop 10 "${center_names[@]}"
    stop 10 "${nats_names[@]}"
    say "stopped"
  fi
  rm -f "$pidfile"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Starts `name` running the rest of the arguments, output to .dev/logs/<name>.log.
start() {
  local name=$1; shift
  local log
  log=$(log_of "$name")
  : >"$log"
  NO_COLOR=1 "$@" </dev/null >>"$log" 2>&1 &
  pid_of[$name]=$!
  echo "$name ${pid_of[$name]}" >>"$pidfile"
}

# Fails unless `name` is still running.
check_running() {
  local name=$1 pid=${pid_of[$1]} status=0
  alive "$pid" && return 0
  wait "$pid" || status=$?
  unset "pid_of[$name]"
  fail "$name" "exited unexpectedly (status $status)"
}

# Waits until `name`'s log has a line starting with `prefix`.
wait_line() {
  local name=$1 prefix=$2 deadline=$((SECONDS + ready_timeout))
  until grep -q "^$prefix" "$(log_of "$name")"; do
    check_running "$name"
    [ "$SECONDS" -lt "$deadline" ] || fail "$name" "not ready after ${ready_timeout}s"
    sleep 0.1
  done
}

# True when `url` answers 200.
http_ok() { curl -fs -o /dev/null --max-time 1 "$1"; }

# Waits until nats-server `name` answers 200 on /healthz (JetStream ready included).
wait_healthz() {
  local name=$1 url=$2 deadline=$((SECONDS + ready_timeout))
  until http_ok "$url"; do
    check_running "$name"
    [ "$SECONDS" -lt "$deadline" ] || fail "$name" "$url not healthy after ${ready_timeout}s"
    sleep 0.1
  done
}

# True when something accepts TCP connections on 127.0.0.1:port.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# shellcheck source=scripts/nats-server.sh
. scripts/nats-server.sh

# --- preflight -----------------------------------------------------------------------

command -v curl >/dev/null || { say "curl is needed to poll nats-server's /healthz"; exit 1; }
mkdir -p "$logs"
rm -f "$logs"/*.log

# A run that was killed hard (SIGKILL) could not stop its children: name them.
if [ -f "$pidfile" ]; then
  leftovers=()
  while read -r name pid; do
    # Still there, not a zombie, and still one of ours (pids get reused).
    case $(ps -p "${pid:-0}" -o stat= -o args= 2>/dev/null) in
      Z*) ;;
      *nats-server*|*mrc-center*|*mrc-gateway*) leftovers+=("$name (pid $pid)") ;;
    esac
  done <"$pidfile"
  if [ ${#leftovers[@]} -gt 0 ]; then
    say "processes of an earlier run are still running: ${leftovers[*]}"
    say "is another dev-cluster running? if not, stop them (kill <pid>) and retry"
    trap - EXIT
    exit 1
  fi
  rm -f "$pidfile"
fi

if [ "$cluster" -eq 1 ]; then
  nats_names=(nats-n1 nats-n2 nats-n3)
  ports=(4222 4223 4224 8222 8223 8224 6222 6223 6224 8080 8081 9090 9091)
else
  nats_names=(nats)
  ports=(4222 8222 8080 8081 9090 9091)
fi
for port in "${ports[@]}"; do
  if port_busy "$port"; then
    say "port 127.0.0.1:$port is already in use (see: ss -ltnp 'sport = :$port')"
    exit 1
  fi
done

case "$build$profile" in
  1release) scripts/setup.sh ;;
  1debug) scripts/setup.sh --debug ;;
  *) scripts/setup.sh --no-build ;;
esac
for b in mrc-center mrc-gateway mrc; do
  [ -x "$bin/$b" ] || { say "$bin/$b is missing (run without --no-build)"; exit 1; }
done
nats_server=$(find_nats_server)
[ -n "$nats_server" ] || { say "no nats-server >= 2.10 found (scripts/setup.sh installs one)"; exit 1; }

# --- nats-server ---------------------------------------------------------------------

if [ "$fresh" -eq 1 ]; then
  say "--fresh: deleting JetStream data in .dev/nats/"
  rm -rf "$dev/nats"
fi
if [ "$cluster" -eq 1 ]; then
  nats_urls=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
  replicas=3
  for n in 1 2 3; do
    start "nats-n$n" "$nats_server" -c "nats-config/cluster/n$n.conf"
  done
  for n in 1 2 3; do
    wait_healthz "nats-n$n" "http://127.0.0.1:$((8221 + n))/healthz"
  done
else
  nats_urls=nats://127.0.0.1:4222
  replicas=1
  start nats "$nats_server" -c nats-config/single.conf
  wait_healthz nats http://127.0.0.1:8222/healthz
fi
say "nats-server ready ($nats_urls)"

# --- centers, then gateways (a gateway waits for a center before it is ready) --------

nats_flags=(--nats-url "$nats_urls")
# Each center answers /healthz, /readyz and /metrics on 127.0.0.1:9090 and :9091.
declare -A center_http=([center-1]=127.0.0.1:9090 [center-2]=127.0.0.1:9091)
for id in center-1 center-2; do
  center_names+=("$id")
  start "$id" "$bin/mrc-center" "${nats_flags[@]}" --id "$id" --replicas "$replicas" \
    --http-listen "${center_http[$id]}"
done
for id in "${center_names[@]}"; do wait_line "$id" "mrc-center ready:"; done
say "centers ready: ${center_names[*]}"

# --insecure-dev-auth: clients log in with a bare user id (`mrc listen alice`), no token.
# --demo: the demo page at http://127.0.0.1:8080/ and :8081/.
# Set MRC_GATEWAY_JWT_SECRET (32+ bytes) to also accept tokens, MRC_GATEWAY_API_KEY for
# the HTTP API; the gateways read both from the environment.
declare -A gateway_listen=([gw-1]=127.0.0.1:8080 [gw-2]=127.0.0.1:8081)
for id in gw-1 gw-2; do
  gateway_names+=("$id")
  start "$id" "$bin/mrc-gateway" "${nats_flags[@]}" --id "$id" \
    --listen "${gateway_listen[$id]}" --insecure-dev-auth --demo
done
for id in "${gateway_names[@]}"; do wait_line "$id" "mrc-gateway ready:"; done
say "gateways ready: ${gateway_names[*]}"

# --- what you can do now -------------------------------------------------------------

if [ "$cluster" -eq 1 ]; then
  nats_text="3-node cluster: nats://127.0.0.1:4222,4223,4224 (monitoring :8222-8224)"
else
  nats_text="nats://127.0.0.1:4222 (monitoring http://127.0.0.1:8222)"
fi
cat <<EOF

MRC dev cluster is ready ($profile build)
  nats-server  $nats_text
  centers      ${center_names[*]} (metrics http://127.0.0.1:9090/metrics, :9091)
  gateways     gw-1 ws://127.0.0.1:8080/ws   gw-2 ws://127.0.0.1:8081/ws
               (INSECURE dev auth: any client may log in as any user id)
  demo page    http://127.0.0.1:8080/   http://127.0.0.1:8081/
  logs         .dev/logs/

Try it in a browser: open both demo pages, log in as alice in one and bob in the other.
Or in two terminals:
  $shown_bin/mrc listen alice --gateway ws://127.0.0.1:8080/ws
  $shown_bin/mrc send --to alice hello
  $shown_bin/mrc listen bob --gateway ws://127.0.0.1:8081/ws      # a user on the other gateway
  $shown_bin/mrc lookup alice bob
  $shown_bin/mrc centers
  curl -s http://127.0.0.1:8080/readyz
With the nats CLI:
  nats req mrc.send '{"to":["alice"],"body":"hi"}'
  nats sub 'mrc.presence.>'
Protocol: docs/PROTOCOL.md

Press Ctrl-C to stop everything.
EOF

# --- stay in the foreground ----------------------------------------------------------

while :; do
  for name in "${!pid_of[@]}"; do
    check_running "$name"
  done
  # `wait` returns at once when a trapped signal arrives; a bare sleep would not.
  sleep 1 &
  wait $! || true
done
