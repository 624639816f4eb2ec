import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/open.js';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import type { Store } from '../../src/store/types.js';
import { tempDir } from '../helpers/tmp.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const TS = '2026-01-01T00:00:00.000Z';
const GENERATION = /^(users|search_docs|search_fts|search_pending)_(old|new)_[a-z0-9]+/;

function rec(id: string, word: string, messages = 4): MemoryRecord {
  return { ...newRecord(id, TS), name: `${word} ${id}`, history: Array.from({ length: messages }, (_, i) => ({ role: 'user' as const, text: `${word} message ${i} of ${id}`, ts: TS })) };
}
async function* many(prefix: string, word: string, n: number): AsyncGenerator<MemoryRecord> {
  for (let i = 0; i < n; i++) yield rec(`${prefix}${String(i).padStart(5, '0')}`, word);
}
/** Every table and index of a clear's or restore's generations (old or new, with FTS5 shadow tables). */
function generationObjects(file: string): string[] {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare<[], string>('SELECT name FROM sqlite_master').pluck().all().filter((n) => GENERATION.test(n));
  } finally {
    db.close();
  }
}
async function allIds(store: Store): Promise<string[]> {
  const ids: string[] = [];
  for await (const r of store.scan()) ids.push(r.user_id);
  return ids;
}
/** The exact totals of what the store holds, from its records. */
async function recount(store: Store): Promise<{ users: number; messages: number; bytes: number }> {
  const t = { users: 0, messages: 0, bytes: 0 };
  for await (const [, json] of store.scanJson()) {
    const r = JSON.parse(json) as MemoryRecord;
    t.users++;
    t.messages += r.history.length;
    t.bytes += Buffer.byteLength(json);
  }
  return t;
}
async function drained(file: string): Promise<void> {
  for (let i = 0; i < 500 && generationObjects(file).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
}

describe('sqlite clear and full restore by table swap', () => {
  it('stats and count are right after a clear and after a restore, and the triggers keep them right after', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const store = await openStore(`sqlite:${file}`);
      await store.exclusive('all', (ctx) => ctx.putAll(many('a-', 'zebrafish', 300)));
      expect(await store.clear()).toBe(300);
      expect(await store.count()).toBe(0);
      expect(await store.stats()).toEqual({ users: 0, messages: 0, bytes: 0, lastUpdate: null });
      expect(await store.search('zebrafish')).toEqual([]);
      await store.appendHistory('late', { role: 'user', text: 'narwhal tusk' });
      expect(await store.stats()).toMatchObject(await recount(store));
      expect((await store.search('narwhal')).map((u) => u.user_id)).toEqual(['late']);

      const staged = await store.stage(many('b-', 'axolotl', 250));
      expect(staged).not.toBeNull();
      // Written after the staging, before the swap: the restore replaces it.
      await store.appendHistory('gone', { role: 'user', text: 'narwhal again' });
      expect(await store.exclusive('all', async (ctx) => ctx.replaceStaged!(staged!))).toBe(250);
      await staged!.release();
      expect(await store.count()).toBe(250);
      expect(await store.stats()).toEqual({ ...(await recount(store)), lastUpdate: TS });
      expect(await store.search('narwhal')).toEqual([]);
      expect((await store.search('axolotl message 3 of b-00042')).map((u) => u.user_id)).toEqual(['b-00042']);
      expect((await store.search('axolotl', { limit: 1000 })).length).toBe(250);

      // New documents after the swap get ids past the restored ones (AUTOINCREMENT followed the rename).
      await store.appendHistory('b-00007', { role: 'user', text: 'capybara' });
      await store.appendHistory('c-new', { role: 'user', text: 'capybara too' });
      await store.delete(['b-00001']);
      expect(await store.stats()).toMatchObject(await recount(store));
      expect(await store.count()).toBe(250);
      expect((await store.search('capybara')).map((u) => u.user_id)).toEqual(['b-00007', 'c-new']);
      expect((await store.search('axolotl message 3 of b-00007')).map((u) => u.user_id)).toEqual(['b-00007']);
      await drained(file);
      expect(generationObjects(file)).toEqual([]);
      await store.close();
      const again = await openStore(`sqlite:${file}`);
      expect(await again.count()).toBe(250);
      expect(await again.stats()).toMatchObject(await recount(again));
      await again.close();
    } finally {
      await t.cleanup();
    }
  });

  it('a staging released without its swap leaves the store as it was and drops its tables', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const store = await openStore(`sqlite:${file}`);
      await store.exclusive('all', (ctx) => ctx.putAll(many('a-', 'zebrafish', 50)));
      const staged = await store.stage(many('b-', 'axolotl', 80));
      expect(generationObjects(file).some((n) => n.startsWith('users_new_'))).toBe(true);
      await staged!.release();
      await drained(file);
      expect(generationObjects(file)).toEqual([]);
      expect(await allIds(store)).toEqual(Array.from({ length: 50 }, (_, i) => `a-${String(i).padStart(5, '0')}`));
      expect(await store.search('axolotl')).toEqual([]);
      await store.close();
    } finally {
      await t.cleanup();
    }
  });

  it("a forget right after a clear leaves nothing of the cleared users' rows in the file", async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const store = await openStore(`sqlite:${file}`);
      await store.exclusive('all', (ctx) => ctx.putAll(many('a-', 'zebrafish', 2000)));
      await store.put('secret', { name: 'Quetzalcoatlus Northropi' });
      await store.clear();
      await store.put('other', {});
      // Before the background drop ends: the old tables still hold the secret.
      expect(generationObjects(file).some((n) => n.startsWith('users_old_'))).toBe(true);
      await store.exclusive({ ids: ['other'] }, async (ctx) => ctx.forget!(['other']));
      expect(generationObjects(file)).toEqual([]);
      await store.close();
      expect(readFileSync(file).includes('Quetzalcoatlus')).toBe(false);
    } finally {
      await t.cleanup();
    }
  });

  function runKill(file: string, mode: 'drop' | 'build', n: number): Promise<{ signal: NodeJS.Signals | null; out: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [path.join(ROOT, 'test/fixtures/sqlite-swap-kill.mjs'), file, mode, String(n)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      child.on('error', reject);
      child.on('exit', (_code, signal) => resolve({ signal, out }));
    });
  }

  it('a kill during the chunked drop of the old tables: the store opens with exactly the users written after the clear, nothing left over', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const { signal, out } = await runKill(file, 'drop', 3000);
      expect(signal).toBe('SIGKILL');
      expect(out).toMatch(/^killed with /);
      expect(generationObjects(file).some((n) => n.includes('_old_'))).toBe(true);
      const store = await openStore(`sqlite:${file}`);
      expect(generationObjects(file)).toEqual([]);
      expect(await allIds(store)).toEqual(['after-0', 'after-1', 'after-2', 'after-3', 'after-4']);
      expect(await store.stats()).toMatchObject(await recount(store));
      expect((await store.search('narwhal')).map((u) => u.user_id)).toEqual(['after-0', 'after-1', 'after-2', 'after-3', 'after-4']);
      expect(await store.search('zebrafish')).toEqual([]);
      await store.close();
    } finally {
      await t.cleanup();
    }
  }, 120_000);

  it("a kill during a restore's build of the new tables: the store opens as it was, nothing left over", async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const { signal, out } = await runKill(file, 'build', 3000);
      expect(signal).toBe('SIGKILL');
      expect(out).toMatch(/^killed with /);
      expect(generationObjects(file).some((n) => n.includes('_new_'))).toBe(true);
      const store = await openStore(`sqlite:${file}`);
      expect(generationObjects(file)).toEqual([]);
      const ids = await allIds(store);
      expect(ids).toEqual(Array.from({ length: 3000 }, (_, i) => `old-${String(i).padStart(5, '0')}`));
      expect(await store.stats()).toMatchObject(await recount(store));
      expect((await store.search('zebrafish message 9 of old-02999')).map((u) => u.user_id)).toEqual(['old-02999']);
      expect(await store.search('axolotl')).toEqual([]);
      await store.close();
    } finally {
      await t.cleanup();
    }
  }, 120_000);
});
