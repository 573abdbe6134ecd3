// Shared pieces of the browser tests: the gateway process, headless Chromium, waiting with a
// useful failure (a screenshot and the gateway's log), and the artifacts folder.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const ARTIFACTS = path.join(ROOT, 'test-artifacts');
export const INDEX_HTML = path.join(ROOT, 'crates', 'server', 'assets', 'index.html');
const BINARY = process.env.TICKGATE_BIN || path.join(ROOT, 'target', 'debug', 'tickgate');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage', // containers often have a tiny /dev/shm
];

// Gateways still running when this process exits (a failed or cancelled test) go with it.
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A port that was free a moment ago: bind port 0, read it, let it go. */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * Starts target/debug/tickgate on 127.0.0.1:port and waits until /healthz answers. Returns
 * { port, url, log(), stop() }; stop() sends SIGTERM and waits for the process to exit.
 */
export async function startGateway(port, extraArgs = []) {
  let lastError;
  // A port just let go of may take a moment to bind again.
  for (let attempt = 0; attempt < 5; attempt += 1) {
    try {
      return await startGatewayOnce(port, extraArgs);
    } catch (e) {
      lastError = e;
      await sleep(300);
    }
  }
  throw lastError;
}

async function startGatewayOnce(port, extraArgs) {
  if (!fs.existsSync(BINARY)) throw new Error(`${BINARY} is missing: run cargo build -p tickgate`);
  const args = ['--listen', `127.0.0.1:${port}`, '--reactors', '1', '--log-level', 'warn', ...extraArgs];
  const child = spawn(BINARY, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  child.once('exit', () => running.delete(child));
  let output = '';
  child.stdout.on('data', (d) => { output += d; });
  child.stderr.on('data', (d) => { output += d; });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let gone = null;
  exited.then((how) => { gone = how; });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20000;
  for (;;) {
    if (gone) throw new Error(`tickgate exited (${JSON.stringify(gone)}) before it served /healthz:\n${output}`);
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) break;
    } catch (_) { /* not listening yet */ }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`tickgate did not answer /healthz within 20 s:\n${output}`);
    }
    await sleep(100);
  }
  return {
    port,
    url,
    child,
    log: () => output,
    exited,
    async stop() {
      if (gone) return gone;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
      const how = await exited;
      clearTimeout(timer);
      return how;
    },
  };
}

/** Headless Chromium with a fresh profile in a temporary folder; close() removes it. */
export async function launchBrowser() {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tickgate-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 800 },
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      fs.rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/** A page that records its uncaught errors and console errors. */
export async function openPage(context) {
  const page = context.pages()[0] || (await context.newPage());
  page.errors = [];
  page.consoleErrors = [];
  page.on('pageerror', (e) => page.errors.push(String(e && e.stack || e)));
  page.on('console', (m) => {
    if (m.type() === 'error') page.consoleErrors.push(m.text());
  });
  return page;
}

export function artifact(name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  return path.join(ARTIFACTS, name);
}

/**
 * Waits until fn(arg) is truthy in the page. On a timeout it saves a screenshot as
 * test-artifacts/failed-<what>.png and says what it was waiting for, with the gateway's log.
 */
export async function waitInPage(page, what, fn, arg, { timeout = 15000, gateway } = {}) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    const shot = artifact(`failed-${what.replace(/[^a-z0-9]+/gi, '-')}.png`);
    await page.screenshot({ path: shot }).catch(() => {});
    const status = await page.textContent('[data-testid=status]').catch(() => '?');
    throw new Error(
      `timed out after ${timeout} ms waiting for: ${what}\n  status: ${status}\n  screenshot: ${shot}\n` +
      `  page errors: ${JSON.stringify(page.errors)}\n` +
      (gateway ? `  gateway log:\n${gateway.log().slice(-2000)}` : '') + `\n  (${e.message.split('\n')[0]})`,
    );
  }
}

/** Symbols of the rows shown, in order. */
export function rowSymbols(page) {
  return page.$$eval('tr[data-testid^="row-"]', (rows) => rows.map((r) => r.dataset.symbol));
}
