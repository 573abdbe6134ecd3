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

# Debian packages the tests run for real, installed where missing: promtool (the prometheus
# package) checks a live /metrics, nats-server carries the cluster's tests, openssl makes the
# test certificates (TLS, wss:// conformance, TLS to NATS). A test fails without them rather than
# skipping.
install_if_missing() {
  local command="$1" package="$2" sudo=
  command -v "$command" >/dev/null && return 0
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "test.sh: not root and no sudo: cannot install $package" >&2; exit 1; }
    sudo=sudo
  fi
  echo "test.sh: installing $command (apt-get install $package)"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$package" >/dev/null \
    || { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$package" >/dev/null; }
}
install_if_missing promtool prometheus
install_if_missing nats-server nats-server
install_if_missing openssl openssl

cargo test --workspace --locked
cargo test --manifest-path fuzz/Cargo.toml --locked
scripts/conformance.sh
if [ -f scripts/browser-test.sh ]; then
  bash scripts/browser-test.sh
fi
