import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { newRecord, type HistoryInput } from '../../src/record.js';
import { openStore } from '../../src/store/open.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { tempDir } from '../helpers/tmp.js';

// Pending appends (src/store/sqlite/deltas.ts): a store whose minimal appends are written as pending
// rows must read, list, count, search, back up and write exactly as one where each append rewrote
// the record at once (the behaviour before schema 5), whenever the compactor folds.

const ROOT = path.resolve(import.meta.dirname, '../..');
/** Background work held back: folds and index chunks run only where the test says. */
const HELD = { indexDelayMs: 1e9, foldDelayMs: 1e9 };
const USERS = ['u1', 'u2', 'u3'];

type Op =
  | { kind: 'minimal'; user: string; entries: HistoryInput[] }
  | { kind: 'append'; user: string; entries: HistoryInput[] }
  | { kind: 'patch'; user: string; name: string }
  | { kind: 'put'; user: string; text: string }
  | { kind: 'flag'; user: string; value: number }
  | { kind: 'delete'; user: string }
  | { kind: 'fold'; limit: number }
  | { kind: 'index' }
  | { kind: 'reopen'; cap: number }
  | { kind: 'tick'; seconds: number }
  | { kind: 'read' };

const user = fc.constantFrom(...USERS);
// A small pool of ids, so that repeats (no-ops) and repeats within one batch happen.
const entry: fc.Arbitrary<HistoryInput> = fc.record({
  role: fc.constantFrom('user', 'bot'),
  text: fc.constantFrom('halo', 'kipas mati', 'bocor', 'terima kasih'),
  id: fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'),
});
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('minimal' as const), user, entries: fc.array(entry, { minLength: 1, maxLength: 3 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('append' as const), user, entries: fc.array(entry, { minLength: 1, maxLength: 2 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('patch' as const), user, name: fc.constantFrom('Budi', 'Sari') }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('put' as const), user, text: fc.constantFrom('lama', 'baru') }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('flag' as const), user, value: fc.integer({ min: 0, max: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('delete' as const), user }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('fold' as const), limit: fc.integer({ min: 1, max: 3 }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'index' as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reopen' as const), cap: fc.integer({ min: 2, max: 4 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('tick' as const), seconds: fc.integer({ min: 1, max: 100 }) }) },
  { weight: 3, arbitrary: fc.constant({ kind: 'read' as const }) },
);

async function scanText(store: Store): Promise<string[]> {
  const out: string[] = [];
  for await (const [id, text] of store.scanJson()) out.push(`${id} ${text}`);
  return out;
}

/** Every read path of both stores, compared. */
async function sameReads(a: Store, b: Store): Promise<void> {
  for (const u of USERS) expect(await a.get(u)).toEqual(await b.get(u));
  expect(await a.list()).toEqual(await b.list());
  expect(await a.stats()).toEqual(await b.stats());
  expect(await a.count()).toEqual(await b.count());
  for (const q of ['kipas', 'bocor', 'Budi', 'halo']) expect(await a.search(q)).toEqual(await b.search(q));
  expect(await scanText(a)).toEqual(await scanText(b));
}

describe('sqlite pending appends', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('read, list, count, search, scan and write exactly as appends that rewrite the record, folded at any point', async () => {
    // Only Date is faked: both stores see the same clock, the drivers' timers stay real.
    vi.useFakeTimers({ toFake: ['Date'] });
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), async (ops) => {
        vi.setSystemTime(new Date('2026-03-01T00:00:00Z'));
        const t = await tempDir();
        const fileA = path.join(t.dir, 'a.db');
        const fileB = path.join(t.dir, 'b.db');
        let cap = 3;
        let driverA = await SqliteDriver.open(fileA, HELD);
        let a = createStore(driverA, { historyCap: cap });
        let b = createStore(await SqliteDriver.open(fileB, HELD), { historyCap: cap });
        try {
          for (const o of ops) {
            switch (o.kind) {
              case 'minimal': {
                // The reference appends with the record read and rewritten, as before pending appends.
                const got = await a.appendHistoryMinimal(o.user, o.entries);
                await b.appendHistoryMany(o.user, o.entries);
                expect(got).toEqual({ user_id: o.user, id: o.entries.at(-1)?.id });
                break;
              }
              case 'append':
                expect(await a.appendHistoryMany(o.user, o.entries)).toEqual(await b.appendHistoryMany(o.user, o.entries));
                break;
              case 'patch':
                expect(await a.patch(o.user, { name: o.name })).toEqual(await b.patch(o.user, { name: o.name }));
                break;
              case 'put': {
                const r = { ...newRecord(o.user, '2026-01-01T00:00:00Z'), summary_context: [o.text], history: [{ role: 'user', text: o.text, ts: '2026-01-01T00:00:00Z', id: 'a' }] };
                expect(await a.put(o.user, r)).toEqual(await b.put(o.user, r));
                break;
              }
              case 'flag':
                expect(await a.setFlag(o.user, 'n', o.value)).toEqual(await b.setFlag(o.user, 'n', o.value));
                break;
              case 'delete':
                expect(await a.delete([o.user])).toBe(await b.delete([o.user]));
                break;
              case 'fold':
                driverA.foldChunk(o.limit);
                break;
              case 'index':
                driverA.indexChunk(1000);
                break;
              case 'reopen':
                // close() folds; a store opened with another cap then appends with that cap.
                await a.close();
                await b.close();
                cap = o.cap;
                driverA = await SqliteDriver.open(fileA, HELD);
                a = createStore(driverA, { historyCap: cap });
                b = createStore(await SqliteDriver.open(fileB, HELD), { historyCap: cap });
                break;
              case 'tick':
                vi.setSystemTime(Date.now() + o.seconds * 1000);
                break;
              case 'read':
                await sameReads(a, b);
                break;
            }
          }
          await sameReads(a, b);
        } finally {
          await a.close();
          await b.close();
          await t.cleanup();
        }
      }),
      { numRuns: 60 },
    );
  }, 300_000);

  it('pending appends keep the cap and clock they were made with, across a reopen without a fold', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      // A process that appends and is killed leaves pending appends; here they are written by a store
      // with cap 2, then read by a store with cap 5 before any fold.
      const first = createStore(await SqliteDriver.open(file, HELD), { historyCap: 2 });
      for (const text of ['satu', 'dua', 'tiga']) await first.appendHistoryMinimal('u', [{ role: 'user', text, id: text }]);
      // Copy the file while the appends are pending (close() would fold them).
      const copy = path.join(t.dir, 'copy.db');
      const db = new Database(file, { readonly: true });
      await db.backup(copy);
      db.close();
      await first.close();
      const second = createStore(await SqliteDriver.open(copy, HELD), { historyCap: 5 });
      try {
        const pending = new Database(copy, { readonly: true });
        expect(pending.prepare('SELECT COUNT(*) FROM appends').pluck().get()).toBe(3);
        pending.close();
        expect((await second.get('u'))?.history.map((h) => h.text)).toEqual(['dua', 'tiga']);
        await second.appendHistoryMinimal('u', [{ role: 'user', text: 'empat', id: 'empat' }]);
        expect((await second.get('u'))?.history.map((h) => h.text)).toEqual(['dua', 'tiga', 'empat']);
        expect(await second.count()).toBe(1);
      } finally {
        await second.close();
      }
    } finally {
      await t.cleanup();
    }
  });

  it('a read-only open (another process writes) gets and scans records with their pending appends', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const writer = createStore(await SqliteDriver.open(file, HELD));
      try {
        await writer.put('u', { ...newRecord('u'), name: 'Sari' });
        await writer.appendHistoryMinimal('u', [{ role: 'user', text: 'halo' }]);
        await writer.appendHistoryMinimal('v', [{ role: 'user', text: 'baru' }]);
        const reader = await openStore(`sqlite:${file}`, { readOnly: true });
        try {
          expect((await reader.get('u'))?.history.map((h) => h.text)).toEqual(['halo']);
          expect((await reader.get('v'))?.last_answer).toBe('baru');
          // The scan replays them too, byte for byte what the writer's fold will store; 'v' exists only as appends.
          const scanned: [string, string][] = [];
          for await (const pair of reader.scanJson()) scanned.push(pair);
          expect(scanned).toEqual([
            ['u', JSON.stringify(await writer.get('u'))],
            ['v', JSON.stringify(await writer.get('v'))],
          ]);
        } finally {
          await reader.close();
        }
      } finally {
        await writer.close();
      }
    } finally {
      await t.cleanup();
    }
  });

  it('acknowledged minimal appends survive a SIGKILL, folded or not', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      // The child appends with the compactor running often, prints each acknowledged id, and is killed mid-way.
      const script = `
        const { SqliteDriver } = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist/store/sqlite/index.js')).href)});
        const { createStore } = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist/store/store.js')).href)});
        const store = createStore(await SqliteDriver.open(process.argv[1], { foldDelayMs: 5, foldMaxWaitMs: 20 }), { historyCap: 100000 });
        let k = 0;
        await Promise.all(Array.from({ length: 16 }, async () => {
          for (;;) {
            const n = k++;
            const r = await store.appendHistoryMinimal('u' + (n % 7), [{ role: 'user', text: 'pesan ' + n, id: 'm' + n }]);
            process.stdout.write(r.id + '\\n');
          }
        }));
      `;
      const child = spawn(process.execPath, ['--input-type=module', '-e', script, file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      await vi.waitFor(() => expect(out.split('\n').length).toBeGreaterThan(400), { timeout: 60_000, interval: 50 });
      const exited = new Promise((r) => child.on('exit', r));
      child.kill('SIGKILL');
      await exited;
      const acked = out.split('\n').filter((l) => l.startsWith('m'));
      expect(err).toBe('');
      const raw = new Database(file, { readonly: true });
      // The compactor ran before the kill: acknowledged appends are in rows, and maybe still pending.
      const folded = raw.prepare('SELECT COUNT(*) FROM users').pluck().get() as number;
      raw.close();
      expect(folded).toBeGreaterThan(0);
      const store = createStore(await SqliteDriver.open(file, HELD), { historyCap: 10_000 });
      try {
        const ids = new Set<string>();
        for await (const r of store.scan()) for (const h of r.history) ids.add(h.id as string);
        expect(acked.filter((id) => !ids.has(id))).toEqual([]);
      } finally {
        await store.close();
      }
    } finally {
      await t.cleanup();
    }
  }, 120_000);
});
