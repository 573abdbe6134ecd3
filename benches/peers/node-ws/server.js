// Peer: Node.js with the `ws` package, the most common WebSocket server a user would pick.
//
// Fan-out as the ws documentation shows it: each tick is serialized once (into a Buffer, so ws
// does not re-encode the string for every client) and `socket.send(buffer, { binary: false })`
// is called for every subscriber, found through a Map symbol -> Set of sockets. ws writes each
// message to the socket straight away (header and payload corked together, one write).
//
// Slow consumers: ws buffers without bound. A tick is skipped for a socket whose `bufferedAmount`
// is above --max-buffered bytes (default 16 MiB, Bun's default backpressure limit; 0 = no limit),
// so one stuck client cannot take the process down; skipped deliveries are counted.
//
// Run: node benches/peers/node-ws/server.js --port 9001 --symbols-file symbols.txt --rate 5000

import { WebSocketServer } from "ws";
import { handleCommand, loadSymbols, onShutdown, parseArgs, startGenerator } from "../common/ticks.js";

const USAGE = `usage: node server.js [--host 127.0.0.1] [--port 9001] [--symbols-file FILE] [--rate 5000]
                      [--max-buffered 16777216]`;
const opts = parseArgs(
  process.argv.slice(2),
  { host: "127.0.0.1", port: 9001, symbolsFile: "", rate: 5000, maxBuffered: 16 * 1024 * 1024 },
  USAGE,
);

const NAME = "node-ws";
const symbols = loadSymbols(opts.symbolsFile);
const known = new Set(symbols);
/** symbol -> Set of subscribed sockets */
const subscribers = new Map(symbols.map((s) => [s, new Set()]));
const TEXT = { binary: false };
const WELCOME = `{"type":"welcome","server":"${NAME}"}`;
let deliveries = 0;
let skipped = 0;

const wss = new WebSocketServer({
  host: opts.host,
  port: opts.port,
  perMessageDeflate: false,
  clientTracking: true,
});

wss.on("connection", (socket) => {
  const mine = new Set();
  socket.send(WELCOME);
  socket.on("message", (data, isBinary) => {
    if (isBinary) return;
    const replies = handleCommand(
      data.toString(),
      known,
      (s) => {
        mine.add(s);
        subscribers.get(s).add(socket);
      },
      (s) => {
        mine.delete(s);
        subscribers.get(s).delete(socket);
      },
    );
    for (const r of replies) socket.send(r);
  });
  socket.on("close", () => {
    for (const s of mine) subscribers.get(s).delete(socket);
    mine.clear();
  });
  socket.on("error", () => {});
});

wss.on("error", (err) => {
  process.stderr.write(`${NAME}: ${err.message}\n`);
  process.exit(1);
});

wss.on("listening", () => {
  const limit = opts.maxBuffered;
  const gen = startGenerator({
    symbols,
    rate: opts.rate,
    emit(_i, symbol, json) {
      const subs = subscribers.get(symbol);
      if (subs.size === 0) return;
      const buf = Buffer.from(json); // encoded once, shared by every send
      for (const socket of subs) {
        if (limit > 0 && socket.bufferedAmount > limit) {
          skipped++;
          continue;
        }
        socket.send(buf, TEXT);
        deliveries++;
      }
    },
  });
  process.stdout.write(`ready ${NAME} port=${wss.address().port}\n`);

  onShutdown(() => {
    gen.stop();
    process.stderr.write(
      `${NAME}: ticks=${gen.ticks} deliveries=${deliveries} skipped_over_limit=${skipped}\n`,
    );
    for (const socket of wss.clients) socket.terminate();
    wss.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  });
});
