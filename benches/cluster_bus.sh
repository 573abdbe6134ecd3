#!/usr/bin/env bash
# What the NATS JetStream bus of a cluster costs (docs/OPERATIONS.md, "Cluster on NATS
# JetStream"), in one command: the latency it adds to a delivery, the tick rate one publisher and
# one edge sustain through it, and its CPU per tick.
#
#   bash benches/cluster_bus.sh                                                   # the defaults below
#   DURATION=2 WARMUP=1 N=20 RATE=200 RATES="200 400" BUILD=0 bash benches/cluster_bus.sh   # a quick check
#
# What it does:
#   1. `cargo build --release -p tickgate -p tickgate-loadtest` (BUILD=0 skips it).
#   2. The latency the bus adds, at one tick rate RATE, in one run: a standalone tickgate (its
#      simulated market at RATE ticks/s over S symbols, uniform), then a cluster of nats-server
#      -js, a publisher at RATE and one edge; each measured by `tickgate-loadtest run` with N
#      clients on K of the S symbols, WARMUP s then DURATION s. The latency is from each tick's
#      gw_ts: the standalone's own ingest stamp, and on the edge the publisher's (an edge keeps
#      the publisher's seq and gw_ts), so the edge's includes publisher -> nats-server -> edge.
#      CPU per delivery: the serving process's over the window (the loadtest's --server-pid), and
#      for the edge also with the publisher's and nats-server's added (their CPU per second over
#      the loadtest's run, times the window: they do the same work whoever is subscribed).
#      $OUT/latency.md: both rows and the ratio edge / standalone.
#   3. The rate the bus sustains and its CPU per tick: for each rate of RATES in turn, a fresh
#      nats-server (its store in a new folder under $TMPDIR, removed after the step), a
#      publisher at that rate and an edge, no clients. After WARMUP s, over
#      DURATION s: ticks the publisher's market generated, ticks the stream acknowledged
#      (tickgate_bus_published_total), ticks not published (queue full or refused), messages the
#      stream gained (nats-server's /jsz), ticks the edge read (tickgate_bus_received_total), the
#      edge's lag (tickgate_bus_lag_messages and tickgate_bus_lag_seconds polled every 0.2 s: the
#      highest), and the CPU time of each process (/proc/PID/stat utime+stime) per tick
#      published. A rate holds when nothing went unpublished, generated and published are each at
#      least HOLD x the rate, the edge read at least HOLD x what was published, rejected nothing
#      and announced no `bus` gap, and its lag stayed under LAG_MAX_MS. The ramp stops after the first rate that does not hold
#      (STOP_ON_FAIL=0 runs every rate). $OUT/ramp.md.
#   $OUT also gets bus.json (every figure of both parts), params.txt, the loadtest's JSON files
#   and every process's log.
#
# Placement (shared/MACHINE.md, "How to measure"): the standalone tickgate and the edge on
# SERVER_CORE, the publisher and nats-server on BUS_CORE (by default the same core: the cluster
# gets the one core the standalone gets), the load generator on LOADGEN_CORE. Every process on
# 127.0.0.1, on free ports; every run bounded in time; everything it started is stopped
# (SIGTERM, the edge first and nats-server last; SIGKILL, with a warning, after 10 s). The
# script's own polling runs on LOADGEN_CORE.
#
# Settings (environment variables):
#   RATE=2000          ticks/s (over all S symbols) of the latency comparison
#   N=1000 K=10 S=100  clients, symbols per client, universe size (latency comparison; the ramp
#                      uses S only)
#   RATES="1000 2000 5000 10000 20000 50000 100000 200000"   the ramp, ticks/s (space or comma
#                      separated, ascending)
#   WARMUP=2 DURATION=10   seconds before and of each measured window
#   HOLD=0.95          share of the rate a ramp step must generate, publish and read to hold
#   LAG_MAX_MS=1000    the edge's highest lag (age of the last tick read) a holding step stays under
#   STOP_ON_FAIL=1     0: run every rate of the ramp
#   P99_MS=5           the loadtest's p99 bound (its verdict only; the figures stand either way)
#   PARTS=latency,ramp which parts to run
#   SERVER_CORE=0 BUS_CORE=$SERVER_CORE LOADGEN_CORE=1
#   OUT=loadtest/results/<date>-cluster-bus   BUILD=1
#   TICKGATE, LOADTEST  the binaries (default: $CARGO_TARGET_DIR or target/, release/)
set -euo pipefail

# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_start cluster-bus

RATE="${RATE:-2000}"
N="${N:-1000}"
K="${K:-10}"
S="${S:-100}"
RATES="${RATES:-1000 2000 5000 10000 20000 50000 100000 200000}"
WARMUP="${WARMUP:-2}"
DURATION="${DURATION:-10}"
HOLD="${HOLD:-0.95}"
LAG_MAX_MS="${LAG_MAX_MS:-1000}"
STOP_ON_FAIL="${STOP_ON_FAIL:-1}"
P99_MS="${P99_MS:-5}"
PARTS="${PARTS:-latency,ramp}"
SERVER_CORE="${SERVER_CORE:-0}"
BUS_CORE="${BUS_CORE:-$SERVER_CORE}"
LOADGEN_CORE="${LOADGEN_CORE:-1}"
BUILD="${BUILD:-1}"
OUT="${OUT:-loadtest/results/$(date +%Y%m%d-%H%M%S)-cluster-bus}"

# ---- checks -------------------------------------------------------------------------------------

require_whole RATE N K S WARMUP DURATION LAG_MAX_MS SERVER_CORE BUS_CORE LOADGEN_CORE
for v in HOLD P99_MS; do
  is_num "${!v}" || die "$v must be a number, got '${!v}'"
done
[[ "$STOP_ON_FAIL" =~ ^[01]$ ]] || die "STOP_ON_FAIL must be 0 or 1, got '$STOP_ON_FAIL'"
[[ "$BUILD" =~ ^[01]$ ]] || die "BUILD must be 0 or 1, got '$BUILD'"
for v in RATE N K S; do
  [ "${!v}" -ge 1 ] || die "$v must be at least 1"
done
[ "$K" -le "$S" ] || die "K=$K symbols per client out of a universe of S=$S"
[ "$N" -le 19000 ] || die "N=$N: one process holds at most ~19,900 sockets (open files 20,000); use N <= 19000"
[ "$DURATION" -ge 1 ] || die "DURATION must be at least 1"
awk -v h="$HOLD" 'BEGIN { exit !(h > 0 && h <= 1) }' || die "HOLD must be over 0 and at most 1, got '$HOLD'"
IFS=', ' read -r -a rate_list <<<"$RATES"
[ "${#rate_list[@]}" -ge 1 ] || die "RATES is empty"
for r in "${rate_list[@]}"; do
  if ! is_uint "$r" || [ "$r" -lt 1 ]; then die "RATES must be whole numbers of ticks/s, at least 1, got '$r'"; fi
done
IFS=', ' read -r -a part_list <<<"$PARTS"
do_latency=0
do_ramp=0
for p in "${part_list[@]}"; do
  case "$p" in
    latency) do_latency=1 ;;
    ramp) do_ramp=1 ;;
    *) die "unknown part '$p' in PARTS (latency, ramp)" ;;
  esac
done
[ $((do_latency + do_ramp)) -ge 1 ] || die "PARTS is empty"
cores="$(nproc --all)"
for v in SERVER_CORE BUS_CORE LOADGEN_CORE; do
  [ "${!v}" -lt "$cores" ] || die "$v=${!v}: this machine has $cores cores (0..$((cores - 1)))"
done
[ "$SERVER_CORE" != "$LOADGEN_CORE" ] || die "SERVER_CORE and LOADGEN_CORE must differ"
require_out_path
for tool in nats-server taskset timeout jq curl python3 getconf; do
  command -v "$tool" >/dev/null || die "$tool not found (nats-server: apt-get install nats-server)"
done

release_binaries

mkdir -p "$OUT"
# This script's own polling (curl, awk, jq) runs on the load generator's core, off the servers'.
taskset -cp "$LOADGEN_CORE" $$ >/dev/null
CLK_TCK="$(getconf CLK_TCK)"
work="$(mktemp -d)"
pids=()
cleanup() {
  # Last started first: the edge and the publisher before nats-server.
  local i rev=()
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do rev+=("${pids[$i]}"); done
  [ "${#rev[@]}" -eq 0 ] || stop "${rev[@]}"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

{
  echo "date: $(date -Is)"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "kernel: $(uname -sr), cores: $cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "nats-server: $(nats-server --version 2>&1); tickgate: $("$TICKGATE" --version)"
  echo "RATE=$RATE N=$N K=$K S=$S RATES=\"$RATES\" WARMUP=$WARMUP DURATION=$DURATION HOLD=$HOLD LAG_MAX_MS=$LAG_MAX_MS P99_MS=$P99_MS PARTS=$PARTS"
  echo "standalone and edge on CPU $SERVER_CORE, publisher and nats-server on CPU $BUS_CORE, load generator on CPU $LOADGEN_CORE"
} >"$OUT/params.txt"

# ---- helpers ------------------------------------------------------------------------------------

now() { date +%s.%N; }
d() { awk -v a="$1" -v b="$2" 'BEGIN { print b - a }'; }
# utime + stime of a process (every thread), in seconds.
cpu_s() { awk -v hz="$CLK_TCK" '{ sub(/^.*[)] /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"; }
# The sum of one series over its labels, from a /metrics text on standard input.
metric() { awk -v m="$1" '$1 == m || index($1, m "{") == 1 { n += $2 } END { printf "%.6f\n", n + 0 }'; }
scrape() { curl -sf --max-time 2 "http://$1/metrics" || true; }
wait_ready() { # addr what seconds
  local deadline=$((SECONDS + $3))
  until curl -sf --max-time 2 "http://$1/readyz" >/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || die "$2 at $1 not ready within $3 s (see $OUT/*.log)"
    sleep 0.2
  done
}
# Whether a child process still runs (not exited, not a zombie).
running() {
  local state
  state="$(sed 's/^.*[)] //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
  [ -n "$state" ] && [ "$state" != Z ]
}
# Stops the processes given (children of this script), one after the other in that order, and
# forgets them: SIGTERM, then SIGKILL after 10 s (said, as a process that ignores SIGTERM is a
# finding of its own).
stop() {
  local pid keep=() p deadline
  for pid in "$@"; do
    kill "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while running "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if running "$pid"; then
      say "warning: $(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-80) (pid $pid) still ran 10 s after SIGTERM: killed"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    [[ " $* " == *" $p "* ]] || keep+=("$p")
  done
  pids=("${keep[@]}")
}

# A cluster of its own: nats-server -js (store in a fresh folder), a publisher at $1 ticks/s and
# one edge, logs named after $2. Sets nats_pid pub_pid edge_pid, nats_mon (monitoring address),
# pub_addr, edge_addr and nats_store; returns once the edge is ready (it has read the stream's
# past). cluster_down stops them and removes the store.
cluster_up() {
  local rate="$1" name="$2" nats_port
  nats_store="$(mktemp -d -p "$work")"
  nats_port="$(free_port)"
  nats_mon="127.0.0.1:$(free_port)"
  taskset -c "$BUS_CORE" nats-server -js -a 127.0.0.1 -p "$nats_port" -m "${nats_mon##*:}" -sd "$nats_store" \
    >"$OUT/$name-nats.log" 2>&1 &
  nats_pid=$!
  pids+=("$nats_pid")
  local deadline=$((SECONDS + 20))
  until curl -sf --max-time 2 "http://$nats_mon/healthz" >/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || die "nats-server not up within 20 s (see $OUT/$name-nats.log)"
    sleep 0.1
  done
  local bus=(--bus-url "nats://127.0.0.1:$nats_port" --bus-stream BUSCOST --sim-symbols "$S" --sim-activity uniform --reactors 1 --log-level info)
  pub_addr="127.0.0.1:$(free_port)"
  taskset -c "$BUS_CORE" "$TICKGATE" --bus-role publisher --listen "$pub_addr" --sim-rate "$rate" "${bus[@]}" \
    >"$OUT/$name-publisher.log" 2>&1 &
  pub_pid=$!
  pids+=("$pub_pid")
  wait_ready "$pub_addr" publisher 30
  edge_addr="127.0.0.1:$(free_port)"
  taskset -c "$SERVER_CORE" "$TICKGATE" --bus-role edge --listen "$edge_addr" "${bus[@]}" >"$OUT/$name-edge.log" 2>&1 &
  edge_pid=$!
  pids+=("$edge_pid")
  wait_ready "$edge_addr" edge 60
}
cluster_down() {
  stop "$edge_pid" "$pub_pid" "$nats_pid"
  rm -rf "$nats_store"
}
stream_messages() {
  curl -sf --max-time 2 "http://$nats_mon/jsz?streams=true" |
    jq '[.account_details[]?.stream_detail[]? | select(.name == "BUSCOST") | .state.messages] | add // 0'
}

# One loadtest run against $1 measuring process $2, named $3; its JSON is $OUT/$3.json.
loadtest() {
  local rc=0
  timeout $((WARMUP + DURATION + 180)) "$LOADTEST" run --addr "$1" --server-pid "$2" -n "$N" -k "$K" -s "$S" \
    --rate "$RATE" --warmup "$WARMUP" --duration "$DURATION" --pin-core "$LOADGEN_CORE" --p99-bound-ms "$P99_MS" \
    --quiet --name "$3" --out "$OUT" >"$OUT/$3.log" 2>&1 || rc=$?
  # 0 passed, 2 failed its criteria: the figures stand either way; anything else is no run.
  [ "$rc" -eq 0 ] || [ "$rc" -eq 2 ] || die "the loadtest against $3 failed (exit $rc; see $OUT/$3.log)"
  [ -s "$OUT/$3.json" ] || die "$OUT/$3.json is missing (see $OUT/$3.log)"
  sed -n '1,/^verdict/p' "$OUT/$3.log" | grep -v '^results:' | sed "s/^/[cluster-bus]   /"
}

# ---- 1. the latency the bus adds ----------------------------------------------------------------

latency_json=null
if [ "$do_latency" = 1 ]; then
  say "latency: standalone tickgate at $RATE ticks/s, $N clients x $K of $S symbols"
  standalone_addr="127.0.0.1:$(free_port)"
  taskset -c "$SERVER_CORE" "$TICKGATE" --listen "$standalone_addr" --reactors 1 --sim-rate "$RATE" --sim-symbols "$S" \
    --sim-activity uniform --log-level info >"$OUT/standalone-tickgate.log" 2>&1 &
  standalone_pid=$!
  pids+=("$standalone_pid")
  wait_ready "$standalone_addr" "standalone tickgate" 30
  loadtest "$standalone_addr" "$standalone_pid" standalone
  stop "$standalone_pid"

  say "latency: publisher at $RATE ticks/s -> nats-server -> edge, the same clients on the edge"
  cluster_up "$RATE" latency
  bus_cpu0="$(awk -v a="$(cpu_s "$pub_pid")" -v b="$(cpu_s "$nats_pid")" 'BEGIN { print a + b }')"
  t0="$(now)"
  loadtest "$edge_addr" "$edge_pid" edge
  t1="$(now)"
  bus_cpu1="$(awk -v a="$(cpu_s "$pub_pid")" -v b="$(cpu_s "$nats_pid")" 'BEGIN { print a + b }')"
  edge_metrics="$(scrape "$edge_addr")"
  pub_metrics="$(scrape "$pub_addr")"
  cluster_down

  # The publisher's and nats-server's share of a core over the loadtest's run.
  bus_share="$(awk -v c0="$bus_cpu0" -v c1="$bus_cpu1" -v t0="$t0" -v t1="$t1" 'BEGIN { print (c1 - c0) / (t1 - t0) }')"
  row() { # name json
    jq --arg name "$1" --argjson bus_share "$2" '.steps[0] as $s | $s.result as $r | {
      server: $name, rate: $s.rate, expected_per_s: $s.expected_per_s, delivered_per_s: $r.delivered_per_s,
      p50_us: $r.latency_us.p50, p99_us: $r.latency_us.p99, p999_us: $r.latency_us.p999, max_us: $r.latency_us.max,
      lost: $r.seq.lost, window_s: $r.window_s, loadtest_core_share: $r.loadtest_core_share,
      server_cpu_s: $r.server.cpu_s,
      cpu_ns_per_delivery: $r.server.cpu_ns_per_delivery,
      bus_core_share: $bus_share,
      cpu_ns_per_delivery_all: (if $r.delivered > 0 then ($r.server.cpu_s + $bus_share * $r.window_s) * 1e9 / $r.delivered else null end),
      verdict: $s.verdict.status, reasons: $s.verdict.reasons }' "$OUT/$1.json"
  }
  latency_json="$(jq -n --argjson standalone "$(row standalone 0)" --argjson edge "$(row edge "$bus_share")" \
    --arg edge_published "$(metric tickgate_bus_published_total <<<"$pub_metrics")" \
    --arg edge_dropped "$(metric tickgate_bus_publish_dropped_total <<<"$pub_metrics")" \
    --arg edge_received "$(metric tickgate_bus_received_total <<<"$edge_metrics")" \
    '{ standalone: $standalone, edge: $edge, publisher_published: ($edge_published | tonumber),
       publisher_dropped: ($edge_dropped | tonumber), edge_received: ($edge_received | tonumber) }')"
  jq -r --arg rate "$RATE" --arg n "$N" --arg k "$K" --arg s "$S" '
    def f0: if . == null then "-" else (. * 1 | round | tostring) end;
    def f2: if . == null or . == 0 then "-" else ((. * 100 | round) / 100 | tostring) end;
    def ratio($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
    .standalone as $a | .edge as $b |
    "The latency the bus adds: \($rate) ticks/s, \($n) clients x \($k) of \($s) symbols (latency from the gw_ts the standalone or the publisher stamped)",
    "",
    "| server | delivered/s | p50 µs | p99 µs | p99.9 µs | max µs | lost | CPU ns/delivery (serving process) | CPU ns/delivery (with publisher and nats-server) | load generator | verdict |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ($a, $b | "| \(.server) | \(.delivered_per_s | f0) | \(.p50_us | f0) | \(.p99_us | f0) | \(.p999_us | f0) | \(.max_us | f0) | \(.lost) | \(.cpu_ns_per_delivery | f0) | \(.cpu_ns_per_delivery_all | f0) | \(.loadtest_core_share * 100 | round)% | \(.verdict) |"),
    "| edge / standalone | \(ratio($b.delivered_per_s; $a.delivered_per_s) | f2) | \(ratio($b.p50_us; $a.p50_us) | f2) | \(ratio($b.p99_us; $a.p99_us) | f2) | \(ratio($b.p999_us; $a.p999_us) | f2) | \(ratio($b.max_us; $a.max_us) | f2) | | \(ratio($b.cpu_ns_per_delivery; $a.cpu_ns_per_delivery) | f2) | \(ratio($b.cpu_ns_per_delivery_all; $a.cpu_ns_per_delivery_all) | f2) | | |",
    "",
    "Publisher and nats-server: \($b.bus_core_share * 100 | round)% of a core over the run; the publisher published \(.publisher_published | f0) ticks (\(.publisher_dropped | f0) not published), the edge read \(.edge_received | f0)."
  ' <<<"$latency_json" | tee "$OUT/latency.md"
fi

# ---- 2. the rate the bus sustains, and its CPU per tick -----------------------------------------

ramp_file="$work/ramp.jsonl"
: >"$ramp_file"
if [ "$do_ramp" = 1 ]; then
  for rate in "${rate_list[@]}"; do
    say "ramp: $rate ticks/s, publisher -> nats-server -> edge, no clients"
    cluster_up "$rate" "ramp-$rate"
    sleep "$WARMUP"
    p0="$(scrape "$pub_addr")"
    e0="$(scrape "$edge_addr")"
    m0="$(stream_messages)"
    c0=("$(cpu_s "$pub_pid")" "$(cpu_s "$nats_pid")" "$(cpu_s "$edge_pid")")
    t0="$(now)"
    lag_msgs_max=0
    lag_s_max=0
    end=$(awk -v t="$t0" -v d="$DURATION" 'BEGIN { printf "%.3f", t + d }')
    while awk -v n="$(now)" -v e="$end" 'BEGIN { exit !(n < e) }'; do
      em="$(scrape "$edge_addr")"
      lag_msgs_max="$(awk -v a="$lag_msgs_max" -v b="$(metric tickgate_bus_lag_messages <<<"$em")" 'BEGIN { print (b > a ? b : a) }')"
      lag_s_max="$(awk -v a="$lag_s_max" -v b="$(metric tickgate_bus_lag_seconds <<<"$em")" 'BEGIN { print (b > a ? b : a) }')"
      sleep 0.2
    done
    p1="$(scrape "$pub_addr")"
    e1="$(scrape "$edge_addr")"
    m1="$(stream_messages)"
    c1=("$(cpu_s "$pub_pid")" "$(cpu_s "$nats_pid")" "$(cpu_s "$edge_pid")")
    t1="$(now)"
    cluster_down
    step="$(jq -n \
      --argjson rate "$rate" --argjson seconds "$(d "$t0" "$t1")" \
      --argjson generated "$(d "$(metric tickgate_ticks_ingested_total <<<"$p0")" "$(metric tickgate_ticks_ingested_total <<<"$p1")")" \
      --argjson published "$(d "$(metric tickgate_bus_published_total <<<"$p0")" "$(metric tickgate_bus_published_total <<<"$p1")")" \
      --argjson dropped "$(d "$(metric tickgate_bus_publish_dropped_total <<<"$p0")" "$(metric tickgate_bus_publish_dropped_total <<<"$p1")")" \
      --argjson errors "$(d "$(metric tickgate_bus_publish_errors_total <<<"$p0")" "$(metric tickgate_bus_publish_errors_total <<<"$p1")")" \
      --argjson stream "$(d "$m0" "$m1")" \
      --argjson received "$(d "$(metric tickgate_bus_received_total <<<"$e0")" "$(metric tickgate_bus_received_total <<<"$e1")")" \
      --argjson rejected "$(d "$(metric tickgate_bus_rejected_total <<<"$e0")" "$(metric tickgate_bus_rejected_total <<<"$e1")")" \
      --argjson bus_gaps "$(d "$(metric tickgate_bus_gaps_total <<<"$e0")" "$(metric tickgate_bus_gaps_total <<<"$e1")")" \
      --argjson lag_messages_end "$(metric tickgate_bus_lag_messages <<<"$e1")" \
      --argjson lag_messages_max "$lag_msgs_max" --argjson lag_s_max "$lag_s_max" \
      --argjson pub_cpu "$(d "${c0[0]}" "${c1[0]}")" --argjson nats_cpu "$(d "${c0[1]}" "${c1[1]}")" \
      --argjson edge_cpu "$(d "${c0[2]}" "${c1[2]}")" \
      --argjson hold "$HOLD" --argjson lag_max_ms "$LAG_MAX_MS" '
      def per_tick($cpu): if $published > 0 then $cpu * 1e6 / $published else null end;
      { rate: $rate, seconds: $seconds,
        generated_per_s: ($generated / $seconds), published_per_s: ($published / $seconds),
        stream_per_s: ($stream / $seconds), received_per_s: ($received / $seconds),
        not_published: ($dropped + $errors), dropped: $dropped, publish_errors: $errors,
        rejected: $rejected, bus_gaps: $bus_gaps,
        lag_messages_max: $lag_messages_max, lag_messages_end: $lag_messages_end, lag_ms_max: ($lag_s_max * 1000),
        publisher_cpu_s: $pub_cpu, nats_cpu_s: $nats_cpu, edge_cpu_s: $edge_cpu,
        publisher_us_per_tick: per_tick($pub_cpu), nats_us_per_tick: per_tick($nats_cpu),
        edge_us_per_tick: per_tick($edge_cpu) }
      | .why = ([
          (if .not_published > 0 then "\(.not_published) ticks not published" else empty end),
          (if .generated_per_s < $hold * $rate then "generated \(.generated_per_s | round)/s" else empty end),
          (if .published_per_s < $hold * $rate then "published \(.published_per_s | round)/s" else empty end),
          (if .received_per_s < $hold * .published_per_s then "the edge read \(.received_per_s | round)/s" else empty end),
          (if .lag_ms_max >= $lag_max_ms then "the edge lagged \((.lag_ms_max * 10 | round) / 10) ms" else empty end),
          (if .rejected > 0 or .bus_gaps > 0 then "the edge rejected \(.rejected) and announced \(.bus_gaps) gaps" else empty end)
        ])
      | .held = (.why | length == 0)')"
    echo "$step" >>"$ramp_file"
    jq -r '"[cluster-bus]   published \(.published_per_s | round)/s, edge read \(.received_per_s | round)/s, lag max \(.lag_messages_max) messages / \((.lag_ms_max * 10 | round) / 10) ms: \(if .held then "held" else "not held (\(.why | join("; ")))" end)"' <<<"$step"
    if [ "$STOP_ON_FAIL" = 1 ] && [ "$(jq -r .held <<<"$step")" = false ]; then
      say "ramp: stopping at the first rate that did not hold"
      break
    fi
  done
  jq -rs --arg hold "$HOLD" --arg lag "$LAG_MAX_MS" '
    def f0: if . == null then "-" else (. * 1 | round | tostring) end;
    def f1: if . == null then "-" else ((. * 10 | round) / 10 | tostring) end;
    "The rate one publisher and one edge sustain through nats-server, and the CPU per tick published (no clients)",
    "",
    "| rate/s | generated/s | published/s | stream msgs/s | edge read/s | not published | edge lag max (msgs / ms) | publisher µs CPU/tick | nats-server µs/tick | edge µs/tick | held? |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    (.[] | "| \(.rate) | \(.generated_per_s | f0) | \(.published_per_s | f0) | \(.stream_per_s | f0) | \(.received_per_s | f0) | \(.not_published | f0) | \(.lag_messages_max | f0) / \(.lag_ms_max | f1) | \(.publisher_us_per_tick | f1) | \(.nats_us_per_tick | f1) | \(.edge_us_per_tick | f1) | \(if .held then "yes" else "no: \(.why | join("; "))" end) |"),
    "",
    "Highest rate held: \([.[] | select(.held) | .rate] | max | if . == null then "none" else "\(.) ticks/s" end) (held: nothing unpublished, generated and published >= \($hold) x the rate, the edge read >= \($hold) x published, its lag under \($lag) ms)."
  ' "$ramp_file" | tee "$OUT/ramp.md"
fi

jq -n --argjson latency "$latency_json" --slurpfile ramp "$ramp_file" --rawfile params "$OUT/params.txt" \
  '{ params: $params, latency: $latency, ramp: $ramp }' >"$OUT/bus.json"
say "results in $OUT: latency.md, ramp.md, bus.json (every figure), params.txt, the loadtest's JSON and every process's log"
