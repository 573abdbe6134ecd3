// The page's delivery controls against the real gateway: the rate control (max_rate in the
// subscribe) holds a busy row to its rate with every seq accounted for, bytes per second follow
// what arrives, and the compression shown is what the socket negotiated (checked against the
// real gateway, whatever it offers, and against a scripted one that accepts permessage-deflate).

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { freePort, launchBrowser, openPage, sleep, startGateway, waitInPage } from './helpers.mjs';
import { startScriptedGateway } from './scripted-gateway.mjs';

const DEFAULTS = ['AAPL', 'MSFT', 'NVDA', 'AMZN', 'GOOGL', 'META', 'TSLA', 'BTC-USD', 'ETH-USD', 'SOL-USD'];
const BUSY = 'AAPL';

let gateway;
let browser;
let page;

before(async () => {
  gateway = await startGateway(await freePort());
  browser = await launchBrowser();
  page = await openPage(browser.context);
});

after(async () => {
  if (browser) await browser.close();
  if (gateway) await gateway.stop();
});

function until(what, fn, arg, p = page) {
  return waitInPage(p, what, fn, arg, { timeout: 20000, gateway });
}

/** The quotes and trades the page has applied for a symbol so far. */
function counts(symbol) {
  return page.$eval(`[data-testid="row-${symbol}"]`, (tr) => ({
    quotes: Number(tr.dataset.quotes), trades: Number(tr.dataset.trades), at: performance.now(),
  }));
}

/** What a row received over `seconds`: quotes and trades, and the time it really took. */
async function received(symbol, seconds) {
  const a = await counts(symbol);
  await sleep(seconds * 1000);
  const b = await counts(symbol);
  return { quotes: b.quotes - a.quotes, trades: b.trades - a.trades, seconds: (b.at - a.at) / 1000 };
}

const bytesPerSec = () => page.getAttribute('[data-testid=bytes-per-sec]', 'data-bytes-per-sec').then(Number);
const rateInForce = (expected) => until(`the gateway states max_rate ${expected || 'none'}`, (expected) =>
  document.querySelector('[data-testid=rate-note]').dataset.maxRate === expected, expected);

test('a busy row throttled to 1 update a second gets at most that, and every seq is accounted for', async () => {
  await page.goto(gateway.url);
  await until('every default row live', (symbols) =>
    symbols.every((s) => document.querySelector(`[data-testid="row-${s}"]`)?.dataset.state === 'live'), DEFAULTS);
  assert.equal(await page.inputValue('[data-testid=max-rate]'), '0', 'unlimited by default');
  await sleep(2000); // a full second of bytes in the counter
  const free = await received(BUSY, 3);
  const freeBytes = await bytesPerSec();
  const freeRate = free.quotes / free.seconds;
  assert.ok(freeRate > 5, `${BUSY} gets ${freeRate.toFixed(1)} quotes/s uncapped: busy enough to show a cap of 1`);

  await page.selectOption('[data-testid=max-rate]', '1');
  await rateInForce('1');
  const conflatedBefore = Number((await page.textContent('[data-testid=conflated]')).replace(/,/g, ''));
  await sleep(1500); // what was on its way at the old rate has arrived
  const capped = await received(BUSY, 6);
  // At most one quote per 1 s slot, plus the one a trade may send ahead of itself (docs/PROTOCOL.md).
  const allowed = Math.ceil(capped.seconds) + 1 + capped.trades;
  assert.ok(capped.quotes <= allowed,
    `${capped.quotes} quotes in ${capped.seconds.toFixed(1)} s at max_rate 1, with ${capped.trades} trades (at most ${allowed})`);
  assert.ok(capped.quotes >= 1, 'quotes still arrive');
  // The quotes held back are accounted for on the wire (conflated), never as an unannounced jump.
  const conflated = Number((await page.textContent('[data-testid=conflated]')).replace(/,/g, ''));
  assert.ok(conflated > conflatedBefore, `conflated ${conflatedBefore} -> ${conflated}`);
  assert.equal(await page.textContent('[data-testid=gaps]'), '0', 'no gap and no unannounced seq jump');
  assert.equal(await page.getAttribute(`[data-testid="row-${BUSY}"]`, 'data-state'), 'live');
  // Fewer quotes, fewer bytes (trades, about half of the simulated market's events, all come).
  const cappedBytes = await bytesPerSec();
  assert.ok(cappedBytes > 0 && cappedBytes < 0.8 * freeBytes, `bytes/s ${freeBytes} uncapped, ${cappedBytes} at 1/s`);
});

test('the rate is kept across a reload, and unlimited lifts the cap', async () => {
  await page.selectOption('[data-testid=max-rate]', '4');
  await rateInForce('4');
  await page.reload();
  await until(`${BUSY} live after the reload`, (s) => document.querySelector(`[data-testid="row-${s}"]`)?.dataset.state === 'live', BUSY);
  assert.equal(await page.inputValue('[data-testid=max-rate]'), '4');
  await rateInForce('4');
  await sleep(1500);
  const capped = await received(BUSY, 4);
  assert.ok(capped.quotes <= 4 * Math.ceil(capped.seconds) + 1 + capped.trades, JSON.stringify(capped));

  await page.selectOption('[data-testid=max-rate]', '0');
  await rateInForce('');
  await sleep(1000);
  const free = await received(BUSY, 3);
  assert.ok(free.quotes / free.seconds > 4 * 1.5, `uncapped again: ${JSON.stringify(free)}`);
  assert.equal(await page.textContent('[data-testid=gaps]'), '0');
});

test('bytes per second received match the messages', async () => {
  const { msgs, bytes } = await page.evaluate(() => ({
    msgs: Number(document.querySelector('[data-testid=msgs-per-sec]').textContent.replace(/,/g, '')),
    bytes: Number(document.querySelector('[data-testid=bytes-per-sec]').dataset.bytesPerSec),
  }));
  assert.ok(msgs > 0, `msgs/s ${msgs}`);
  // A trade or quote is 150 to 250 bytes of JSON.
  const perMessage = bytes / msgs;
  assert.ok(perMessage > 80 && perMessage < 400, `${bytes} B/s for ${msgs} msg/s: ${perMessage.toFixed(0)} B each`);
  assert.match(await page.textContent('[data-testid=bytes-per-sec]'), /^\d+(\.\d)? (B|kB|MB)\/s$/);
});

/** What the gateway answers to the permessage-deflate offer Chromium makes. */
async function negotiated(port) {
  const socket = net.connect(port, '127.0.0.1');
  socket.write('GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' +
    'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n');
  let head = '';
  for await (const chunk of socket) {
    head += chunk.toString('latin1');
    if (head.includes('\r\n\r\n')) break;
  }
  socket.destroy();
  assert.match(head, /^HTTP\/1\.1 101/);
  const line = head.split('\r\n').find((l) => /^sec-websocket-extensions:/i.test(l));
  return line ? line.slice(line.indexOf(':') + 1).trim() : '';
}

test('the compression shown is what the socket negotiated with the gateway', async () => {
  const answer = await negotiated(gateway.port);
  const expected = /permessage-deflate/i.test(answer) ? 'permessage-deflate' : 'none';
  assert.equal((await page.textContent('[data-testid=compression]')).trim(), expected, `the gateway answered "${answer}"`);
  assert.deepEqual(page.errors, [], 'no uncaught errors in the page');
});

test('a connection that negotiated permessage-deflate says so', async () => {
  const scripted = await startScriptedGateway({
    universe: ['AAPL'], deflate: true,
    snapshot: (s) => `{"type":"snapshot","symbol":"${s}","seq":1,"trade":null,"quote":null}`,
  });
  const tab = await browser.context.newPage();
  try {
    await tab.goto(scripted.url);
    await waitInPage(tab, 'compression shown', () =>
      document.querySelector('[data-testid=compression]').textContent === 'permessage-deflate', null, { timeout: 20000 });
    assert.match(await tab.getAttribute('[data-testid=compression]', 'data-extensions'), /^permessage-deflate/);
    // The page's compressed commands arrived whole.
    await scripted.waitForCommand((c) => c.op === 'subscribe' && c.symbols.includes('AAPL'));
    await tab.close();
  } finally {
    await scripted.close();
  }
});

test('a policy that forbids the feed worker is said, not a blank page', async () => {
  const scripted = await startScriptedGateway({
    universe: ['AAPL'], pageHeaders: { 'Content-Security-Policy': "worker-src 'none'" },
    snapshot: (s) => `{"type":"snapshot","symbol":"${s}","seq":1,"trade":null,"quote":null}`,
  });
  const tab = await browser.context.newPage();
  const errors = [];
  tab.on('pageerror', (e) => errors.push(String(e)));
  try {
    await tab.goto(scripted.url);
    await waitInPage(tab, 'the worker notice', () =>
      /Cannot start the feed worker:.*blob: URLs/.test(document.querySelector('[data-testid=notice-worker]')?.textContent || ''),
    null, { timeout: 20000 });
    assert.equal(await tab.getAttribute('[data-testid=status]', 'data-state'), 'closed');
    assert.match(await tab.textContent('[data-testid=status]'), /no feed worker/);
    assert.deepEqual(errors, []);
    assert.equal(scripted.clients.length, 0);
    await tab.close();
  } finally {
    await scripted.close();
  }
});
