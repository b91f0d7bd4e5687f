#!/usr/bin/env bash
# The relay against its baselines, in one run on one machine: requests/s and p50/p99 for a
# small GET at 1, 16 and 64 clients — direct to the Kubernetes API simulator, through
# `kubectl proxy`, and through ztka (relay + tunnel + agent) — then 5,000 watches held through
# one tunnel with the server's and the agent's memory.
#
# Usage: benches/relay.sh            (builds release binaries first)
# Env:   DURATION (seconds per run, default 5), WATCHES (default 5000), PROFILE=DIR (perf
#        profiles of server and agent under PROFILE_CLIENTS clients, default 64, instead;
#        build with symbols, e.g.
#        CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
#        CARGO_TARGET_DIR=target/profiling)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${DURATION:-5}"
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
pids+=($!)
for _ in $(seq 100); do grep -q kubeconfig "$tmp/sim.out" && break; sleep 0.1; done
sim_kc="$(sed -n 's/^kubeconfig: //p' "$tmp/sim.out")"
k() { kubectl --kubeconfig "$sim_kc" "$@"; }
k run x --image=busybox >/dev/null

# ztka with a known admin password.
port="$(free_port)"
url="https://localhost:$port"
# ZTKA_THREADS=N runs the server and the agent on N runtime worker threads (default: one per core).
threads=()
[ -n "${ZTKA_THREADS:-}" ] && threads=(env "TOKIO_WORKER_THREADS=$ZTKA_THREADS")
ZTKA_INITIAL_ADMIN_PASSWORD="benchmark-initial-pw" ZTKA_LOG=warn \
  "${threads[@]}" "$bin/ztka" serve --data-dir "$tmp/data" --listen "127.0.0.1:$port" --external-url "$url" >"$tmp/ztka.out" 2>&1 &
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
# The agent runs with its own least-privilege service account.
cp "$sim_kc" "$tmp/agent.kubeconfig"
agent_token="$(k -n ztka-system create token ztka-agent --duration=24h)"
kubectl --kubeconfig "$tmp/agent.kubeconfig" config set-credentials "$(kubectl --kubeconfig "$sim_kc" config view -o jsonpath='{.users[0].name}')" --token="$agent_token" >/dev/null
ZTKA_LOG=warn "${threads[@]}" "$bin/ztka" agent --server "$url" --server-ca "$ca" --token-file "$tmp/token" \
  --state-dir "$tmp/agent" --kubeconfig "$tmp/agent.kubeconfig" >"$tmp/agent.out" 2>&1 &
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

proxy_port="$(free_port)"
kubectl --kubeconfig "$sim_kc" proxy --port "$proxy_port" >/dev/null 2>&1 &
pids+=($!)
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
echo "small GET ($path), $duration s per run"
for c in 1 16 64; do
  printf 'direct      %s\n' "$(load --kubeconfig "$sim_kc" --clients "$c")"
  printf 'kubectl-proxy %s\n' "$(load --url "http://127.0.0.1:$proxy_port" --clients "$c")"
  printf 'ztka        %s\n' "$(load --url "$url/k8s/sim" --ca-file "$ca" --cert-file "$tmp/user.crt" --key-file "$tmp/user.key" --clients "$c")"
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
