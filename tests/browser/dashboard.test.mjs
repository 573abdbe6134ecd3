// The dashboard in headless Chromium against a really running tickgate (target/debug/tickgate on
// its built-in simulated market). The tests run in order and share one gateway and one page.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  ROOT, artifact, freePort, launchBrowser, openPage, rowSymbols, sleep, startGateway, waitInPage,
} from './helpers.mjs';

const DEFAULTS = ['AAPL', 'MSFT', 'NVDA', 'AMZN', 'GOOGL', 'META', 'TSLA', 'BTC-USD', 'ETH-USD', 'SOL-USD'];

let port;
let gateway;
let browser;
let page;

before(async () => {
  port = await freePort();
  gateway = await startGateway(port);
  browser = await launchBrowser();
  page = await openPage(browser.context);
});

after(async () => {
  if (browser) await browser.close();
  if (gateway) await gateway.stop();
});

/** Every row live, from a snapshot of the current connection, with a price. */
function rowsFilled(page, symbols, what) {
  return waitInPage(page, what, (symbols) => {
    const epoch = document.querySelector('[data-testid=status]').dataset.epoch;
    return symbols.every((s) => {
      const row = document.querySelector(`[data-testid="row-${s}"]`);
      const price = document.querySelector(`[data-testid="price-${s}"]`);
      return row && row.dataset.state === 'live' && row.dataset.epoch === epoch && price && price.dataset.value;
    });
  }, symbols, { gateway });
}

function prices(page) {
  return page.$$eval('[data-testid^="price-"]', (cells) =>
    Object.fromEntries(cells.map((c) => [c.dataset.testid.slice('price-'.length), c.dataset.value])));
}

test('the gateway serves the page at / as one self-contained HTML file', async () => {
  const res = await fetch(`${gateway.url}/`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/html/);
  const html = await res.text();
  assert.match(html, /<title>tickgate/);
  // No external fonts, scripts, styles or CDNs: nothing is loaded from anywhere else.
  assert.doesNotMatch(html, /<script[^>]+src=|<link[^>]+stylesheet|@import|url\(\s*['"]?https?:/i);
  assert.doesNotMatch(html, /(src|href)=["']?(https?:)?\/\//i);

  const response = await page.goto(`${gateway.url}/`);
  assert.equal(response.status(), 200);
  assert.equal(await page.title(), 'tickgate · live market data');
  await waitInPage(page, 'status live',
    () => document.querySelector('[data-testid=status]').dataset.state === 'live', null, { gateway });
  assert.match(await page.textContent('[data-testid=status]'), /live/);
});

test('the default watchlist fills with prices that change within seconds', async () => {
  await rowsFilled(page, DEFAULTS, 'the default watchlist filled');
  assert.deepEqual(await rowSymbols(page), DEFAULTS);
  const first = await prices(page);
  for (const s of DEFAULTS) assert.match(first[s], /^\d+(\.\d+)?$/, `${s} price is a decimal string`);
  // Every symbol's price moves within a few seconds (the busiest in well under one).
  await waitInPage(page, 'every price changed', (first) =>
    Object.entries(first).every(([s, p]) => {
      const cell = document.querySelector(`[data-testid="price-${s}"]`);
      return cell && cell.dataset.value && cell.dataset.value !== p;
    }), first, { timeout: 15000, gateway });
  // The sparkline gets a point per trade or mid change: wait for a second one to arrive.
  await waitInPage(page, 'the AAPL sparkline has two points', () => {
    const line = document.querySelector('[data-testid="row-AAPL"] .spark polyline');
    return line && (line.getAttribute('points') || '').trim().split(/\s+/).length >= 2;
  }, null, { timeout: 15000, gateway });
  // Bid below ask, sizes and time shown, a sparkline drawn.
  const aapl = await page.evaluate(() => {
    const text = (id) => document.querySelector(`[data-testid="${id}"]`).textContent;
    const value = (id) => document.querySelector(`[data-testid="${id}"]`).dataset.value;
    return {
      bid: Number(value('bid-AAPL')), ask: Number(value('ask-AAPL')), bidSize: value('bid-size-AAPL'),
      time: text('time-AAPL'), change: text('change-AAPL'), pct: text('change-pct-AAPL'),
      spark: document.querySelector('[data-testid="row-AAPL"] .spark polyline').getAttribute('points'),
    };
  });
  assert.ok(aapl.bid > 0 && aapl.bid <= aapl.ask, `bid ${aapl.bid} <= ask ${aapl.ask}`);
  assert.match(aapl.bidSize, /^\d/);
  assert.match(aapl.time, /^\d\d:\d\d:\d\d\.\d{3}$/);
  assert.match(aapl.change, /^([+−]?[\d,]+(\.\d+)?)$/);
  assert.match(aapl.pct, /^[+−]?\d+\.\d\d%$/);
  assert.ok(aapl.spark.trim().split(/\s+/).length >= 2, 'the sparkline has points');
  await waitInPage(page, 'a message rate', () =>
    /^[1-9][\d,]*$/.test(document.querySelector('[data-testid=msgs-per-sec]').textContent), null, { gateway });
});

test('the latency figure is a real number of milliseconds', async () => {
  await waitInPage(page, 'a latency figure',
    () => document.querySelector('[data-testid=latency]').dataset.p50Ms !== '', null, { gateway });
  const { p50, p99, text } = await page.$eval('[data-testid=latency]', (el) =>
    ({ p50: Number(el.dataset.p50Ms), p99: Number(el.dataset.p99Ms), text: el.textContent }));
  assert.ok(Number.isFinite(p50) && p50 > 0 && p50 < 5000, `p50 ${p50} ms`);
  assert.ok(Number.isFinite(p99) && p99 >= p50 && p99 < 5000, `p99 ${p99} ms`);
  assert.match(text, /^\d+(\.\d+)? \/ \d+(\.\d+)? ms$/);
});

test('screenshots at 1280x800 and 390x844; no sideways page scroll on a phone', async () => {
  await sleep(3000); // let the sparklines fill
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.mouse.move(0, 0);
  const wide = artifact('dashboard-1280x800.png');
  await page.screenshot({ path: wide });
  if (process.env.TICKGATE_UPDATE_SCREENSHOT === '1') {
    fs.copyFileSync(wide, path.join(ROOT, 'docs', 'screenshot.png'));
  }
  const fitsWide = await page.evaluate(() => {
    const wrap = document.querySelector('.table-wrap');
    return { page: document.documentElement.scrollWidth, table: wrap.scrollWidth, wrap: wrap.clientWidth };
  });
  assert.ok(fitsWide.page <= 1280, `page is ${fitsWide.page} px wide at 1280`);
  assert.ok(fitsWide.table <= fitsWide.wrap, 'the whole table fits at 1280 px');

  await page.setViewportSize({ width: 390, height: 844 });
  await sleep(300);
  await page.screenshot({ path: artifact('dashboard-390x844.png') });
  const narrow = await page.evaluate(() => {
    const wrap = document.querySelector('.table-wrap');
    const input = document.querySelector('[data-testid=add-input]').getBoundingClientRect();
    return { page: document.documentElement.scrollWidth, table: wrap.scrollWidth, wrap: wrap.clientWidth, inputRight: input.right };
  });
  assert.ok(narrow.page <= 390, `the page itself is ${narrow.page} px wide at 390: only the table may scroll`);
  assert.ok(narrow.table > narrow.wrap, 'the table scrolls sideways inside its frame');
  assert.ok(narrow.inputRight <= 390, 'the search field fits');
  await page.setViewportSize({ width: 1280, height: 800 });
});

test('add a symbol with the keyboard, remove one with a click; the watchlist persists', async () => {
  // Tab order: the first stop is the skip link, which leads to the search field.
  await page.locator('body').focus();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.className), 'skip');
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement.dataset.testid), 'add-input');

  // An unknown symbol is refused and says why.
  await page.keyboard.type('ZZZZ9');
  await page.keyboard.press('Enter');
  assert.match(await page.textContent('[data-testid=add-message]'), /not in this gateway's universe/);
  assert.equal(await page.locator('[data-testid="row-ZZZZ9"]').count(), 0);

  // Enter adds; lower case is fine.
  await page.fill('[data-testid=add-input]', 'jpm');
  await page.keyboard.press('Enter');
  await rowsFilled(page, ['JPM'], 'JPM added and filled');
  assert.equal(await page.inputValue('[data-testid=add-input]'), '');
  assert.equal((await rowSymbols(page)).at(-1), 'JPM');

  // The add button works too.
  await page.fill('[data-testid=add-input]', 'NFLX');
  await page.click('[data-testid=add-button]');
  await rowsFilled(page, ['NFLX'], 'NFLX added and filled');

  // One click removes.
  const remove = page.locator('[data-testid="remove-MSFT"]');
  assert.equal(await remove.getAttribute('aria-label'), 'Remove MSFT from the watchlist');
  assert.equal(await remove.evaluate((b) => b.tagName), 'BUTTON');
  await remove.click();
  assert.equal(await page.locator('[data-testid="row-MSFT"]').count(), 0);

  const stored = JSON.parse(await page.evaluate(() => localStorage.getItem('tickgate.watchlist')));
  const expected = [...DEFAULTS.filter((s) => s !== 'MSFT'), 'JPM', 'NFLX'];
  assert.deepEqual(stored, expected);

  // A reload keeps the watchlist.
  await page.reload();
  await rowsFilled(page, expected, 'the stored watchlist filled after a reload');
  assert.deepEqual(await rowSymbols(page), expected);
});

test('SIGTERM shows reconnecting; the gateway back on the same port refills every row', async () => {
  const symbols = await rowSymbols(page);
  const epochBefore = Number(await page.getAttribute('[data-testid=status]', 'data-epoch'));
  const how = await gateway.stop();
  assert.equal(how.code, 0, `tickgate exits 0 on SIGTERM (${JSON.stringify(how)})`);

  await waitInPage(page, 'status reconnecting',
    () => document.querySelector('[data-testid=status]').dataset.state === 'reconnecting', null, { timeout: 10000 });
  assert.match(await page.textContent('[data-testid=status]'), /reconnecting/);
  assert.match(await page.textContent('[data-testid=close-info]'), /^1001 going away/);
  await waitInPage(page, 'rows marked offline', () =>
    [...document.querySelectorAll('tr[data-testid^="row-"]')].every((r) => r.dataset.state === 'offline'));
  await page.screenshot({ path: artifact('dashboard-reconnecting.png') });

  await sleep(1000); // a moment with nobody listening: the page keeps retrying
  gateway = await startGateway(port);
  await waitInPage(page, 'status live again',
    () => document.querySelector('[data-testid=status]').dataset.state === 'live', null, { timeout: 20000, gateway });
  const epochAfter = Number(await page.getAttribute('[data-testid=status]', 'data-epoch'));
  assert.ok(epochAfter > epochBefore, `a new connection (${epochBefore} -> ${epochAfter})`);
  // Fresh snapshots from the new connection fill every row again.
  await rowsFilled(page, symbols, 'every row refilled after the restart');
  assert.deepEqual(page.errors, [], 'no uncaught errors in the page');
});
