#!/usr/bin/env bash
# The relay against its baselines, in one run on one machine: requests/s and p50/p99 for a
# small GET at 1, 16 and 64 clients — direct to the Kubernetes API simulator, through
# `kubectl proxy`, and through ztka (relay + tunnel + agent), all three as the same user's
# service account — then 5,000 watches held through one tunnel with the server's and the
# agent's memory.
#
# Usage: benches/relay.sh            (builds release binaries first)
# Env:   DURATION (seconds per run, default 4), ROUNDS (rounds per client count, default 3),
#        WATCHES (default 5000), SERVER_THREADS and AGENT_THREADS (see below), BUSY_POLL_US
#        (`--busy-poll-us` of server and agent; default theirs, 300), PROFILE=DIR
#        (perf profiles of server and agent under PROFILE_CLIENTS clients, default 64,
#        instead; build with symbols, e.g.
#        CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
#        CARGO_TARGET_DIR=target/profiling)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${DURATION:-4}"
watches="${WATCHES:-5000}"
cargo build --release --locked -q --bin ztka -p ztka
cargo build --release --locked -q -p kubesim --bins
bin="${CARGO_TARGET_DIR:-target}/release"
tmp="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The simulator prints its kubeconfig path.
"$bin/kubesim" >"$tmp/sim.out" 2>&1 &
sim_pid=$!
pids+=($sim_pid)
for _ in $(seq 100); do grep -q kubeconfig "$tmp/sim.out" && break; sleep 0.1; done
sim_kc="$(sed -n 's/^kubeconfig: //p' "$tmp/sim.out")"
k() { kubectl --kubeconfig "$sim_kc" "$@"; }
k run x --image=busybox >/dev/null

# ztka with a known admin password.
port="$(free_port)"
url="https://localhost:$port"
# SERVER_THREADS=N / AGENT_THREADS=N: runtime worker threads (`--threads`; defaults: one per
# core for the server, one for the agent).
server_threads=() agent_threads=()
[ -n "${SERVER_THREADS:-}" ] && server_threads=(--threads "$SERVER_THREADS")
[ -n "${AGENT_THREADS:-}" ] && agent_threads=(--threads "$AGENT_THREADS")
if [ -n "${BUSY_POLL_US:-}" ]; then
  server_threads+=(--busy-poll-us "$BUSY_POLL_US")
  agent_threads+=(--busy-poll-us "$BUSY_POLL_US")
fi
ZTKA_INITIAL_ADMIN_PASSWORD="benchmark-initial-pw" ZTKA_LOG=warn \
  "$bin/ztka" serve --data-dir "$tmp/data" --listen "127.0.0.1:$port" --external-url "$url" "${server_threads[@]}" >"$tmp/ztka.out" 2>&1 &
ztka_pid=$!
pids+=($ztka_pid)
for _ in $(seq 100); do curl -sf --cacert "$tmp/data/ca.crt" "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
ca="$tmp/data/ca.crt"
jar="$tmp/cookies"
login() {
  curl -sf --cacert "$ca" -c "$jar" -H 'content-type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$1\"}" "$url/api/v1/auth/login" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf_token"])'
}
api() { # method path [json]
  curl -sf --cacert "$ca" -b "$jar" -H "x-csrf-token: $csrf" -H 'content-type: application/json' \
    -X "$1" "$url$2" ${3:+-d "$3"}
}
csrf="$(login benchmark-initial-pw)"
api POST /api/v1/auth/password '{"current_password":"benchmark-initial-pw","new_password":"benchmark password 42"}'
csrf="$(login 'benchmark password 42')"
api POST /api/v1/projects '{"name":"bench"}' >/dev/null
api POST /api/v1/projects/bench/clusters '{"name":"sim"}' >/dev/null
api POST /api/v1/projects/bench/clusters/sim/bootstrap '{}' >"$tmp/boot.json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); open(sys.argv[2],"w").write(d["manifest"]); open(sys.argv[3],"w").write(d["token"])' \
  "$tmp/boot.json" "$tmp/manifest.yaml" "$tmp/token"
k apply -f "$tmp/manifest.yaml" >/dev/null
# sa_kubeconfig DEST SA: the simulator's kubeconfig with a TokenRequest token of ztka-system's
# service account SA instead of the admin token.
sa_kubeconfig() {
  cp "$sim_kc" "$1"
  kubectl --kubeconfig "$1" config set-credentials "$(k config view -o jsonpath='{.users[0].name}')" \
    --token="$(k -n ztka-system create token "$2" --duration=24h)" >/dev/null
}
# The agent runs with its own least-privilege service account.
sa_kubeconfig "$tmp/agent.kubeconfig" ztka-agent
ZTKA_LOG=warn "$bin/ztka" agent --server "$url" --server-ca "$ca" --token-file "$tmp/token" \
  --state-dir "$tmp/agent" --kubeconfig "$tmp/agent.kubeconfig" "${agent_threads[@]}" >"$tmp/agent.out" 2>&1 &
agent_pid=$!
pids+=($agent_pid)
for _ in $(seq 100); do
  api GET /api/v1/projects/bench/clusters/sim | grep -q '"online"' && break
  sleep 0.1
done
api GET /api/v1/kubeconfig >"$tmp/user.kubeconfig"
kubectl --kubeconfig "$tmp/user.kubeconfig" config view --raw -o jsonpath='{.users[0].user.client-certificate-data}' | base64 -d >"$tmp/user.crt"
kubectl --kubeconfig "$tmp/user.kubeconfig" config view --raw -o jsonpath='{.users[0].user.client-key-data}' | base64 -d >"$tmp/user.key"
# Warm the user's service account and token.
kubectl --kubeconfig "$tmp/user.kubeconfig" get pods >/dev/null
# The baselines run as that same service account (a token from TokenRequest), so the API
# server authenticates and authorizes the same identity on every path and the figures
# differ only by the hops. (The simulator's admin token skips RBAC: ~15 us less per request.)
sa_kubeconfig "$tmp/sa.kubeconfig" "$(k -n ztka-system get sa -l ztka.dev/user -o jsonpath='{.items[0].metadata.name}')"

proxy_port="$(free_port)"
kubectl --kubeconfig "$tmp/sa.kubeconfig" proxy --port "$proxy_port" >/dev/null 2>&1 &
proxy_pid=$!
pids+=($proxy_pid)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$proxy_port/version" >/dev/null 2>&1 && break; sleep 0.1; done

path=/api/v1/namespaces/default/pods/x
if [ -n "${PROFILE:-}" ]; then # PROFILE=DIR: perf profiles of server and agent under 64 clients
  mkdir -p "$PROFILE"
  perf record --call-graph dwarf,16384 -F 999 -o "$PROFILE/server.data" -p "$ztka_pid" -- sleep "$duration" >/dev/null 2>&1 &
  perf_pids=($!)
  perf record --call-graph dwarf,16384 -F 999 -o "$PROFILE/agent.data" -p "$agent_pid" -- sleep "$duration" >/dev/null 2>&1 &
  perf_pids+=($!)
  "$bin/kubesim-load" --duration "$duration" --path "$path" --url "$url/k8s/sim" --ca-file "$ca" \
    --cert-file "$tmp/user.crt" --key-file "$tmp/user.key" --clients "${PROFILE_CLIENTS:-64}"
  wait "${perf_pids[@]}"
  exit 0
fi
load() { "$bin/kubesim-load" --duration "$duration" --path "$path" "$@"; }
# The host's speed varies from minute to minute (other guests take CPU: see steal), so each
# client count runs ROUNDS rounds of direct, proxy and ztka back to back, and the figures
# are medians over the rounds; the ratio compares ztka with the proxy round by round.
# Each line also gives CPU time (user + system) per request: the simulator's and the load
# generator's on every path, the proxy's on its own, the server's and the agent's on ztka's.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
all_ticks() { echo "$(ticks "$sim_pid") $(ticks "$proxy_pid") $(ticks "$ztka_pid") $(ticks "$agent_pid")"; }
steal() { awk '/^cpu / {print $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
hz="$(getconf CLK_TCK)"
# measure NAME LOAD-ARGS...: one line of $tmp/runs.
measure() {
  local name="$1" before after u s TIMEFORMAT='%3U %3S'
  shift
  read -ra before < <(all_ticks)
  { time load "$@" >"$tmp/out" 2>"$tmp/err"; } 2>"$tmp/time"
  read -ra after < <(all_ticks)
  [ -s "$tmp/err" ] && cat "$tmp/err" >&2
  read -r u s <"$tmp/time"
  echo "$name $(cat "$tmp/out") sim_ticks=$((after[0] - before[0])) proxy_ticks=$((after[1] - before[1]))" \
    "server_ticks=$((after[2] - before[2])) agent_ticks=$((after[3] - before[3])) load_secs=$(python3 -c "print($u + $s)")" >>"$tmp/runs"
}
rounds="${ROUNDS:-3}"
echo "small GET ($path), $rounds rounds of $duration s per client count"
for c in 1 16 64; do
  : >"$tmp/runs"
  read -r st0 all0 < <(steal)
  for _ in $(seq "$rounds"); do
    measure direct --kubeconfig "$tmp/sa.kubeconfig" --clients "$c"
    measure proxy --url "http://127.0.0.1:$proxy_port" --clients "$c"
    measure ztka --url "$url/k8s/sim" --ca-file "$ca" --cert-file "$tmp/user.crt" --key-file "$tmp/user.key" --clients "$c"
  done
  read -r st1 all1 < <(steal)
  python3 - "$tmp/runs" "$c" "$hz" "$((st1 - st0))" "$((all1 - all0))" <<'PY'
import re, statistics, sys
runs, clients, hz, steal, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
by = {}
for line in open(runs):
    name, rest = line.split(" ", 1)
    field = lambda k: float(re.search(k + r"=([\d.]+)", rest).group(1))
    keys = ("requests", "rps", "p50", "p99", "sim_ticks", "proxy_ticks", "server_ticks", "agent_ticks", "load_secs")
    by.setdefault(name, []).append({k: field(k) for k in keys})
med = lambda name, k: statistics.median(r[k] for r in by[name])
print(f"{clients} clients (steal {100 * steal / max(total, 1):.0f} % of CPU time):")
for name in ("direct", "proxy", "ztka"):
    line = f"  {name:<7} {med(name, 'rps'):>7.0f} req/s  p50 {med(name, 'p50'):.2f} ms  p99 {med(name, 'p99'):.2f} ms"
    n = sum(r["requests"] for r in by[name])
    cpu = lambda k, per=hz: 1e6 * sum(r[k] for r in by[name]) / per / n
    parts = {"proxy": ["proxy"], "ztka": ["server", "agent"]}.get(name, [])
    shown = [f"{p} {cpu(p + '_ticks'):.0f}" for p in parts]
    shown += [f"simulator {cpu('sim_ticks'):.0f}", f"load generator {cpu('load_secs', 1):.0f} us"]
    print(line + "  cpu/request: " + ", ".join(shown))
ratios = sorted(z["rps"] / p["rps"] for z, p in zip(by["ztka"], by["proxy"]))
print("  ztka / proxy by round: " + ", ".join(f"{100 * r:.0f} %" for r in ratios))
PY
done

[ "$watches" -gt 0 ] || exit 0
rss() { awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$1/status"; }
echo "before watches: server $(rss $ztka_pid), agent $(rss $agent_pid)"
hold=$((duration + 25))
"$bin/kubesim-load" --url "$url/k8s/sim" --ca-file "$ca" --cert-file "$tmp/user.crt" --key-file "$tmp/user.key" \
  --h2 --clients 50 --watches "$watches" --duration "$hold" --path /api/v1/namespaces/default/pods >"$tmp/watch.out" 2>&1 &
watch_pid=$!
sleep $((hold - 5))
echo "holding $watches watches: server $(rss $ztka_pid), agent $(rss $agent_pid)"
wait $watch_pid
cat "$tmp/watch.out"
