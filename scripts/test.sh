#!/usr/bin/env bash
# Every test of tickgate, installing what the tests need where it is missing:
#   1. cargo test: unit tests, property tests, and integration tests over real sockets (installs
#      promtool, from Debian's prometheus package, if missing); then
#      the fuzz targets' seeds and saved reproducers, replayed on stable (fuzz/README.md);
#   2. RFC 6455 conformance (Autobahn cases via kosoku, installed into .local/venv);
#   3. the dashboard in headless Chromium (installs chromium and playwright-core if missing).
# The cluster's tests run a real NATS server: Debian's nats-server is installed if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# promtool (Debian's prometheus package) checks a live /metrics in the tests; the test fails
# without it rather than skipping.
if ! command -v promtool >/dev/null; then
  sudo=
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
  echo "test.sh: installing promtool (apt-get install prometheus)"
  $sudo apt-get install -y --no-install-recommends prometheus >/dev/null \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends prometheus >/dev/null; }
fi
if ! command -v nats-server >/dev/null; then
  sudo=
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "test: not root and no sudo: cannot install nats-server" >&2; exit 1; }
    sudo=sudo
  fi
  echo "test: installing nats-server (apt-get)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nats-server >/dev/null
fi

cargo test --workspace --locked
cargo test --manifest-path fuzz/Cargo.toml --locked
scripts/conformance.sh
if [ -f scripts/browser-test.sh ]; then
  bash scripts/browser-test.sh
fi
