// Smoke check of a running peer: node benches/peers/smoke.js --port 9001
// (It also runs against tickgate, whose `snapshot` replies it accepts.)
//
// Opens --clients connections; each expects the welcome, subscribes to --symbols (id 1) and
// expects the `subscribed` reply, then for --duration ms checks every message: only trades and
// quotes of the subscribed symbols, exactly tickgate's fields, decimal strings, per-symbol `seq`
// increasing by exactly 1, and an integer `gw_ts` within --max-skew-ms of this machine's wall
// clock. Then it unsubscribes the first symbol (id 2) and checks that no tick of it follows the
// `unsubscribed` reply for 300 ms. With --edge 1 (the default) one more client checks the
// protocol corners: unknown symbols, a bad op, a fragmented command, ping/pong and the close
// handshake. Exits 0 when every check passed, 1 otherwise.

import WebSocket from "ws";
import { makeEpochClock, parseArgs } from "./common/ticks.js";

const USAGE = `usage: node smoke.js [--host 127.0.0.1] [--port 9001] [--path /ws] [--symbols AAPL,MSFT]
                     [--clients 2] [--duration 2000] [--min-ticks 10] [--max-skew-ms 50] [--edge 1]`;
const opts = parseArgs(
  process.argv.slice(2),
  {
    host: "127.0.0.1",
    port: 9001,
    path: "/ws",
    symbols: "AAPL,MSFT",
    clients: 2,
    duration: 2000,
    minTicks: 10,
    maxSkewMs: 50,
    edge: 1,
  },
  USAGE,
);
const SYMBOLS = opts.symbols.split(",").filter(Boolean);
const now = makeEpochClock();
const maxSkewNs = BigInt(Math.round(opts.maxSkewMs * 1e6));
const FIELDS = {
  trade: ["type", "symbol", "seq", "price", "size", "ts", "gw_ts"],
  quote: ["type", "symbol", "seq", "bid", "bid_size", "ask", "ask_size", "ts", "gw_ts"],
};
const DECIMAL = /^\d+(\.\d+)?$/;
const GW_TS = /"gw_ts":(\d+)[,}]/;

function runClient(n) {
  return new Promise((resolve) => {
    const url = `ws://${opts.host}:${opts.port}${opts.path}`;
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const errors = [];
    const lastSeq = new Map();
    const counts = { trade: 0, quote: 0 };
    const perSymbol = new Map(SYMBOLS.map((s) => [s, 0]));
    let state = "welcome"; // welcome -> subscribing -> live -> unsubscribing -> after
    let server = "?";
    let maxSkew = 0n;
    let minSkew = null;
    let afterUnsub = 0;
    let subscribedAt = 0;
    const fail = (msg) => {
      if (errors.length < 10) errors.push(msg);
    };
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(guard);
      ws.terminate();
      const total = counts.trade + counts.quote;
      if (state !== "after") fail(`stopped in state ${state}`);
      if (total < opts.minTicks) fail(`only ${total} ticks (want >= ${opts.minTicks})`);
      resolve({ n, server, errors, counts, perSymbol, maxSkew, minSkew, afterUnsub, total });
    };
    const guard = setTimeout(() => {
      fail("timed out");
      finish();
    }, opts.duration + 5000);

    ws.on("error", (err) => {
      fail(`socket error: ${err.message}`);
      finish();
    });
    ws.on("close", () => {
      if (state !== "after" && !finished) {
        fail("server closed the connection");
        finish();
      }
    });
    ws.on("message", (data, isBinary) => {
      if (isBinary) return fail("binary frame from server");
      const text = data.toString();
      let msg;
      try {
        msg = JSON.parse(text);
      } catch {
        return fail(`not JSON: ${text.slice(0, 80)}`);
      }
      if (state === "welcome") {
        if (msg.type !== "welcome" || typeof msg.server !== "string") return fail(`expected welcome, got ${text}`);
        server = msg.server;
        state = "subscribing";
        ws.send(JSON.stringify({ op: "subscribe", symbols: SYMBOLS, id: 1 }));
        return;
      }
      if (msg.type === "subscribed") {
        if (state !== "subscribing" || msg.id !== 1) return fail(`unexpected ${text}`);
        const got = [...(msg.symbols || [])].sort().join(",");
        if (got !== [...SYMBOLS].sort().join(",")) fail(`subscribed to ${got}, asked ${SYMBOLS}`);
        state = "live";
        subscribedAt = Date.now();
        setTimeout(() => {
          state = "unsubscribing";
          ws.send(JSON.stringify({ op: "unsubscribe", symbols: [SYMBOLS[0]], id: 2 }));
        }, opts.duration);
        return;
      }
      if (msg.type === "unsubscribed") {
        if (state !== "unsubscribing" || msg.id !== 2) return fail(`unexpected ${text}`);
        state = "after";
        setTimeout(finish, 300);
        return;
      }
      if (msg.type === "snapshot" && state !== "subscribing" && perSymbol.has(msg.symbol)) {
        // tickgate sends the last values after subscribing; live events continue from seq + 1.
        lastSeq.set(msg.symbol, msg.seq);
        return;
      }
      if (msg.type !== "trade" && msg.type !== "quote") return fail(`unexpected message ${text.slice(0, 120)}`);
      if (state === "subscribing") return fail(`tick before the subscribed reply: ${text}`);
      // Shape.
      const keys = Object.keys(msg);
      if (keys.join(",") !== FIELDS[msg.type].join(",")) fail(`fields ${keys} in ${text}`);
      for (const k of FIELDS[msg.type].slice(3, -2)) {
        if (typeof msg[k] !== "string" || !DECIMAL.test(msg[k])) fail(`${k} not a decimal string: ${text}`);
      }
      if (!Number.isInteger(msg.seq) || msg.seq < 1) fail(`bad seq: ${text}`);
      const m = GW_TS.exec(text);
      if (!m) return fail(`gw_ts not an integer: ${text}`);
      if (!/"ts":\d+[,}]/.test(text)) fail(`ts not an integer: ${text}`);
      const skew = now() - BigInt(m[1]);
      const abs = skew < 0n ? -skew : skew;
      if (abs > maxSkewNs) fail(`gw_ts ${m[1]} is ${Number(skew) / 1e6} ms from now`);
      if (abs > maxSkew) maxSkew = abs;
      if (minSkew === null || skew < minSkew) minSkew = skew;
      // Symbols and sequence.
      if (!perSymbol.has(msg.symbol)) return fail(`tick of unsubscribed symbol ${msg.symbol}`);
      if (state === "after" && msg.symbol === SYMBOLS[0]) {
        afterUnsub++;
        return fail(`tick of ${msg.symbol} after the unsubscribed reply`);
      }
      const prev = lastSeq.get(msg.symbol);
      if (prev !== undefined && msg.seq !== prev + 1) fail(`${msg.symbol} seq ${prev} -> ${msg.seq}`);
      lastSeq.set(msg.symbol, msg.seq);
      perSymbol.set(msg.symbol, perSymbol.get(msg.symbol) + 1);
      counts[msg.type]++;
    });
  });
}

/** Protocol corners, on one more connection; returns the list of failures. */
async function runEdge() {
  const errors = [];
  const ws = new WebSocket(`ws://${opts.host}:${opts.port}${opts.path}`, { perMessageDeflate: false });
  const replies = [];
  let wake = null;
  ws.on("message", (data) => {
    const msg = JSON.parse(data.toString());
    if (msg.type === "trade" || msg.type === "quote" || msg.type === "snapshot") return;
    replies.push(msg);
    if (wake) wake();
  });
  const next = () =>
    new Promise((resolve, reject) => {
      if (replies.length) return resolve(replies.shift());
      const t = setTimeout(() => reject(new Error("no reply within 2 s")), 2000);
      wake = () => {
        wake = null;
        clearTimeout(t);
        resolve(replies.shift());
      };
    });
  const expect = async (what, check) => {
    const msg = await next();
    if (!check(msg)) errors.push(`${what}: got ${JSON.stringify(msg)}`);
  };
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  try {
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    await expect("welcome", (m) => m.type === "welcome");
    ws.send(JSON.stringify({ op: "subscribe", symbols: [SYMBOLS[0], "NO-SUCH-SYMBOL", SYMBOLS[0]], id: 'a"b' }));
    await expect("subscribe with an unknown symbol", (m) => m.type === "subscribed" && m.id === 'a"b' && same(m.symbols, [SYMBOLS[0]]));
    await expect("unknown_symbol error", (m) => m.type === "error" && m.code === "unknown_symbol" && same(m.symbols, ["NO-SUCH-SYMBOL"]));
    ws.send('{"op":"hello","id":3}');
    await expect("bad op", (m) => m.type === "error" && m.code === "bad_request" && m.id === 3);
    ws.send("not json");
    await expect("not JSON", (m) => m.type === "error" && m.code === "bad_request");
    ws.send('{"op":"unsubscribe",', { fin: false });
    ws.send(`"symbols":["${SYMBOLS[0]}"],"id":7}`, { fin: true });
    await expect("fragmented unsubscribe", (m) => m.type === "unsubscribed" && m.id === 7 && same(m.symbols, [SYMBOLS[0]]));
    await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("no pong within 2 s")), 2000);
      ws.once("pong", (d) => {
        clearTimeout(t);
        if (d.toString() !== "smoke") errors.push(`pong payload ${d}`);
        resolve();
      });
      ws.ping("smoke");
    });
    const code = await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("no close within 2 s")), 2000);
      ws.once("close", (c) => {
        clearTimeout(t);
        resolve(c);
      });
      ws.close(1000);
    });
    if (code !== 1000) errors.push(`close handshake: closed with ${code}, want 1000`);
  } catch (err) {
    errors.push(err.message);
  }
  ws.terminate();
  return errors;
}

const results = await Promise.all(Array.from({ length: opts.clients }, (_, i) => runClient(i)));
let ok = true;
for (const r of results) {
  const per = [...r.perSymbol].map(([s, c]) => `${s}=${c}`).join(" ");
  const status = r.errors.length === 0 ? "ok" : "FAIL";
  if (r.errors.length) ok = false;
  console.log(
    `client ${r.n} server=${r.server} ${status}: ticks=${r.total} (trades=${r.counts.trade} quotes=${r.counts.quote}; ${per})` +
      ` gw_ts skew max=${(Number(r.maxSkew) / 1e6).toFixed(3)}ms` +
      ` min=${r.minSkew === null ? "-" : (Number(r.minSkew) / 1e6).toFixed(3)}ms`,
  );
  for (const e of r.errors) console.log(`  error: ${e}`);
}
if (opts.edge) {
  const errors = await runEdge();
  if (errors.length) ok = false;
  console.log(`edge cases (unknown symbol, bad op, fragmented command, ping, close): ${errors.length ? "FAIL" : "ok"}`);
  for (const e of errors) console.log(`  error: ${e}`);
}
console.log(ok ? "smoke: ok" : "smoke: FAILED");
process.exit(ok ? 0 : 1);
