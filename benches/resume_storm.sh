#!/usr/bin/env bash
# A resume storm: healthy clients measured before and while STORM clients drop and resume at
# once (as after a gateway restart or a network blip), against one tickgate.
#
#   bash benches/resume_storm.sh                             # 1,000 healthy, 5,000 resuming
#   STORM=50 HEALTHY=20 DURATION=2 bash benches/resume_storm.sh   # a quick check that it works
#
# What it does:
#   1. `cargo build --release -p tickgate -p tickgate-loadtest` (BUILD=0 skips it).
#   2. Starts tickgate on a free loopback port (one reactor, pinned to SERVER_CORE), with the
#      simulated market at RATE ticks/s over S symbols.
#   3. Starts the storm: one `tickgate-loadtest run` with STORM clients, which waits (its warm-up)
#      until the "before" measurement is done, then for its window drops every one of its
#      clients at once every EVERY seconds (a reset, no close) and reconnects them with
#      `resume`, the last seq each holds of each symbol.
#   4. Once the storm's clients are all in, measures HEALTHY other clients for DURATION seconds
#      ("before"), then again for DURATION seconds inside the storm's window ("during").
#   5. Prints the healthy clients' p50/p99/p99.9 before and during, and what the storm's resumes
#      came to: whole, with an announced gap, failed (no answer, a skipped or repeated seq),
#      reconnects that failed, and error replies (refusals such as rate_limited).
#   Everything lands in $OUT: before.json, during.json, storm.json and their logs, summary.md.
#
# Settings (environment variables):
#   HEALTHY=1000 STORM=5000   clients measured / clients resuming together
#   K=10 S=100                symbols per client, universe size
#   RATE=2000                 ticks/s of the simulated market, over all S symbols
#   DURATION=10               seconds of each healthy measurement
#   EVERY=2                   seconds between two storms in the storm's window
#   SERVER_CORE=0 LOADGEN_CORE=1
#   OUT=loadtest/results/<date>-resume-storm   BUILD=1
set -euo pipefail

# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_start resume-storm

HEALTHY="${HEALTHY:-1000}"
STORM="${STORM:-5000}"
K="${K:-10}"
S="${S:-100}"
RATE="${RATE:-2000}"
DURATION="${DURATION:-10}"
EVERY="${EVERY:-2}"
SERVER_CORE="${SERVER_CORE:-0}"
LOADGEN_CORE="${LOADGEN_CORE:-1}"
BUILD="${BUILD:-1}"
OUT="${OUT:-loadtest/results/$(date +%Y%m%d-%H%M%S)-resume-storm}"

require_whole HEALTHY STORM K S DURATION SERVER_CORE LOADGEN_CORE
for v in RATE EVERY; do
  is_num "${!v}" || die "$v must be a number, got '${!v}'"
done
[ "$HEALTHY" -ge 1 ] && [ "$STORM" -ge 1 ] && [ "$DURATION" -ge 1 ] || die "HEALTHY, STORM and DURATION must be at least 1"
[ $((HEALTHY + STORM)) -le 19000 ] || die "HEALTHY + STORM must be at most 19000 (one gateway process holds ~19,900 sockets)"
[ "$K" -ge 1 ] && [ "$K" -le "$S" ] || die "K=$K symbols per client out of S=$S"
require_out_path
for tool in taskset jq curl python3; do
  command -v "$tool" >/dev/null || die "$tool not found"
done

release_binaries

mkdir -p "$OUT"
PORT="$(free_port)"
ADDR="127.0.0.1:$PORT"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

taskset -c "$SERVER_CORE" "$TICKGATE" --listen "$ADDR" --reactors 1 --sim-rate "$RATE" --sim-symbols "$S" \
  --sim-activity uniform --log-level warn >"$OUT/tickgate.log" 2>&1 &
server=$!
pids+=("$server")
for _ in $(seq 100); do
  curl -sf "http://$ADDR/healthz" >/dev/null && break
  sleep 0.1
done
curl -sf "http://$ADDR/healthz" >/dev/null || die "tickgate did not start (see $OUT/tickgate.log)"

connections() { curl -s "http://$ADDR/metrics" | awk '$1 ~ /^tickgate_connections[{]/ { n += $2 } END { print n + 0 }'; }

common=(--addr "$ADDR" -k "$K" -s "$S" --rate "$RATE" --pin-core "$LOADGEN_CORE" --quiet --out "$OUT")
# The storm waits through the "before" measurement (connect, 2 s warm-up, DURATION, margin),
# then storms for long enough to hold the "during" one.
storm_wait=$((DURATION + 20))
storm_window=$((DURATION + 20))
say "tickgate on $ADDR (pid $server), $RATE ticks/s over $S symbols; storm of $STORM clients every $EVERY s"
"$LOADTEST" run "${common[@]}" --name storm -n "$STORM" --warmup "$storm_wait" --duration "$storm_window" --drain 5 \
  --resume-share 1 --resume-every "$EVERY" --server-pid "$server" >"$OUT/storm.log" 2>&1 &
storm=$!
pids+=("$storm")

deadline=$((SECONDS + 120))
until [ "$(connections)" -ge "$STORM" ]; do
  [ "$SECONDS" -lt "$deadline" ] || die "the storm's $STORM clients did not connect within 120 s (see $OUT/storm.log)"
  kill -0 "$storm" 2>/dev/null || die "the storm's loadtest ended early (see $OUT/storm.log)"
  sleep 0.2
done
storm_window_starts=$((SECONDS + storm_wait))

say "before: $HEALTHY healthy clients for $DURATION s"
"$LOADTEST" run "${common[@]}" --name before -n "$HEALTHY" --warmup 2 --duration "$DURATION" \
  --server-pid "$server" >"$OUT/before.log" 2>&1 || true
# The healthy clients connect and warm up (about 2 s) once the storm has begun.
while [ "$SECONDS" -lt "$storm_window_starts" ]; do sleep 0.2; done
say "during: $HEALTHY healthy clients for $DURATION s, $STORM clients resuming every $EVERY s"
"$LOADTEST" run "${common[@]}" --name during -n "$HEALTHY" --warmup 2 --duration "$DURATION" \
  --server-pid "$server" >"$OUT/during.log" 2>&1 || true
say "waiting for the storm to end"
wait "$storm" || true

for f in before during storm; do
  [ -s "$OUT/$f.json" ] || die "$OUT/$f.json is missing (see $OUT/$f.log)"
done
latency() { jq -r '.steps[0].result.latency_us | "\(.p50 | round) | \(.p99 | round) | \(.p999 | round)"' "$1"; }
verdict() { jq -r '.steps[0].verdict.status' "$1"; }
{
  echo "| healthy clients ($HEALTHY × $K of $S, $RATE ticks/s) | p50 µs | p99 µs | p99.9 µs | verdict |"
  echo "|---|---:|---:|---:|---|"
  echo "| before the storm | $(latency "$OUT/before.json") | $(verdict "$OUT/before.json") |"
  echo "| during the storm | $(latency "$OUT/during.json") | $(verdict "$OUT/during.json") |"
  echo
  echo "| storm ($STORM clients every $EVERY s) | reconnects | subscriptions resumed | whole | with a gap | failed | reconnects failed | error replies | reconnect p50 / p99 ms |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  jq -r '.steps[0].result as $r | $r.resume as $m
    | "| resumes | \($m.reconnects) | \($m.asked) | \($m.whole) | \($m.with_gap) | \($m.failed) | \($m.reconnect_failed) | \([$r.errors[]] | add // 0) | \($r.reconnect_ms.p50 | . * 10 | round / 10) / \($r.reconnect_ms.p99 | . * 10 | round / 10) |"' \
    "$OUT/storm.json"
} | tee "$OUT/summary.md"
say "results in $OUT (summary.md; before, during and storm .json/.log)"
