// How the page applies the protocol, driven message by message by a scripted gateway: seq order,
// conflated quotes, gaps and the snapshot after them, an unannounced seq jump, unknown symbols,
// a 1008 slow-consumer close, and the disconnect button. (dashboard.test.mjs runs the page
// against the real gateway; these are the cases the real one only produces under load.)

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { artifact, launchBrowser, openPage, rowSymbols, sleep, waitInPage } from './helpers.mjs';
import { startScriptedGateway } from './scripted-gateway.mjs';

const UNIVERSE = ['AAPL', 'MSFT', 'BTC-USD', 'JPM'];
const nowNs = () => (BigInt(Date.now()) * 1000000n).toString();

// Raw text, as the gateway writes it: ts and gw_ts are integers past 2^53.
const trade = (symbol, seq, price) =>
  `{"type":"trade","symbol":"${symbol}","seq":${seq},"price":"${price}","size":"10","ts":${nowNs()},"gw_ts":${nowNs()}}`;
const quote = (symbol, seq, bid, ask, conflated) =>
  `{"type":"quote","symbol":"${symbol}","seq":${seq},"bid":"${bid}","bid_size":"3","ask":"${ask}","ask_size":"4"` +
  `${conflated ? `,"conflated":${conflated}` : ''},"ts":${nowNs()},"gw_ts":${nowNs()}}`;
const snapshot = (symbol, seq, price) =>
  `{"type":"snapshot","symbol":"${symbol}","seq":${seq},` +
  `"trade":{"seq":${seq - 1},"price":"${price}","size":"5","ts":${nowNs()},"gw_ts":${nowNs()}},` +
  `"quote":{"seq":${seq},"bid":"99.99","bid_size":"3","ask":"100.01","ask_size":"4","ts":${nowNs()},"gw_ts":${nowNs()}}}`;

let gw;
let browser;
let page;

before(async () => {
  gw = await startScriptedGateway({ universe: UNIVERSE, snapshot: (s) => snapshot(s, 10, '100.00') });
  browser = await launchBrowser();
  page = await openPage(browser.context);
});

after(async () => {
  if (browser) await browser.close();
  if (gw) await gw.close();
});

const value = (id) => page.getAttribute(`[data-testid="${id}"]`, 'data-value');
const text = (id) => page.textContent(`[data-testid="${id}"]`);
const rowState = (symbol) => page.getAttribute(`[data-testid="row-${symbol}"]`, 'data-state');
function until(what, fn, arg, timeout) {
  return waitInPage(page, what, fn, arg, { timeout });
}
function valueIs(id, expected) {
  return until(`${id} = ${expected}`, ([id, expected]) =>
    document.querySelector(`[data-testid="${id}"]`)?.dataset.value === expected, [id, expected]);
}
function stateIs(symbol, expected) {
  return until(`row ${symbol} ${expected}`, ([symbol, expected]) =>
    document.querySelector(`[data-testid="row-${symbol}"]`)?.dataset.state === expected, [symbol, expected]);
}

test('the defaults are cut to the universe, subscribed once it is known, and filled by snapshots', async () => {
  await page.goto(gw.url);
  await stateIs('BTC-USD', 'live');
  assert.deepEqual(await rowSymbols(page), ['AAPL', 'MSFT', 'BTC-USD']);
  const subscribe = await gw.waitForCommand((c) => c.op === 'subscribe');
  assert.deepEqual(subscribe.symbols, ['AAPL', 'MSFT', 'BTC-USD']);
  assert.equal(await value('price-AAPL'), '100.00');
  assert.equal(await value('bid-AAPL'), '99.99');
  assert.equal(await value('ask-AAPL'), '100.01');
  assert.equal(await text('change-AAPL'), '0.00');
});

test('events apply in seq order: duplicates are ignored, a conflated quote accounts for what it replaced', async () => {
  gw.client.send(trade('AAPL', 11, '101.50'));
  await valueIs('price-AAPL', '101.50');
  assert.equal(await text('change-AAPL'), '+1.50');
  assert.equal(await text('change-pct-AAPL'), '+1.50%');
  gw.client.send(trade('AAPL', 11, '999.00')); // seen already: ignored
  gw.client.send(quote('AAPL', 12, '101.40', '101.60'));
  await valueIs('bid-AAPL', '101.40');
  assert.equal(await value('price-AAPL'), '101.50');
  gw.client.send(trade('AAPL', 13, '99.25'));
  await valueIs('price-AAPL', '99.25');
  assert.equal(await text('change-AAPL'), '−0.75');
  // Quotes 14 and 15 were superseded by 16.
  gw.client.send(quote('AAPL', 16, '99.20', '99.30', 2));
  await valueIs('bid-AAPL', '99.20');
  assert.equal(await rowState('AAPL'), 'live');
  await until('conflated 2', () => document.querySelector('[data-testid=conflated]').textContent === '2');
  assert.equal(await text('gaps'), '0');
});

test('a gap marks the row stale until the snapshot that follows; the gap is counted and shown', async () => {
  gw.client.send('{"type":"gap","symbol":"AAPL","from_seq":17,"to_seq":20,"reason":"slow_consumer"}');
  await stateIs('AAPL', 'stale');
  assert.equal(await text('gaps'), '1');
  assert.match(await text('notice-gap'), /AAPL missed seq 17–20 \(this page fell behind the feed\)/);
  gw.client.send(trade('AAPL', 21, '150.00')); // not applied: the row waits for its snapshot
  await sleep(400);
  assert.equal(await value('price-AAPL'), '99.25');
  assert.equal(await rowState('AAPL'), 'stale');
  gw.client.send(snapshot('AAPL', 25, '105.00'));
  await stateIs('AAPL', 'live');
  assert.equal(await value('price-AAPL'), '105.00');
  gw.client.send(trade('AAPL', 26, '105.25'));
  await valueIs('price-AAPL', '105.25');
  assert.equal(await page.getAttribute('[data-testid="row-AAPL"]', 'data-seq'), '26');
});

test('the gateway saying its feed is down shows a notice until it is back', async () => {
  gw.client.send('{"type":"status","feed":"down","source":"tcp"}');
  assert.match(await text('notice-feed'), /Feed down:.*tcp feed/);
  gw.client.send('{"type":"status","feed":"up","source":"tcp"}');
  await until('notice gone', () => !document.querySelector('[data-testid=notice-feed]'));
});

test('a seq jump no gap announced unsubscribes and subscribes again for a fresh snapshot', async () => {
  const before = gw.commands.length;
  gw.client.send(trade('AAPL', 30, '106.00')); // 27 expected
  await gw.waitForCommand((c) => c.op === 'subscribe' && c.symbols.join() === 'AAPL', before);
  // A held symbol gets no second snapshot: the unsubscribe comes first.
  const ops = gw.commands.slice(before).filter((c) => c.symbols?.join() === 'AAPL').map((c) => c.op);
  assert.deepEqual(ops.slice(0, 2), ['unsubscribe', 'subscribe']);
  await until('gaps 2', () => document.querySelector('[data-testid=gaps]').textContent === '2');
  assert.match(await text('notice-seq'), /AAPL skipped seq 27–29/);
  // The scripted gateway's snapshot is at seq 10, price 100.00.
  await valueIs('price-AAPL', '100.00');
  assert.equal(await rowState('AAPL'), 'live');
});

test('adding a symbol subscribes it; removing unsubscribes', async () => {
  const before = gw.commands.length;
  await page.fill('[data-testid=add-input]', 'JPM');
  await page.keyboard.press('Enter');
  await stateIs('JPM', 'live');
  await gw.waitForCommand((c) => c.op === 'subscribe' && c.symbols.join() === 'JPM', before);
  await page.click('[data-testid="remove-MSFT"]');
  await gw.waitForCommand((c) => c.op === 'unsubscribe' && c.symbols.join() === 'MSFT', before);
  // A late event of a removed symbol is ignored.
  gw.client.send(trade('MSFT', 11, '1.00'));
  assert.deepEqual(await rowSymbols(page), ['AAPL', 'BTC-USD', 'JPM']);
});

test('a 1008 slow-consumer close is shown plainly; the page reconnects and resubscribes', async () => {
  const clientsBefore = gw.clients.length;
  const before = gw.commands.length;
  gw.client.close(1008, 'slow consumer');
  await until('status reconnecting', () =>
    document.querySelector('[data-testid=status]').dataset.state === 'reconnecting');
  assert.match(await text('close-info'), /^1008 slow consumer$/);
  assert.match(await text('notice-slow'), /Slow consumer:.*1008 slow consumer/);
  await page.screenshot({ path: artifact('dashboard-slow-consumer.png') });
  await until('status live', () => document.querySelector('[data-testid=status]').dataset.state === 'live');
  assert.equal(gw.clients.length, clientsBefore + 1);
  const resubscribed = await gw.waitForCommand((c) => c.op === 'subscribe', before);
  assert.deepEqual(resubscribed.symbols, ['AAPL', 'BTC-USD', 'JPM']);
  await stateIs('JPM', 'live');
  assert.equal(await page.getAttribute('[data-testid="row-JPM"]', 'data-epoch'), '2');
});

test('a reconnect resumes after the seq each row holds: the missed events apply, or the gap is shown', async () => {
  // The rows hold their seqs from the connection before (AAPL, BTC-USD, JPM: live).
  const held = {};
  for (const s of ['AAPL', 'BTC-USD', 'JPM']) held[s] = Number(await page.getAttribute(`[data-testid="row-${s}"]`, 'data-seq'));
  assert.ok(held.AAPL > 0 && held.JPM > 0, JSON.stringify(held));
  // The gateway has what AAPL and BTC-USD missed, not what JPM missed.
  gw.resume = (symbol, seq) => {
    if (symbol === 'JPM') {
      return [`{"type":"gap","symbol":"JPM","from_seq":${seq + 1},"to_seq":${seq + 40},"reason":"history"}`,
        snapshot('JPM', seq + 40, '77.00')];
    }
    const events = symbol === 'AAPL' ? [trade('AAPL', seq + 1, '120.00'), quote('AAPL', seq + 2, '119.90', '120.10')] : [];
    return [`{"type":"resumed","symbol":"${symbol}","after_seq":${seq},"to_seq":${seq + events.length}}`, ...events];
  };
  const before = gw.commands.length;
  gw.client.close(1001, 'going away');
  await until('status live again', () =>
    document.querySelector('[data-testid=status]').dataset.state === 'live'
    && document.querySelector('[data-testid=status]').dataset.epoch === '3');
  const resubscribed = await gw.waitForCommand((c) => c.op === 'subscribe', before);
  assert.deepEqual(resubscribed.resume, [
    { symbol: 'AAPL', seq: held.AAPL }, { symbol: 'BTC-USD', seq: held['BTC-USD'] }, { symbol: 'JPM', seq: held.JPM },
  ]);
  await stateIs('AAPL', 'live');
  await valueIs('price-AAPL', '120.00');
  await valueIs('bid-AAPL', '119.90');
  assert.equal(await page.getAttribute('[data-testid="row-AAPL"]', 'data-seq'), String(held.AAPL + 2));
  await stateIs('BTC-USD', 'live');
  await stateIs('JPM', 'live');
  assert.equal(await value('price-JPM'), '77.00');
  assert.match(await text('notice-resume'), new RegExp(`Resumed with a gap: JPM missed seq ${held.JPM + 1}–${held.JPM + 40} ` +
    '\\(the gateway no longer held what was missed while disconnected\\)'));
  // A reconnect where everything is there says so.
  gw.resume = (symbol, seq) => [`{"type":"resumed","symbol":"${symbol}","after_seq":${seq},"to_seq":${seq}}`];
  gw.client.close(1001, 'going away');
  await until('status live again', () =>
    document.querySelector('[data-testid=status]').dataset.state === 'live'
    && document.querySelector('[data-testid=status]').dataset.epoch === '4');
  await until('resumed notice', () =>
    /Resumed, nothing missed: 3 of 3 symbols/.test(document.querySelector('[data-testid=notice-resume]')?.textContent || ''));
  await stateIs('JPM', 'live');
  await page.screenshot({ path: artifact('dashboard-resumed.png') });
  gw.resume = null;
});

test('a stored symbol the gateway does not have is marked unknown', async () => {
  await page.evaluate(() => localStorage.setItem('tickgate.watchlist', JSON.stringify(['AAPL', 'GONE'])));
  await page.reload();
  await stateIs('GONE', 'unknown');
  await stateIs('AAPL', 'live');
  assert.match(await text('notice-unknown'), /GONE is not in this gateway's universe/);
});

test('the disconnect button closes; connect comes back', async () => {
  const toggle = page.locator('[data-testid=connection-toggle]');
  assert.equal((await toggle.textContent()).trim(), 'Disconnect');
  await toggle.click();
  await until('status closed', () => document.querySelector('[data-testid=status]').dataset.state === 'closed');
  assert.equal((await text('status')).trim(), 'closed: disconnected by you');
  await sleep(700); // no reconnect behind the user's back
  assert.equal(await page.getAttribute('[data-testid=status]', 'data-state'), 'closed');
  assert.equal((await toggle.textContent()).trim(), 'Connect');
  await toggle.click();
  await until('status live', () => document.querySelector('[data-testid=status]').dataset.state === 'live');
  await stateIs('AAPL', 'live');
  assert.deepEqual(page.errors, [], 'no uncaught errors in the page');
});
