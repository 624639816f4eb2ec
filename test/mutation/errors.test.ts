// The promises of src/server/plugins/errors.ts: every error the daemon answers, from a route, from
// Fastify, or from Node before Fastify sees the request, comes as `{ error: { code, message } }` with its
// code's status; an internal failure says nothing but "see the log", and the log holds it without
// passwords. Over a real daemon and raw sockets.
import { once } from 'node:events';
import * as net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openContext, type Context } from '../../src/context.js';
import { StoreError } from '../../src/errors.js';
import { buildApp } from '../../src/server/app.js';
import { classify, frameworkError } from '../../src/server/plugins/errors.js';
import { ADMIN_TOKEN, tempConfig } from '../server/helpers.js';

describe('classify', () => {
  it('a chatmem error keeps its code and message, with its code status; only a 500 is internal', () => {
    expect(classify(new StoreError('E_NOT_FOUND', 'no user x'))).toEqual({ status: 404, code: 'E_NOT_FOUND', message: 'no user x', internal: false });
    expect(classify(new StoreError('E_STORE_WRITE', 'cannot write /x: EIO'))).toEqual({ status: 500, code: 'E_STORE_WRITE', message: 'cannot write /x: EIO', internal: true });
  });

  it("maps Fastify's own caller errors to our codes and messages", () => {
    const f = (code: string) => classify(Object.assign(new Error(`fastify says ${code}`), { code, statusCode: 400 }));
    expect(f('FST_ERR_CTP_BODY_TOO_LARGE')).toEqual({ status: 413, code: 'E_BODY_LIMIT', message: 'request body is larger than the limit (server.bodyLimit)', internal: false });
    expect(f('FST_ERR_CTP_INVALID_JSON_BODY')).toEqual({ status: 400, code: 'E_BAD_JSON', message: 'request body is not valid JSON', internal: false });
    expect(f('FST_ERR_CTP_EMPTY_JSON_BODY')).toEqual({ status: 400, code: 'E_BAD_JSON', message: 'request body is empty but Content-Type is application/json', internal: false });
    expect(f('FST_ERR_CTP_INVALID_MEDIA_TYPE')).toEqual({ status: 415, code: 'E_MEDIA_TYPE', message: 'request bodies must be JSON (Content-Type: application/json)', internal: false });
    expect(f('FST_ERR_CTP_INVALID_CONTENT_LENGTH')).toEqual({ status: 400, code: 'E_BAD_REQUEST', message: 'request body size does not match Content-Length', internal: false });
  });

  it('another error with a 4xx statusCode is a bad request with its message; anything else is internal and says nothing', () => {
    const internal = { status: 500, code: 'E_INTERNAL', message: 'internal error; see the daemon log', internal: true };
    expect(classify(Object.assign(new Error('querystring too deep'), { statusCode: 400 }))).toEqual({ status: 400, code: 'E_BAD_REQUEST', message: 'querystring too deep', internal: false });
    expect(classify(Object.assign(new Error('gone'), { statusCode: 499, code: 'FST_OTHER' }))).toEqual({ status: 499, code: 'E_BAD_REQUEST', message: 'gone', internal: false });
    expect(classify({ statusCode: 404 })).toEqual({ status: 404, code: 'E_BAD_REQUEST', message: 'bad request', internal: false });
    expect(classify({ statusCode: '405' })).toMatchObject({ status: 405, code: 'E_BAD_REQUEST' });
    for (const err of [
      Object.assign(new Error('secret detail'), { statusCode: 500 }),
      Object.assign(new Error('secret detail'), { statusCode: 399 }),
      Object.assign(new Error('secret detail'), { statusCode: 500, code: 'FST_ERR_CTP_BODY_TOO_LARGE_NOT' }),
      new Error('secret detail'),
      { code: 1, statusCode: 'x' },
      'a string',
      null,
      undefined,
    ]) {
      expect(classify(err)).toEqual(internal);
    }
    // A code that is no string is read as one.
    expect(classify({ code: { toString: () => 'FST_ERR_CTP_INVALID_JSON_BODY' } })).toMatchObject({ code: 'E_BAD_JSON' });
  });
});

describe('frameworkError', () => {
  it('answers in the project shape, with a generic answer for framework errors it does not name', () => {
    const sent: { status?: number; body?: unknown }[] = [];
    const reply = {
      status(n: number) {
        sent.push({ status: n });
        return this;
      },
      send(body: unknown) {
        const last = sent.at(-1);
        if (last) last.body = body;
        return this;
      },
    };
    frameworkError(Object.assign(new Error('x'), { code: 'FST_ERR_SOMETHING_ELSE' }), {} as never, reply as never);
    expect(sent).toEqual([{ status: 400, body: { error: { code: 'E_BAD_REQUEST', message: 'bad request' } } }]);
  });
});

interface Served {
  port: number;
  ctx: Context;
  logs: { level: number; msg: string; [k: string]: unknown }[];
  close(): Promise<void>;
}

/** Raw bytes to the daemon; resolves with everything it sent back once it closes the connection. */
function raw(port: number, chunks: string[], o: { gapMs?: number } = {}): Promise<{ text: string; status: number; body: unknown; head: string }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    sock.on('data', (c: Buffer) => got.push(c));
    sock.on('error', reject);
    sock.on('close', () => {
      const text = Buffer.concat(got).toString('utf8');
      const sep = text.indexOf('\r\n\r\n');
      const head = sep < 0 ? text : text.slice(0, sep);
      const bodyText = sep < 0 ? '' : text.slice(sep + 4);
      let body: unknown = bodyText;
      try {
        body = JSON.parse(bodyText);
      } catch {
        // not JSON: kept as text
      }
      resolve({ text, head, status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), body });
    });
    sock.on('connect', () => {
      void (async () => {
        for (const c of chunks) {
          sock.write(c);
          if (o.gapMs) await new Promise((r) => setTimeout(r, o.gapMs));
        }
      })();
    });
  });
}

describe('errors over a real daemon', () => {
  let s: Served;
  beforeAll(async () => {
    const t = await tempConfig('sqlite');
    const ctx = await openContext(t.config, { role: 'daemon' });
    const logs: Served['logs'] = [];
    const stream = { write: (l: string) => void logs.push(JSON.parse(l) as Served['logs'][number]) };
    const app = await buildApp({
      ctx,
      adminToken: ADMIN_TOKEN,
      logger: { level: 'info', stream },
      bodyLimit: 1000,
      limits: { headersTimeout: 400, requestTimeout: 400 },
    });
    // A route that fails the way a bug would: a plain Error whose message and stack quote a store URL.
    app.get('/test/boom', async () => {
      throw Object.assign(new Error('cannot reach postgres://bot:hunter2@db.internal/chat'), { code: 'ECONNREFUSED' });
    });
    // A chatmem error whose message quotes a store URL with its password (E_STORE_URL: a 500 that keeps its message for the operator).
    app.get('/test/bad-url', async () => {
      throw new StoreError('E_STORE_URL', 'unknown store URL "postgres://bot:hunter2@db/x?sslpassword=p4ss"');
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const a = app.server.address();
    s = {
      port: typeof a === 'object' && a ? a.port : 0,
      ctx,
      logs,
      close: async () => {
        await app.close();
        await ctx.close();
        await t.cleanup();
      },
    };
  });
  afterAll(async () => s.close());

  const request = (method: string, p: string, headers: Record<string, string> = {}, body = '') =>
    `${method} ${p} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n${Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('')}${body === '' ? '' : `content-length: ${Buffer.byteLength(body)}\r\n`}\r\n${body}`;

  it('an internal failure answers only "see the log"; the log holds its code, message and stack without the password, and the route', async () => {
    const before = s.logs.length;
    const r = await raw(s.port, [request('GET', '/test/boom')]);
    expect(r.status).toBe(500);
    expect(r.body).toEqual({ error: { code: 'E_INTERNAL', message: 'internal error; see the daemon log' } });
    const logged = s.logs.slice(before).filter((l) => l.msg === 'request failed');
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: 50, route: '/test/boom' });
    const err = logged[0]?.err as { code: string; message: string; stack: string };
    expect(err.code).toBe('ECONNREFUSED');
    expect(err.message).toBe('cannot reach postgres://bot:***@db.internal/chat');
    expect(err.stack).toContain('cannot reach postgres://bot:***@db.internal/chat');
    expect(err.stack).toContain('errors.test.ts');
    expect(JSON.stringify(s.logs)).not.toContain('hunter2');
  });

  it('a caller error is answered with its code and message and not logged as a failure', async () => {
    const before = s.logs.length;
    const r = await raw(s.port, [request('GET', `/v1/users/${'9'.repeat(300)}`)]);
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: { code: 'E_USER_ID' } });
    expect(s.logs.slice(before).filter((l) => l.msg === 'request failed')).toEqual([]);
  });

  it('a password in a chatmem error message reaches neither the caller nor the log', async () => {
    const before = s.logs.length;
    const r = await raw(s.port, [request('GET', '/test/bad-url')]);
    expect(r.status).toBe(500);
    expect(r.body).toEqual({ error: { code: 'E_STORE_URL', message: 'unknown store URL "postgres://bot:***@db/x?sslpassword=***"' } });
    const logged = s.logs.slice(before).filter((l) => l.msg === 'request failed');
    expect(logged).toHaveLength(1);
    expect(logged[0]?.err).toMatchObject({ code: 'E_STORE_URL', message: 'unknown store URL "postgres://bot:***@db/x?sslpassword=***"' });
    expect(JSON.stringify(s.logs)).not.toContain('p4ss');
  });

  it('an oversized body names the configured limit', async () => {
    const r = await raw(s.port, [request('PUT', '/v1/users/u1', { 'content-type': 'application/json' }, JSON.stringify({ name: 'x'.repeat(2000) }))]);
    expect(r.status).toBe(413);
    expect(r.body).toEqual({ error: { code: 'E_BODY_LIMIT', message: 'request body is larger than the limit of 1000 bytes (server.bodyLimit)' } });
  });

  it('an unknown route is a 404 naming the method and path, never the query', async () => {
    const r = await raw(s.port, [request('DELETE', '/nope/here?token2=secretish')]);
    expect(r.status).toBe(404);
    expect(r.body).toEqual({ error: { code: 'E_NOT_FOUND', message: 'no route DELETE /nope/here' } });
  });

  it('a bad URL and an over-long path segment are answered in the project shape', async () => {
    let r = await raw(s.port, [request('GET', '/v1/users/%E0%A4%A')]);
    expect(r.status).toBe(400);
    expect(r.body).toEqual({ error: { code: 'E_BAD_URL', message: 'the URL path is not valid percent-encoded UTF-8' } });
    r = await raw(s.port, [request('GET', `/v1/users/${'a'.repeat(4097)}`)]);
    expect(r.status).toBe(414);
    expect(r.body).toEqual({ error: { code: 'E_URI_TOO_LONG', message: 'a path segment is longer than 4096 bytes' } });
  });

  const clientErrorsLogged = (before: number) => s.logs.slice(before).filter((l) => l.msg === 'client error');

  it('errors Node raises before Fastify: a full HTTP answer with status line, JSON type, exact length, and a closed connection', async () => {
    const before = s.logs.length;
    const body = { error: { code: 'E_HEADERS_TOO_LARGE', message: 'the request line and headers are larger than 16384 bytes (server.maxHeaderSize)' } };
    const r = await raw(s.port, [`GET /v1/stats HTTP/1.1\r\nhost: 127.0.0.1\r\nx-pad: ${'p'.repeat(17_000)}\r\n\r\n`]);
    const text = JSON.stringify(body);
    expect(r.text).toBe(
      `HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
    );
    expect(clientErrorsLogged(before)).toEqual([expect.objectContaining({ level: 30, code: 'E_HEADERS_TOO_LARGE', reason: 'HPE_HEADER_OVERFLOW', remote: '127.0.0.1' })]);
  });

  it('a malformed request gets 400', async () => {
    const before = s.logs.length;
    const r = await raw(s.port, ['HELLO THERE\r\n\r\n']);
    expect(r.status).toBe(400);
    expect(r.head).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(r.body).toEqual({ error: { code: 'E_BAD_REQUEST', message: 'malformed HTTP request' } });
    expect(clientErrorsLogged(before)).toHaveLength(1);
  });

  it('headers that do not arrive in time get 408 naming both limits', async () => {
    const r = await raw(s.port, ['GET /v1/stats HTTP/1.1\r\nhost: 127.0.0.1\r\n']);
    expect(r.status).toBe(408);
    expect(r.body).toEqual({
      error: { code: 'E_REQUEST_TIMEOUT', message: 'the request did not arrive in time (server.headersTimeout 400 ms, server.requestTimeout 400 ms)' },
    });
  });
});

describe('a client that never closes its side', () => {
  it('after a client error is answered, the daemon drops the connection within a second, long before its request timeouts', async () => {
    const t = await tempConfig('sqlite');
    const ctx = await openContext(t.config, { role: 'daemon' });
    // Default limits: headersTimeout 10 s would otherwise be what ends the socket.
    const app = await buildApp({ ctx, adminToken: ADMIN_TOKEN, logger: false });
    try {
      await app.listen({ host: '127.0.0.1', port: 0 });
      const a = app.server.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      const connections = () => new Promise<number>((resolve, reject) => app.server.getConnections((err, count) => (err ? reject(err) : resolve(count))));
      const sock = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
      await once(sock, 'connect');
      sock.resume();
      const ended = once(sock, 'end');
      sock.write('HELLO THERE\r\n\r\n');
      await ended;
      const deadline = Date.now() + 3_000;
      while ((await connections()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(await connections()).toBe(0);
      sock.destroy();
    } finally {
      await app.close();
      await ctx.close();
      await t.cleanup();
    }
  });
});
