// A gateway that refuses the upgrade before the socket opens (403 origin, 429, 503): the browser
// shows the page no status, so after a few such attempts the page says in words that the gateway
// refuses it or cannot be reached, keeps retrying, and drops the notice once a connection opens.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { freePort, launchBrowser, openPage, waitInPage } from './helpers.mjs';
import { startScriptedGateway } from './scripted-gateway.mjs';

const UNIVERSE = ['AAPL'];
let gw;
let browser;
let page;

before(async () => {
  const port = await freePort();
  gw = await startScriptedGateway({ universe: UNIVERSE, snapshot: (symbol) => ({ type: 'snapshot', symbol, seq: 1, trade: null, quote: null }), port });
  browser = await launchBrowser();
  page = await openPage(browser.context);
});

after(async () => {
  if (browser) await browser.close();
  if (gw) await gw.close();
});

const until = (what, fn, arg) => waitInPage(page, what, fn, arg, { timeout: 30000 });

test('refused before the socket opens: the page says so after a few attempts and keeps retrying', async () => {
  gw.refuseUpgrades = 503;
  await page.goto(gw.url);
  await until('the unreachable notice', () => !!document.querySelector('[data-testid=notice-unreachable]'));
  const notice = await page.textContent('[data-testid=notice-unreachable]');
  assert.match(notice, /refuses this page or cannot be reached/);
  assert.match(notice, /connection limit \(503\)/);
  assert.match(notice, /origin is not allowed \(403\)/);
  assert.equal(await page.getAttribute('[data-testid=status]', 'data-state'), 'reconnecting', 'still retrying');

  // The gateway lets the page in: the next attempt opens, and the notice goes.
  gw.refuseUpgrades = 0;
  await until('live', () => document.querySelector('[data-testid=status]').dataset.state === 'live');
  await until('notice gone', () => !document.querySelector('[data-testid=notice-unreachable]'));
  assert.deepEqual(page.errors, []);
});
