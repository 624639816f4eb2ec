import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/ops/audit.js';
import { dropsMemory, Operations } from '../../src/ops/operations.js';
import { parseRecord, type MemoryRecord } from '../../src/record.js';
import { JsonFileDriver } from '../../src/store/json-file.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { TEST_STORES } from '../helpers/stores.js';
import { tempDir } from '../helpers/tmp.js';
import { ADMIN_TOKEN, http, startApp, type TestServer } from '../server/helpers.js';

const ACTOR = { kind: 'os' as const, name: 'atomic-test' };

function rec(id: string, text: string): MemoryRecord {
  return parseRecord(id, { name: `N ${id}`, history: [{ role: 'user', text, ts: '2025-11-20T01:02:07Z' }], flags: { seen: true } });
}

async function state(store: Store): Promise<string> {
  const out: string[] = [];
  for await (const [id, json] of store.scanJson()) out.push(`${id}=${json}`);
  return out.join('\n');
}

/** A stream that fails after `n` records, as a corrupt file or a dying source would. */
async function* failingAfter(n: number, prefix: string): AsyncGenerator<MemoryRecord> {
  for (let i = 0; i < n; i++) yield rec(`${prefix}${String(i).padStart(5, '0')}`, 'new');
  throw new Error('source broke');
}

function putAllSuite(name: string, open: () => Promise<{ store: Store; done: () => Promise<void> }>): void {
  describe(`putAll on ${name}: all or nothing`, () => {
    let store: Store;
    let done: () => Promise<void>;
    beforeAll(async () => {
      ({ store, done } = await open());
      await store.exclusive('all', (ctx) => ctx.putMany(Array.from({ length: 50 }, (_, i) => rec(`u${String(i).padStart(5, '0')}`, 'old'))));
    });
    afterAll(async () => done());

    it('a source that fails after 1,200 records (past every batch size) leaves the store exactly as it was', async () => {
      const before = await state(store);
      // Overwrites existing users and adds new ones: a half-applied write would show either.
      await expect(store.exclusive({ ids: ['u00000'] }, (ctx) => ctx.putAll(failingAfter(1200, 'u')))).rejects.toThrow('source broke');
      expect(await state(store)).toBe(before);
      expect(await store.count()).toBe(50);
    });

    it('a whole stream lands, a repeated id keeps its last record, and the count is what was read', async () => {
      async function* src(): AsyncGenerator<MemoryRecord> {
        for (let i = 0; i < 1200; i++) yield rec(`v${String(i).padStart(5, '0')}`, 'first');
        yield rec('v00007', 'second');
      }
      const n = await store.exclusive({ ids: ['v00007'] }, (ctx) => ctx.putAll(src()));
      expect(n).toBe(1201);
      expect(await store.count()).toBe(1250);
      expect((await store.get('v00007'))?.history[0]?.text).toBe('second');
      expect((await store.stats()).users).toBe(1250);
    });
  });
}

for (const entry of TEST_STORES) {
  const suite = () =>
    putAllSuite(entry.name === 'json-file' ? 'json' : entry.name, async () => {
      const h = await entry.harness();
      const store = await h.open();
      return { store, done: async () => { await store.close(); await h.cleanup(); } };
    });
  if (entry.name === 'postgres') entry.describe('putAll on PostgreSQL', suite);
  else suite();
}

describe('restore and import write no empty backup', () => {
  for (const kind of ['sqlite', 'json'] as const) {
    it(`${kind}: a restore or import that overwrites nothing answers backup: null and writes no file`, async () => {
      const t = await tempDir();
      const file = path.join(t.dir, kind === 'sqlite' ? 'm.db' : 'm.json');
      const store = createStore(kind === 'sqlite' ? await SqliteDriver.open(file) : await JsonFileDriver.open(file));
      const backupDir = path.join(t.dir, 'backups');
      const ops = new Operations({ store, backupDir, audit: new AuditLog(path.join(t.dir, 'audit.log')), actor: ACTOR });
      try {
        await store.exclusive('all', (ctx) => ctx.putMany([rec('a', 'x'), rec('b', 'y')]));
        const full = await ops.createBackup();
        const del = await ops.deleteUsers(['a']);
        const files = () => readdirSync(backupDir).filter((n) => !n.endsWith('.meta.json')).sort();
        const before = files();
        // Undoing a delete: the user is gone, nothing of it to save.
        const undo = await ops.restore(del.backup);
        expect(undo.backup).toBeNull();
        expect(await store.get('a')).not.toBeNull();
        await ops.clearAll();
        const afterClear = files();
        // A full restore into an empty store.
        const r = await ops.restore(full.id);
        expect(r.backup).toBeNull();
        expect(await store.count()).toBe(2);
        expect(files()).toEqual(afterClear);
        expect(before.length + 1).toBe(afterClear.length);
        // The audit says so too: no backup named.
        const restores = (await ops.readAudit({ action: 'restore' })).filter((e) => e.outcome === 'done');
        expect(restores.map((e) => e.backup)).toEqual([undefined, undefined]);
        // An import of users the store does not have: none overwritten, no backup.
        const src = path.join(t.dir, 'new.json');
        const { writeFileSync } = await import('node:fs');
        writeFileSync(src, JSON.stringify({ c: rec('c', 'z') }));
        expect(await ops.importFile(src)).toMatchObject({ imported: 1, overwritten: 0, backup: null });
        expect(files()).toEqual(afterClear);
        // Overwriting something still backs it up first.
        const again = await ops.restore(full.id);
        expect(typeof again.backup).toBe('string');
      } finally {
        await store.close();
        await t.cleanup();
      }
    });
  }
});

describe('dropsMemory', () => {
  const base = parseRecord('u', {
    history: [
      { role: 'user', text: 'a', ts: '2025-11-20T01:02:07Z' },
      { role: 'bot', text: 'b', ts: '2025-11-20T01:02:08Z' },
    ],
    flags: { f: 1 },
    slots: { s: 'x' },
  });
  it('is true when a history entry, a flag or a slot goes, false when things are only added or changed', () => {
    expect(dropsMemory(base, { ...base, history: [] })).toBe(true);
    expect(dropsMemory(base, { ...base, history: base.history.slice(1) })).toBe(true);
    expect(dropsMemory(base, { ...base, flags: {} })).toBe(true);
    expect(dropsMemory(base, { ...base, slots: { other: 1 } })).toBe(true);
    expect(dropsMemory(base, { ...base, name: 'changed', flags: { f: 2, g: 3 } })).toBe(false);
    expect(dropsMemory(base, { ...base, history: [...base.history, { role: 'user', text: 'c', ts: '2025-11-20T01:02:09Z' }] })).toBe(false);
  });
});

for (const kind of ['sqlite', 'json'] as const) {
  describe(`${kind}: PUT and PATCH that wipe a user's memory back that user up first (reason reset)`, () => {
    let s: TestServer;
    beforeAll(async () => {
      s = await startApp(kind);
    });
    afterAll(async () => s.close());

    const resetBackups = async () => (await s.ctx.ops.listBackups()).filter((b) => b.reason === 'reset');
    const put = (id: string, body: unknown) => http<MemoryRecord>(s.url, 'PUT', `/v1/users/${id}`, { token: ADMIN_TOKEN, json: body });
    const patch = (id: string, body: unknown) => http<MemoryRecord>(s.url, 'PATCH', `/v1/users/${id}`, { token: ADMIN_TOKEN, json: body });
    const append = (id: string, text: string) => http<MemoryRecord>(s.url, 'POST', `/v1/users/${id}/history`, { token: ADMIN_TOKEN, json: { role: 'user', text } });

    it('a PUT over an existing user saves its previous record; a PUT of a new user does not', async () => {
      expect((await put('alice', { name: 'Alice', flags: { vip: true } })).status).toBe(200);
      expect(await resetBackups()).toHaveLength(0);
      await append('alice', 'hello');
      const old = await s.ctx.store.get('alice');
      const r = await put('alice', { name: 'Alice 2' });
      expect(r.status).toBe(200);
      expect(r.body.history).toEqual([]);
      const resets = await resetBackups();
      expect(resets).toHaveLength(1);
      expect(resets[0]?.scope).toEqual(['alice']);
      const inspected = await s.ctx.ops.inspectBackup(resets[0]?.id ?? '', { user: 'alice' });
      expect(inspected.record).toEqual(old);
      expect((await s.ctx.ops.verifyBackups(resets[0]?.id)).every((v) => v.ok)).toBe(true);
      // The audit names who did it and the backup.
      const audit = (await s.ctx.ops.readAudit({ action: 'reset-user' })).filter((e) => e.outcome === 'done');
      expect(audit.at(-1)).toMatchObject({ userIds: ['alice'], backup: resets[0]?.id });
      // And restoring it brings the memory back.
      await s.ctx.ops.restore(resets[0]?.id ?? '');
      expect((await s.ctx.store.get('alice'))?.history.map((h) => h.text)).toEqual(['hello']);
    });

    it('a PUT that keeps every entry, flag and slot writes no backup', async () => {
      const n = (await resetBackups()).length;
      const cur = await s.ctx.store.get('alice');
      expect((await put('alice', { ...cur, name: 'Alice 3', flags: { ...cur?.flags, extra: 1 } })).status).toBe(200);
      expect(await resetBackups()).toHaveLength(n);
    });

    it('a PATCH emptying history, flags or slots saves the record; other PATCHes and the history cap do not', async () => {
      let n = (await resetBackups()).length;
      expect((await patch('alice', { name: 'A', product: 'p' })).status).toBe(200);
      expect(await resetBackups()).toHaveLength(n);
      for (const body of [{ history: [] }, { flags: { vip: null, extra: null } }]) {
        if (body.history) await append('alice', 'again');
        const r = await patch('alice', body);
        expect(r.status).toBe(200);
        expect(await resetBackups()).toHaveLength(++n);
      }
      // 60 appends go past the cap of 50: history loses its oldest entries, which is no reset.
      for (let i = 0; i < 60; i++) await append('bob', `m${i}`);
      expect((await s.ctx.store.get('bob'))?.history).toHaveLength(50);
      expect(await resetBackups()).toHaveLength(n);
      // A bad patch is refused before any section or backup.
      expect((await patch('alice', { history: 'nope' })).status).toBe(400);
      expect(await resetBackups()).toHaveLength(n);
    });

    it('appends racing a wiping PUT are each in the reset backup or in the record after it (both orders happen)', async () => {
      await put('carol', { name: 'Carol' });
      const texts: string[] = [];
      const send = (i: number) => {
        texts.push(`race-${i}`);
        return append('carol', `race-${i}`);
      };
      const before = new Set((await resetBackups()).map((b) => b.id));
      // Ten land before the PUT for sure, ten race it, and appends keep coming until it has answered.
      for (let i = 0; i < 10; i++) await send(i);
      let putDone = false;
      const wipe = put('carol', { name: 'Carol wiped' }).finally(() => (putDone = true));
      const racing = Array.from({ length: 10 }, (_, i) => send(10 + i));
      const results = [...(await Promise.all(racing))];
      for (let i = 20, extra = 0; i < 400 && extra < 5; i++) {
        results.push(await send(i));
        if (putDone) extra++;
      }
      results.push(await wipe);
      expect(results.every((r) => r.status === 200 || r.status === 201)).toBe(true);
      const fresh = (await resetBackups()).filter((b) => !before.has(b.id));
      expect(fresh).toHaveLength(1);
      const saved = (await s.ctx.ops.inspectBackup(fresh[0]?.id ?? '', { user: 'carol' })).record;
      const inBackup = new Set(saved?.history.map((h) => h.text));
      const after = new Set((await s.ctx.store.get('carol'))?.history.map((h) => h.text));
      for (const t of texts) expect(inBackup.has(t) || after.has(t), `${t} lost`).toBe(true);
      expect(texts.some((t) => inBackup.has(t))).toBe(true);
      expect(texts.some((t) => after.has(t))).toBe(true);
      // No temp files in the backup dir.
      expect(readdirSync(s.ctx.config.backupDir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
      expect(JSON.parse(readFileSync(s.ctx.config.auditLog, 'utf8').trim().split('\n').at(-1) ?? '{}')).toMatchObject({ outcome: 'done' });
    });
  });
}
