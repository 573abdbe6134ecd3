#!/usr/bin/env bash
# The side-by-side benchmark matrix (shared/MACHINE.md, "How to measure"), in one command:
# tickgate and each peer in turn, with the same parameters, the server pinned to one core and the
# load generator to the other, then one comparison table (ratios against the first server) and a
# latency plot.
#
#   bash benches/matrix.sh                          # the full matrix with the defaults below
#   N=5000 S=500 RATES=1000,4000 bash benches/matrix.sh
#   SERVERS=tickgate,ceiling DURATION=5 bash benches/matrix.sh
#   MEMORY=1 N=10000 bash benches/matrix.sh         # idle memory per connection instead
#   COMPRESS=1 RATES=2000,10000 bash benches/matrix.sh  # permessage-deflate, with and without
#   TLS=1 SERVERS=tickgate,bun bash benches/matrix.sh   # each over ws:// and wss:// in one run
#
# What it does:
#   1. benches/peers/setup.sh (npm deps for bun/node-ws, release builds of the Rust peers; only the
#      half the chosen SERVERS need), and `cargo build --release -p tickgate -p tickgate-loadtest`.
#   2. For each server in SERVERS, in turn: `tickgate-loadtest sweep` over RATES. The loadtest
#      starts the server for each step with `--server-cmd` (under `taskset -c SERVER_CORE`), pins
#      itself to LOADGEN_CORE, measures, stops the server, and stops the sweep at the first step
#      that fails (loss, disconnects, < 95% of the expected deliveries, or p99 over P99_MS).
#      Each sweep lands in $OUT/<server>.json, its output in $OUT/<server>.log.
#   3. `tickgate-loadtest compare` of every sweep: $OUT/table.md and $OUT/latency.svg.
#   With MEMORY=1, step 2 is one `tickgate-loadtest run` per server at MEMORY_RATE ticks/s (idle)
#   with N connections, and step 3 a table of server.rss_per_connection ((RSS with every client
#   connected and subscribed - RSS before) / N) in $OUT/memory.md.
#   With COMPRESS=1, SERVERS defaults to tickgate,tickgate-deflate,bun,bun-deflate: each server
#   with clients that do not offer permessage-deflate, then with clients that do (the loadtest's
#   --deflate, inflating every compressed message and timing it; Bun with its shared compressor),
#   every run with --wire-probe; step 3 adds $OUT/compression.md: bytes on the wire per tick, of a
#   snapshot and of a list_symbols reply, server CPU per delivery and the load generator's inflate
#   time per message, at each server's best passing rate.
#
# Everything goes to 127.0.0.1 only, every run is bounded in time (the loadtest's own limits, and
# `timeout` around each server's runs as a safety net), and the script stops by itself.
#
# Settings (environment variables):
#   N=1000            connections (at most 19000: one process holds at most ~19,900 sockets)
#   K=10              symbols each client subscribes to
#   S=100             universe size (clients pick uniformly from the first S symbols)
#   RATES=2000,5000,10000,20000,40000,80000   tick rates of the sweep (ticks/s, all symbols)
#   DURATION=10       seconds measured per step (MEMORY=1: 2)
#   WARMUP=2          seconds between the last subscribe and the window (MEMORY=1: 1)
#   SERVERS=tickgate,ceiling,bun,node-ws,tokio-tungstenite   in this order; the first is the baseline
#                     (TLS=1: each of tickgate, tickgate-hold, tickgate-nohistory, tickgate-deflate,
#                     bun and bun-deflate is followed by its TLS twin, <server>-tls, which can also
#                     be named on its own)
#                     (also: tickgate-hold, tickgate with server.write_hold_max_us = 1000,
#                     benches/tickgate-hold.toml; tickgate-nohistory, tickgate keeping no resume
#                     history, benches/tickgate-nohistory.toml, to measure what the history costs;
#                     tickgate-deflate and bun-deflate: the same servers with compressing clients)
#   REPEAT=1          rounds; with more, each round runs every server in turn (so drift hits all
#                     alike) into $OUT/round-<i>/, and a summary of medians and min-max follows
#   P99_MS=5          p99 bound of a passing step, in ms
#   SLOW_SHARE=0      share of clients that stop reading when the window starts (slow-consumer mix;
#                     the expected deliveries and the pass criteria count the other clients only)
#   CHURN=0           subscription changes per second during the window
#   RESUME_SHARE=0    share of the reading clients dropped and resumed every RESUME_EVERY s of the
#   RESUME_EVERY=1    window (the loadtest's --resume-share / --resume-every; docs/LOADTEST.md)
#   PORT=9100         listen port of every server (must be free)
#   SERVER_CORE=0 LOADGEN_CORE=1                   CPU of the server and of the load generator
#   MEMORY=0          1: idle memory per connection instead of the sweep
#   MEMORY_RATE=1     tick rate of the MEMORY=1 runs
#   OUT=loadtest/results/<date>-N<N>-S<S>          (MEMORY=1: ...-memory-N<N>-S<S>)
#   SETUP=1 BUILD=1   0 skips the peers' setup / the release build of tickgate and the loadtest
#   CARGO_JOBS=       `cargo build -j` (default: cargo's)
#   PROGRESS=0        1: the loadtest's live progress line
#   TLS=0             1: also run each server that can serve wss:// over TLS (<server>-tls): a test CA
#                     and certificate for localhost are made in $OUT/tls (scripts/make-test-cert.sh,
#                     ECDSA P-256), tickgate gets a [tls] section with them, Bun its `tls` option,
#                     and the loadtest speaks wss:// trusting that CA (--ca, --server-name localhost)
#   COMPRESS=0        1: permessage-deflate with and without (see above)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '[matrix] %s\n' "$*"; }
die() {
  printf '[matrix] error: %s\n' "$*" >&2
  exit 2
}

MEMORY="${MEMORY:-0}"
COMPRESS="${COMPRESS:-0}"
N="${N:-1000}"
K="${K:-10}"
S="${S:-100}"
RATES="${RATES:-2000,5000,10000,20000,40000,80000}"
if [ "$MEMORY" = 1 ]; then
  DURATION="${DURATION:-2}"
  WARMUP="${WARMUP:-1}"
else
  DURATION="${DURATION:-10}"
  WARMUP="${WARMUP:-2}"
fi
MEMORY_RATE="${MEMORY_RATE:-1}"
if [ "$COMPRESS" = 1 ]; then
  SERVERS="${SERVERS:-tickgate,tickgate-deflate,bun,bun-deflate}"
else
  SERVERS="${SERVERS:-tickgate,ceiling,bun,node-ws,tokio-tungstenite}"
fi
REPEAT="${REPEAT:-1}"
P99_MS="${P99_MS:-5}"
SLOW_SHARE="${SLOW_SHARE:-0}"
CHURN="${CHURN:-0}"
RESUME_SHARE="${RESUME_SHARE:-0}"
RESUME_EVERY="${RESUME_EVERY:-1}"
PORT="${PORT:-9100}"
SERVER_CORE="${SERVER_CORE:-0}"
LOADGEN_CORE="${LOADGEN_CORE:-1}"
SETUP="${SETUP:-1}"
BUILD="${BUILD:-1}"
PROGRESS="${PROGRESS:-0}"
TLS="${TLS:-0}"
STAMP="$(date +%Y%m%d-%H%M%S)"
if [ "$MEMORY" = 1 ]; then
  OUT="${OUT:-loadtest/results/$STAMP-memory-N$N-S$S}"
else
  OUT="${OUT:-loadtest/results/$STAMP-N$N-S$S}"
fi

# ---- checks -------------------------------------------------------------------------------------

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_num() { [[ "$1" =~ ^[0-9]+([.][0-9]+)?$ ]]; }
for v in N K S REPEAT PORT SERVER_CORE LOADGEN_CORE; do
  is_uint "${!v}" || die "$v must be a whole number, got '${!v}'"
done
for v in DURATION WARMUP P99_MS MEMORY_RATE RESUME_SHARE RESUME_EVERY; do
  is_num "${!v}" || die "$v must be a number, got '${!v}'"
done
[[ "$RATES" =~ ^[0-9]+([.][0-9]+)?(,[0-9]+([.][0-9]+)?)*$ ]] || die "RATES must be comma-separated numbers, got '$RATES'"
[ "$N" -ge 1 ] || die "N must be at least 1"
# One process holds at most ~19,900 sockets (open files: 20,000, a hard limit), and both the
# loadtest and each server are one process here.
[ "$N" -le 19000 ] || die "N=$N: one process holds at most ~19,900 sockets (open files 20,000); use N <= 19000"
[ "$K" -ge 1 ] && [ "$S" -ge 1 ] || die "K and S must be at least 1"
[ "$K" -le "$S" ] || die "K=$K symbols per client out of a universe of S=$S"
[ "$REPEAT" -ge 1 ] || die "REPEAT must be at least 1"
[ "$PORT" -ge 1024 ] && [ "$PORT" -le 65535 ] || die "PORT must be 1024-65535"
[ "$SERVER_CORE" != "$LOADGEN_CORE" ] || die "SERVER_CORE and LOADGEN_CORE must differ"
cores="$(nproc --all)"
[ "$SERVER_CORE" -lt "$cores" ] && [ "$LOADGEN_CORE" -lt "$cores" ] || die "this machine has $cores cores (0..$((cores - 1)))"
[[ "$OUT" =~ ^[A-Za-z0-9._/+-]+$ ]] || die "OUT must be a path without spaces or shell characters: '$OUT'"
for tool in taskset timeout jq; do
  command -v "$tool" >/dev/null || die "$tool not found"
done

IFS=', ' read -r -a asked <<<"$SERVERS"
[ "${#asked[@]}" -ge 1 ] || die "SERVERS is empty"
[[ "$TLS" =~ ^[01]$ ]] || die "TLS must be 0 or 1, got '$TLS'"
# The servers that can serve wss:// (their TLS twin is <server>-tls).
has_tls() { case "$1" in tickgate | tickgate-hold | tickgate-nohistory | tickgate-deflate | bun | bun-deflate) return 0 ;; *) return 1 ;; esac; }
servers=()
for s in "${asked[@]}"; do
  servers+=("$s")
  if [ "$TLS" = 1 ] && [[ "$s" != *-tls ]]; then
    if has_tls "$s"; then servers+=("$s-tls"); else say "$s serves no TLS here: no $s-tls"; fi
  fi
done
need_node=0
need_rust_peers=0
need_tls=0
for s in "${servers[@]}"; do
  base="${s%-tls}"
  if [ "$base" != "$s" ]; then
    has_tls "$base" || die "unknown server '$s' (only tickgate, tickgate-hold, tickgate-nohistory, tickgate-deflate, bun and bun-deflate have a -tls twin)"
    need_tls=1
  fi
  case "$base" in
    tickgate | tickgate-hold | tickgate-nohistory | tickgate-deflate) ;;
    bun | bun-deflate | node-ws) need_node=1 ;;
    ceiling | tokio-tungstenite) need_rust_peers=1 ;;
    *) die "unknown server '$s' (tickgate, tickgate-hold, tickgate-nohistory, tickgate-deflate, ceiling, bun, bun-deflate, node-ws, tokio-tungstenite, and <server>-tls)" ;;
  esac
done

# Whether something accepts connections on 127.0.0.1:PORT. The loadtest takes the first
# connection that succeeds as "the server is up", so a stale listener would be measured instead.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
port_free_within() {
  local deadline=$((SECONDS + $1))
  while port_busy; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
port_free_within 0 || die "something already listens on 127.0.0.1:$PORT; stop it or set PORT"

# ---- setup and build ----------------------------------------------------------------------------

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PEER_TARGET="${CARGO_TARGET_DIR:-$ROOT/benches/peers/.deps/target}"
PEERS="$ROOT/benches/peers"
jobs=()
[ -n "${CARGO_JOBS:-}" ] && jobs=(-j "$CARGO_JOBS")

if [ "$SETUP" = 1 ] && [ $((need_node + need_rust_peers)) -gt 0 ]; then
  say "setting up the peers (benches/peers/setup.sh)"
  (
    [ -n "${CARGO_JOBS:-}" ] && export CARGO_BUILD_JOBS="$CARGO_JOBS"
    SKIP_NODE=$((1 - need_node)) SKIP_RUST=$((1 - need_rust_peers)) bash "$PEERS/setup.sh"
  )
fi
if [ "$BUILD" = 1 ]; then
  say "cargo build --release -p tickgate -p tickgate-loadtest"
  cargo build --release "${jobs[@]}" -p tickgate -p tickgate-loadtest
fi
LOADTEST="$TARGET/release/tickgate-loadtest"
[ -x "$LOADTEST" ] || die "$LOADTEST is missing (BUILD=0?)"

q() { printf '%q' "$1"; }
PIN="taskset -c $SERVER_CORE"
# TLS: a test CA and a certificate for localhost, and tickgate's configurations with a [tls]
# section (each variant's own settings first).
case "$OUT" in
  /*) TLS_DIR="$OUT/tls" ;;
  *) TLS_DIR="$ROOT/$OUT/tls" ;;
esac
if [ "$need_tls" = 1 ]; then
  command -v openssl >/dev/null || die "openssl not found (TLS=1 makes a test certificate with it)"
  bash "$ROOT/scripts/make-test-cert.sh" "$TLS_DIR" localhost >/dev/null
  for variant in tickgate tickgate-hold tickgate-nohistory; do
    {
      case "$variant" in
        tickgate-hold) cat "$ROOT/benches/tickgate-hold.toml" ;;
        tickgate-nohistory) cat "$ROOT/benches/tickgate-nohistory.toml" ;;
      esac
      printf '\n[tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$TLS_DIR/chain.pem" "$TLS_DIR/key.pem"
    } >"$TLS_DIR/$variant.toml"
  done
fi
# The command that starts one server; the loadtest fills in {port}, {rate}, {symbols} (S) and
# {symbols_file} (the first S symbols of tickgate's simulated universe, one per line).
server_cmd() {
  local peer_args="--host 127.0.0.1 --port {port} --symbols-file {symbols_file} --rate {rate}"
  case "$1" in
    # One reactor: the server gets one core, as every peer does.
    # tickgate-deflate: the same server (permessage_deflate is on by default); its clients offer it.
    tickgate | tickgate-deflate) echo "$PIN $(q "$TARGET/release/tickgate") --listen 127.0.0.1:{port} --sim-rate {rate} --sim-symbols {symbols} --sim-activity uniform --reactors 1 --log-level warn" ;;
    # The same, trading latency for CPU: a busy reactor holds its writes back up to 1 ms.
    tickgate-hold) echo "$PIN $(q "$TARGET/release/tickgate") --config $(q "$ROOT/benches/tickgate-hold.toml") --listen 127.0.0.1:{port} --sim-rate {rate} --sim-symbols {symbols} --sim-activity uniform --reactors 1 --log-level warn" ;;
    # The same without the resume history: what recording every tick costs the live path.
    tickgate-nohistory) echo "$PIN $(q "$TARGET/release/tickgate") --config $(q "$ROOT/benches/tickgate-nohistory.toml") --listen 127.0.0.1:{port} --sim-rate {rate} --sim-symbols {symbols} --sim-activity uniform --reactors 1 --log-level warn" ;;
    # tickgate-deflate-tls: the same configuration as tickgate-tls (its clients offer permessage-deflate).
    tickgate-deflate-tls) echo "$PIN $(q "$TARGET/release/tickgate") --config $(q "$TLS_DIR/tickgate.toml") --listen 127.0.0.1:{port} --sim-rate {rate} --sim-symbols {symbols} --sim-activity uniform --reactors 1 --log-level warn" ;;
    tickgate-tls | tickgate-hold-tls | tickgate-nohistory-tls) echo "$PIN $(q "$TARGET/release/tickgate") --config $(q "$TLS_DIR/${1%-tls}.toml") --listen 127.0.0.1:{port} --sim-rate {rate} --sim-symbols {symbols} --sim-activity uniform --reactors 1 --log-level warn" ;;
    ceiling) echo "$PIN $(q "$PEER_TARGET/release/peer-ceiling") $peer_args" ;;
    bun) echo "$PIN $(q "$PEERS/node_modules/.bin/bun") $(q "$PEERS/bun/server.js") $peer_args" ;;
    bun-tls) echo "$PIN $(q "$PEERS/node_modules/.bin/bun") $(q "$PEERS/bun/server.js") $peer_args --tls-cert $(q "$TLS_DIR/chain.pem") --tls-key $(q "$TLS_DIR/key.pem")" ;;
    # Bun's shared compressor, for clients that offer permessage-deflate.
    bun-deflate) echo "$PIN $(q "$PEERS/node_modules/.bin/bun") $(q "$PEERS/bun/server.js") $peer_args --compress 1" ;;
    bun-deflate-tls) echo "$PIN $(q "$PEERS/node_modules/.bin/bun") $(q "$PEERS/bun/server.js") $peer_args --compress 1 --tls-cert $(q "$TLS_DIR/chain.pem") --tls-key $(q "$TLS_DIR/key.pem")" ;;
    node-ws) echo "$PIN $(q "$(command -v node)") $(q "$PEERS/node-ws/server.js") $peer_args" ;;
    # One worker thread on one core: more would only add context switches (peers/README.md).
    tokio-tungstenite) echo "$PIN $(q "$PEER_TARGET/release/peer-tokio") --threads 1 $peer_args" ;;
  esac
}
server_exe() {
  case "${1%-tls}" in
    tickgate | tickgate-hold | tickgate-nohistory | tickgate-deflate) echo "$TARGET/release/tickgate" ;;
    ceiling) echo "$PEER_TARGET/release/peer-ceiling" ;;
    bun | bun-deflate) echo "$PEERS/node_modules/.bin/bun" ;;
    node-ws) command -v node || echo node ;;
    tokio-tungstenite) echo "$PEER_TARGET/release/peer-tokio" ;;
  esac
}
for s in "${servers[@]}"; do
  exe="$(server_exe "$s")"
  [ -x "$exe" ] || die "$s: $exe is missing (SETUP=0 or BUILD=0?)"
done

# ---- the runs -----------------------------------------------------------------------------------

mkdir -p "$OUT"
IFS=',' read -r -a rate_list <<<"$RATES"
n_steps=${#rate_list[@]}
[ "$MEMORY" = 1 ] && n_steps=1
# Safety net per server: each step waits at most 20 s for the server to listen, 120 s for the
# connections, the warm-up and the window, and 8 s for the server to stop.
budget_s=$(awk -v n="$n_steps" -v w="$WARMUP" -v d="$DURATION" 'BEGIN { printf "%d", n * (150 + w + d) + 60 }')

{
  echo "date: $(date -Is)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "kernel: $(uname -sr), cores: $cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rustc: $(rustc -V 2>/dev/null || echo '?'); node: $(node --version 2>/dev/null || echo '-'); bun: $("$PEERS/node_modules/.bin/bun" --version 2>/dev/null || echo '-')"
  echo "mode: $([ "$MEMORY" = 1 ] && echo "memory (rate $MEMORY_RATE)" || echo "sweep (rates $RATES)")$([ "$COMPRESS" = 1 ] && echo ", permessage-deflate with and without")"
  echo "N=$N K=$K S=$S DURATION=$DURATION WARMUP=$WARMUP P99_MS=$P99_MS REPEAT=$REPEAT PORT=$PORT TLS=$TLS"
  echo "server on CPU $SERVER_CORE, load generator on CPU $LOADGEN_CORE"
  for s in "${servers[@]}"; do echo "$s: $(server_cmd "$s")"; done
} >"$OUT/params.txt"

child=""
on_signal() {
  trap - INT TERM
  say "interrupted: stopping the loadtest and its server"
  # timeout runs the loadtest in its own process group and passes the signal on to the group,
  # the server the loadtest started included.
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  exit 130
}
trap on_signal INT TERM

# Runs the loadtest for one server (the rest of the arguments), bounded, logged to $log.
run_loadtest() {
  local log="$1"
  shift
  local rc=0
  timeout --kill-after=20 "$budget_s" "$LOADTEST" "$@" > >(tee -a "$log") 2>&1 &
  child=$!
  wait "$child" || rc=$?
  child=""
  return "$rc"
}

failed=()
warnings=()
run_round() {
  local dir="$1"
  mkdir -p "$dir"
  local common=(--addr "127.0.0.1:$PORT" -n "$N" -k "$K" -s "$S" --warmup "$WARMUP" --duration "$DURATION"
    --pin-core "$LOADGEN_CORE" --p99-bound-ms "$P99_MS" --out "$dir")
  [ "$PROGRESS" = 1 ] || common+=(--quiet)
  # The slow-consumer mix and subscription churn (both off unless asked for).
  [ "$SLOW_SHARE" = 0 ] || common+=(--slow-share "$SLOW_SHARE")
  [ "$CHURN" = 0 ] || common+=(--churn "$CHURN")
  # Drops and resumes during the window (off unless asked for).
  [ "$RESUME_SHARE" = 0 ] || common+=(--resume-share "$RESUME_SHARE" --resume-every "$RESUME_EVERY")
  [ "$COMPRESS" = 1 ] && common+=(--wire-probe)
  local s rc
  for s in "${servers[@]}"; do
    # Clients that offer permessage-deflate to a -deflate server (and its TLS twin); wss:// to a
    # TLS twin, trusting the test CA.
    local own=()
    case "$s" in *-deflate | *-deflate-tls) own+=(--deflate) ;; esac
    [[ "$s" == *-tls ]] && own+=(--ca "$TLS_DIR/ca.pem" --server-name localhost)
    port_free_within 15 || die "127.0.0.1:$PORT is still in use before $s; a server did not stop"
    say "$s -> $dir/$s.json"
    rm -f "$dir/$s.json"
    : >"$dir/$s.log"
    rc=0
    if [ "$MEMORY" = 1 ]; then
      run_loadtest "$dir/$s.log" run --rate "$MEMORY_RATE" --name "$s" --server-cmd "$(server_cmd "$s")" "${common[@]}" \
        ${own[@]+"${own[@]}"} || rc=$?
    else
      run_loadtest "$dir/$s.log" sweep --rates "$RATES" --stop-on-fail --name "$s" --server-cmd "$(server_cmd "$s")" \
        "${common[@]}" ${own[@]+"${own[@]}"} || rc=$?
    fi
    # Exit status 2 is the loadtest's "measured, but no step passed": the JSON is complete and
    # still gives the memory figure, or a best rate of 0.
    if [ "$rc" -eq 2 ] && [ -s "$dir/$s.json" ]; then
      say "$s: no step passed (see $dir/$s.json)"
      rc=0
    fi
    if [ "$rc" -ne 0 ] || [ ! -s "$dir/$s.json" ]; then
      [ "$rc" -eq 124 ] && say "$s: stopped after the ${budget_s} s limit"
      say "$s: FAILED (exit status $rc; see $dir/$s.log)"
      failed+=("$dir/$s")
      continue
    fi
    # A step where not every client got in measured something else than the others did.
    local short
    short="$(jq -r '.steps[] | select(.result.connected < .result.connections)
      | "rate \(.rate): only \(.result.connected) of \(.result.connections) clients connected (\(.result.failed_connects) failed connects)"' \
      "$dir/$s.json")"
    if [ -n "$short" ]; then
      while IFS= read -r line; do
        say "$s: WARNING: $line"
        warnings+=("$dir/$s.json: $line")
      done <<<"$short"
    fi
  done
}

# The figure a round gives for one server: the best zero-loss deliveries/s of the sweep, or the
# bytes per connection of the memory run.
figure() {
  if [ "$MEMORY" = 1 ]; then
    jq -r '.steps[0].result.server.rss_per_connection // empty' "$1"
  else
    jq -r '[.steps[] | select(.ok) | .result.delivered_per_s] | max // 0' "$1"
  fi
}

# Markdown table of the memory runs in one directory.
memory_table() {
  local dir="$1" s f
  echo "| server | connections | RSS before (KiB) | RSS connected (KiB) | bytes/connection | kernel TCP memory, both ends (KiB) |"
  echo "|---|---:|---:|---:|---:|---:|"
  for s in "${servers[@]}"; do
    f="$dir/$s.json"
    [ -s "$f" ] || { echo "| $s | failed | | | | |"; continue; }
    jq -r --arg s "$s" '.steps[0].result as $r | $r.server as $m
      | "| \($s) | \($r.connected) | \($m.rss_before_connect / 1024 | floor) | \($m.rss_connected / 1024 | floor) | \($m.rss_per_connection | round) | \(($r.tcp_socket_memory // 0) / 1024 | floor) |"' "$f"
  done
}

# Markdown table of permessage-deflate's effect in one directory (COMPRESS=1): at each server's
# highest passing rate (or its first step when none passed), what a tick, a snapshot and a
# list_symbols reply cost on the wire, the server's CPU per delivery, and what inflating cost
# the load generator (its own CPU, not the server's).
compression_table() {
  local dir="$1" s f
  echo "| server | rate | compressed ticks | bytes/tick on the wire | snapshot bytes | list_symbols bytes | server CPU ns/delivery | loadtest inflate ns/message | loadtest core share |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for s in "${servers[@]}"; do
    f="$dir/$s.json"
    [ -s "$f" ] || { echo "| $s | failed | | | | | | | |"; continue; }
    jq -r --arg s "$s" '([.steps[] | select(.ok)] | last) // .steps[0] | . as $step | .result as $r | $r.wire as $w
      | "| \($s) | \($step.rate) | \(if $w.event_frames > 0 then (100 * $w.compressed_events / $w.event_frames | round | tostring) + "%" else "–" end) | \($w.bytes_per_event * 10 | round / 10) | \(if $w.snapshot_bytes > 0 then $w.snapshot_bytes else "–" end) | \(if $w.list_symbols_bytes > 0 then $w.list_symbols_bytes else "–" end) | \(($r.server.cpu_ns_per_delivery // 0) | round) | \(if $w.inflated > 0 then ($w.inflate_ns_per_message | round | tostring) else "–" end) | \($r.loadtest_core_share * 100 | round)% |"' "$f"
  done
}

# What one round produced: the comparison (sweeps) or the memory table.
report_round() {
  local dir="$1" s
  if [ "$MEMORY" = 1 ]; then
    memory_table "$dir" | tee "$dir/memory.md"
    return
  fi
  local files=()
  for s in "${servers[@]}"; do
    [ -s "$dir/$s.json" ] && files+=("$dir/$s.json")
  done
  [ "${#files[@]}" -gt 0 ] || { say "no sweep finished in $dir"; return; }
  "$LOADTEST" compare "${files[@]}" --markdown "$dir/table.md" --svg "$dir/latency.svg"
  if [ "$COMPRESS" = 1 ]; then
    echo
    compression_table "$dir" | tee "$dir/compression.md"
  fi
}

say "$([ "$MEMORY" = 1 ] && echo "idle memory at N=$N" || echo "sweep over $RATES ticks/s"): ${servers[*]}; N=$N K=$K S=$S, ${DURATION}s per step; results in $OUT"
for ((round = 1; round <= REPEAT; round++)); do
  dir="$OUT"
  [ "$REPEAT" -gt 1 ] && dir="$OUT/round-$round" && say "round $round of $REPEAT"
  run_round "$dir"
  echo
  report_round "$dir"
done

median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# Over several rounds: the median of each server's figure and of its ratio to the first server's.
if [ "$REPEAT" -gt 1 ]; then
  {
    what="best zero-loss deliveries/s"
    [ "$MEMORY" = 1 ] && what="bytes/connection"
    # The ratio is taken within each round (the same machine state for both servers), then the
    # median over the rounds that have one: a round where the baseline passed nothing has none.
    echo "| server | median $what | min-max | median of the per-round ratios to ${servers[0]} (rounds with one) | rounds |"
    echo "|---|---:|---:|---:|---:|"
    for s in "${servers[@]}"; do
      values=()
      ratios=()
      for ((round = 1; round <= REPEAT; round++)); do
        f="$OUT/round-$round/$s.json"
        b="$OUT/round-$round/${servers[0]}.json"
        [ -s "$f" ] || continue
        v="$(figure "$f")"
        [ -n "$v" ] || continue
        values+=("$v")
        if [ -s "$b" ]; then
          base="$(figure "$b")"
          [ -n "$base" ] && awk -v b="$base" 'BEGIN { exit !(b > 0) }' && ratios+=("$(awk -v v="$v" -v b="$base" 'BEGIN { print v / b }')")
        fi
      done
      if [ "${#values[@]}" -eq 0 ]; then
        echo "| $s | – | – | – | 0 |"
        continue
      fi
      lo="$(printf '%s\n' "${values[@]}" | sort -g | head -1)"
      hi="$(printf '%s\n' "${values[@]}" | sort -g | tail -1)"
      ratio="–"
      [ "${#ratios[@]}" -gt 0 ] && ratio="$(awk -v r="$(median "${ratios[@]}")" -v n="${#ratios[@]}" 'BEGIN { printf "%.2f× (%d)", r, n }')"
      awk -v m="$(median "${values[@]}")" -v lo="$lo" -v hi="$hi" -v s="$s" -v r="$ratio" -v n="${#values[@]}" \
        'BEGIN { printf "| %s | %.0f | %.0f–%.0f | %s | %d |\n", s, m, lo, hi, r, n }'
    done
  } | tee "$OUT/summary.md"
fi

echo
say "results in $OUT:"
say "  params.txt (parameters, versions, server commands), <server>.json and <server>.log per server"
if [ "$MEMORY" = 1 ]; then
  [ "$REPEAT" -gt 1 ] && say "  round-*/memory.md per round, summary.md (medians)" || say "  memory.md"
else
  [ "$REPEAT" -gt 1 ] && say "  round-*/table.md and round-*/latency.svg per round, summary.md (medians)" ||
    say "  table.md (comparison), latency.svg (latency against delivered rate)"
  [ "$COMPRESS" = 1 ] && say "  compression.md (wire bytes, CPU per delivery, inflate cost; per round with REPEAT)"
fi
for w in "${warnings[@]}"; do
  say "warning: $w"
done
if [ "${#failed[@]}" -gt 0 ]; then
  say "failed: ${failed[*]}"
  exit 1
fi
