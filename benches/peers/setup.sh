#!/usr/bin/env bash
# Installs and builds the benchmark peers (see README.md). Idempotent: run it again at any time.
#
#   bash benches/peers/setup.sh            # npm deps (ws, bun) + both Rust peers
#   SKIP_NODE=1 bash benches/peers/setup.sh   # Rust peers only
#   SKIP_RUST=1 bash benches/peers/setup.sh   # npm deps only
#   FORCE=1 ...                             # reinstall the npm deps even if they look fine
#
# Needs: Rust (cargo), Node.js + npm, and access to crates.io and the npm registry.
# Everything lands inside benches/peers: node_modules/ and .deps/ (both git-ignored).
# CARGO_TARGET_DIR defaults to benches/peers/.deps/target (set it to share a build cache).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/.deps/target}"

say() { printf '[peers setup] %s\n' "$*"; }

# Pinned versions, read from package.json.
pinned() { node -e "process.stdout.write(require('./package.json').dependencies['$1'])"; }

node_deps_ok() {
  [ -d node_modules ] || return 1
  local bun_v ws_v
  bun_v="$(node_modules/.bin/bun --version 2>/dev/null)" || return 1
  [ "$bun_v" = "$(pinned bun)" ] || return 1
  ws_v="$(node -e "process.stdout.write(require('./node_modules/ws/package.json').version)" 2>/dev/null)" || return 1
  [ "$ws_v" = "$(pinned ws)" ] || return 1
}

if [ "${SKIP_NODE:-0}" != 1 ]; then
  command -v node >/dev/null || { say "node not found: install Node.js 18+ and npm"; exit 1; }
  command -v npm >/dev/null || { say "npm not found"; exit 1; }
  if [ "${FORCE:-0}" != 1 ] && node_deps_ok; then
    say "npm deps already installed (bun $(pinned bun), ws $(pinned ws))"
  else
    if [ -f package-lock.json ]; then
      say "npm ci"
      npm ci --no-audit --no-fund
    else
      say "npm install (no package-lock.json yet)"
      npm install --no-audit --no-fund
    fi
    # The bun package moves its platform binary into place in a postinstall script; an npm that
    # does not run install scripts leaves a placeholder. Run the package's own script then.
    if ! node_modules/.bin/bun --version >/dev/null 2>&1; then
      say "running bun's postinstall (cd node_modules/bun && node install.js)"
      (cd node_modules/bun && node install.js)
    fi
    node_deps_ok || { say "npm deps not usable: node_modules/.bin/bun --version fails or versions differ"; exit 1; }
  fi
fi

if [ "${SKIP_RUST:-0}" != 1 ]; then
  command -v cargo >/dev/null || { say "cargo not found: install Rust (rustup)"; exit 1; }
  for crate in tokio-tungstenite ceiling; do
    say "cargo build --release --locked ($crate, target dir $CARGO_TARGET_DIR)"
    cargo build --release --locked --manifest-path "$crate/Cargo.toml"
  done
fi

say "done. Run (from the repository root, with FILE holding one symbol per line):"
if [ "${SKIP_NODE:-0}" != 1 ]; then
  say "  bun:               benches/peers/node_modules/.bin/bun benches/peers/bun/server.js --port 9001 --symbols-file FILE --rate 5000"
  say "  node-ws:           node benches/peers/node-ws/server.js --port 9001 --symbols-file FILE --rate 5000"
fi
if [ "${SKIP_RUST:-0}" != 1 ]; then
  say "  tokio-tungstenite: $CARGO_TARGET_DIR/release/peer-tokio --port 9001 --symbols-file FILE --rate 5000"
  say "  ceiling:           $CARGO_TARGET_DIR/release/peer-ceiling --port 9001 --symbols-file FILE --rate 5000"
fi
say "  check a running peer: node benches/peers/smoke.js --port 9001 --symbols A,B (two symbols of FILE)"
