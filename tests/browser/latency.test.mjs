// The page's latency figure describes the feed, not the page's painting: its feed worker times
// each event's receipt off the main thread. Against the default gateway, with the page's 10
// default symbols, a plain Node client (native-client.mjs) subscribed to the same symbols measures
// at the same time; the page's p99 must stay within a stated factor of the client's.
//
// On a loaded machine both figures move, and one stall of a process in a 10 s window makes its
// p99: the test measures up to WINDOWS windows of 10 s and passes on the first within the bound.
// The page that timed receipt on its main thread (p50 / p99 of 27 / 190 ms, and 23 / 560 ms,
// against a native client's 0.28 / 17 ms) fails every window; a stall that hits only the page's
// processes in one window does not fail the test.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { artifact, freePort, launchBrowser, openPage, startGateway, waitInPage } from './helpers.mjs';

const DEFAULTS = ['AAPL', 'MSFT', 'NVDA', 'AMZN', 'GOOGL', 'META', 'TSLA', 'BTC-USD', 'ETH-USD', 'SOL-USD'];
const WINDOW_S = 10;      // the page's latency window
const FACTOR = 4;         // page p99 <= FACTOR x the native client's p99 + SLACK_MS
const SLACK_MS = 10;      // below a few ms, timers and scheduling are all there is to compare
const WINDOWS = 3;

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

/** Runs native-client.mjs for WINDOW_S seconds (after 1 s to settle); resolves with its figures. */
function nativeClient() {
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'native-client.mjs');
  const child = spawn(process.execPath, ['--experimental-websocket', '--no-warnings', script,
    `ws://127.0.0.1:${gateway.port}/ws`, String(WINDOW_S), ...DEFAULTS], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => {
      if (code === 0) resolve(JSON.parse(out));
      else reject(new Error(`native-client.mjs exited ${code}: ${err}`));
    });
  });
}

const figures = (id) => page.$eval(`[data-testid=${id}]`, (el) => ({ p50: Number(el.dataset.p50Ms), p99: Number(el.dataset.p99Ms) }));

test(`the page's latency p99 is within ${FACTOR}x (+${SLACK_MS} ms) of a native client's, measured at the same time`, async (t) => {
  await page.goto(gateway.url);
  await waitInPage(page, 'every default row live', (symbols) =>
    symbols.every((s) => document.querySelector(`[data-testid="row-${s}"]`)?.dataset.state === 'live'), DEFAULTS, { gateway });
  const windows = [];
  for (let w = 0; w < WINDOWS; w += 1) {
    // The page's window fills while the native client runs: both cover the same 10 s, give or
    // take the page's once-a-second update of its figure.
    const native = await nativeClient();
    const pageLatency = await figures('latency');
    const render = await figures('render-delay');
    const rate = Number((await page.textContent('[data-testid=msgs-per-sec]')).replace(/,/g, ''));
    const result = {
      symbols: DEFAULTS.length, window_s: WINDOW_S, page_messages_per_s: rate,
      native_events: native.events, native_p50_ms: native.p50_ms, native_p99_ms: native.p99_ms,
      page_p50_ms: pageLatency.p50, page_p99_ms: pageLatency.p99,
      page_render_p50_ms: render.p50, page_render_p99_ms: render.p99,
      bound_ms: FACTOR * native.p99_ms + SLACK_MS,
    };
    windows.push(result);
    t.diagnostic(JSON.stringify(result));
    assert.ok(native.events > 1000, `the native client received ${native.events} events`);
    assert.ok(Number.isFinite(pageLatency.p99) && pageLatency.p99 > 0, `page p99 ${pageLatency.p99}`);
    assert.ok(Number.isFinite(render.p99) && render.p99 >= 0, `render p99 ${render.p99}`);
    if (pageLatency.p99 <= result.bound_ms) break;
  }
  fs.writeFileSync(artifact('latency-page-vs-native.json'), `${JSON.stringify(windows, null, 2)}\n`);
  const last = windows.at(-1);
  assert.ok(last.page_p99_ms <= last.bound_ms, `in each of ${WINDOWS} windows, the page's p99 was over ` +
    `${FACTOR} x the native client's + ${SLACK_MS} ms: ${JSON.stringify(windows)}`);
  assert.deepEqual(page.errors, [], 'no uncaught errors in the page');
});
