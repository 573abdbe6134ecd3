// Shared by the JavaScript peers (Node + ws, Bun): command line, symbol universe, wall clock in
// nanoseconds and the paced tick generator. The Rust peers implement the same thing (see
// tokio-tungstenite/src/main.rs and ceiling/src/main.rs); README.md describes the contract.

import { readFileSync } from "node:fs";

/** Ticks per batch at most, as tickgate's ingest thread (`MAX_BATCH`). */
export const MAX_BATCH = 4096;
/** Generator period: one batch per timer tick. */
export const PERIOD_MS = 1;

/**
 * Parses `--name value` / `--name=value` arguments against `defaults` (numbers stay numbers).
 * Unknown options and malformed values exit with status 2.
 */
export function parseArgs(argv, defaults, usage) {
  const out = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    if (arg === "-h" || arg === "--help") {
      process.stdout.write(usage + "\n");
      process.exit(0);
    }
    if (!arg.startsWith("--")) fail(`unexpected argument ${arg}`, usage);
    let value;
    const eq = arg.indexOf("=");
    if (eq >= 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    } else {
      value = argv[++i];
    }
    const key = arg.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in defaults)) fail(`unknown option ${arg}`, usage);
    if (value === undefined) fail(`${arg} needs a value`, usage);
    if (typeof defaults[key] === "number") {
      const n = Number(value);
      if (!Number.isFinite(n) || n < 0) fail(`${arg}: not a non-negative number: ${value}`, usage);
      out[key] = n;
    } else {
      out[key] = value;
    }
  }
  return out;
}

function fail(msg, usage) {
  process.stderr.write(`error: ${msg}\n${usage}\n`);
  process.exit(2);
}

/**
 * The universe: one symbol per line of `file` (blank lines and duplicates skipped), or
 * SYM0000..SYM0499 when no file is given (tickgate's default universe also has 500 symbols).
 */
export function loadSymbols(file) {
  if (!file) return Array.from({ length: 500 }, (_, i) => `SYM${String(i).padStart(4, "0")}`);
  const seen = new Set();
  for (const line of readFileSync(file, "utf8").split(/\r?\n/)) {
    const s = line.trim();
    if (s) seen.add(s);
  }
  if (seen.size === 0) {
    process.stderr.write(`error: no symbols in ${file}\n`);
    process.exit(2);
  }
  return [...seen];
}

/**
 * Wall clock in integer nanoseconds since the Unix epoch, as a BigInt: the monotonic
 * high-resolution clock offset to the epoch once at start. Date.now() only has millisecond
 * resolution, but right after it ticks over to a new millisecond the epoch is that millisecond
 * plus the (small, never negative) delay before the hrtime read; an offset taken there can only be
 * too low, so the highest of a few such samples is exact to a few microseconds (checked against
 * `date +%s%N`). Costs up to ~10 ms of spinning at start.
 */
export function makeEpochClock(samples = 10) {
  let offset = null;
  for (let k = 0; k < samples; k++) {
    const t0 = Date.now();
    let t = t0;
    while (t === t0) t = Date.now();
    const o = BigInt(t) * 1_000_000n - process.hrtime.bigint();
    if (offset === null || o > offset) offset = o;
  }
  return () => process.hrtime.bigint() + offset;
}

function cents(c) {
  const whole = Math.floor(c / 100);
  const frac = c - whole * 100;
  return frac < 10 ? `${whole}.0${frac}` : `${whole}.${frac}`;
}

/**
 * Paced generator: every PERIOD_MS it emits round-down(rate × elapsed) − emitted ticks (at most
 * MAX_BATCH per batch; a backlog carries over), so the rate is exact over time whatever the timer
 * resolution. Each tick picks a symbol uniformly at random, is a trade with probability 0.3 and a
 * quote otherwise, and is encoded once as tickgate's JSON text. `gw_ts` (and `ts`) is the wall
 * clock of the batch, stamped once per batch like tickgate's ingest thread, except for a tick
 * released more than one batch interval (PERIOD_MS) after it was due: it is stamped with its due
 * time plus that interval, the time it was meant to leave. So a server whose loop is too busy to
 * generate its ticks on time shows the delay in its latency, as tickgate's simulated market does;
 * without this a saturated server would hold back its own load and hide the wait (coordinated
 * omission).
 *
 * `emit(symbolIndex, symbol, json)` is called once per tick.
 */
export function startGenerator({ symbols, rate, emit }) {
  const now = makeEpochClock();
  const n = symbols.length;
  const seq = new Float64Array(n); // per symbol, trades and quotes share it; first event is 1
  const mid = new Int32Array(n); // mid price in cents
  for (let i = 0; i < n; i++) mid[i] = 1000 + Math.floor(Math.random() * 49000); // $10-$500
  const start = now();
  const allowanceNs = PERIOD_MS * 1e6;
  let emitted = 0;
  let ticks = 0;

  function batch() {
    const release = now();
    const elapsedNs = Number(release - start);
    let due = Math.floor((rate * elapsedNs) / 1e9) - emitted;
    if (due <= 0) return;
    if (due > MAX_BATCH) due = MAX_BATCH;
    const releaseTs = release.toString();
    for (let k = 0; k < due; k++) {
      // Tick number emitted + k + 1 is due at that many 1/rate since start.
      const lateNs = Math.floor(elapsedNs - ((emitted + k + 1) * 1e9) / rate - allowanceNs);
      const ts = lateNs > 0 ? (release - BigInt(lateNs)).toString() : releaseTs;
      const i = Math.floor(Math.random() * n);
      const s = ++seq[i];
      const r = Math.random();
      // Random walk of the mid by at most a cent per event, never below $1.
      let m = mid[i] + (r < 0.1 ? -1 : r > 0.9 ? 1 : 0);
      if (m < 100) m = 100;
      mid[i] = m;
      let json;
      if (r < 0.3) {
        const price = cents(m + (r < 0.15 ? -1 : 1));
        const size = 100 * (1 + Math.floor(Math.random() * 10));
        json = `{"type":"trade","symbol":"${symbols[i]}","seq":${s},"price":"${price}","size":"${size}","ts":${ts},"gw_ts":${ts}}`;
      } else {
        const bidSize = 100 * (1 + Math.floor(Math.random() * 20));
        const askSize = 100 * (1 + Math.floor(Math.random() * 20));
        json = `{"type":"quote","symbol":"${symbols[i]}","seq":${s},"bid":"${cents(m - 1)}","bid_size":"${bidSize}","ask":"${cents(m + 1)}","ask_size":"${askSize}","ts":${ts},"gw_ts":${ts}}`;
      }
      emit(i, symbols[i], json);
    }
    emitted += due;
    ticks += due;
  }

  const timer = setInterval(batch, PERIOD_MS);
  return {
    stop() {
      clearInterval(timer);
    },
    get ticks() {
      return ticks;
    },
  };
}

/** Parses a client command; returns null when it is not a JSON object. */
export function parseCommand(text) {
  try {
    const v = JSON.parse(text);
    return v !== null && typeof v === "object" && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

/**
 * Applies a subscribe/unsubscribe command to a connection's symbol set via `add(symbol)` /
 * `remove(symbol)` and returns the JSON replies to send (strings), in order. Known symbols are
 * (un)subscribed and listed in the `subscribed`/`unsubscribed` reply; unknown ones are listed in
 * an `unknown_symbol` error after it. Other ops get a `bad_request` error.
 */
export function handleCommand(text, known, add, remove) {
  const cmd = parseCommand(text);
  const idPart = (c) =>
    c && c.id !== undefined && (typeof c.id === "number" || typeof c.id === "string")
      ? `,"id":${JSON.stringify(c.id)}`
      : "";
  if (!cmd || (cmd.op !== "subscribe" && cmd.op !== "unsubscribe") || !Array.isArray(cmd.symbols)) {
    return [`{"type":"error"${idPart(cmd)},"code":"bad_request","message":"expected {\\"op\\":\\"subscribe\\"|\\"unsubscribe\\",\\"symbols\\":[...]}"}`];
  }
  const okSet = new Set();
  const unknown = [];
  for (const s of cmd.symbols) {
    if (typeof s === "string" && known.has(s)) okSet.add(s);
    else unknown.push(String(s));
  }
  const ok = [...okSet];
  for (const s of ok) (cmd.op === "subscribe" ? add : remove)(s);
  const kind = cmd.op === "subscribe" ? "subscribed" : "unsubscribed";
  const replies = [`{"type":"${kind}"${idPart(cmd)},"symbols":${JSON.stringify(ok)}}`];
  if (unknown.length > 0) {
    replies.push(
      `{"type":"error"${idPart(cmd)},"code":"unknown_symbol","message":"unknown symbols","symbols":${JSON.stringify(unknown)}}`,
    );
  }
  return replies;
}

/** Calls `fn` once on SIGINT or SIGTERM. */
export function onShutdown(fn) {
  let done = false;
  const handler = () => {
    if (done) return;
    done = true;
    fn();
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
}
