#!/usr/bin/env bash
# Measures `ztka serve` from exec to the first 200 on /healthz, on a fresh and on an existing
# data directory, and the resident memory once idle. Usage: benches/startup.sh [path-to-ztka]
set -euo pipefail
bin="${1:-target/release/ztka}"
runs="${RUNS:-5}"
tmp="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=18443

ms() { date +%s%3N; }

measure() { # $1 = data dir; sets $t (ms to ready) and $pid, leaving the server running
  local start
  start=$(ms)
  "$bin" serve --data-dir "$1" --listen 127.0.0.1:$port >/dev/null 2>&1 &
  pid=$!
  until curl -sf --cacert "$1/ca.crt" "https://localhost:$port/healthz" >/dev/null 2>&1; do
    sleep 0.005
  done
  t=$(( $(ms) - start ))
}

first=() ; again=()
for i in $(seq "$runs"); do
  measure "$tmp/d$i"; first+=("$t"); kill "$pid"; wait "$pid" || true
  measure "$tmp/d$i"; again+=("$t")
  if [ "$i" = "$runs" ]; then
    sleep 2
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  fi
  kill "$pid"; wait "$pid" || true
done
echo "binary: $bin"
echo "first start (creates CA, certificates, admin), ms to ready: ${first[*]}"
echo "restart on existing data dir, ms to ready:               ${again[*]}"
echo "idle resident memory after start: $(( rss / 1024 )) MiB (${rss} KiB)"
