# Sourced by setup.sh, dev-cluster.sh and bench.sh (needs $root, the repository root):
# find_nats_server prints the nats-server to use — MRC_NATS_SERVER, the one setup.sh
# installs into .tools/, or the first on PATH — if it is >= 2.10, else nothing.
find_nats_server() {
  local candidate version major rest minor
  for candidate in "${MRC_NATS_SERVER:-}" "$root/.tools/nats/bin/nats-server" "$(command -v nats-server || true)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    version=$("$candidate" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p')
    major=${version%%.*}; rest=${version#*.}; minor=${rest%%.*}
    if [ "${major:-0}" -gt 2 ] || { [ "${major:-0}" -eq 2 ] && [ "${minor:-0}" -ge 10 ]; }; then
      echo "$candidate"; return
    fi
  done
}
