// The promises of src/server/plugins/auth.ts, each over a real daemon on a real socket: who may call
// which plane, what a refusal says, which requests are refused before any route, what the audit log
// records of failed admin logins (and how often), and who the audit log names as the caller.
import { promises as fsp } from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { openContext, type Context } from '../../src/context.js';
import { AuditLog, type AuditEntry } from '../../src/ops/audit.js';
import { addAdminToken, adminTokensFile } from '../../src/server/admin-tokens.js';
import { buildApp } from '../../src/server/app.js';
import { isLoopbackHost } from '../../src/server/plugins/auth.js';
import { ADMIN_TOKEN, API_TOKEN, tempConfig } from '../server/helpers.js';

interface Served {
  port: number;
  ctx: Context;
  dataDir: string;
  /** Every log line the daemon wrote, parsed. */
  logs: { level: number; msg: string; [k: string]: unknown }[];
  close(): Promise<void>;
}

async function serve(o: { apiToken?: string; maxUrlLength?: number; badAudit?: boolean } = {}): Promise<Served> {
  const t = await tempConfig('sqlite');
  const ctx = await openContext(t.config, { role: 'daemon' });
  const logs: Served['logs'] = [];
  const stream = { write: (l: string) => void logs.push(JSON.parse(l) as Served['logs'][number]) };
  // A real audit log that cannot be written: its directory is a regular file.
  const audit = o.badAudit ? new AuditLog(path.join(t.config.dataDir, 'not-a-dir', 'audit.log')) : ctx.audit;
  if (o.badAudit) await fsp.writeFile(path.join(t.config.dataDir, 'not-a-dir'), 'x');
  const app = await buildApp({
    ctx: { ...ctx, audit },
    adminToken: ADMIN_TOKEN,
    apiToken: o.apiToken ?? null,
    logger: { level: 'info', stream },
    adminTokensFile: adminTokensFile(t.config),
    limits: o.maxUrlLength === undefined ? {} : { maxUrlLength: o.maxUrlLength },
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const a = app.server.address();
  return {
    port: typeof a === 'object' && a ? a.port : 0,
    ctx,
    dataDir: t.config.dataDir,
    logs,
    close: async () => {
      await app.close();
      await ctx.close();
      await t.cleanup();
    },
  };
}

interface Answer {
  status: number;
  body: { error?: { code: string; message: string }; [k: string]: unknown };
  wwwAuthenticate: string | undefined;
}

/** node:http, not fetch: it lets the test set Host, send no Host at all, and pick the source address. */
function call(
  port: number,
  method: string,
  p: string,
  o: { headers?: Record<string, string>; json?: unknown; noHost?: boolean; from?: string } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const body = o.json === undefined ? undefined : JSON.stringify(o.json);
    const headers: Record<string, string> = { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...o.headers };
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers, localAddress: o.from, setHost: !o.noHost && headers.host === undefined, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: Answer['body'] = {};
        try {
          parsed = JSON.parse(text) as Answer['body'];
        } catch {
          parsed = { text };
        }
        const w = res.headers['www-authenticate'];
        resolve({ status: res.statusCode ?? 0, body: parsed, wwwAuthenticate: Array.isArray(w) ? w.join(',') : w });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

describe('isLoopbackHost', () => {
  it('accepts only names and addresses of this machine', () => {
    for (const h of ['localhost', 'LocalHost', '::1', '[::1]', '::ffff:127.0.0.1', '[::ffff:127.0.0.1]', '127.0.0.1', '127.255.10.9', '127.1.22.3', '127.0.0.12', '127.0.0.123']) {
      expect(isLoopbackHost(h), h).toBe(true);
    }
    for (const h of ['', 'localhost.evil.example', 'evil-localhost', 'x127.0.0.1', '127.0.0.1x', '127.0.0.1.evil.example', '127.0.0', '1270.0.0.1', '127.0.0.1234', '127.a.0.1', '10.0.0.1', '[::2]', '::ffff:10.0.0.1', 'a::1', 'local]host', 'local[host', 'localhost]x', '127.0.0.1234']) {
      expect(isLoopbackHost(h), h).toBe(false);
    }
  });
});

describe('the checks every request passes', () => {
  let s: Served;
  beforeAll(async () => {
    s = await serve({ maxUrlLength: 200 });
  });
  afterAll(async () => s.close());

  it('without a data token, only a loopback Host header (with or without a port) is answered', async () => {
    for (const host of ['localhost', 'localhost:1234', '127.0.0.1:80', '[::1]', '[::1]:8080', '127.3.2.1:9']) {
      expect((await call(s.port, 'GET', '/v1/stats', { headers: { host } })).status, host).toBe(200);
    }
    for (const host of ['evil.example', 'evil.example:80', 'localhost.evil.example:80', 'evil:127.0.0.1', '[::2]:80', ':80', '[evil]:127.0.0.1']) {
      const r = await call(s.port, 'GET', '/v1/stats', { headers: { host } });
      expect([r.status, r.body.error?.code], host).toEqual([403, 'E_HOST']);
      expect(r.body.error?.message).toBe('without CHATMEM_API_TOKEN the API answers only to Host: localhost, 127.0.0.1 or [::1]');
    }
    const none = await call(s.port, 'GET', '/v1/stats', { noHost: true });
    expect([none.status, none.body.error?.code]).toEqual([403, 'E_HOST']);
  });

  it('refuses credentials in the query string by name, and only those names', async () => {
    for (const key of ['token', 'TOKEN', 'access_token', 'api_key', 'apikey', 'auth', 'Authorization']) {
      const r = await call(s.port, 'GET', `/v1/stats?${key}=x`);
      expect([r.status, r.body.error?.code], key).toEqual([400, 'E_TOKEN_IN_QUERY']);
      expect(r.body.error?.message).toBe(`credentials are never accepted in the query string (${key}=); send "Authorization: Bearer <token>"`);
    }
    // Even beside a valid header, and after other parameters.
    expect((await call(s.port, 'GET', `/v1/admin/stats?a=1&token=${ADMIN_TOKEN}`, { headers: bearer(ADMIN_TOKEN) })).status).toBe(400);
    for (const key of ['tokens', 'mytoken', 'author', 'auth2', 'x_api_key']) {
      expect((await call(s.port, 'GET', `/v1/stats?${key}=x`)).status, key).toBe(200);
    }
  });

  it('refuses a URL longer than server.maxUrlLength, and takes one of exactly that length', async () => {
    const base = '/v1/stats?pad=';
    const exact = base + 'p'.repeat(200 - base.length);
    expect((await call(s.port, 'GET', exact)).status).toBe(200);
    const r = await call(s.port, 'GET', exact + 'p');
    expect([r.status, r.body.error?.code]).toEqual([414, 'E_URI_TOO_LONG']);
    expect(r.body.error?.message).toBe('the URL is longer than 200 bytes (server.maxUrlLength)');
  });
});

describe('bearer tokens on the admin plane', () => {
  let s: Served;
  beforeAll(async () => {
    s = await serve();
  });
  afterAll(async () => s.close());

  it('says whether the token was missing or wrong, in the body and in WWW-Authenticate', async () => {
    const missing = await call(s.port, 'GET', '/v1/admin/stats');
    expect([missing.status, missing.body.error]).toEqual([401, { code: 'E_AUTH', message: 'missing token: send "Authorization: Bearer <admin token>"' }]);
    expect(missing.wwwAuthenticate).toBe('Bearer realm="chatmem"');
    for (const authorization of [`Bearer ${ADMIN_TOKEN}x`, `Basic ${ADMIN_TOKEN}`, 'Bearer', `XBearer ${ADMIN_TOKEN}`, `Bearer ${ADMIN_TOKEN} extra`, `Bearer ${API_TOKEN}`]) {
      const r = await call(s.port, 'GET', '/v1/admin/stats', { headers: { authorization } });
      expect([r.status, r.body.error], authorization).toEqual([401, { code: 'E_AUTH', message: 'invalid admin token' }]);
      expect(r.wwwAuthenticate).toBe('Bearer realm="chatmem", error="invalid_token"');
    }
  });

  it('takes the scheme in any case, and spaces around the token', async () => {
    for (const authorization of [`Bearer ${ADMIN_TOKEN}`, `bearer ${ADMIN_TOKEN}`, `BEARER   ${ADMIN_TOKEN}`, `Bearer ${ADMIN_TOKEN}   `]) {
      expect((await call(s.port, 'GET', '/v1/admin/stats', { headers: { authorization } })).status, authorization).toBe(200);
    }
  });

  it('names the caller: the built-in or named token, and the OS user the CLI sends (cleaned, at most 64 characters)', async () => {
    const whoami = async (token: string, osUser?: string) =>
      (await call(s.port, 'GET', '/v1/admin/whoami', { headers: { ...bearer(token), ...(osUser === undefined ? {} : { 'x-chatmem-os-user': osUser }) } })).body;
    expect(await whoami(ADMIN_TOKEN)).toEqual({ name: 'admin', osUser: null, remote: '127.0.0.1' });
    expect(await whoami(ADMIN_TOKEN, '  budi\t ')).toEqual({ name: 'admin', osUser: 'budi', remote: '127.0.0.1' });
    expect(await whoami(ADMIN_TOKEN, 'b\tu\tdi')).toMatchObject({ osUser: 'budi' });
    expect(await whoami(ADMIN_TOKEN, `${'a'.repeat(64)}zz`)).toMatchObject({ osUser: 'a'.repeat(64) });
    expect(await whoami(ADMIN_TOKEN, ' \t ')).toMatchObject({ osUser: null });
    const alice = await addAdminToken({ dataDir: s.dataDir }, 'alice');
    expect(await whoami(alice.token, 'sari')).toEqual({ name: 'alice', osUser: 'sari', remote: '127.0.0.1' });
    expect(await whoami(alice.token)).toEqual({ name: 'alice', osUser: null, remote: '127.0.0.1' });
    // An operation is audited with the token's name as the actor.
    expect((await call(s.port, 'PUT', '/v1/users/6281999', { json: { name: 'x' } })).status).toBe(200);
    expect((await call(s.port, 'DELETE', '/v1/users/6281999', { headers: { ...bearer(alice.token), 'x-chatmem-os-user': 'sari' } })).status).toBe(200);
    const ops = await s.ctx.audit.read({ action: 'delete-users' });
    expect(ops.length).toBeGreaterThan(0);
    for (const e of ops) expect(e.actor).toEqual({ kind: 'api', name: 'alice', osUser: 'sari', remote: '127.0.0.1' });
  });

  it('a damaged tokens file refuses named tokens and is logged; the built-in token does not even read it', async () => {
    const carol = await addAdminToken({ dataDir: s.dataDir }, 'carol');
    await fsp.writeFile(adminTokensFile({ dataDir: s.dataDir }), 'not json');
    const before = s.logs.length;
    expect((await call(s.port, 'GET', '/v1/admin/stats', { headers: bearer(ADMIN_TOKEN) })).status).toBe(200);
    expect(s.logs.slice(before).filter((l) => l.msg === 'cannot read the named admin tokens')).toEqual([]);
    expect((await call(s.port, 'GET', '/v1/admin/stats', { headers: bearer(carol.token) })).status).toBe(401);
    const logged = s.logs.slice(before).filter((l) => l.msg === 'cannot read the named admin tokens');
    expect(logged).toHaveLength(1);
    expect(logged[0]?.level).toBe(50);
    expect(logged[0]?.err).toMatchObject({ code: expect.stringMatching(/^E_/), message: expect.any(String) });
    expect(logged[0]?.err).not.toMatchObject({ code: 'E_INTERNAL' });
  });
});

describe('failed admin logins in the audit log', () => {
  let s: Served;
  beforeAll(async () => {
    s = await serve();
  });
  afterAll(async () => s.close());
  afterEach(() => {
    vi.useRealTimers();
  });

  const failures = async () => s.ctx.audit.read({ action: 'auth-failed' });

  it('records a wrong token (the route pattern, never the URL), not a missing one; at most 10 per caller and minute, then how many were left out', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const t0 = new Date('2026-11-30T10:00:00.000Z').getTime();
    vi.setSystemTime(t0);
    const wrong = bearer('wrong-token-that-is-long-enough');
    expect((await call(s.port, 'GET', '/v1/admin/stats')).status).toBe(401);
    expect(await failures()).toEqual([]);

    expect((await call(s.port, 'GET', '/v1/admin/users/6281234?x=1', { headers: wrong })).status).toBe(401);
    let entries = await failures();
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ outcome: 'refused', actor: { kind: 'api', name: 'unknown', remote: '127.0.0.1' } });
    expect(entries[0]?.details).toEqual({ route: '/v1/admin/users/:id' });

    for (let i = 0; i < 11; i++) expect((await call(s.port, 'GET', '/v1/admin/stats', { headers: wrong })).status).toBe(401);
    entries = await failures();
    expect(entries).toHaveLength(10);
    // Another caller has its own allowance.
    await call(s.port, 'GET', '/v1/admin/stats', { headers: wrong, from: '127.0.0.2' });
    entries = await failures();
    expect(entries).toHaveLength(11);
    expect(entries.at(-1)?.actor).toMatchObject({ remote: '127.0.0.2' });

    // Exactly a minute later the window is still the same one.
    vi.setSystemTime(t0 + 60_000);
    await call(s.port, 'GET', '/v1/admin/stats', { headers: wrong });
    expect(await failures()).toHaveLength(11);
    // After it, the next failure is recorded with the count of those left out (2 + 1).
    vi.setSystemTime(t0 + 60_001);
    await call(s.port, 'GET', '/v1/admin/stats', { headers: wrong });
    entries = await failures();
    expect(entries).toHaveLength(12);
    expect(entries.at(-1)?.details).toEqual({ route: '/v1/admin/stats', suppressedBefore: 3 });
    await call(s.port, 'GET', '/v1/admin/stats', { headers: wrong });
    entries = await failures();
    expect(entries).toHaveLength(13);
    expect(entries.at(-1)?.details).toEqual({ route: '/v1/admin/stats' });
  });
});

describe('a failed login that cannot be audited', () => {
  it('is still refused, and the audit failure is logged with its code', async () => {
    const s = await serve({ badAudit: true });
    try {
      const r = await call(s.port, 'GET', '/v1/admin/stats', { headers: bearer('wrong-token-that-is-long-enough') });
      expect([r.status, r.body.error?.code]).toEqual([401, 'E_AUTH']);
      const logged = s.logs.filter((l) => l.msg === 'cannot audit a failed login');
      expect(logged).toHaveLength(1);
      expect(logged[0]?.level).toBe(50);
      expect(logged[0]?.err).toMatchObject({ code: 'E_AUDIT_WRITE', message: expect.stringContaining('not-a-dir') });
    } finally {
      await s.close();
    }
  });
});

describe('the data plane', () => {
  const resetActor = async (s: Served, headers: Record<string, string>) => {
    const id = `u${Math.random().toString(36).slice(2, 10)}`;
    expect((await call(s.port, 'POST', `/v1/users/${id}/history`, { headers, json: { role: 'user', text: 'hi' } })).body).toMatchObject({ user_id: id });
    // A PUT without the history wipes it: a guarded write, audited with its caller.
    expect((await call(s.port, 'PUT', `/v1/users/${id}`, { headers, json: { name: 'x' } })).status).toBe(200);
    const entries: AuditEntry[] = await s.ctx.audit.read({ action: 'reset-user', user: id });
    expect(entries.length).toBeGreaterThan(0);
    return entries[0]?.actor;
  };

  it('open (no data token): any caller on loopback, recorded as the built-in admin with its address', async () => {
    const s = await serve();
    try {
      expect(await resetActor(s, { 'x-chatmem-os-user': 'budi' })).toEqual({ kind: 'api', name: 'admin', remote: '127.0.0.1' });
      // A wrong token on an open data plane is not looked at.
      expect((await call(s.port, 'GET', '/v1/stats', { headers: bearer('wrong-token-that-is-long-enough') })).status).toBe(200);
    } finally {
      await s.close();
    }
  });

  it('with a data token: the API token or the admin token, each recorded as itself; anything else refused and logged', async () => {
    const s = await serve({ apiToken: API_TOKEN });
    try {
      expect(await resetActor(s, { ...bearer(API_TOKEN), 'x-chatmem-os-user': 'budi' })).toEqual({ kind: 'api', name: 'api', remote: '127.0.0.1' });
      expect(await resetActor(s, { ...bearer(ADMIN_TOKEN), 'x-chatmem-os-user': 'budi' })).toEqual({ kind: 'api', name: 'admin', remote: '127.0.0.1', osUser: 'budi' });
      // Any Host then: the token is the guard.
      expect((await call(s.port, 'GET', '/v1/stats', { headers: { ...bearer(API_TOKEN), host: 'chatmem.internal:8081' } })).status).toBe(200);

      const missing = await call(s.port, 'GET', '/v1/stats');
      expect([missing.status, missing.body.error]).toEqual([401, { code: 'E_AUTH', message: 'missing token: send "Authorization: Bearer <API token>"' }]);
      expect(missing.wwwAuthenticate).toBe('Bearer realm="chatmem"');
      const before = s.logs.length;
      const wrong = await call(s.port, 'GET', '/v1/stats?x=1', { headers: bearer('not-the-api-token-0000') });
      expect([wrong.status, wrong.body.error]).toEqual([401, { code: 'E_AUTH', message: 'invalid token' }]);
      expect(wrong.wwwAuthenticate).toBe('Bearer realm="chatmem", error="invalid_token"');
      const warned = s.logs.slice(before).filter((l) => l.msg === 'data API call with a wrong token');
      expect(warned).toHaveLength(1);
      expect(warned[0]).toMatchObject({ level: 40, route: '/v1/stats', remote: '127.0.0.1' });
      // Data-plane failures are not admin logins.
      expect(await s.ctx.audit.read({ action: 'auth-failed' })).toEqual([]);

      // The API token is never an admin credential; that failure is audited.
      expect((await call(s.port, 'GET', '/v1/admin/stats', { headers: bearer(API_TOKEN) })).status).toBe(401);
      expect(await s.ctx.audit.read({ action: 'auth-failed' })).toHaveLength(1);
    } finally {
      await s.close();
    }
  });
});
