#!/usr/bin/env bash
# TLS handshakes per second one tickgate reactor sustains: N clients connect at once over
# wss:// (full handshakes, no session resumption; ECDSA P-256 test certificate), then the same
# over ws://; the gateway's CPU per connection in each, and from it the rate one core sustains.
#
#   bash benches/handshake_rate.sh                  # N=5000
#   N=50 BUILD=0 bash benches/handshake_rate.sh     # a quick check that it works
#
# Why CPU per connection and not only the rate reached: the client's half of a handshake costs
# more than the server's (two ECDSA verifications against one signature), so one load-generator
# core may not saturate the gateway's. The gateway's CPU time over the storm divided by the
# connections upgraded is what a connection costs it; 1 s divided by that is the rate one busy
# reactor would sustain. Both storms count the TCP accept, the WebSocket upgrade and the
# subscribe too: the TLS handshake's own cost is the difference.
#
# What it does: builds (BUILD=0 skips), makes a test CA and certificate in $OUT/tls
# (scripts/make-test-cert.sh), starts tickgate with one reactor on SERVER_CORE and its admin
# port in plain HTTP, and for wss:// then ws://: reads the gateway's CPU (/proc/<pid>/stat),
# runs `tickgate-loadtest run -n N` (every client at once, as fast as they are accepted; the
# loadtest pinned to LOADGEN_CORE), reads the CPU again and the handshakes counted
# (tickgate_tls_handshakes_total). Results: $OUT/summary.md, $OUT/{tls,plain}.json and logs.
#
# Settings: N=5000 (at most 19000) SERVER_CORE=0 LOADGEN_CORE=1 BUILD=1
#           OUT=loadtest/results/<date>-handshake-rate
set -euo pipefail

# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_start handshake-rate

N="${N:-5000}"
SERVER_CORE="${SERVER_CORE:-0}"
LOADGEN_CORE="${LOADGEN_CORE:-1}"
BUILD="${BUILD:-1}"
OUT="${OUT:-loadtest/results/$(date +%Y%m%d-%H%M%S)-handshake-rate}"
require_whole N SERVER_CORE LOADGEN_CORE
[ "$N" -ge 1 ] && [ "$N" -le 19000 ] || die "N must be 1 to 19000 (one process holds ~19,900 sockets)"
require_out_path
for tool in taskset jq curl python3 openssl; do
  command -v "$tool" >/dev/null || die "$tool not found"
done

release_binaries

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
bash "$ROOT/scripts/make-test-cert.sh" "$OUT/tls" localhost >/dev/null
clock_ticks="$(getconf CLK_TCK)"
# CPU seconds (user + system) of a process so far.
cpu_s() { awk -v hz="$clock_ticks" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }

server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  true
}
trap cleanup EXIT

# Starts tickgate (wss:// when $1 is tls) on a free port; sets server, ADDR and ADMIN.
start() {
  local port admin config="$OUT/$1.toml"
  port="$(free_port)"
  admin="$(free_port)"
  printf '[server]\nlisten = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:%s"\nreactors = 1\n[sim]\nrate = 1.0\n' "$port" "$admin" >"$config"
  [ "$1" = tls ] && printf '[tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$OUT/tls/chain.pem" "$OUT/tls/key.pem" >>"$config"
  taskset -c "$SERVER_CORE" "$TICKGATE" --config "$config" --log-level warn >"$OUT/$1-tickgate.log" 2>&1 &
  server=$!
  ADDR="127.0.0.1:$port"
  ADMIN="127.0.0.1:$admin"
  for _ in $(seq 100); do
    curl -sf "http://$ADMIN/healthz" >/dev/null && return 0
    sleep 0.1
  done
  die "tickgate did not start (see $OUT/$1-tickgate.log)"
}

# A series summed over its labels (reactors).
metric() { curl -s "http://$ADMIN/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { n += $2 } END { print n + 0 }'; }

# One storm of N connections: "<connections> <seconds> <server cpu s> <loadtest cpu s> <handshakes>".
storm() {
  local wire=() before after gen hs
  [ "$1" = tls ] && wire=(--ca "$OUT/tls/ca.pem" --server-name localhost)
  before="$(cpu_s "$server")"
  TIMEFORMAT='%U %S'
  gen="$( { time taskset -c "$LOADGEN_CORE" "$LOADTEST" run --addr "$ADDR" "${wire[@]}" -n "$N" -k 1 -s 10 --rate 1 \
    --warmup 0 --duration 0.5 --drain 0 --quiet --name "$1" --out "$OUT" >"$OUT/$1.log" 2>&1; } 2>&1 | awk '{ print $1 + $2 }')" || true
  after="$(cpu_s "$server")"
  [ -s "$OUT/$1.json" ] || die "the $1 run wrote no result (see $OUT/$1.log)"
  hs="$(metric tickgate_tls_handshakes_total)"
  jq -r --arg cpu "$(awk -v a="$after" -v b="$before" 'BEGIN { print a - b }')" --arg gen "${gen:-0}" --arg hs "${hs:-0}" \
    '.steps[0].result | "\(.connected) \(if .connects_per_s > 0 then .connected / .connects_per_s else 0 end) \($cpu) \($gen) \($hs)"' "$OUT/$1.json"
}

rows=()
for wire in tls plain; do
  start "$wire"
  say "$wire: $N clients connecting at once to $ADDR"
  rows+=("$wire $(storm "$wire")")
  kill "$server" && wait "$server" 2>/dev/null || true
  server=""
done

{
  echo "| $N clients at once | connected | seconds | reached /s | gateway CPU per connection µs | one core sustains /s | TLS handshakes counted | loadtest CPU s |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for row in "${rows[@]}"; do
    read -r wire n secs cpu gen hs <<<"$row"
    awk -v w="$wire" -v n="$n" -v t="$secs" -v c="$cpu" -v g="$gen" -v h="$hs" 'BEGIN {
      per = n > 0 ? c * 1e6 / n : 0
      printf "| %s | %d | %.2f | %.0f | %.0f | %.0f | %d | %.2f |\n", (w == "tls" ? "wss:// (TLS 1.3, ECDSA P-256)" : "ws://"), n, t, (t > 0 ? n / t : 0), per, (per > 0 ? 1e6 / per : 0), h, g }'
  done
} | tee "$OUT/summary.md"
say "the TLS handshake's own cost is the difference of the two CPU-per-connection figures; results in $OUT"
