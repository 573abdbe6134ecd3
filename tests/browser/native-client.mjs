// A plain client to compare the dashboard with: subscribes to the symbols given, times each
// trade's and quote's receipt against its gw_ts exactly as the dashboard's feed worker does,
// and prints {"events":N,"p50_ms":..,"p99_ms":..} for the events of the last SECONDS seconds.
//
//   node --experimental-websocket tests/browser/native-client.mjs ws://127.0.0.1:8080/ws 10 AAPL MSFT ...
//
// (Node 22 and later have WebSocket without the flag.)

const [url, secondsText, ...symbols] = process.argv.slice(2);
const seconds = Number(secondsText);
if (!url || !(seconds > 0) || symbols.length === 0) {
  console.error('usage: native-client.mjs WS_URL SECONDS SYMBOL...');
  process.exit(2);
}

// gw_ts is nanoseconds since the epoch, past 2^53: read it from the text, in ms.
function gwTsMs(raw) {
  const at = raw.lastIndexOf('"gw_ts":');
  if (at < 0) return NaN;
  let end = at + 8;
  while (end < raw.length && raw.charCodeAt(end) >= 48 && raw.charCodeAt(end) <= 57) end += 1;
  const digits = raw.slice(at + 8, end);
  return Number(digits.slice(0, -6)) + Number(digits.slice(-6)) / 1e6;
}

const wallClockMs = () => performance.timeOrigin + performance.now();
const samples = [];   // [receipt (ms since the epoch), latency (ms)]
const ws = new WebSocket(url);
ws.onopen = () => ws.send(JSON.stringify({ op: 'subscribe', symbols, id: 1 }));
ws.onmessage = (event) => {
  const receivedAt = wallClockMs();
  const raw = event.data;
  if (!raw.startsWith('{"type":"trade"') && !raw.startsWith('{"type":"quote"')) return;
  const sent = gwTsMs(raw);
  if (Number.isFinite(sent)) samples.push([receivedAt, receivedAt - sent]);
};
ws.onerror = () => {
  console.error(`cannot connect to ${url}`);
  process.exit(1);
};
setTimeout(() => {
  const since = wallClockMs() - seconds * 1000;
  const window = samples.filter(([at]) => at >= since).map(([, latency]) => latency).sort((a, b) => a - b);
  const pick = (p) => window[Math.min(window.length - 1, Math.max(0, Math.ceil(p * window.length) - 1))];
  console.log(JSON.stringify({ events: window.length, p50_ms: pick(0.5), p99_ms: pick(0.99) }));
  ws.close();
  process.exit(0);
}, (seconds + 1) * 1000);
