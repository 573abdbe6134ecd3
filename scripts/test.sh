#!/usr/bin/env bash
# Every test of tickgate, installing what the tests need where it is missing:
#   1. cargo test: unit tests, property tests, and integration tests over real sockets; then
#      the fuzz targets' seeds and saved reproducers, replayed on stable (fuzz/README.md);
#   2. RFC 6455 conformance (Autobahn cases via kosoku, installed into .local/venv);
#   3. the dashboard in headless Chromium (installs chromium and playwright-core if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --locked
cargo test --manifest-path fuzz/Cargo.toml --locked
scripts/conformance.sh
if [ -f scripts/browser-test.sh ]; then
  bash scripts/browser-test.sh
fi
