# shellcheck shell=bash
# What the benchmark scripts share; sourced, never run. A script starts with
#
#   source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
#   bench_start <name>          # cd to the repository root; say and die print "[<name>] ..."
#
# and then has: is_uint, is_num, require_whole VAR..., require_out_path, require_tools TOOL...,
# release_binaries (builds unless BUILD=0; sets TICKGATE and LOADTEST, which the caller may
# have set already), free_port.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

bench_start() {
  BENCH_NAME="$1"
  cd "$ROOT" || exit 2
}

say() { printf '[%s] %s\n' "$BENCH_NAME" "$*"; }
die() {
  printf '[%s] error: %s\n' "$BENCH_NAME" "$*" >&2
  exit 2
}

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_num() { [[ "$1" =~ ^[0-9]+([.][0-9]+)?$ ]]; }

# Each named variable holds a whole number.
require_whole() {
  local v
  for v in "$@"; do
    is_uint "${!v}" || die "$v must be a whole number, got '${!v}'"
  done
}

require_out_path() {
  [[ "$OUT" =~ ^[A-Za-z0-9._/+-]+$ ]] || die "OUT must be a path without spaces or shell characters: '$OUT'"
}

require_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "$tool not found (nats-server: apt-get install nats-server)"
  done
}

release_binaries() {
  local target="${CARGO_TARGET_DIR:-$ROOT/target}"
  if [ "${BUILD:-1}" = 1 ]; then
    say "cargo build --release -p tickgate -p tickgate-loadtest"
    cargo build --release -p tickgate -p tickgate-loadtest
  fi
  TICKGATE="${TICKGATE:-$target/release/tickgate}"
  LOADTEST="${LOADTEST:-$target/release/tickgate-loadtest}"
  local exe
  for exe in "$TICKGATE" "$LOADTEST"; do
    [ -x "$exe" ] || die "$exe is missing (BUILD=0? TICKGATE, LOADTEST or CARGO_TARGET_DIR)"
  done
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
