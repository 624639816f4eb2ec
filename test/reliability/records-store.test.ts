import Database from 'better-sqlite3';
import { promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeBackup } from '../../src/backup/create.js';
import { openBackup, sortedBackupRecords } from '../../src/backup/source.js';
import { jsonEqual, stringifyJson } from '../../src/json-safe.js';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { JsonFileDriver } from '../../src/store/json-file.js';
import { PostgresDriver } from '../../src/store/postgres/index.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store, StoreDriver } from '../../src/store/types.js';
import { PG_URL, createSchema, describePg } from '../helpers/pg.js';
import { FIXTURES, tempDir } from '../helpers/tmp.js';

function deepText(depth: number): string {
  return '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
}

const fixture = JSON.parse(readFileSync(path.join(FIXTURES, 'memory.json'), 'utf8')) as Record<string, MemoryRecord>;
const honestIds = Object.keys(fixture).slice(0, 20);
const DEEP = deepText(20_000);
/** A whole record as stored before the limits: a flag 20,000 levels deep and an unknown field 5,000 deep. */
const deepRecordText = JSON.stringify({ ...newRecord('old-deep', '2025-01-01T00:00:00Z'), name: 'Lama', flags: 'F', legacy: 'L' })
  .replace('"flags":"F"', `"flags":{"f":${DEEP}}`)
  .replace('"legacy":"L"', `"legacy":[${deepText(5000)}]`);

/** Seed-era memory.json / full backup text: fixture users plus a record nested 20,000 levels deep. */
function seedText(): string {
  const entries = honestIds.map((id) => `  ${JSON.stringify(id)}: ${JSON.stringify(fixture[id])}`);
  entries.push(`  "old-deep": ${deepRecordText}`);
  return `{\n${entries.join(',\n')}\n}\n`;
}

interface Harness {
  driver: () => Promise<StoreDriver>;
  cleanup: () => Promise<void>;
}

async function restoreFrom(store: Store, dir: string, id: string): Promise<number> {
  const src = await openBackup(dir, id);
  return store.exclusive('all', (ctx) => ctx.replaceAll(sortedBackupRecords(src)));
}

function drivers(): [string, () => Promise<Harness>][] {
  return [
    [
      'sqlite',
      async () => {
        const t = await tempDir();
        return { driver: () => SqliteDriver.open(path.join(t.dir, 'memory.db')), cleanup: t.cleanup };
      },
    ],
    [
      'json',
      async () => {
        const t = await tempDir();
        return { driver: () => JsonFileDriver.open(path.join(t.dir, 'memory.json')), cleanup: t.cleanup };
      },
    ],
  ];
}

function storeSuite(name: string, harness: () => Promise<Harness>): void {
  describe(`deep old data on a ${name} store`, () => {
    it('restores a seed backup holding a 20,000-level record, reads it, appends, backs up, clears and restores it again', async () => {
      const h = await harness();
      const b = await tempDir();
      const store = createStore(await h.driver());
      try {
        await fsp.writeFile(path.join(b.dir, 'memory_backup_20251125_132811.json'), seedText(), { mode: 0o600 });
        expect(await restoreFrom(store, b.dir, 'memory_backup_20251125_132811')).toBe(honestIds.length + 1);

        const got = await store.get('old-deep');
        expect(got).not.toBeNull();
        expect(got?.name).toBe('Lama');
        expect(stringifyJson(got?.legacy)).toBe(`[${deepText(5000)}]`);
        expect(stringifyJson(got?.flags)).toBe(`{"f":${DEEP}}`);

        // Honest writes to the deep user and to others, all in one tick (one SQLite group-commit batch).
        const writes = await Promise.allSettled([
          store.appendHistory('old-deep', { role: 'user', text: 'masih bisa' }),
          ...honestIds.map((id) => store.appendHistory(id, { role: 'user', text: 'baru' })),
          store.setFlag('old-deep', 'ok', true),
        ]);
        expect(writes.filter((w) => w.status === 'rejected')).toEqual([]);
        expect((await store.search('masih bisa')).map((u) => u.user_id)).toEqual(['old-deep']);

        const before: [string, string][] = [];
        for await (const pair of store.scanJson()) before.push(pair);
        const backup = await writeBackup(b.dir, { json: store.scanJson() }, { reason: 'manual', scope: 'full', source: store.url });
        expect(backup.manifest.users).toBe(honestIds.length + 1);

        await store.clear();
        expect(await store.get('old-deep')).toBeNull();
        expect(await restoreFrom(store, b.dir, backup.id)).toBe(honestIds.length + 1);
        const after: [string, string][] = [];
        for await (const pair of store.scanJson()) after.push(pair);
        expect(after.map(([id]) => id)).toEqual(before.map(([id]) => id));
        for (let i = 0; i < before.length; i++) expect(jsonEqual(JSON.parse(after[i]![1]), JSON.parse(before[i]![1]))).toBe(true);
        const back = await store.get('old-deep');
        expect(stringifyJson(back?.flags)).toBe(`{"f":${DEEP},"ok":true}`);
        expect(back?.history.map((e) => e.text)).toEqual(['masih bisa']);

        // The same record still reads after a reopen (JSON: re-parsed from the file it rewrote).
        await store.close();
        const reopened = createStore(await h.driver());
        try {
          expect(stringifyJson((await reopened.get('old-deep'))?.flags)).toBe(`{"f":${DEEP},"ok":true}`);
        } finally {
          await reopened.close();
        }
      } finally {
        await store.close();
        await b.cleanup();
        await h.cleanup();
      }
    });

    it('one op that throws, or whose record cannot be serialised, fails alone among 200 concurrent writes', async () => {
      const h = await harness();
      const driver = await h.driver();
      try {
        const bad = new Error('refused by fn');
        // All queued in one synchronous turn: the SQLite driver commits them as one batch.
        const calls: Promise<MemoryRecord>[] = [];
        for (let i = 0; i < 200; i++) {
          const id = `u${i % 40}`;
          calls.push(driver.update(id, (cur) => ({ ...(cur ?? newRecord(id)), summary_context: [...(cur?.summary_context ?? []), `s${i}`] })));
          if (i % 50 === 10) calls.push(driver.update(`bad${i}`, () => { throw bad; }));
          // A BigInt has no JSON form: serialising the row throws a TypeError.
          if (i % 50 === 20) calls.push(driver.update(`big${i}`, (cur) => ({ ...(cur ?? newRecord(`big${i}`)), flags: { n: 1n } })));
        }
        const results = await Promise.allSettled(calls);
        const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
        expect(rejected).toHaveLength(8);
        expect(rejected.filter((r) => r.reason === bad)).toHaveLength(4);
        // The JSON store names the failure E_RECORD and keeps the TypeError as its cause.
        const bigIntError = (e: unknown): boolean => {
          const err = e instanceof TypeError ? e : (e as { code?: unknown; cause?: unknown }).code === 'E_RECORD' ? (e as { cause?: unknown }).cause : null;
          return err instanceof TypeError && /BigInt/.test(err.message);
        };
        expect(rejected.filter((r) => bigIntError(r.reason))).toHaveLength(4);
        for (let u = 0; u < 40; u++) {
          const r = await driver.get(`u${u}`);
          expect(r?.summary_context).toEqual(Array.from({ length: 5 }, (_, k) => `s${u + 40 * k}`));
        }
        expect(await driver.get('bad10')).toBeNull();
        expect(await driver.get('big20')).toBeNull();
      } finally {
        await driver.close();
        await h.cleanup();
      }
    });
  });
}

for (const [name, harness] of drivers()) storeSuite(name, harness);

describePg('deep old data on PostgreSQL', () => {
  storeSuite('postgres', async () => {
    const { schema, drop } = await createSchema();
    return { driver: () => PostgresDriver.connect({ connectionString: PG_URL, schema }), cleanup: drop };
  });
});

describe('deep old data at rest', () => {
  it('a seed memory.json holding a 20,000-level record opens, and writes to other users keep it intact', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.json');
      await fsp.writeFile(file, seedText(), { mode: 0o600 });
      const store = createStore(await JsonFileDriver.open(file));
      expect(stringifyJson((await store.get('old-deep'))?.flags)).toBe(`{"f":${DEEP}}`);
      await store.appendHistory(honestIds[0]!, { role: 'user', text: 'tulis ulang' });
      await store.close();
      const text = await fsp.readFile(file, 'utf8');
      // Too deep to indent (quadratic size): written on one line; every other record keeps the seed's indent=2.
      expect(text).toContain(`"flags": {\n`);
      expect(text).toContain(`"f":${DEEP}`);
      expect(text.length).toBeLessThan(seedText().length * 3);
      const again = createStore(await JsonFileDriver.open(file));
      expect(stringifyJson((await again.get('old-deep'))?.flags)).toBe(`{"f":${DEEP}}`);
      expect((await again.get(honestIds[0]!))?.history.at(-1)?.text).toBe('tulis ulang');
      await again.close();
    } finally {
      await t.cleanup();
    }
  });

  it('a SQLite row written before the limits (nested 20,000 deep) is read, appended to and backed up', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const first = createStore(await SqliteDriver.open(file));
      await first.put('old-deep', { name: 'x' });
      await first.close();
      // Old data at rest: the row as the schema-2 chatmem (before limits and the search index) stored it.
      const raw = new Database(file);
      raw.prepare('UPDATE users SET data = ? WHERE user_id = ?').run(deepRecordText, 'old-deep');
      raw.exec('DROP TABLE search_fts; DROP TABLE search_docs; PRAGMA user_version = 2;');
      raw.close();
      const store = createStore(await SqliteDriver.open(file));
      expect(stringifyJson((await store.get('old-deep'))?.flags)).toBe(`{"f":${DEEP}}`);
      expect((await store.search('Lama')).map((u) => u.user_id)).toEqual(['old-deep']);
      await store.appendHistory('old-deep', { role: 'user', text: 'halo' });
      const backup = await writeBackup(t.dir, { json: store.scanJson() }, { reason: 'manual', scope: 'full', source: store.url });
      expect(backup.manifest.users).toBe(1);
      const text = await fsp.readFile(backup.file, 'utf8');
      expect(text).toContain(`"f":${DEEP}`);
      await store.close();
    } finally {
      await t.cleanup();
    }
  });
});
