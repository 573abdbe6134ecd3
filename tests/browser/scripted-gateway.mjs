// A scripted stand-in for tickgate: serves crates/server/assets/index.html at / and speaks the
// gateway's WebSocket protocol on /ws, sending exactly what a test tells it to. It lets the tests
// drive the page through what the real gateway only does under load or in other configurations:
// gaps, conflated quotes, seq jumps, closes with any code, a refused (rate-limited) subscribe, a
// welcome that asks for authentication or says the feed is down, and a restart on the same port.
//
// The WebSocket side is the minimum of RFC 6455 a browser needs: the handshake, unmasked text
// frames out, masked frames in (text, close, ping), no fragmentation. With `deflate`, it accepts
// the browser's permessage-deflate offer without context takeover (RFC 7692): it inflates what
// the browser compresses, and sends its own messages uncompressed, as the RFC allows.

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import zlib from 'node:zlib';
import { INDEX_HTML } from './helpers.mjs';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

function frame(opcode, payload) {
  const len = payload.length;
  const head = len < 126 ? Buffer.from([0x80 | opcode, len])
    : len < 65536 ? Buffer.from([0x80 | opcode, 126, len >> 8, len & 0xff])
      : Buffer.concat([Buffer.from([0x80 | opcode, 127]), (() => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(len)); return b; })()]);
  return Buffer.concat([head, payload]);
}

class Client {
  constructor(socket, server) {
    this.socket = socket;
    this.server = server;
    this.buffer = Buffer.alloc(0);
    this.closed = false;
    socket.on('data', (data) => this.onData(data));
    socket.on('close', () => { this.closed = true; });
    socket.on('error', () => { this.closed = true; });
  }

  onData(data) {
    this.buffer = Buffer.concat([this.buffer, data]);
    for (;;) {
      const b = this.buffer;
      if (b.length < 2) return;
      const opcode = b[0] & 0x0f;
      let len = b[1] & 0x7f;
      let at = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        at = 10;
      }
      const masked = (b[1] & 0x80) !== 0;
      const mask = masked ? b.subarray(at, at + 4) : null;
      if (masked) at += 4;
      if (b.length < at + len) return;
      const payload = Buffer.from(b.subarray(at, at + len));
      if (mask) for (let i = 0; i < payload.length; i += 1) payload[i] ^= mask[i & 3];
      this.buffer = b.subarray(at + len);
      // RSV1: a message compressed with the negotiated permessage-deflate, no context takeover.
      const text = (b[0] & 0x40) !== 0
        ? zlib.inflateRawSync(Buffer.concat([payload, Buffer.from([0x00, 0x00, 0xff, 0xff])]),
          { finishFlush: zlib.constants.Z_SYNC_FLUSH })
        : payload;
      if (opcode === 0x1) this.server.onCommand(this, JSON.parse(text.toString('utf8')));
      else if (opcode === 0x9) this.socket.write(frame(0xa, payload));
      else if (opcode === 0x8) {
        if (!this.closed) this.socket.end(frame(0x8, payload.subarray(0, 2)));
        this.closed = true;
      }
    }
  }

  send(message) {
    if (this.closed) return;
    this.socket.write(frame(0x1, Buffer.from(typeof message === 'string' ? message : JSON.stringify(message))));
  }

  close(code, reason) {
    if (this.closed) return;
    const payload = Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason)]);
    this.socket.write(frame(0x8, payload));
    this.closed = true;
    setTimeout(() => this.socket.destroy(), 200);
  }
}

/**
 * Starts the scripted gateway on 127.0.0.1 (`port`, or a free one). `universe` answers
 * list_symbols and `snapshot(symbol)` the snapshot sent after each subscribe; `welcome` holds
 * fields added to every welcome. `snapshot` and `welcome` may be replaced later through the
 * returned object. While `refuseSubscribes` is above zero, each subscribe is answered with
 * a `rate_limited` error instead, and the count goes down. A symbol subscribed with `resume`
 * gets what `resume(symbol, seq)` returns (messages), when it is set, instead of its snapshot.
 * Every command received is kept in `commands`, every client in `clients`. While `deflate` is
 * true, a permessage-deflate offer is accepted. `pageHeaders` are added to the page's response.
 */
export async function startScriptedGateway({ universe, snapshot, port = 0, welcome = {}, deflate = false, pageHeaders = {} }) {
  const html = fs.readFileSync(INDEX_HTML);
  const commands = [];
  const clients = [];
  const waiters = [];
  const server = http.createServer((req, res) => {
    if (req.url === '/' || req.url === '/index.html') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store', ...pageHeaders });
      res.end(html);
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found\n');
    }
  });
  const scripted = {
    commands,
    clients,
    snapshot,
    welcome,
    refuseSubscribes: 0,
    resume: null,
    deflate,
    /** The newest client still connected. */
    get client() { return clients.filter((c) => !c.closed).at(-1); },
    onCommand(client, command) {
      commands.push(command);
      const reply = (m) => client.send(m);
      const id = command.id === undefined ? {} : { id: command.id };
      if (command.op === 'list_symbols') reply({ type: 'symbols', ...id, symbols: universe });
      if (command.op === 'subscribe' && scripted.refuseSubscribes > 0) {
        scripted.refuseSubscribes -= 1;
        reply({ type: 'error', ...id, code: 'rate_limited', message: 'too many messages; this one was not executed' });
      } else if (command.op === 'subscribe') {
        // As tickgate does: the known symbols are subscribed (each one not held yet gets a
        // snapshot; a held one is only confirmed), the unknown ones are named in an
        // unknown_symbol error.
        client.held ??= new Set();
        const after = new Map((command.resume || []).map((r) => [r.symbol, r.seq]));
        const names = [...new Set([...(command.symbols || []), ...after.keys()])];
        const known = names.filter((s) => universe.includes(s));
        const unknown = names.filter((s) => !universe.includes(s));
        if (known.length || !unknown.length) {
          reply({ type: 'subscribed', ...id, symbols: known, policy: 'conflate' });
          for (const s of known) {
            if (client.held.has(s)) continue;
            if (after.has(s) && scripted.resume) for (const m of scripted.resume(s, after.get(s))) reply(m);
            else reply(scripted.snapshot(s));
            client.held.add(s);
          }
        }
        if (unknown.length) {
          reply({ type: 'error', ...id, code: 'unknown_symbol', message: 'unknown symbols', symbols: unknown });
        }
      }
      if (command.op === 'unsubscribe') {
        for (const s of command.symbols) client.held?.delete(s);
        reply({ type: 'unsubscribed', ...id, symbols: command.symbols });
      }
      for (const w of waiters.splice(0)) w();
    },
    /** The first command from index `from` on that matches pred, once it has arrived. */
    async waitForCommand(pred, from = 0, timeout = 10000) {
      const deadline = Date.now() + timeout;
      for (;;) {
        const found = commands.slice(from).find(pred);
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`no matching command; got ${JSON.stringify(commands)}`);
        await new Promise((resolve) => { waiters.push(resolve); setTimeout(resolve, 100); });
      }
    },
    async close() {
      for (const c of clients) c.socket.destroy();
      const closed = new Promise((resolve) => server.close(resolve));
      server.closeAllConnections(); // the page's keep-alive HTTP connection too
      await closed;
    },
  };
  server.on('upgrade', (req, socket) => {
    if (req.url !== '/ws') {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
      return;
    }
    const accept = crypto.createHash('sha1').update(req.headers['sec-websocket-key'] + GUID).digest('base64');
    const offered = /permessage-deflate/i.test(req.headers['sec-websocket-extensions'] || '');
    const extensions = scripted.deflate && offered
      ? 'Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n'
      : '';
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${accept}\r\n${extensions}\r\n`);
    const client = new Client(socket, scripted);
    clients.push(client);
    client.send({
      type: 'welcome', server: 'tickgate', version: 'scripted', session: `s${clients.length}`, time: 0, ...scripted.welcome,
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  scripted.url = `http://127.0.0.1:${server.address().port}`;
  return scripted;
}
