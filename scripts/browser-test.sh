#!/usr/bin/env bash
# The dashboard's tests in a real browser: crates/server/assets/index.html in headless Chromium,
# driven by Playwright (playwright-core) under Node's test runner, against a running tickgate.
#
# Installs what the tests need where it is missing (Debian's chromium through apt-get, the npm
# packages of tests/browser through npm ci), builds the gateway (cargo build -p tickgate), runs
# `node --test` in tests/browser, and ends with the line "N passed, N failed". Exits non-zero on
# any failure. Screenshots and the TAP report land in test-artifacts/.
#
#   scripts/browser-test.sh
#   TICKGATE_UPDATE_SCREENSHOT=1 scripts/browser-test.sh   # also refresh docs/screenshot.png
#   TICKGATE_BIN=/path/to/tickgate scripts/browser-test.sh # test that binary, skip the build
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
tests=tests/browser
artifacts=$root/test-artifacts
mkdir -p "$artifacts"

say() { printf 'browser-test: %s\n' "$*"; }
die() { printf 'browser-test: %s\n' "$*" >&2; exit 1; }

sudo=
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "not root and no sudo: cannot install chromium"
  sudo=sudo
fi

# Node 20.11 or later (node --test with --test-concurrency and --test-timeout).
command -v node >/dev/null || die "node is missing (Node.js 20.11 or later is needed)"
command -v npm >/dev/null || die "npm is missing"
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 11) ? 0 : 1)' \
  || die "Node.js $(node --version) is too old: 20.11 or later is needed"

# Chromium from Debian.
if [ ! -x /usr/bin/chromium ]; then
  if ! apt-cache policy chromium 2>/dev/null | grep -Eq 'Candidate: [0-9]'; then
    say "apt-get update (no chromium candidate known yet)"
    $sudo apt-get update -qq
  fi
  say "installing chromium"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium is still missing"

# playwright-core, exactly as package-lock.json says; again only when the lock file changed.
lock_sum=$(sha256sum "$tests/package-lock.json" | cut -d' ' -f1)
stamp=$tests/node_modules/.installed-lock-sha256
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
  say "npm ci in $tests"
  (cd "$tests" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" >"$stamp"
fi

# The gateway.
if [ -n "${TICKGATE_BIN:-}" ]; then
  say "testing $TICKGATE_BIN (not building)"
else
  say "cargo build -p tickgate"
  cargo build -p tickgate
fi

# The tests: spec output here, TAP into the artifacts for the counts.
tap=$artifacts/browser-tests.tap
rm -f "$tap"
set +e
(cd "$tests" && node --test --test-concurrency=1 --test-timeout=180000 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$tap")
status=$?
set -e

count() { grep -E "^# $1 [0-9]+$" "$tap" 2>/dev/null | tail -n 1 | awk '{print $3}'; }
passed=$(count pass)
failed=$(count fail)
cancelled=$(count cancelled)
if [ -z "$passed" ] || [ -z "$failed" ]; then
  say "the test runner printed no summary (exit status $status)"
  echo "0 passed, 1 failed"
  exit 1
fi
failed=$((failed + ${cancelled:-0}))
say "screenshots and the TAP report: $artifacts"
echo "$passed passed, $failed failed"
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
  exit 1
fi
