// The dashboard against a real tickgate with authentication on (HS256 JWTs and an API key, as
// docs/SECURITY.md configures them): it asks for a token, takes one from a link's fragment, sends
// it in the auth command, shows the user and the entitlements, and says in words what a refused
// or expired token means, without reconnecting in a loop.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { artifact, freePort, launchBrowser, openPage, sleep, startGateway, waitInPage } from './helpers.mjs';

const SECRET = 'a-browser-test-secret-that-is-long-enough-for-hs256';
const API_KEY = 'desk-one-api-key-0123456789';

let gateway;
let browser;
let page;
let configDir;

/** An HS256 JWT, as the gateway's issuer would make it. */
function jwt(sub, expiresInS, symbols, secret = SECRET) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + expiresInS, symbols })}`;
  return `${body}.${crypto.createHmac('sha256', secret).update(body).digest('base64url')}`;
}

before(async () => {
  configDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tickgate-signin-'));
  const config = path.join(configDir, 'auth.toml');
  fs.writeFileSync(config, [
    '[auth]',
    'enabled = true',
    'jwt_algorithm = "HS256"',
    `jwt_secret = "${SECRET}"`,
    `api_keys = [{ key = "${API_KEY}", user = "desk-1", symbols = ["AAPL", "MSFT"], max_connections = 1 }]`,
    '',
  ].join('\n'));
  gateway = await startGateway(await freePort(), ['--config', config]);
  browser = await launchBrowser();
  page = await openPage(browser.context);
});

after(async () => {
  if (browser) await browser.close();
  if (gateway) await gateway.stop();
  if (configDir) fs.rmSync(configDir, { recursive: true, force: true });
});

/** WebSocket upgrades the gateway has made so far (from its /metrics). */
async function upgrades() {
  const text = await (await fetch(`${gateway.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('tickgate_connections_upgraded_total'));
  return Number(line.split(/\s+/)[1]);
}

function until(what, fn, arg, p = page) {
  return waitInPage(p, what, fn, arg, { timeout: 20000, gateway });
}
const phaseIs = (expected, p = page) => until(`status ${expected}`, (expected) =>
  document.querySelector('[data-testid=status]').dataset.state === expected, expected, p);
const text = (id, p = page) => p.textContent(`[data-testid="${id}"]`);
const signinShown = (p = page) => until('the sign-in form', () => !document.querySelector('[data-testid=signin]').hidden, null, p);
function rowState(symbol, expected, p = page) {
  return until(`row ${symbol} ${expected}`, ([symbol, expected]) => {
    const row = document.querySelector(`[data-testid="row-${symbol}"]`);
    return row?.dataset.state === expected && (expected !== 'live' || !!document.querySelector(`[data-testid="price-${symbol}"]`).dataset.value);
  }, [symbol, expected], p);
}

/** No new connection for a while: the page is not reconnecting on its own. */
async function staysClosed(p = page) {
  const before = await upgrades();
  await sleep(3000); // past the first steps of the reconnect backoff
  assert.equal(await upgrades(), before, 'no new connection');
  assert.equal(await p.getAttribute('[data-testid=status]', 'data-state'), 'closed');
}

test('without a token the page asks for one, and does not reconnect', async () => {
  await page.goto(gateway.url);
  await signinShown();
  await phaseIs('closed');
  assert.match(await text('signin-why'), /requires you to sign in with a token/);
  assert.match(await text('status'), /sign in/);
  assert.equal(await page.evaluate(() => document.activeElement.dataset.testid), 'token-input');
  await staysClosed();
  await page.screenshot({ path: artifact('dashboard-signin.png') });
});

test('a JWT from the form signs in: user, entitlements and expiry shown; other symbols marked not entitled', async () => {
  await page.fill('[data-testid=token-input]', jwt('alice', 600, ['AAPL', 'BTC-*']));
  await page.click('[data-testid=signin-button]');
  await phaseIs('live');
  await rowState('AAPL', 'live');
  await rowState('BTC-USD', 'live');
  await rowState('MSFT', 'denied');
  assert.equal(await page.textContent('[data-testid="row-MSFT"] .badge'), 'denied');
  assert.match(await page.getAttribute('[data-testid="row-MSFT"] .badge', 'title'), /entitlements of the signed-in user/);
  assert.equal(await page.getAttribute('[data-testid=account]', 'data-user'), 'alice');
  assert.match(await text('account'), /^alice · AAPL, BTC-\* · expires in (9|10) min$/);
  assert.match(await text('notice-entitlement'), /MSFT.*outside what alice may receive \(AAPL, BTC-\*\)/);
  assert.equal(await page.isHidden('[data-testid=signin]'), true);
  // The page says before adding a symbol the token does not cover.
  await page.fill('[data-testid=add-input]', 'JPM');
  await page.keyboard.press('Enter');
  assert.match(await text('add-message'), /JPM is outside what alice may receive/);
  // The token went in the auth command, not in the URL: nothing of it is in the address.
  assert.doesNotMatch(page.url(), /token/);
  await page.screenshot({ path: artifact('dashboard-signed-in.png') });
});

test('a fresh token while connected: a new connection signs in with it, and the rows resume', async () => {
  const epoch = Number(await page.getAttribute('[data-testid=status]', 'data-epoch'));
  const before = await upgrades();
  await page.evaluate(() => { location.hash = ''; });
  await page.evaluate((token) => { location.hash = `token=${token}`; }, jwt('alice', 1200, ['AAPL', 'MSFT']));
  await until('the new account', () => /^alice · AAPL, MSFT · expires in 20 min$/.test(
    document.querySelector('[data-testid=account]').textContent));
  assert.equal(Number(await page.getAttribute('[data-testid=status]', 'data-epoch')), epoch + 1);
  assert.equal(await upgrades(), before + 1, 'one new connection');
  await rowState('MSFT', 'live');
  await rowState('AAPL', 'live');
  // AAPL picked up where it was, on the old connection's seq.
  await until('the resume told', () =>
    /Resumed/.test(document.querySelector('[data-testid=notice-resume]')?.textContent || ''));
  assert.equal(await page.isHidden('[data-testid=notice-connection]').catch(() => true), true, 'no "connection lost"');
  assert.doesNotMatch(page.url(), /token/);
});

test('a refused token is explained in words, forgotten, and not retried', async () => {
  await page.click('[data-testid=signout]');
  await phaseIs('closed');
  await signinShown();
  const forged = jwt('mallory', 600, ['*'], 'not-the-gateway-secret-but-just-as-long-as-it');
  await page.fill('[data-testid=token-input]', forged);
  await page.click('[data-testid=signin-button]');
  await until('the refusal explained', () =>
    /does not accept this token \(InvalidSignature\)/.test(document.querySelector('[data-testid=signin-why]').textContent)
    && !document.querySelector('[data-testid=signin]').hidden);
  assert.match(await text('notice-refused'), /does not accept this token.*1008 authentication failed/);
  assert.equal(await page.isHidden('[data-testid=account-pill]'), true);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('tickgate.token')), null, 'the refused token is forgotten');
  await staysClosed();
});

test('a link with #token= signs in, leaves the address bar, and survives a reload', async () => {
  const other = await browser.context.newPage();
  other.errors = [];
  other.on('pageerror', (e) => other.errors.push(String(e)));
  await other.goto(`${gateway.url}/#token=${encodeURIComponent(jwt('bob', 3 * 3600, ['*']))}`);
  await phaseIs('live', other);
  await rowState('MSFT', 'live', other);
  assert.match(await text('account', other), /^bob · every symbol · expires in 3 h$/);
  assert.doesNotMatch(other.url(), /token/, 'the token left the address bar');
  await other.reload();
  await phaseIs('live', other);
  await rowState('NVDA', 'live', other);
  assert.match(await text('account', other), /^bob/);
  assert.deepEqual(other.errors, []);
  await other.close();
});

test('an expiring token: a warning first, then the sign-in expired in words, and no reconnect', async () => {
  await page.fill('[data-testid=token-input]', jwt('carol', 5, ['AAPL']));
  await page.click('[data-testid=signin-button]');
  await phaseIs('live');
  await rowState('AAPL', 'live');
  await until('the expiry warning', () => /Sign-in expiring:/.test(document.querySelector('[data-testid=notice-expiry]')?.textContent || ''));
  await until('the expiry said', () =>
    /sign-in expired/.test(document.querySelector('[data-testid=signin-why]').textContent)
    && !document.querySelector('[data-testid=signin]').hidden);
  assert.match(await text('close-info'), /^1008 token expired$/);
  assert.match(await text('notice-refused'), /your sign-in expired: paste a fresh token to reconnect \(1008 token expired\)/);
  await rowState('AAPL', 'offline');
  await staysClosed();
});

test('an API key: its user, no expiry; its connection limit explained in a second tab', async () => {
  await page.fill('[data-testid=token-input]', API_KEY);
  await page.click('[data-testid=signin-button]');
  await phaseIs('live');
  await rowState('MSFT', 'live');
  await rowState('NVDA', 'denied');
  assert.match(await text('account'), /^desk-1 · the symbols of this API key · no expiry$/);

  const second = await browser.context.newPage();
  await second.goto(`${gateway.url}/#token=${API_KEY}`);
  await until('the limit explained', () =>
    /already holds as many connections as its token allows/.test(document.querySelector('[data-testid=signin-why]').textContent),
  null, second);
  assert.equal(await second.getAttribute('[data-testid=status]', 'data-state'), 'closed');
  await staysClosed(second);
  await second.close();
  // The first tab is untouched.
  assert.equal(await page.getAttribute('[data-testid=status]', 'data-state'), 'live');
  assert.deepEqual(page.errors, [], 'no uncaught errors in the page');
});
