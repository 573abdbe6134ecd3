#!/usr/bin/env bash
# What a cluster sustains through NATS JetStream on this box: a nats-server -js, a publisher at
# RATE simulated ticks/s and one edge, all on loopback; after a warm-up, ticks published and
# received per second over SECONDS, ticks the publisher could not publish, and the edge's lag.
#
#   scripts/bus-throughput.sh [RATE] [SECONDS]          # defaults: 20000 10
#   TICKGATE_BIN=target/release/tickgate scripts/bus-throughput.sh 50000
#
# Needs nats-server (apt-get install nats-server) and a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-20000}
seconds=${2:-10}
bin=${TICKGATE_BIN:-target/release/tickgate}
[ -x "$bin" ] || { echo "bus-throughput: build it first: cargo build --release" >&2; exit 1; }
command -v nats-server >/dev/null || { echo "bus-throughput: nats-server is missing" >&2; exit 1; }

store=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$store"; }
trap cleanup EXIT

nats-server -js -a 127.0.0.1 -p 14222 -sd "$store" >/dev/null 2>&1 & pids+=($!)
sleep 1
common=(--bus-url nats://127.0.0.1:14222 --bus-stream BENCH --reactors 1 --sim-rate "$rate" --log-level warn)
"$bin" --bus-role publisher --listen 127.0.0.1:18090 "${common[@]}" >/dev/null & pids+=($!)
sleep 1
"$bin" --bus-role edge --listen 127.0.0.1:18091 "${common[@]}" >/dev/null & pids+=($!)
sleep 3

metric() { curl -s "127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
p0=$(metric 18090 tickgate_bus_published_total); r0=$(metric 18091 tickgate_bus_received_total)
sleep "$seconds"
p1=$(metric 18090 tickgate_bus_published_total); r1=$(metric 18091 tickgate_bus_received_total)
dropped=$(metric 18090 tickgate_bus_publish_dropped_total)
errors=$(metric 18090 tickgate_bus_publish_errors_total)
lag=$(metric 18091 tickgate_bus_lag_messages)
lag_s=$(metric 18091 tickgate_bus_lag_seconds)
awk -v rate="$rate" -v s="$seconds" -v p0="$p0" -v p1="$p1" -v r0="$r0" -v r1="$r1" \
    -v d="$dropped" -v e="$errors" -v lag="$lag" -v lag_s="$lag_s" 'BEGIN {
  printf "offered %d ticks/s: published %.0f/s, edge received %.0f/s; dropped %d, publish errors %d; edge lag %d messages, %.3f s\n",
    rate, (p1 - p0) / s, (r1 - r0) / s, d, e, lag, lag_s }'
