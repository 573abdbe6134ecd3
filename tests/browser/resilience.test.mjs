// What the page shows when the connection's circumstances change, driven by the scripted
// gateway: a gateway restart with sequence numbers starting again, notices that end with what
// they announced, closes that must not be retried as is, a refused (rate-limited) resubscribe,
// and two tabs sharing one watchlist.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { freePort, launchBrowser, openPage, rowSymbols, sleep, waitInPage } from './helpers.mjs';
import { startScriptedGateway } from './scripted-gateway.mjs';

const UNIVERSE = ['AAPL', 'MSFT', 'BTC-USD', 'JPM'];
const nowNs = () => (BigInt(Date.now()) * 1000000n).toString();

const trade = (symbol, seq, price) =>
  `{"type":"trade","symbol":"${symbol}","seq":${seq},"price":"${price}","size":"10","ts":${nowNs()},"gw_ts":${nowNs()}}`;
const quoteFields = (seq, bid, ask) =>
  `{"seq":${seq},"bid":"${bid}","bid_size":"3","ask":"${ask}","ask_size":"4","ts":${nowNs()},"gw_ts":${nowNs()}}`;
/** A snapshot with a trade at `price` (or none, with price null) and a quote around 100. */
const snapshot = (symbol, seq, price, bid = '99.99', ask = '100.01') =>
  `{"type":"snapshot","symbol":"${symbol}","seq":${seq},` +
  `"trade":${price === null ? 'null' : `{"seq":${seq - 1},"price":"${price}","size":"5","ts":${nowNs()},"gw_ts":${nowNs()}}`},` +
  `"quote":${quoteFields(seq, bid, ask)}}`;

let port;
let gw;
let browser;
let page;

before(async () => {
  port = await freePort();
  gw = await startScriptedGateway({ universe: UNIVERSE, snapshot: (s) => snapshot(s, 500, '250.00'), port });
  browser = await launchBrowser();
  page = await openPage(browser.context);
});

after(async () => {
  if (browser) await browser.close();
  if (gw) await gw.close();
});

const value = (id, p = page) => p.getAttribute(`[data-testid="${id}"]`, 'data-value');
const text = (id, p = page) => p.textContent(`[data-testid="${id}"]`);
const phase = () => page.getAttribute('[data-testid=status]', 'data-state');
function until(what, fn, arg, p = page) {
  return waitInPage(p, what, fn, arg, { timeout: 20000 });
}
function stateIs(symbol, expected, p = page) {
  return until(`row ${symbol} ${expected}`, ([symbol, expected]) =>
    document.querySelector(`[data-testid="row-${symbol}"]`)?.dataset.state === expected, [symbol, expected], p);
}
function phaseIs(expected) {
  return until(`status ${expected}`, (expected) =>
    document.querySelector('[data-testid=status]').dataset.state === expected, expected);
}
function epochIs(expected) {
  return until(`epoch ${expected}`, (expected) =>
    document.querySelector('[data-testid=status]').dataset.epoch === expected, expected);
}
function noNotice(key) {
  return until(`notice-${key} gone`, (key) => !document.querySelector(`[data-testid=notice-${key}]`), key);
}

test('after a gateway restart, the new snapshot replaces the row: no trade of the old process stays', async () => {
  await page.goto(gw.url);
  await stateIs('AAPL', 'live');
  gw.client.send(trade('AAPL', 501, '251.00'));
  await until('AAPL 251.00', () => document.querySelector('[data-testid="price-AAPL"]')?.dataset.value === '251.00');
  assert.equal(await text('change-AAPL'), '+1.00');

  // The gateway goes away (no close frame) and a new process takes the port: its sequence
  // numbers start again, and AAPL has not traded yet.
  await gw.close();
  gw = await startScriptedGateway({
    universe: UNIVERSE, port, snapshot: (s) => snapshot(s, 3, null, '10.00', '10.02'),
  });
  await epochIs('2');
  await until('AAPL from the new process', () => {
    const row = document.querySelector('[data-testid="row-AAPL"]');
    return row.dataset.state === 'live' && row.dataset.epoch === '2' && row.dataset.seq === '3';
  });
  // No last trade: the mid of the new quote, marked as such; the change starts from it.
  assert.equal(await value('price-AAPL'), '10.01');
  assert.match(await page.getAttribute('[data-testid="price-AAPL"]', 'class'), /\bmid\b/);
  assert.equal(await value('bid-AAPL'), '10.00');
  assert.equal(await text('change-AAPL'), '0.00');
  gw.client.send(trade('AAPL', 4, '10.05'));
  await until('AAPL 10.05', () => document.querySelector('[data-testid="price-AAPL"]')?.dataset.value === '10.05');
  assert.equal(await text('change-AAPL'), '+0.04');
  assert.doesNotMatch(await page.getAttribute('[data-testid="price-AAPL"]', 'class'), /\bmid\b/);
});

test('a snapshot with a null trade clears the last trade on the same connection too', async () => {
  gw.snapshot = (s) => snapshot(s, 10, null, '11.00', '11.10');
  const before = gw.commands.length;
  gw.client.send(trade('AAPL', 8, '10.30')); // a jump from 4: the page resubscribes
  await gw.waitForCommand((c) => c.op === 'subscribe' && c.symbols.join() === 'AAPL', before);
  await until('AAPL at seq 10', () => document.querySelector('[data-testid="row-AAPL"]').dataset.seq === '10');
  assert.equal(await value('price-AAPL'), '11.05');
  assert.match(await page.getAttribute('[data-testid="price-AAPL"]', 'class'), /\bmid\b/);
});

test('"Feed down" ends with the feed: on a status up, and on a reconnect to a healthy feed', async () => {
  gw.client.send('{"type":"status","feed":"down","source":"tcp"}');
  assert.match(await text('notice-feed'), /Feed down:/);
  gw.client.send('{"type":"status","feed":"up","source":"tcp"}');
  await noNotice('feed');

  gw.client.send('{"type":"status","feed":"down","source":"tcp"}');
  assert.match(await text('notice-feed'), /Feed down:/);
  gw.client.close(1001, 'going away');
  await epochIs('3');
  await noNotice('feed');

  // A welcome that says the feed is down shows it, until the status that says it is back.
  gw.welcome = { feed: 'down' };
  gw.client.close(1001, 'going away');
  await epochIs('4');
  assert.match(await text('notice-feed'), /Feed down:/);
  gw.welcome = {};
  gw.client.send('{"type":"status","feed":"up","source":"tcp"}');
  await noNotice('feed');
});

test('"Slow consumer" ends with the reconnect', async () => {
  gw.client.close(1008, 'slow consumer');
  await until('slow notice', () => !!document.querySelector('[data-testid=notice-slow]'));
  await epochIs('5');
  await noNotice('slow');
  await stateIs('AAPL', 'live');
});

test('a refused resubscribe is retried with the other rows waiting for a snapshot', async () => {
  gw.snapshot = (s) => snapshot(s, 20, '12.00');
  const before = gw.commands.length;
  gw.refuseSubscribes = 2;
  // Two unannounced jumps: each row resubscribes, and both subscribes are refused.
  gw.client.send(trade('AAPL', 40, '12.50'));
  gw.client.send(trade('BTC-USD', 40, '12.50'));
  await gw.waitForCommand((c) => c.op === 'subscribe' && c.symbols.join() === 'BTC-USD', before);
  await until('both rows waiting', () => ['AAPL', 'BTC-USD'].every((s) =>
    document.querySelector(`[data-testid="row-${s}"]`).dataset.state === 'stale'));
  assert.equal(gw.refuseSubscribes, 0);
  const retry = await gw.waitForCommand((c) => c.op === 'subscribe' && c.symbols.length === 2, before);
  assert.deepEqual(retry.symbols.slice().sort(), ['AAPL', 'BTC-USD']);
  await stateIs('AAPL', 'live');
  await stateIs('BTC-USD', 'live');
  assert.equal(await value('price-AAPL'), '12.00');
  assert.equal(await page.getAttribute('[data-testid="row-AAPL"]', 'data-seq'), '20');
});

test('two tabs share one watchlist', async () => {
  const other = await browser.context.newPage();
  other.errors = [];
  other.on('pageerror', (e) => other.errors.push(String(e)));
  await other.goto(gw.url);
  await stateIs('BTC-USD', 'live', other);
  assert.deepEqual(await rowSymbols(other), await rowSymbols(page));

  // A symbol added here appears there, subscribed by that tab's own connection.
  const otherClient = gw.client;
  await page.fill('[data-testid=add-input]', 'JPM');
  await page.keyboard.press('Enter');
  await stateIs('JPM', 'live', other);
  assert.ok(otherClient.closed === false);
  assert.equal(gw.commands.filter((c) => c.op === 'subscribe' && c.symbols.join() === 'JPM').length, 2);

  // One removed there goes here; neither tab's save undoes the other's.
  await other.click('[data-testid="remove-AAPL"]');
  await until('AAPL gone here', () => !document.querySelector('[data-testid="row-AAPL"]'));
  const stored = await page.evaluate(() => JSON.parse(localStorage.getItem('tickgate.watchlist')));
  assert.deepEqual(stored, await rowSymbols(page));
  assert.ok(stored.includes('JPM') && !stored.includes('AAPL'), JSON.stringify(stored));
  assert.deepEqual(await rowSymbols(other), stored);
  assert.deepEqual(other.errors, []);
  await other.close();
  const deadline = Date.now() + 10000;
  while (!otherClient.closed && Date.now() < deadline) await sleep(100);
  assert.ok(otherClient.closed, 'the other tab hung up');
});

for (const [code, reason, why] of [
  [1008, 'authentication required', /requires you to sign in/],
  [1008, 'not entitled', /not entitled/],
  [4003, 'forbidden', /refused this connection/],
  [1009, 'message of 70000 bytes is over the limit of 65536', /refused what this page sent/],
]) {
  test(`a ${code} "${reason}" close stops the reconnects and says why`, async () => {
    if ((await phase()) === 'closed') await page.click('[data-testid=connection-toggle]');
    await phaseIs('live');
    const clients = gw.clients.length;
    gw.client.close(code, reason);
    await phaseIs('closed');
    assert.match(await text('notice-refused'), why);
    assert.match(await text('status'), why);
    await sleep(3000); // longer than the first backoff steps
    assert.equal(gw.clients.length, clients, 'no new connection');
    assert.equal((await text('connection-toggle')).trim(), 'Connect');
    // Connect is the user's explicit retry.
    await page.click('[data-testid=connection-toggle]');
    await phaseIs('live');
    await noNotice('refused');
  });
}

test('a welcome that asks for a token the page does not have: it closes at once, asks, and stays closed', async () => {
  gw.welcome = { auth: 'required' };
  const clients = gw.clients.length;
  gw.client.close(1001, 'going away');
  await phaseIs('closed');
  assert.equal(gw.clients.length, clients + 1);
  assert.match(await text('notice-refused'), /requires you to sign in/);
  assert.equal(await page.isHidden('[data-testid=signin]'), false, 'the sign-in form is shown');
  assert.deepEqual(gw.commands.slice(-1)[0]?.op === 'auth', false, 'no auth without a token');
  await sleep(3000);
  assert.equal(gw.clients.length, clients + 1, 'no further connection');
  gw.welcome = {};
  assert.deepEqual(page.errors, [], 'no uncaught errors in the page');
});
