#!/usr/bin/env bash
# More subscribed WebSocket connections than one process can hold, on one box: a nats-server
# with JetStream, one publisher and EDGES edges (docs/OPERATIONS.md, "Cluster on NATS
# JetStream"), and enough tickgate-loadtest processes for CONNECTIONS clients spread over every
# edge, each process from its own local source address; their results combined into one report.
#
#   bash benches/cluster_scale.sh                                         # 102,000 clients, 6 edges
#   CONNECTIONS=60 PER_PROCESS=20 DURATION=2 WARMUP=2 BUILD=0 bash benches/cluster_scale.sh   # a quick check
#
# What it does:
#   1. `cargo build --release -p tickgate -p tickgate-loadtest` (BUILD=0 skips it).
#   2. nats-server -js on a free loopback port (its store in a temporary folder), a publisher
#      (`--bus-role publisher`, the simulated market at RATE ticks/s over S symbols, uniform) and
#      EDGES edges (`--bus-role edge`, one reactor each), each on its own free port, with the same
#      universe. Waits for every edge's /readyz.
#   3. ceil(CONNECTIONS / PER_PROCESS) loadtest processes at once, process p from 127.0.0.(p+2),
#      each spreading its clients over every edge (`--addr` per edge, round-robin), K of the S
#      symbols each, measured for DURATION s after WARMUP s (long enough for every process to be
#      connected: the windows overlap).
#   4. Once every client is in: each edge's connections and RSS (before and connected), for the
#      memory per connection of each process.
#   5. `tickgate-loadtest combine` of every process's JSON: delivered/s, p50/p99/p99.9, loss,
#      disconnects, the verdict on the whole. $OUT gets every JSON and log, edges.md, summary.md.
#
# Settings (environment variables):
#   CONNECTIONS=102000  clients in all (each edge holds CONNECTIONS/EDGES: at most ~19,000)
#   EDGES=6             edge processes
#   PER_PROCESS=17000   clients per loadtest process (at most ~19,000: one process's sockets)
#   K=2 S=100           symbols per client, universe size
#   RATE=25             ticks/s the publisher generates, over all S symbols (51,000 deliveries/s
#                       at the defaults: what 13 processes on 2 cores carry without falling behind)
#   P99_BOUND_MS=250    the verdict's p99 bound: the run is about connections and loss; with six
#                       edges and six load generators on two cores, a tick waits for a core in
#                       each (docs/BENCHMARKS.md, "Cluster at scale")
#   WARMUP=30 DURATION=30
#   CONNECT_RATE=2000   new connections per second per loadtest process (0: as fast as accepted)
#   OUT=loadtest/results/<date>-cluster-scale   BUILD=1
set -euo pipefail

# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_start cluster-scale

CONNECTIONS="${CONNECTIONS:-102000}"
EDGES="${EDGES:-6}"
PER_PROCESS="${PER_PROCESS:-17000}"
K="${K:-2}"
S="${S:-100}"
RATE="${RATE:-25}"
P99_BOUND_MS="${P99_BOUND_MS:-250}"
WARMUP="${WARMUP:-30}"
DURATION="${DURATION:-30}"
CONNECT_RATE="${CONNECT_RATE:-2000}"
BUILD="${BUILD:-1}"
OUT="${OUT:-loadtest/results/$(date +%Y%m%d-%H%M%S)-cluster-scale}"

require_whole CONNECTIONS EDGES PER_PROCESS K S WARMUP DURATION CONNECT_RATE P99_BOUND_MS
[[ "$RATE" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "RATE must be a number, got '$RATE'"
[ "$EDGES" -ge 1 ] && [ "$CONNECTIONS" -ge 1 ] && [ "$PER_PROCESS" -ge 1 ] || die "CONNECTIONS, EDGES and PER_PROCESS must be at least 1"
[ "$PER_PROCESS" -le 19000 ] || die "PER_PROCESS=$PER_PROCESS: one process holds at most ~19,900 sockets"
[ $(((CONNECTIONS + EDGES - 1) / EDGES)) -le 19000 ] || die "$CONNECTIONS clients over $EDGES edges is over 19,000 per edge: add edges"
[ "$K" -ge 1 ] && [ "$K" -le "$S" ] || die "K=$K symbols per client out of S=$S"
processes=$(((CONNECTIONS + PER_PROCESS - 1) / PER_PROCESS))
[ "$processes" -le 250 ] || die "$processes loadtest processes: more than the 127.0.0.2-251 source addresses"
require_out_path
for tool in nats-server jq curl python3; do
  command -v "$tool" >/dev/null || die "$tool not found (nats-server: apt-get install nats-server)"
done

release_binaries

mkdir -p "$OUT"
store="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$store"
}
trap cleanup EXIT

nats_port="$(free_port)"
nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$store" >"$OUT/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break; sleep 0.1; done
bus=(--bus-url "nats://127.0.0.1:$nats_port" --bus-stream SCALE --sim-symbols "$S" --sim-activity uniform --log-level warn)

publisher_port="$(free_port)"
"$TICKGATE" --bus-role publisher --listen "127.0.0.1:$publisher_port" --sim-rate "$RATE" --reactors 1 "${bus[@]}" \
  >"$OUT/publisher.log" 2>&1 &
pids+=($!)
edges=()
edge_pids=()
for i in $(seq "$EDGES"); do
  port="$(free_port)"
  "$TICKGATE" --bus-role edge --listen "127.0.0.1:$port" --reactors 1 "${bus[@]}" >"$OUT/edge-$i.log" 2>&1 &
  pids+=($!)
  edge_pids+=($!)
  edges+=("127.0.0.1:$port")
done
deadline=$((SECONDS + 60))
for e in "${edges[@]}"; do
  until curl -sf "http://$e/readyz" >/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || die "edge $e not ready within 60 s (see $OUT/edge-*.log)"
    sleep 0.2
  done
done
say "nats-server on $nats_port, publisher on $publisher_port at $RATE ticks/s, edges ${edges[*]}"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
tcp_mem_bytes() { awk '/^TCP:/ { for (i = 1; i <= NF; i++) if ($i == "mem") print $(i + 1) * 4096 }' /proc/net/sockstat; }
tcp_before="$(tcp_mem_bytes)"
rss_before=()
for pid in "${edge_pids[@]}"; do rss_before+=("$(rss_kib "$pid")"); done

addr_args=()
for e in "${edges[@]}"; do addr_args+=(--addr "$e"); done
runs=()
left="$CONNECTIONS"
for p in $(seq "$processes"); do
  n=$((left < PER_PROCESS ? left : PER_PROCESS))
  left=$((left - n))
  "$LOADTEST" run "${addr_args[@]}" --source-addrs "127.0.0.$((p + 1))" -n "$n" -k "$K" -s "$S" --rate "$RATE" \
    --warmup "$WARMUP" --duration "$DURATION" --connect-rate "$CONNECT_RATE" --p99-bound-ms "$P99_BOUND_MS" --quiet --name "lt-$p" --out "$OUT" \
    >"$OUT/lt-$p.log" 2>&1 &
  runs+=($!)
  pids+=($!)
done
say "$processes loadtest processes, $CONNECTIONS clients x $K of $S symbols over $EDGES edges"

connections() {
  local e total=0
  for e in "${edges[@]}"; do
    total=$((total + $(curl -s "http://$e/metrics" | awk '$1 ~ /^tickgate_connections[{]/ { n += $2 } END { print n + 0 }')))
  done
  echo "$total"
}
deadline=$((SECONDS + WARMUP + 600))
until [ "$(connections)" -ge "$CONNECTIONS" ]; do
  [ "$SECONDS" -lt "$deadline" ] || { say "not every client connected; see $OUT/lt-*.log"; break; }
  sleep 1
done
{
  echo "| edge | connections | RSS before (KiB) | RSS connected (KiB) | bytes/connection |"
  echo "|---|---:|---:|---:|---:|"
  for i in "${!edges[@]}"; do
    e="${edges[$i]}"
    n="$(curl -s "http://$e/metrics" | awk '$1 ~ /^tickgate_connections[{]/ { n += $2 } END { print n + 0 }')"
    now="$(rss_kib "${edge_pids[$i]}")"
    awk -v e="$e" -v n="$n" -v b="${rss_before[$i]}" -v a="$now" \
      'BEGIN { printf "| %s | %d | %d | %d | %.0f |\n", e, n, b, a, (n > 0 ? (a - b) * 1024 / n : 0) }'
  done
  # The kernel's TCP buffer memory, the whole box's: both ends of every connection are here. A
  # socket holds buffer pages only while data waits in it, so idle clients add next to nothing.
  awk -v b="$tcp_before" -v a="$(tcp_mem_bytes)" \
    'BEGIN { printf "\nKernel TCP buffer memory (/proc/net/sockstat): %.1f MiB before the clients, %.1f MiB with them\n", b / 1048576, a / 1048576 }'
} | tee "$OUT/edges.md"

failed=0
for pid in "${runs[@]}"; do wait "$pid" || failed=$((failed + 1)); done
[ "$failed" -eq 0 ] || say "$failed loadtest processes did not pass on their own (see $OUT/lt-*.log)"
files=()
for p in $(seq "$processes"); do
  [ -s "$OUT/lt-$p.json" ] || die "$OUT/lt-$p.json is missing (see $OUT/lt-$p.log)"
  files+=("$OUT/lt-$p.json")
done
rc=0
"$LOADTEST" combine "${files[@]}" --name cluster --out "$OUT/cluster.json" | tee "$OUT/summary.md" || rc=$?
say "results in $OUT: summary.md (combined), edges.md (memory per edge), cluster.json, lt-*.json and logs"
exit "$rc"
