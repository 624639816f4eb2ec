import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { MemoryRecord } from '../../src/record.js';
import { FIXTURES } from '../helpers/tmp.js';
import { ADMIN_TOKEN, KINDS, http, startApp, type ErrorBody, type TestServer } from '../server/helpers.js';

const A = { token: ADMIN_TOKEN };

/** `{"a":{"a":...1...}}`, `depth` objects deep, built as text: JSON.stringify itself overflows on it. */
function deepText(depth: number): string {
  return '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
}

/** A JSON object of `n` keys, as text. */
function manyKeysText(n: number): string {
  const parts: string[] = [];
  for (let i = 0; i < n; i++) parts.push(`"k${i}":${i}`);
  return `{${parts.join(',')}}`;
}

interface Hostile {
  method: string;
  path: string;
  raw: string;
}

/** Every write route, with bodies that break each limit: depth 4,000/5,000/10,000, 20,000 keys, 70 KiB / 100 KiB strings. */
function hostileWrites(prefix: string): Hostile[] {
  const list: Hostile[] = [];
  for (const depth of [4000, 5000, 10_000]) {
    const id = `${prefix}-deep-${depth}`;
    list.push({ method: 'PUT', path: `/v1/users/${id}`, raw: `{"name":"x","flags":{"f":${deepText(depth)}}}` });
    list.push({ method: 'PATCH', path: `/v1/users/${id}`, raw: `{"slots":{"s":${deepText(depth)}}}` });
    list.push({ method: 'POST', path: `/v1/users/${id}/history`, raw: `{"role":"user","text":"hi","meta":${deepText(depth)}}` });
    list.push({ method: 'PUT', path: `/v1/users/${id}/flags/f`, raw: `{"value":${deepText(depth)}}` });
    list.push({ method: 'PUT', path: `/v1/users/${id}/slots/s`, raw: `{"value":${deepText(depth)}}` });
    // A deep unknown top-level field, the shape of the original report.
    list.push({ method: 'PUT', path: `/v1/users/${id}-x`, raw: `{"x":${deepText(depth)}}` });
  }
  const keys = `${prefix}-keys`;
  list.push({ method: 'PUT', path: `/v1/users/${keys}`, raw: `{"flags":${manyKeysText(20_000)}}` });
  list.push({ method: 'POST', path: `/v1/users/${keys}/history`, raw: `{"role":"user","text":"hi","meta":${manyKeysText(20_000)}}` });
  list.push({ method: 'PUT', path: `/v1/users/${keys}/slots/s`, raw: `{"value":${manyKeysText(20_000)}}` });
  list.push({ method: 'PUT', path: `/v1/users/${keys}-arr`, raw: `{"summary_context":[${Array(20_000).fill('"s"').join(',')}]}` });
  const big = `${prefix}-string`;
  list.push({ method: 'POST', path: `/v1/users/${big}/history`, raw: JSON.stringify({ role: 'user', text: 'x'.repeat(70 * 1024) }) });
  list.push({ method: 'PUT', path: `/v1/users/${big}/flags/f`, raw: JSON.stringify({ value: 'é'.repeat(40 * 1024) }) });
  list.push({ method: 'PATCH', path: `/v1/users/${big}`, raw: JSON.stringify({ address: 'y'.repeat(100 * 1024) }) });
  return list;
}

/** The chatmem line format (what a backup of the old daemon held), with one raw JSON text per user. */
function seedBackupText(entries: [string, string][]): string {
  return `{\n${entries.map(([id, json]) => `${JSON.stringify(id)}:${json}`).join(',\n')}\n}\n`;
}

describe.each(KINDS)('hostile records over HTTP, %s store', (kind) => {
  let s: TestServer;
  beforeEach(async () => {
    s = await startApp(kind);
  });
  afterEach(async () => {
    await s.close();
  });

  it('refuses every over-limit body with 400 E_RECORD while 200 concurrent honest appends all succeed', async () => {
    const users = Array.from({ length: 20 }, (_, i) => `62811${String(i).padStart(4, '0')}`);
    const honest = Array.from({ length: 200 }, (_, i) => ({ user: users[i % users.length]!, text: `pesan ${i}` }));
    const hostile = hostileWrites('evil');
    // Hostile writes to honest users too: they must not touch those users' records either.
    for (const u of users.slice(0, 3)) hostile.push({ method: 'PATCH', path: `/v1/users/${u}`, raw: `{"flags":{"f":${deepText(5000)}}}` });

    // Interleave: a hostile write after every few honest ones, all in flight at once.
    const calls: Promise<{ kind: 'honest' | 'hostile'; status: number; code?: string; message?: string }>[] = [];
    let h = 0;
    honest.forEach((m, i) => {
      calls.push(
        http(s.url, 'POST', `/v1/users/${m.user}/history`, { json: { role: 'user', text: m.text } }).then((r) => ({ kind: 'honest' as const, status: r.status })),
      );
      if (i % 8 === 0 && h < hostile.length) {
        const x = hostile[h++]!;
        calls.push(
          http<ErrorBody>(s.url, x.method, x.path, { raw: x.raw }).then((r) => ({
            kind: 'hostile' as const,
            status: r.status,
            code: r.body.error?.code,
            message: r.body.error?.message,
          })),
        );
      }
    });
    while (h < hostile.length) {
      const x = hostile[h++]!;
      calls.push(http<ErrorBody>(s.url, x.method, x.path, { raw: x.raw }).then((r) => ({ kind: 'hostile' as const, status: r.status, code: r.body.error?.code, message: r.body.error?.message })));
    }
    const results = await Promise.all(calls);

    const honestResults = results.filter((r) => r.kind === 'honest');
    expect(honestResults).toHaveLength(200);
    expect(honestResults.filter((r) => r.status !== 201)).toEqual([]);
    const hostileResults = results.filter((r) => r.kind === 'hostile');
    expect(hostileResults.length).toBe(hostile.length);
    for (const r of hostileResults) {
      expect(r).toMatchObject({ status: 400, code: 'E_RECORD' });
      expect(r.message).toMatch(/deeper than 64 levels|more than 10000 keys|longer than 65536 bytes/);
    }

    // Every acknowledged append is there, in order per user; no hostile value reached any record.
    for (const u of users) {
      const r = await http<MemoryRecord>(s.url, 'GET', `/v1/users/${u}`);
      expect(r.status).toBe(200);
      const expected = honest.filter((m) => m.user === u).map((m) => m.text);
      expect(r.body.history.map((e) => e.text)).toEqual(expected);
      expect(r.body.flags).toEqual({});
    }
    for (const x of hostile) {
      const id = decodeURIComponent(x.path.split('/')[3]!);
      if (users.includes(id)) continue;
      expect((await http(s.url, 'GET', `/v1/users/${encodeURIComponent(id)}`)).status).toBe(404);
    }

    // Backup, clear, full restore round-trips the honest data.
    const b = await http<{ backup: string }>(s.url, 'POST', '/v1/admin/backups', A);
    expect(b.status).toBe(201);
    expect((await http(s.url, 'POST', '/v1/admin/clear', { ...A, json: { confirm: 'YES' } })).status).toBe(200);
    const restored = await http(s.url, 'POST', '/v1/admin/restore', { ...A, json: { backup: b.body.backup } });
    expect(restored.status).toBe(200);
    const r0 = await http<MemoryRecord>(s.url, 'GET', `/v1/users/${users[0]}`);
    expect(r0.body.history).toHaveLength(10);
  });

  it('names the limit that was broken, and accepts values right at the limits', async () => {
    const atLimit = { role: 'user', text: 'x'.repeat(64 * 1024), meta: JSON.parse(deepText(61)) as unknown };
    // The entry is level 3 of the record and meta level 4: 61 objects inside meta end at level 64.
    expect((await http(s.url, 'POST', '/v1/users/edge/history', { json: atLimit })).status).toBe(201);
    const over = await http<ErrorBody>(s.url, 'POST', '/v1/users/edge/history', { json: { ...atLimit, meta: JSON.parse(deepText(62)) as unknown } });
    expect(over.status).toBe(400);
    expect(over.body.error).toMatchObject({ code: 'E_RECORD' });
    expect(over.body.error.message).toBe('history entry: field "meta" nests objects/arrays deeper than 64 levels');
    const long = await http<ErrorBody>(s.url, 'POST', '/v1/users/edge/history', { json: { role: 'user', text: 'x'.repeat(64 * 1024 + 1) } });
    expect(long.body.error.message).toBe('history entry: field "text" has a string longer than 65536 bytes');
    const keys = await http<ErrorBody>(s.url, 'PUT', '/v1/users/edge2', { raw: `{"flags":${manyKeysText(10_001)}}` });
    expect(keys.body.error.message).toMatch(/^record of user "edge2": field "flags" has more than 10000 keys/);
    expect((await http(s.url, 'PUT', '/v1/users/edge2', { raw: `{"flags":${manyKeysText(9_000)}}` })).status).toBe(200);
    // Growing flags past the limit one key at a time is refused too.
    const grow = await http<ErrorBody>(s.url, 'PATCH', '/v1/users/edge2', { raw: `{"flags":${manyKeysText(9_000).replace(/"k/g, '"j')}}` });
    expect(grow.status).toBe(400);
    expect(grow.body.error.message).toBe('flags would hold 18000 keys; the limit is 10000');
  });

  it('import refuses a file with an over-limit user, naming the user, and writes nothing', async () => {
    const file = path.join(s.dir, 'incoming.json');
    const ok = JSON.stringify({ name: 'Siti' });
    await fsp.writeFile(file, seedBackupText([['62811', ok], ['62812-deep', `{"flags":{"f":${deepText(5000)}}}`], ['62813', ok]]));
    const r = await http<ErrorBody>(s.url, 'POST', '/v1/admin/import', { ...A, json: { file } });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('E_IMPORT');
    expect(r.body.error.message).toContain('user "62812-deep": record of user "62812-deep": field "flags" nests objects/arrays deeper than 64 levels');
    expect((await http(s.url, 'GET', '/v1/users/62811')).status).toBe(404);
    expect((await http<{ users: number }>(s.url, 'GET', '/v1/stats')).body.users).toBe(0);
  });

  it('a record nested 100,000 levels deep from before the limits is read, appended to, backed up, cleared and restored', async () => {
    const fixture = JSON.parse(await fsp.readFile(path.join(FIXTURES, 'memory.json'), 'utf8')) as Record<string, MemoryRecord>;
    const honestIds = Object.keys(fixture).slice(0, 5);
    const deep = deepText(100_000);
    const entries: [string, string][] = honestIds.map((id) => [id, JSON.stringify(fixture[id])]);
    entries.push(['old-deep', `{"user_id":"old-deep","name":"Lama","created_at":"2025-01-01T00:00:00Z","updated_at":"2025-01-01T00:00:00Z","flags":{"f":${deep}},"legacy":${deepText(5000)}}`]);
    await fsp.mkdir(s.config.backupDir, { recursive: true, mode: 0o700 });
    // A seed-era full backup (legacy name, no manifest): what an operator restores after a crash.
    await fsp.writeFile(path.join(s.config.backupDir, 'memory_backup_20251125_132811.json'), seedBackupText(entries), { mode: 0o600 });

    // A seed-era file has no checksum: restoring it needs the explicit acceptance.
    const first = await http<ErrorBody>(s.url, 'POST', '/v1/admin/restore', { ...A, json: { backup: 'memory_backup_20251125_132811', allowUnverified: true } });
    expect(first.status, first.text).toBe(200);

    const got = await http(s.url, 'GET', '/v1/users/old-deep');
    expect(got.status).toBe(200);
    expect(got.text).toContain(`"flags":{"f":${deep}}`);
    expect((await http(s.url, 'GET', '/v1/admin/users/old-deep', A)).text).toContain(deep);
    // The user can keep chatting: the old value stays, the new message is stored.
    const appended = await http(s.url, 'POST', '/v1/users/old-deep/history', { json: { role: 'user', text: 'masih bisa' } });
    expect(appended.status).toBe(201);
    expect(appended.text).toContain(deep);
    expect((await http(s.url, 'PUT', '/v1/users/old-deep/flags/ok', { json: { value: true } })).status).toBe(200);
    expect((await http(s.url, 'GET', '/v1/search?q=masih')).text).toContain('old-deep');

    const b = await http<{ backup: string }>(s.url, 'POST', '/v1/admin/backups', A);
    expect(b.status, b.text).toBe(201);
    expect((await http(s.url, 'POST', `/v1/admin/backups/${b.body.backup}/verify`, A)).status).toBe(200);
    const diff = await http<{ changed: unknown[]; unchanged: number }>(s.url, 'GET', `/v1/admin/diff?a=${b.body.backup}`, A);
    expect(diff.status, diff.text).toBe(200);
    expect(diff.body).toMatchObject({ changed: [], unchanged: honestIds.length + 1 });

    expect((await http(s.url, 'POST', '/v1/admin/clear', { ...A, json: { confirm: 'YES' } })).status).toBe(200);
    expect((await http(s.url, 'GET', '/v1/users/old-deep')).status).toBe(404);
    const again = await http<ErrorBody>(s.url, 'POST', '/v1/admin/restore', { ...A, json: { backup: b.body.backup } });
    expect(again.status, again.text).toBe(200);
    const back = await http<MemoryRecord>(s.url, 'GET', '/v1/users/old-deep');
    expect(back.status).toBe(200);
    expect(back.text).toContain(`"f":${deep}`);
    expect(back.text).toContain(`"legacy":${deepText(5000)}`);
    expect(back.body.history.map((h) => h.text)).toEqual(['masih bisa']);
    expect(back.body.flags.ok).toBe(true);
    for (const id of honestIds) {
      expect((await http<MemoryRecord>(s.url, 'GET', `/v1/users/${encodeURIComponent(id)}`)).body).toEqual(fixture[id]);
    }
  });
});
