import { existsSync, promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config.js';
import { serve, type RunningServer } from '../../src/server/serve.js';
import { tempDir } from '../helpers/tmp.js';

/**
 * A real daemon (serve(): pid file, store claim, config file) on a real port, spoken to through raw
 * sockets so that nothing between the test and the server fixes up a hostile request.
 */

const ADMIN = 'hostile-admin-token-0123456789abcdef';
const LIMITS = { headersTimeout: 1000, requestTimeout: 2500, keepAliveTimeout: 800, connectionTimeout: 1000, maxUrlLength: 8192, maxHeaderSize: 16384 };
/** Slack for a loaded 2-core machine: closes must come after the limit and well before a client would give up. */
const SLACK_MS = 4000;

interface RawResponse {
  status: number;
  head: string;
  text: string;
  body: { error?: { code?: string; message?: string } } & Record<string, unknown>;
  /** Milliseconds from connect until the server closed the socket. */
  closedAfterMs: number;
}

let dir: string;
let cleanup: () => Promise<void>;
let server: RunningServer;
let port: number;

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('chatmem-hostile-'));
  await fsp.writeFile(path.join(dir, 'chatmem.config.json'), JSON.stringify({ server: LIMITS }));
  const config = await resolveConfig({ cwd: dir, store: `sqlite:${path.join(dir, 'data', 'storage', 'memory.db')}`, env: {} });
  expect(config.server.limits).toEqual(LIMITS);
  server = await serve(config, { port: 0, logger: false, handleSignals: false, env: { CHATMEM_ADMIN_TOKEN: ADMIN }, log: () => undefined });
  port = Number(new URL(server.url).port);
});

afterAll(async () => {
  await server.close();
  await cleanup();
});

function parse(buf: Buffer, closedAfterMs: number): RawResponse {
  const text = buf.toString('utf8');
  const end = text.indexOf('\r\n\r\n');
  const head = end < 0 ? text : text.slice(0, end);
  const rest = end < 0 ? '' : text.slice(end + 4);
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
  let body: RawResponse['body'] = {};
  try {
    body = JSON.parse(rest) as RawResponse['body'];
  } catch {
    // not JSON: the assertions on body say so
  }
  return { status, head, text: rest, body, closedAfterMs };
}

/**
 * Sends `chunks` (with `gapMs` between them) on a fresh socket and collects everything until the
 * server closes it, or `giveUpMs` passes (then the socket is destroyed and closedAfterMs is Infinity).
 */
function raw(chunks: (string | Buffer)[], o: { gapMs?: number; giveUpMs?: number; endAfter?: boolean } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const sock = net.connect(port, '127.0.0.1');
    const parts: Buffer[] = [];
    let done = false;
    const finish = (closedAfterMs: number) => {
      if (done) return;
      done = true;
      clearTimeout(giveUp);
      resolve(parse(Buffer.concat(parts), closedAfterMs));
    };
    const giveUp = setTimeout(() => {
      sock.destroy();
      finish(Infinity);
    }, o.giveUpMs ?? 20_000);
    sock.on('data', (d) => parts.push(d));
    sock.on('close', () => finish(Date.now() - t0));
    sock.on('error', (err: Error & { code?: string }) => {
      // The server may reset a socket it closes while we still write (slow-loris): that is a close.
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') finish(Date.now() - t0);
      else if (!done) reject(err);
    });
    sock.on('connect', () => {
      void (async () => {
        for (const [i, c] of chunks.entries()) {
          if (i > 0 && o.gapMs) await new Promise((r) => setTimeout(r, o.gapMs));
          if (sock.destroyed || done) return;
          sock.write(c);
        }
        if (o.endAfter) sock.end();
      })();
    });
  });
}

/** One request with Connection: close; `body` as given (string or bytes). */
function req(method: string, target: string, o: { headers?: Record<string, string>; body?: string | Buffer; token?: string | null } = {}): Promise<RawResponse> {
  const headers: Record<string, string> = { host: `127.0.0.1:${port}`, connection: 'close', ...o.headers };
  if (o.token !== null) headers.authorization ??= `Bearer ${o.token ?? ADMIN}`;
  if (o.body !== undefined) {
    headers['content-type'] ??= 'application/json';
    headers['content-length'] ??= String(Buffer.byteLength(o.body));
  }
  const head = `${method} ${target} HTTP/1.1\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}`)
    .join('\r\n')}\r\n\r\n`;
  return raw(o.body === undefined ? [head] : [Buffer.concat([Buffer.from(head, 'latin1'), Buffer.from(o.body)])]);
}

function expectError(r: RawResponse, status: number, code: string): void {
  expect({ status: r.status, code: r.body.error?.code, hasMessage: typeof r.body.error?.message === 'string' }, `${r.head}\n${r.text}`).toEqual({
    status,
    code,
    hasMessage: true,
  });
}

describe('hostile HTTP against a listening daemon', () => {
  it('user ids: too long, control characters, dot segments and encoded slashes', async () => {
    expectError(await req('GET', `/v1/users/${'a'.repeat(257)}`), 400, 'E_USER_ID');
    expectError(await req('PUT', `/v1/users/${'a'.repeat(257)}`, { body: '{}' }), 400, 'E_USER_ID');
    expectError(await req('GET', `/v1/users/${'a'.repeat(5000)}`), 414, 'E_URI_TOO_LONG');
    for (const c of ['%00', '%01', '%0A', '%1F', '%7F']) expectError(await req('PUT', `/v1/users/u${c}x`, { body: '{}' }), 400, 'E_USER_ID');
    // A raw control character in the request line never reaches a route.
    expectError(await req('GET', '/v1/users/u\x01x'), 400, 'E_BAD_REQUEST');

    // ".." is an id like any other: stored under that exact key, not a path.
    expect((await req('PUT', '/v1/users/..', { body: '{"name":"dots"}' })).status).toBe(200);
    const dots = await req('GET', '/v1/users/%2E%2E');
    expect([dots.status, dots.body.user_id, dots.body.name]).toEqual([200, '..', 'dots']);
    // A dot segment does not climb into the admin plane: the path is matched as sent.
    const climb = await req('GET', '/v1/users/../admin/stats', { token: null });
    expect(climb.status).toBe(404);
    expect(climb.body.users).toBeUndefined();

    // Encoded slashes stay inside the id; nothing is created outside the data directory.
    const id = '../../../../tmp/chatmem-escape';
    expect((await req('PUT', `/v1/users/${encodeURIComponent(id)}`, { body: '{"name":"slash"}' })).status).toBe(200);
    const back = await req('GET', `/v1/users/${encodeURIComponent(id)}`);
    expect([back.status, back.body.user_id]).toEqual([200, id]);
    expect(existsSync('/tmp/chatmem-escape')).toBe(false);
    const list = await req('GET', '/v1/users?limit=1000');
    expect((list.body.items as { user_id: string }[]).map((u) => u.user_id).sort()).toEqual(['..', id].sort());
  });

  it('flag and slot keys: prototype names are plain keys, empty keys are refused', async () => {
    const r = await req('PUT', '/v1/users/keys/flags/__proto__', { body: '{"value":{"polluted":true}}' });
    expect(r.status).toBe(200);
    expect(Object.getOwnPropertyNames(r.body.flags)).toEqual(['__proto__']);
    const c = await req('PUT', '/v1/users/keys/slots/constructor', { body: '{"value":"x"}' });
    expect((c.body.slots as Record<string, unknown>).constructor).toBe('x');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    const other = await req('PUT', '/v1/users/keys2', { body: '{}' });
    expect(Object.keys(other.body.flags as object)).toEqual([]);
    const slash = await req('PUT', '/v1/users/keys/flags/a%2Fb', { body: '{"value":1}' });
    expect((slash.body.flags as Record<string, unknown>)['a/b']).toBe(1);
    expect((await req('PUT', '/v1/users/keys/flags/', { body: '{"value":1}' })).status).toBeGreaterThanOrEqual(400);
  });

  it('huge headers get 431, a huge URL 414, bad percent-encoding 400, all in the project shape', async () => {
    expectError(await req('GET', '/healthz', { headers: { 'x-big': 'a'.repeat(20_000) } }), 431, 'E_HEADERS_TOO_LARGE');
    expectError(await req('GET', '/healthz', { headers: Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`x-h${i}`, 'v'.repeat(10)])) }), 431, 'E_HEADERS_TOO_LARGE');
    expectError(await req('GET', `/v1/search?q=${'a'.repeat(9000)}`), 414, 'E_URI_TOO_LONG');
    // Past the header limit the request line itself overflows: 431, still our shape.
    expectError(await req('GET', `/v1/search?q=${'a'.repeat(20_000)}`), 431, 'E_HEADERS_TOO_LARGE');
    for (const bad of ['/v1/users/%E0%A4%A', '/v1/users/%ZZ', '/v1/users/%FF', '/v1/users/a%']) expectError(await req('GET', bad), 400, 'E_BAD_URL');
    expectError(await req('GET', '/nowhere'), 404, 'E_NOT_FOUND');
  });

  it('Content-Length that does not match the body', async () => {
    // Fewer bytes than announced, then the client stops sending: the request never completes, 408.
    const short = await raw([`PUT /v1/users/cl1 HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${ADMIN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"name":"x"}`]);
    expectError(short, 408, 'E_REQUEST_TIMEOUT');
    expect(short.closedAfterMs).toBeLessThan(LIMITS.requestTimeout + SLACK_MS);
    // Fewer bytes, then a half-close.
    const halfClosed = await raw([`PUT /v1/users/cl2 HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${ADMIN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"name":"x"}`], { endAfter: true });
    if (halfClosed.status !== 0) expect(halfClosed.body.error?.code).toMatch(/^E_(BAD_REQUEST|REQUEST_TIMEOUT)$/);
    // More bytes than announced: the first 2 bytes are the body, the rest is not a request.
    const long = await raw([`PUT /v1/users/cl3 HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${ADMIN}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{"name":"x"}`]);
    // The parser fails on the tail before the first answer is out; whichever answers, they are in our shape.
    expect(long.status).toBe(400);
    expect(long.text).toMatch(/^\{"error":\{"code":"E_(BAD_JSON|BAD_REQUEST)"/);
    // A negative or non-numeric length is refused by the parser.
    expectError(await raw([`PUT /v1/users/cl4 HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: -1\r\n\r\n`]), 400, 'E_BAD_REQUEST');
    for (const id of ['cl1', 'cl2', 'cl3', 'cl4']) expect((await req('GET', `/v1/users/${id}`)).status).toBe(404);
  });

  it('bodies must be UTF-8 JSON: invalid bytes and other charsets are refused, nothing is stored', async () => {
    const bad: Buffer[] = [
      Buffer.from([0x7b, 0x22, 0x6e, 0x61, 0x6d, 0x65, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]), // {"name":"\xff"}
      Buffer.concat([Buffer.from('{"name":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')]), // overlong "/"
      Buffer.concat([Buffer.from('{"name":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]), // a UTF-16 surrogate
      Buffer.concat([Buffer.from('{"name":"'), Buffer.from([0xe2, 0x82]), Buffer.from('"}')]), // truncated sequence
    ];
    for (const body of bad) expectError(await req('PUT', '/v1/users/enc', { body }), 400, 'E_BAD_ENCODING');
    const utf16 = Buffer.from('{"name":"Budi"}', 'utf16le');
    for (const charset of ['utf-16', 'UTF-16LE', 'latin1', 'iso-8859-1', '']) {
      expectError(await req('PUT', '/v1/users/enc', { body: utf16, headers: { 'content-type': `application/json; charset=${charset}` } }), 415, 'E_MEDIA_TYPE');
    }
    expectError(await req('PUT', '/v1/users/enc', { body: '{"name":"x"}', headers: { 'content-type': 'text/plain' } }), 415, 'E_MEDIA_TYPE');
    expect((await req('GET', '/v1/users/enc')).status).toBe(404);
    // The real thing passes, with and without a charset, and keeps every character.
    const ok = await req('PUT', '/v1/users/enc', { body: '{"name":"Sütçü 👋 ไทย"}', headers: { 'content-type': 'application/json; charset=UTF-8' } });
    expect([ok.status, ok.body.name]).toEqual([200, 'Sütçü 👋 ไทย']);
    const hist = await req('POST', '/v1/users/enc/history', { body: '{"role":"user","text":"halo"}' });
    expect(hist.status).toBe(201);
    expect(JSON.stringify(hist.body)).not.toContain('\ufffd');
  });

  it('tokens: missing, wrong, a prefix, the right one with a tail, in the query', async () => {
    expectError(await req('GET', '/v1/admin/stats', { token: null }), 401, 'E_AUTH');
    for (const wrong of ['x', ADMIN.slice(0, -1), ADMIN.slice(0, 16), ADMIN + 'x', ADMIN.toUpperCase(), ` ${ADMIN}x`]) {
      expectError(await req('GET', '/v1/admin/stats', { headers: { authorization: `Bearer ${wrong}` } }), 401, 'E_AUTH');
    }
    expectError(await req('GET', '/v1/admin/stats', { headers: { authorization: `Basic ${Buffer.from('admin:' + ADMIN).toString('base64')}` } }), 401, 'E_AUTH');
    for (const q of ['token', 'access_token', 'api_key', 'Authorization']) {
      expectError(await req('GET', `/v1/admin/stats?${q}=${ADMIN}`, { token: null }), 400, 'E_TOKEN_IN_QUERY');
    }
    const ok = await req('GET', '/v1/admin/stats');
    expect(ok.status).toBe(200);
  });

  it('Host header: only loopback names without a data token (DNS rebinding)', async () => {
    for (const host of ['evil.example', 'evil.example:80', '127.0.0.1.evil.example', 'localhost.evil.example', '10.0.0.1', '']) {
      expectError(await req('GET', '/v1/stats', { headers: { host } }), 403, 'E_HOST');
    }
    // No Host at all (Node would answer an empty 400 of its own).
    expectError(await raw([`GET /v1/stats HTTP/1.1\r\nconnection: close\r\n\r\n`]), 403, 'E_HOST');
    for (const host of ['localhost', `localhost:${port}`, `127.0.0.1:${port}`, '[::1]:1']) expect((await req('GET', '/v1/stats', { headers: { host } })).status).toBe(200);
  });

  it('slow-loris: headers trickled one byte at a time get 408 and a closed socket after server.headersTimeout', async () => {
    const head = `GET /v1/stats HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pad: ${'p'.repeat(200)}\r\n\r\n`;
    // At 50 ms a byte this would take over 10 s; the server must cut it near headersTimeout.
    const r = await raw([...head], { gapMs: 50 });
    expectError(r, 408, 'E_REQUEST_TIMEOUT');
    expect(r.closedAfterMs).toBeGreaterThanOrEqual(LIMITS.headersTimeout - 100);
    expect(r.closedAfterMs).toBeLessThan(LIMITS.headersTimeout + SLACK_MS);
  });

  it('a body trickled past server.requestTimeout gets 408; one trickled slower than the connection timeout but in time passes', async () => {
    const head = `PUT /v1/users/trickle HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${ADMIN}\r\ncontent-type: application/json\r\nconnection: close\r\n`;
    const body = '{"name":"slow body ..........................................................."}';
    const slow = await raw([head + `content-length: ${body.length}\r\n\r\n`, ...body], { gapMs: 100 });
    expectError(slow, 408, 'E_REQUEST_TIMEOUT');
    expect(slow.closedAfterMs).toBeLessThan(LIMITS.requestTimeout + SLACK_MS);
    // The connection clock (1 s) stops once the request began: a 1.5 s body within the 2.5 s request clock is fine.
    const small = '{"name":"ok"}';
    const inTime = await raw([head + `content-length: ${small.length}\r\n\r\n` + small.slice(0, 5), small.slice(5)], { gapMs: 1500 });
    expect([inTime.status, inTime.body.name]).toEqual([200, 'ok']);
  });

  it('idle sockets: silent connections and idle keep-alive sockets are closed after their timeouts', async () => {
    const n = 100;
    const silent = await Promise.all(Array.from({ length: n }, () => raw([], { giveUpMs: LIMITS.connectionTimeout + SLACK_MS * 2 })));
    const times = silent.map((r) => r.closedAfterMs);
    expect(times.filter((t) => t === Infinity)).toHaveLength(0);
    expect(Math.min(...times)).toBeGreaterThanOrEqual(LIMITS.connectionTimeout - 100);
    expect(Math.max(...times)).toBeLessThan(LIMITS.connectionTimeout + SLACK_MS * 2);

    // A kept-alive socket after one answer: closed after keepAliveTimeout, not held.
    const t0 = Date.now();
    const ka = await raw([`GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n`], { giveUpMs: LIMITS.keepAliveTimeout + SLACK_MS * 2 });
    expect(ka.status).toBe(200);
    expect(ka.closedAfterMs).toBeGreaterThanOrEqual(LIMITS.keepAliveTimeout - 100);
    expect(Date.now() - t0).toBeLessThan(LIMITS.keepAliveTimeout + SLACK_MS * 2);
  });
});
