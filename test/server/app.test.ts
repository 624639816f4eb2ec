import { promises as fsp } from 'node:fs';
import { request } from 'node:http';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MemoryRecord } from '../../src/record.js';
import type { AuditEntry } from '../../src/ops/audit.js';
import { buildApp } from '../../src/server/app.js';
import { openContext } from '../../src/context.js';
import { ADMIN_TOKEN, API_TOKEN, KINDS, http, startApp, tempConfig, type ErrorBody, type TestServer } from './helpers.js';

const A = { token: ADMIN_TOKEN };

/** fetch() will not send a custom Host header; node:http will. */
function rawGet(base: string, p: string, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(base + p, { headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe.each(KINDS)('HTTP API on a %s store', (kind) => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startApp(kind, { bodyLimit: 64 * 1024 });
  });
  afterAll(async () => {
    await s.close();
  });

  it('answers /healthz without auth, naming the store', async () => {
    const r = await http<{ ok: boolean; store: string; pid: number; version: string }>(s.url, 'GET', '/healthz');
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ ok: true, store: s.config.store.display, pid: process.pid });
    expect(typeof r.body.version).toBe('string');
  });

  it('serves every data route', async () => {
    const id = '6281234567890';
    let r = await http<MemoryRecord>(s.url, 'PUT', `/v1/users/${id}`, { json: { name: 'Budi', product: 'router X', extra_field: { kept: true } } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ user_id: id, name: 'Budi', extra_field: { kept: true } });

    r = await http(s.url, 'PATCH', `/v1/users/${id}`, { json: { address: 'Jl. Merdeka 1', flags: { vip: true } } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ name: 'Budi', address: 'Jl. Merdeka 1', flags: { vip: true } });

    r = await http(s.url, 'POST', `/v1/users/${id}/history`, { json: { role: 'user', text: 'halo, modem saya mati 😢', meta: { ch: 'wa' } } });
    expect(r.status).toBe(201);
    expect(r.body.history.at(-1)).toMatchObject({ role: 'user', text: 'halo, modem saya mati 😢', meta: { ch: 'wa' } });
    expect(r.body.last_answer).toBe('halo, modem saya mati 😢');

    r = await http(s.url, 'PUT', `/v1/users/${id}/flags/needs_followup`, { json: { value: { since: 'today' } } });
    expect(r.status).toBe(200);
    expect(r.body.flags).toEqual({ vip: true, needs_followup: { since: 'today' } });
    r = await http(s.url, 'DELETE', `/v1/users/${id}/flags/vip`);
    expect(r.status).toBe(200);
    expect(r.body.flags).toEqual({ needs_followup: { since: 'today' } });

    r = await http(s.url, 'PUT', `/v1/users/${id}/slots/serial`, { json: { value: 'SN-1' } });
    expect(r.status).toBe(200);
    expect(r.body.slots).toEqual({ serial: 'SN-1' });
    r = await http(s.url, 'DELETE', `/v1/users/${id}/slots/serial`);
    expect(r.body.slots).toEqual({});

    r = await http(s.url, 'GET', `/v1/users/${id}`);
    expect(r.status).toBe(200);
    expect(r.body.history).toHaveLength(1);

    // Ids with slashes, quotes and non-ASCII letters travel percent-encoded.
    const odd = 'a/b "c" ñ';
    r = await http(s.url, 'POST', `/v1/users/${encodeURIComponent(odd)}/history`, { json: { role: 'bot', text: 'x' } });
    expect(r.status).toBe(201);
    expect(r.body.user_id).toBe(odd);
    const long = 'u'.repeat(256);
    expect((await http(s.url, 'PUT', `/v1/users/${long}`, { json: {} })).status).toBe(200);

    const list = await http<{ items: { user_id: string }[]; next: string | null }>(s.url, 'GET', '/v1/users?limit=2');
    expect(list.status).toBe(200);
    expect(list.body.items).toHaveLength(2);
    expect(list.body.next).not.toBeNull();
    const page2 = await http<{ items: { user_id: string }[]; next: string | null }>(s.url, 'GET', `/v1/users?limit=2&cursor=${encodeURIComponent(list.body.next ?? '')}`);
    expect(page2.body.items.map((i) => i.user_id)).toEqual([long]);

    const found = await http<{ items: { user_id: string }[] }>(s.url, 'GET', '/v1/search?q=MODEM');
    expect(found.body.items.map((i) => i.user_id)).toEqual([id]);
    const stats = await http<{ users: number; messages: number }>(s.url, 'GET', '/v1/stats');
    expect(stats.body).toMatchObject({ users: 3, messages: 2 });
  });

  it('answers 404 for an unknown user and an unknown route', async () => {
    let r = await http<ErrorBody>(s.url, 'GET', '/v1/users/nobody');
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe('E_UNKNOWN_USER');
    r = await http<ErrorBody>(s.url, 'DELETE', '/v1/users/nobody/flags/x');
    expect(r.status).toBe(404);
    expect((await http(s.url, 'GET', '/v1/users/nobody')).status).toBe(404);
    r = await http<ErrorBody>(s.url, 'GET', '/v1/nothing');
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe('E_NOT_FOUND');
    r = await http<ErrorBody>(s.url, 'DELETE', '/v1/users/nobody', A);
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe('E_UNKNOWN_USER');
  });

  it('refuses bad JSON, invalid bodies and oversized bodies', async () => {
    let r = await http<ErrorBody>(s.url, 'PUT', '/v1/users/u1', { raw: '{"name": "x",' });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('E_BAD_JSON');
    r = await http<ErrorBody>(s.url, 'POST', '/v1/users/u1/history', { raw: '' });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('E_BAD_JSON');

    r = await http<ErrorBody>(s.url, 'POST', '/v1/users/u1/history', { json: { text: 'no role' } });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('E_RECORD');
    expect(r.body.error.message).toMatch(/role/);
    r = await http<ErrorBody>(s.url, 'PUT', '/v1/users/u1', { json: { name: 42 } });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/name/);
    r = await http<ErrorBody>(s.url, 'PUT', '/v1/users/u1', { json: [1, 2] });
    expect(r.status).toBe(400);
    r = await http<ErrorBody>(s.url, 'PATCH', '/v1/users/u1', { json: { user_id: 'other' } });
    expect(r.status).toBe(400);
    r = await http<ErrorBody>(s.url, 'PUT', '/v1/users/u1/flags/k', { json: { notValue: 1 } });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/"value"/);
    r = await http<ErrorBody>(s.url, 'PUT', `/v1/users/${'x'.repeat(257)}`, { json: {} });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('E_USER_ID');
    r = await http<ErrorBody>(s.url, 'GET', '/v1/users?limit=5000');
    expect(r.status).toBe(400);
    r = await http<ErrorBody>(s.url, 'GET', '/v1/search?q=');
    expect(r.status).toBe(400);

    r = await http<ErrorBody>(s.url, 'PUT', '/v1/users/u1', { raw: 'name=x', headers: { 'content-type': 'text/plain' } });
    expect(r.status).toBe(415);

    const big = { name: 'x', summary_context: ['y'.repeat(70 * 1024)] };
    r = await http<ErrorBody>(s.url, 'PUT', '/v1/users/u1', { json: big });
    expect(r.status).toBe(413);
    expect(r.body.error.code).toBe('E_BODY_LIMIT');
    // Nothing of the refused writes reached the store.
    expect((await http(s.url, 'GET', '/v1/users/u1')).status).toBe(404);
  });

  it('guards admin routes with the bearer token, and audits wrong tokens', async () => {
    const before = (await s.ctx.audit.read({ action: 'auth-failed' })).length;
    let r = await http<ErrorBody>(s.url, 'GET', '/v1/admin/backups');
    expect(r.status).toBe(401);
    expect(r.body.error.code).toBe('E_AUTH');
    expect(r.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect((await s.ctx.audit.read({ action: 'auth-failed' })).length).toBe(before);

    const wrong = 'wrong-token-that-is-long-enough';
    r = await http<ErrorBody>(s.url, 'GET', '/v1/admin/backups', { token: wrong });
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toMatch(/invalid_token/);
    const failed = await s.ctx.audit.read({ action: 'auth-failed' });
    expect(failed.length).toBe(before + 1);
    const entry = failed.at(-1) as AuditEntry;
    expect(entry).toMatchObject({ outcome: 'refused', actor: { kind: 'api', name: 'unknown', remote: '127.0.0.1' }, details: { route: '/v1/admin/backups' } });
    // The audit log never holds the token itself.
    expect(await fsp.readFile(s.config.auditLog, 'utf8')).not.toContain(wrong);

    // Another scheme is a wrong credential too.
    r = await http<ErrorBody>(s.url, 'POST', '/v1/admin/clear', { json: { confirm: 'YES' }, headers: { authorization: `Basic ${ADMIN_TOKEN}` } });
    expect(r.status).toBe(401);

    r = await http(s.url, 'GET', '/v1/admin/backups', A);
    expect(r.status).toBe(200);
  });

  it('never accepts a token from the query string', async () => {
    for (const p of [`/v1/admin/backups?token=${ADMIN_TOKEN}`, `/v1/admin/backups?access_token=${ADMIN_TOKEN}`, `/v1/users?token=x`]) {
      const r = await http<ErrorBody>(s.url, 'GET', p);
      expect(r.status).toBe(400);
      expect(r.body.error.code).toBe('E_TOKEN_IN_QUERY');
    }
    // Even with a valid header alongside.
    const r = await http<ErrorBody>(s.url, 'GET', `/v1/admin/backups?token=${ADMIN_TOKEN}`, A);
    expect(r.status).toBe(400);
  });

  it('refuses a non-loopback Host header when the data API has no token', async () => {
    const r = await rawGet(s.url, '/v1/stats', { host: 'evil.example:8081' });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.text)).toMatchObject({ error: { code: 'E_HOST' } });
    expect((await rawGet(s.url, '/v1/stats', { host: 'localhost:1234' })).status).toBe(200);
  });

  it('deletes a user online, naming a backup that holds the user', async () => {
    await http(s.url, 'POST', '/v1/users/del-me/history', { json: { role: 'user', text: 'bye' } });
    const r = await http<{ deleted: number; backup: string; backupFile: string; auditOp: string }>(s.url, 'DELETE', '/v1/users/del-me', A);
    expect(r.status).toBe(200);
    expect(r.body.deleted).toBe(1);
    expect(r.body.backup).toMatch(/^memory_backup_/);
    const saved = JSON.parse(await fsp.readFile(r.body.backupFile, 'utf8')) as Record<string, MemoryRecord>;
    expect(saved['del-me']?.history[0]?.text).toBe('bye');
    expect((await http(s.url, 'GET', '/v1/users/del-me')).status).toBe(404);

    const audit = await http<{ entries: AuditEntry[] }>(s.url, 'GET', `/v1/admin/audit?op=${r.body.auditOp}`, A);
    expect(audit.body.entries.map((e) => e.outcome)).toEqual(['started', 'done']);
    expect(audit.body.entries[1]).toMatchObject({ action: 'delete-users', backup: r.body.backup, actor: { kind: 'api', name: 'admin', remote: '127.0.0.1' } });

    // Several users in one guarded operation, with a full backup.
    await http(s.url, 'PUT', '/v1/users/m1', { json: { name: 'M1' } });
    await http(s.url, 'PUT', '/v1/users/m2', { json: { name: 'M2' } });
    const multi = await http<{ deleted: number; backupFile: string }>(s.url, 'POST', '/v1/admin/delete', { ...A, json: { users: ['m1', 'm2'], fullBackup: true } });
    expect(multi.status).toBe(200);
    expect(multi.body.deleted).toBe(2);
    const full = JSON.parse(await fsp.readFile(multi.body.backupFile, 'utf8')) as Record<string, MemoryRecord>;
    expect(Object.keys(full)).toEqual(expect.arrayContaining(['m1', 'm2', '6281234567890']));
    const single = await http<{ backupFile: string }>(s.url, 'DELETE', `/v1/users/6281234567890?fullBackup=true`, A);
    expect(single.status).toBe(200);
    expect((await http<ErrorBody>(s.url, 'POST', '/v1/admin/delete', { ...A, json: { users: [] } })).status).toBe(400);
    expect((await http<ErrorBody>(s.url, 'POST', '/v1/admin/delete', { ...A, json: { users: ['ghost'] } })).status).toBe(404);
  });

  it('clears only with {"confirm":"YES"}, then restores, prunes and diffs', async () => {
    await http(s.url, 'PUT', '/v1/users/c1', { json: { name: 'C1' } });
    await http(s.url, 'PUT', '/v1/users/c2', { json: { name: 'C2' } });
    for (const body of [undefined, {}, { confirm: 'yes' }, { confirm: 'YES ' }, { confirm: true }]) {
      const r = await http<ErrorBody>(s.url, 'POST', '/v1/admin/clear', { ...A, json: body });
      expect(r.status).toBe(400);
      expect(r.body.error.code).toBe('E_CONFIRM');
    }
    const users = (await http<{ users: number }>(s.url, 'GET', '/v1/stats')).body.users;
    expect(users).toBeGreaterThanOrEqual(2);

    const cleared = await http<{ deleted: number; backup: string; backupFile: string }>(s.url, 'POST', '/v1/admin/clear', { ...A, json: { confirm: 'YES' } });
    expect(cleared.status).toBe(200);
    expect(cleared.body.deleted).toBe(users);
    expect(Object.keys(JSON.parse(await fsp.readFile(cleared.body.backupFile, 'utf8')) as object)).toHaveLength(users);
    expect((await http<{ users: number }>(s.url, 'GET', '/v1/stats')).body.users).toBe(0);
    // The clear lists no users; the audit finds c1 in its backup, through the same code as the CLI.
    const byUser = await http<{ entries: AuditEntry[] }>(s.url, 'GET', '/v1/admin/audit?user=c1&action=clear', A);
    expect(byUser.body.entries.map((e) => [e.action, e.outcome, e.foundInBackup])).toEqual([
      ['clear-all', 'started', cleared.body.backup],
      ['clear-all', 'done', cleared.body.backup],
    ]);
    const badAction = await http<ErrorBody>(s.url, 'GET', '/v1/admin/audit?action=wipe', A);
    expect(badAction.status).toBe(400);
    expect(badAction.body.error).toMatchObject({ code: 'E_OPS_ARG', message: expect.stringContaining('valid actions: delete (delete-users), clear (clear-all)') });

    const diff = await http<{ added: string[]; removed: string[] }>(s.url, 'GET', `/v1/admin/diff?a=${cleared.body.backup}&b=current`, A);
    expect(diff.status).toBe(200);
    expect(diff.body.removed).toEqual(expect.arrayContaining(['c1', 'c2']));
    const diffUsers = await http<{ removed: string[] }>(s.url, 'GET', `/v1/admin/diff?a=${cleared.body.backup}&users=c1`, A);
    expect(diffUsers.body.removed).toEqual(['c1']);

    const dry = await http<{ dryRun: boolean; diff: { added: string[] } }>(s.url, 'POST', '/v1/admin/restore', { ...A, json: { backup: cleared.body.backup, dryRun: true } });
    expect(dry.body.dryRun).toBe(true);
    expect(dry.body.diff.added).toHaveLength(users);
    expect((await http<{ users: number }>(s.url, 'GET', '/v1/stats')).body.users).toBe(0);

    const restored = await http<{ written: number; backup: string }>(s.url, 'POST', '/v1/admin/restore', { ...A, json: { backup: cleared.body.backup } });
    expect(restored.status).toBe(200);
    expect(restored.body.written).toBe(users);
    // The store was empty: nothing overwritten, so no (empty) backup.
    expect(restored.body.backup).toBeNull();
    expect((await http<MemoryRecord>(s.url, 'GET', '/v1/users/c1')).body.name).toBe('C1');
    expect((await http<ErrorBody>(s.url, 'POST', '/v1/admin/restore', { ...A, json: { backup: 'memory_backup_20000101_000000' } })).status).toBe(404);
    expect((await http<ErrorBody>(s.url, 'POST', '/v1/admin/restore', { ...A, json: { backup: '../../etc/passwd' } })).status).toBe(400);

    const made = await http<{ id: string; backup: string }>(s.url, 'POST', '/v1/admin/backups', A);
    expect(made.status).toBe(201);
    const list = await http<{ backups: { id: string; state: string; scope: unknown }[] }>(s.url, 'GET', '/v1/admin/backups', A);
    expect(list.body.backups.map((b) => b.id)).toContain(made.body.id);
    const inspect = await http<{ users: number; record?: MemoryRecord }>(s.url, 'GET', `/v1/admin/backups/${made.body.id}?user=c2`, A);
    expect(inspect.body.record?.name).toBe('C2');
    const verifyOne = await http<{ ok: boolean; results: { id: string }[] }>(s.url, 'POST', `/v1/admin/backups/${made.body.id}/verify`, A);
    expect(verifyOne.body).toMatchObject({ ok: true, results: [{ id: made.body.id }] });
    const verifyAll = await http<{ ok: boolean; results: unknown[] }>(s.url, 'POST', '/v1/admin/verify', A);
    expect(verifyAll.body.ok).toBe(true);
    expect(verifyAll.body.results.length).toBe(list.body.backups.length);

    const before = list.body.backups.length;
    // Full and per-user backups are pruned as separate groups: last 1 keeps the newest of each.
    const groups = new Set(list.body.backups.map((x) => (x.scope === 'full' ? 'full' : 'user')));
    const dryPrune = await http<{ keep: { group: string }[]; remove: unknown[]; removed: string[] }>(s.url, 'POST', '/v1/admin/prune', { ...A, json: { policy: { last: 1 }, dryRun: true } });
    expect(dryPrune.body.remove).toHaveLength(before - groups.size);
    expect(new Set(dryPrune.body.keep.map((k) => k.group))).toEqual(groups);
    expect(dryPrune.body.removed).toEqual([]);
    const pruned = await http<{ removed: string[] }>(s.url, 'POST', '/v1/admin/prune', { ...A, json: { policy: { last: 1 } } });
    expect(pruned.body.removed).toHaveLength(before - groups.size);
    expect((await http<{ backups: unknown[] }>(s.url, 'GET', '/v1/admin/backups', A)).body.backups).toHaveLength(groups.size);
    expect((await http<ErrorBody>(s.url, 'POST', '/v1/admin/prune', { ...A, json: { policy: { last: 'x' } } })).status).toBe(400);
  });

  it('refuses to restore a backup that fails verification', async () => {
    await http(s.url, 'PUT', '/v1/users/v1', { json: { name: 'Vera' } });
    const made = await http<{ id: string; file: string }>(s.url, 'POST', '/v1/admin/backups', { ...A, json: { gzip: false } });
    const text = await fsp.readFile(made.body.file, 'utf8');
    await fsp.writeFile(made.body.file, text.replace('Vera', 'Vena'));
    const verify = await http<{ ok: boolean; results: { ok: boolean; error?: { code: string } }[] }>(s.url, 'POST', `/v1/admin/backups/${made.body.id}/verify`, A);
    expect(verify.status).toBe(200);
    expect(verify.body).toMatchObject({ ok: false, results: [{ ok: false, error: { code: 'E_BACKUP_VERIFY' } }] });
    const r = await http<ErrorBody>(s.url, 'POST', '/v1/admin/restore', { ...A, json: { backup: made.body.id } });
    expect(r.status).toBe(422);
    expect(r.body.error.code).toBe('E_BACKUP_VERIFY');
    expect((await http<MemoryRecord>(s.url, 'GET', '/v1/users/v1')).body.name).toBe('Vera');
    await fsp.rm(made.body.file);
  });

  it('imports a file by absolute path and lists users through the admin API', async () => {
    const file = path.join(s.dir, 'seed.json');
    await fsp.writeFile(file, JSON.stringify({ imp1: { user_id: 'imp1', name: 'Imported' } }, null, 2));
    expect((await http<ErrorBody>(s.url, 'POST', '/v1/admin/import', { ...A, json: { file: 'seed.json' } })).status).toBe(400);
    const r = await http<{ imported: number }>(s.url, 'POST', '/v1/admin/import', { ...A, json: { file } });
    expect(r.status).toBe(200);
    expect(r.body.imported).toBe(1);
    expect((await http<MemoryRecord>(s.url, 'GET', '/v1/admin/users/imp1', A)).body.name).toBe('Imported');
    expect((await http(s.url, 'GET', '/v1/admin/users/imp1')).status).toBe(401);
    expect((await http(s.url, 'GET', '/v1/admin/users/ghost', A)).status).toBe(404);
    const users = await http<{ items: { user_id: string }[] }>(s.url, 'GET', '/v1/admin/users?limit=1000', A);
    expect(users.body.items.map((u) => u.user_id)).toContain('imp1');
    expect((await http<{ items: unknown[] }>(s.url, 'GET', '/v1/admin/search?q=imported', A)).status).toBe(200);
    expect((await http<{ users: number }>(s.url, 'GET', '/v1/admin/stats', A)).body.users).toBeGreaterThan(0);
    expect((await http<ErrorBody>(s.url, 'POST', '/v1/admin/import', { ...A, json: { file: path.join(s.dir, 'missing.json') } })).status).toBe(404);
  });

  it('exports Prometheus metrics', async () => {
    const r = await http(s.url, 'GET', '/metrics');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(r.text).toMatch(/^chatmem_http_requests_total\{method="PUT",route="\/v1\/users\/:id",status="200"\} \d+$/m);
    expect(r.text).toMatch(/^chatmem_http_request_duration_seconds_bucket\{method="PUT",route="\/v1\/users\/:id",le="\+Inf"\} \d+$/m);
    expect(r.text).toMatch(/^chatmem_http_request_duration_seconds_count\{method="PUT",route="\/v1\/users\/:id"\} \d+$/m);
    expect(r.text).toMatch(/^chatmem_store_users \d+$/m);
    expect(r.text).toMatch(/^chatmem_store_bytes \d+$/m);
    expect(r.text).toMatch(/^chatmem_last_backup_age_seconds \d+(\.\d+)?$/m);
    expect(r.text).toMatch(/^chatmem_backup_failures_total 0$/m);
    // Raw URLs (user ids) never become label values.
    expect(r.text).not.toContain('6281234567890');
  });

  it('serves the admin page with a strict CSP', async () => {
    const r = await http(s.url, 'GET', '/admin');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/html/);
    // The page's one script and one style sheet are allowed by hash, nothing inline besides them.
    expect(r.headers.get('content-security-policy')).toMatch(/^default-src 'self'; script-src 'sha256-[A-Za-z0-9+/]+={0,2}'; style-src 'sha256-[A-Za-z0-9+/]+={0,2}'; /);
    expect(r.headers.get('content-security-policy')).not.toMatch(/unsafe/);
    expect(r.headers.get('x-frame-options')).toBe('DENY');
    expect(r.text).toMatch(/<html/i);
  });
});

describe('data-plane token', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startApp('sqlite', { apiToken: API_TOKEN });
  });
  afterAll(async () => {
    await s.close();
  });

  it('requires the API token (or the admin token) on data routes, and accepts any Host then', async () => {
    expect((await http<ErrorBody>(s.url, 'GET', '/v1/stats')).status).toBe(401);
    expect((await http<ErrorBody>(s.url, 'GET', '/v1/stats', { token: 'not-the-api-token-0000' })).status).toBe(401);
    expect((await http(s.url, 'GET', '/v1/stats', { token: API_TOKEN })).status).toBe(200);
    expect((await http(s.url, 'GET', '/v1/stats', { token: ADMIN_TOKEN })).status).toBe(200);
    expect((await http(s.url, 'GET', '/metrics')).status).toBe(401);
    expect((await http(s.url, 'GET', '/metrics', { token: API_TOKEN })).status).toBe(200);
    expect((await http(s.url, 'GET', '/healthz')).status).toBe(200);
    expect((await rawGet(s.url, '/v1/stats', { host: 'chatmem.internal:8081', authorization: `Bearer ${API_TOKEN}` })).status).toBe(200);
  });

  it('never lets the API token act as admin', async () => {
    const r = await http<ErrorBody>(s.url, 'POST', '/v1/admin/clear', { token: API_TOKEN, json: { confirm: 'YES' } });
    expect(r.status).toBe(401);
    expect((await http(s.url, 'DELETE', '/v1/users/x', { token: API_TOKEN })).status).toBe(401);
  });
});

describe('buildApp options', () => {
  it('refuses a missing or short admin token', async () => {
    const { config, cleanup } = await tempConfig('sqlite');
    const ctx = await openContext(config, { role: 'daemon' });
    try {
      await expect(buildApp({ ctx, adminToken: '' })).rejects.toMatchObject({ code: 'E_CONFIG' });
      await expect(buildApp({ ctx, adminToken: 'short' })).rejects.toMatchObject({ code: 'E_CONFIG' });
      await expect(buildApp({ ctx, adminToken: ADMIN_TOKEN, apiToken: 'short' })).rejects.toMatchObject({ code: 'E_CONFIG' });
    } finally {
      await ctx.close();
      await cleanup();
    }
  });

  it('logs one line per request and per admin operation, never a token', async () => {
    const { config, cleanup } = await tempConfig('json');
    const ctx = await openContext(config, { role: 'daemon' });
    const lines: string[] = [];
    const stream = { write: (l: string) => void lines.push(l) };
    const app = await buildApp({ ctx, adminToken: ADMIN_TOKEN, apiToken: API_TOKEN, logger: { level: 'info', stream } });
    try {
      await app.listen({ host: '127.0.0.1', port: 0 });
      const addr = app.server.address();
      const url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
      await http(url, 'PUT', '/v1/users/l1', { token: API_TOKEN, json: { name: 'L' } });
      await http(url, 'DELETE', '/v1/users/l1', A);
      await http(url, 'GET', `/v1/users?access_token=${API_TOKEN}`);
      await http(url, 'GET', '/v1/admin/audit', { token: 'wrong-but-long-enough-token' });
    } finally {
      await app.close();
      await ctx.close();
    }
    const all = lines.join('');
    expect(all).not.toContain(ADMIN_TOKEN);
    expect(all).not.toContain(API_TOKEN);
    expect(all).not.toContain('wrong-but-long-enough-token');
    const parsed = lines.map((l) => JSON.parse(l) as { msg: string; status?: number; action?: string; backup?: string; url?: string });
    const requests = parsed.filter((p) => p.msg === 'request');
    expect(requests).toHaveLength(4);
    expect(requests.map((r) => r.status)).toEqual([200, 200, 400, 401]);
    // No URL at all: the route, and the count of query parameters the API does not know.
    expect(requests[2]).toMatchObject({ route: '/v1/users', otherQuery: 1 });
    expect(requests[2]?.url).toBeUndefined();
    const ops = parsed.filter((p) => p.msg === 'admin operation');
    expect(ops).toHaveLength(1);
    expect(ops[0]).toMatchObject({ action: 'delete-users' });
    expect(ops[0]?.backup).toMatch(/^memory_backup_/);
    await cleanup();
  });
});
