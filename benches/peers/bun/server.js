// Peer: Bun's built-in WebSocket server (uWebSockets underneath) with its pub/sub, the way Bun's
// documentation does fan-out: each connection `ws.subscribe(symbol)`s to one topic per symbol and
// the generator calls `server.publish(symbol, json)` once per tick. uWebSockets keeps the topic
// tree, frames the message once and queues it for every subscriber, corking each socket's writes.
//
// Settings that matter for the comparison:
// - perMessageDeflate: false (as every peer and tickgate: ticks go out uncompressed), unless
//   --compress 1: then Bun's shared compressor (uWebSockets' SHARED_COMPRESSOR, no context
//   takeover: each published message compressed once for every subscriber that agreed to
//   permessage-deflate) and shared decompressor, and publish/send ask for compression, as
//   tickgate does for a client that offers it.
// - backpressureLimit: 16 MiB per connection (Bun's default, set explicitly; --max-buffered) with
//   closeOnBackpressureLimit: false: past the limit uWebSockets drops the message for that socket
//   silently and keeps the connection, the closest to the other peers' policies.
// - idleTimeout 120 s and sendPings true (Bun's defaults): an idle client is pinged, and closed
//   only if it does not answer.
//
// - --tls-cert / --tls-key (PEM, both): serves wss:// through Bun.serve's `tls` option
//   (BoringSSL), for the comparison with tickgate's own TLS (benches/matrix.sh TLS=1).
//
// Run: node_modules/.bin/bun benches/peers/bun/server.js --port 9001 --symbols-file symbols.txt

import { handleCommand, loadSymbols, onShutdown, parseArgs, startGenerator } from "../common/ticks.js";

const USAGE = `usage: bun server.js [--host 127.0.0.1] [--port 9001] [--symbols-file FILE] [--rate 5000]
                     [--max-buffered 16777216] [--compress 0|1] [--tls-cert CHAIN.pem --tls-key KEY.pem]`;
const opts = parseArgs(
  process.argv.slice(2),
  {
    host: "127.0.0.1",
    port: 9001,
    symbolsFile: "",
    rate: 5000,
    maxBuffered: 16 * 1024 * 1024,
    compress: 0,
    tlsCert: "",
    tlsKey: "",
  },
  USAGE,
);
if (Boolean(opts.tlsCert) !== Boolean(opts.tlsKey)) {
  process.stderr.write(`error: --tls-cert and --tls-key go together\n${USAGE}\n`);
  process.exit(2);
}

if (typeof Bun === "undefined") {
  process.stderr.write("bun/server.js runs under Bun: node_modules/.bin/bun bun/server.js\n");
  process.exit(2);
}

const NAME = "bun";
const COMPRESS = opts.compress === 1;
const symbols = loadSymbols(opts.symbolsFile);
const known = new Set(symbols);
const WELCOME = `{"type":"welcome","server":"${NAME}"}`;

const server = Bun.serve({
  hostname: opts.host,
  port: opts.port,
  // wss:// when given a certificate chain and its key.
  tls: opts.tlsCert ? { cert: Bun.file(opts.tlsCert), key: Bun.file(opts.tlsKey) } : undefined,
  fetch(req, server) {
    // Any path upgrades (the benchmark uses /ws).
    if (server.upgrade(req)) return undefined;
    return new Response("WebSocket only\n", { status: 426 });
  },
  websocket: {
    perMessageDeflate: COMPRESS ? { compress: "shared", decompress: "shared" } : false,
    backpressureLimit: opts.maxBuffered,
    closeOnBackpressureLimit: false,
    idleTimeout: 120,
    sendPings: true,
    open(ws) {
      ws.send(WELCOME, COMPRESS);
    },
    message(ws, message) {
      if (typeof message !== "string") return;
      const replies = handleCommand(
        message,
        known,
        (s) => ws.subscribe(s),
        (s) => ws.unsubscribe(s),
      );
      for (const r of replies) ws.send(r, COMPRESS);
    },
    // Topics are left by uWebSockets itself when a socket closes.
    close() {},
  },
});

const gen = startGenerator({
  symbols,
  rate: opts.rate,
  emit(_i, symbol, json) {
    // A string publishes a text frame (a Buffer would be binary).
    server.publish(symbol, json, COMPRESS);
  },
});
process.stdout.write(`ready ${NAME} port=${server.port}${opts.tlsCert ? " tls" : ""}\n`);

onShutdown(() => {
  gen.stop();
  process.stderr.write(`${NAME}: ticks=${gen.ticks}\n`);
  server.stop(true);
  process.exit(0);
});
