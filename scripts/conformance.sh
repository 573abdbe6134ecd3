#!/usr/bin/env bash
# RFC 6455 and RFC 7692 conformance: runs the Autobahn TestSuite's cases 1.* to 10.*, and the
# permessage-deflate cases 12.* and 13.* (kosoku, from PyPI)
# against tickgate's /echo route, which goes through the gateway's real connection path: once
# over ws://, once over wss:// (a gateway with [tls] on a certificate from
# scripts/make-test-cert.sh). kosoku 0.1.0 is built without TLS, so the wss:// run goes through
# a small TLS client tunnel (Python's ssl, trusting the test CA): kosoku speaks plain WebSocket
# to the tunnel, the tunnel speaks TLS to tickgate, so every frame crosses tickgate's TLS layer.
# Cases 12.* and 13.* send compressed messages of up to 128 KiB, with every offer a client can
# make (windows of 8 to 15 bits, with and without context takeover, several offers at once),
# and check the compressed echoes: tickgate's permessage-deflate (server.permessage_deflate,
# on by default) on the same /echo route. /echo compresses every message of a compressing
# connection (kosoku 0.1.0 hands an uncompressed message of such a connection to the case as a
# string it cannot hash, although RFC 7692 allows it; /ws sends short messages uncompressed).
# Every case must be OK (INFORMATIONAL cases only inform); anything else fails.
# Reports go to .local/conformance (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

KOSOKU_VERSION=0.1.0
venv=.local/venv
if [ ! -x "$venv/bin/kosoku" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "kosoku==$KOSOKU_VERSION"
fi

cargo build --quiet -p tickgate
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "conformance: nothing listens on port $1" >&2
  return 1
}
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
rm -rf .local/conformance

# /echo has the limits of /ws; the cases need larger ones, set here: messages and frames of up
# to 16 MiB (9.1.6, 9.2.6) echoed whole (the outbound limits), 1,000 messages in a row (9.7, 9.8)
# and 4 MiB in 64-byte fragments, 65,536 frames (9.3.1, 9.4.1).
# start_gateway PORT [TLS-TOML]: a gateway on PORT with the conformance limits.
start_gateway() {
  local config="$work/tickgate-$1.toml"
  cat >"$config" <<TOML
[server]
listen = "127.0.0.1:$1"
reactors = 1
echo_route = true
[limits]
max_message_size = 16777216
read_buffer_size = 65536
outbound_soft_limit = 33554432
outbound_hard_limit = 67108864
messages_per_second = 100000.0
message_burst = 100000
max_frames_per_second = 1000000
[log]
level = "warn"
${2:-}
TOML
  target/debug/tickgate --config "$config" >/dev/null &
  pids+=($!)
  wait_port "$1"
}

# run_suite NAME PORT: kosoku against 127.0.0.1:PORT/echo; the verdicts go to .local/conformance/NAME.
failures=0
run_suite() {
  local report=".local/conformance/$1"
  "$venv/bin/kosoku" "127.0.0.1:$2/echo" -p 2 -o "$report" >/dev/null
  python3 - "$report" "$1" <<'PY' || failures=$((failures + 1))
import glob, json, sys
passed, failed = 0, []
for path in sorted(glob.glob(sys.argv[1] + "/*case_*.json")):
    case = json.load(open(path))
    verdicts = {case.get("behavior"), case.get("behaviorClose")}
    if verdicts <= {"OK", "INFORMATIONAL"}:
        passed += 1
    else:
        failed.append(f"{path.split('case_')[-1][:-5].replace('_', '.')}: {sorted(map(str, verdicts))}")
for line in failed:
    print(f"conformance ({sys.argv[2]}) case failed:", line)
print(f"conformance ({sys.argv[2]}): {passed} passed, {len(failed)} failed")
sys.exit(1 if failed or passed == 0 else 0)
PY
}

plain=$(free_port)
start_gateway "$plain"
run_suite ws "$plain"

# wss://: a test certificate, a TLS gateway, and the tunnel kosoku reaches it through.
scripts/make-test-cert.sh "$work/tls" localhost >/dev/null
tls=$(free_port)
tunnel=$(free_port)
start_gateway "$tls" "[tls]
cert_file = \"$work/tls/chain.pem\"
key_file = \"$work/tls/key.pem\""
python3 - "$tunnel" "$tls" "$work/tls/ca.pem" 2>"$work/tunnel.log" <<'PY' &
import asyncio, ssl, sys
listen, upstream, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
context = ssl.create_default_context(cafile=ca)
async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        # Pass a half-close on where the transport can (plain TCP); TLS closes whole.
        if writer.can_write_eof():
            writer.write_eof()
        else:
            writer.close()
async def serve(client_reader, client_writer):
    try:
        tls_reader, tls_writer = await asyncio.open_connection(
            "127.0.0.1", upstream, ssl=context, server_hostname="localhost")
    except (ConnectionError, ssl.SSLError) as e:
        print("tunnel: TLS to tickgate failed:", e, file=sys.stderr)
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, tls_writer), pipe(tls_reader, client_writer))
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()
asyncio.run(main())
PY
pids+=($!)
wait_port "$tunnel"
run_suite wss "$tunnel" || true
if [ "$failures" -gt 0 ] && [ -s "$work/tunnel.log" ]; then
  echo "TLS tunnel log:" >&2
  cat "$work/tunnel.log" >&2
fi
exit $((failures > 0))
