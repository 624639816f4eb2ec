import Database from 'better-sqlite3';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareIds, parseRecord, type MemoryRecord } from '../../src/record.js';
import { JsonFileDriver } from '../../src/store/json-file.js';
import { PostgresDriver } from '../../src/store/postgres/index.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { PG_URL, createSchema, describePg } from '../helpers/pg.js';
import { tempDir } from '../helpers/tmp.js';
import { loadFixture } from './conformance.js';

const fixture = loadFixture();
const records = Object.entries(fixture).map(([id, r]) => parseRecord(id, r));

/** The expected answer, computed straight from the records (not through the code under test). */
function expected(query: string): string[] {
  const q = query.toLowerCase();
  const fields = (r: MemoryRecord): unknown[] => [r.user_id, r.name, r.address, r.product, ...r.summary_context, ...r.history.map((h) => h.text)];
  return records
    .filter((r) => fields(r).some((f) => typeof f === 'string' && f.toLowerCase().includes(q)))
    .map((r) => r.user_id)
    .sort(compareIds);
}

/** The seed fixture's 200 users, counted by hand for a few queries. */
const QUERIES: { q: string; count: number; why: string }[] = [
  { q: 'Nurhaliza', count: 20, why: '17 users are named … Nurhaliza, 3 more mention the name in their chat' },
  { q: 'nurhaliza', count: 20, why: 'case-insensitive' },
  { q: 'Jl. Sudirman', count: 26, why: '23 addresses on Jl. Sudirman, 3 more in chat text' },
  { q: '62816197', count: 1, why: 'a part of a user id' },
  { q: '628161973069', count: 1, why: 'a whole user id' },
  { q: '973069', count: 1, why: 'the end of a user id' },
  { q: 'test_user_', count: 25, why: 'ids with an underscore, matched literally' },
  { q: 'gosong', count: 87, why: 'chat text' },
  { q: 'ELECTRONIC AIR', count: expected('electronic air').length, why: 'product' },
  { q: 'kak', count: 200, why: 'everyone' },
  { q: 'tidak-ada-di-mana-pun', count: 0, why: 'nothing' },
];

interface Harness {
  open(): Promise<Store>;
  cleanup(): Promise<void>;
}

/** Three ways in: one putMany (import), replaceAll (full restore), and the chat path (put, then appends). */
const LOADS = ['putMany', 'replaceAll', 'appends'] as const;

async function load(store: Store, how: (typeof LOADS)[number]): Promise<void> {
  if (how === 'putMany') await store.exclusive('all', (ctx) => ctx.putMany(records));
  else if (how === 'replaceAll') {
    await store.exclusive('all', (ctx) =>
      ctx.replaceAll(
        (async function* () {
          yield* [...records].sort((a, b) => compareIds(a.user_id, b.user_id));
        })(),
      ),
    );
  } else {
    await Promise.all(
      records.map(async (r) => {
        await store.put(r.user_id, { ...r, history: [] });
        for (const h of r.history) await store.appendHistory(r.user_id, h);
      }),
    );
  }
}

function searchSuite(name: string, harness: () => Promise<Harness>): void {
  describe.each(LOADS)(`search on a ${name} store loaded by %s`, (how) => {
    let h: Harness;
    let store: Store;
    beforeAll(async () => {
      h = await harness();
      store = await h.open();
      await load(store, how);
    });
    afterAll(async () => {
      await store.close();
      await h.cleanup();
    });

    it.each(QUERIES)('finds exactly the users matching $q ($why)', async ({ q, count }) => {
      const want = expected(q);
      expect(want).toHaveLength(count);
      expect((await store.search(q, { limit: 1000 })).map((u) => u.user_id)).toEqual(want);
      expect((await store.search(q, { limit: 5 })).map((u) => u.user_id)).toEqual(want.slice(0, 5));
    });

    it('answers a query shorter than 3 characters with the users whose id starts with it', async () => {
      const ids = records.map((r) => r.user_id).sort(compareIds);
      const starting = (p: string) => ids.filter((id) => id.startsWith(p));
      expect(starting('6281')).toHaveLength(21);
      expect((await store.search('62', { limit: 1000 })).map((u) => u.user_id)).toEqual(starting('62'));
      expect((await store.search('62', { limit: 1000 }))).toHaveLength(175);
      expect((await store.search('te', { limit: 10 })).map((u) => u.user_id)).toEqual(starting('te').slice(0, 10));
      expect(await store.search('Te')).toEqual([]);
      expect(await store.search('xx')).toEqual([]);
    });

    it('returns the listing summary of each user', async () => {
      const [first] = await store.search('628161973069');
      const r = fixture['628161973069']!;
      expect(first).toEqual({
        user_id: '628161973069',
        name: r.name,
        product: r.product,
        created_at: r.created_at,
        updated_at: (await store.get('628161973069'))?.updated_at,
        messages: r.history.length,
      });
    });
  });
}

searchSuite('sqlite', async () => {
  const t = await tempDir();
  return { open: async () => createStore(await SqliteDriver.open(path.join(t.dir, 'memory.db'))), cleanup: t.cleanup };
});
searchSuite('json', async () => {
  const t = await tempDir();
  return { open: async () => createStore(await JsonFileDriver.open(path.join(t.dir, 'memory.json'))), cleanup: t.cleanup };
});
describePg('postgres search', () => {
  searchSuite('postgres', async () => {
    const { schema, drop } = await createSchema();
    return { open: async () => createStore(await PostgresDriver.connect({ connectionString: PG_URL, schema })), cleanup: drop };
  });

  it('uses the pg_trgm index, and migrates a version 1 table (search_text rebuilt with ids, names and addresses)', async () => {
    const { schema, drop } = await createSchema();
    try {
      const first = await PostgresDriver.connect({ connectionString: PG_URL, schema });
      expect(first.searchIndex).toBe(true);
      const store = createStore(first);
      await store.exclusive('all', (ctx) => ctx.putMany(records));
      // Back to schema 1: the old search_text (product, summary, chat only) and no index.
      const pg = (await import('pg')).default;
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      try {
        await admin.query(`DROP INDEX "${schema}".chatmem_users_search_trgm`);
        await admin.query(`UPDATE "${schema}".chatmem_users SET search_text = 'stale'`);
        await admin.query(`UPDATE "${schema}".chatmem_schema SET version = 1`);
        await store.close();
        const again = createStore(await PostgresDriver.connect({ connectionString: PG_URL, schema }));
        expect((await again.search('Nurhaliza', { limit: 1000 })).map((u) => u.user_id)).toEqual(expected('Nurhaliza'));
        const plan = await admin.query<{ 'QUERY PLAN': string }>(
          `SET enable_seqscan = off; EXPLAIN SELECT user_id FROM "${schema}".chatmem_users WHERE search_text LIKE '%nurhaliza%'`,
        );
        const text = (Array.isArray(plan) ? (plan[1] as { rows: { 'QUERY PLAN': string }[] }).rows : plan.rows).map((r) => r['QUERY PLAN']).join('\n');
        expect(text).toContain('chatmem_users_search_trgm');
        await again.close();
      } finally {
        await admin.end();
      }
    } finally {
      await drop();
    }
  });
});

describe('sqlite search index migration', () => {
  it('indexes the users of a version 2 store when it is opened', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const store = createStore(await SqliteDriver.open(file));
      await store.exclusive('all', (ctx) => ctx.putMany(records));
      await store.close();
      // Schema 2 is schema 3 without the index tables.
      const db = new Database(file);
      db.exec('DROP TABLE search_fts; DROP TABLE search_docs; PRAGMA user_version = 2;');
      db.close();
      const again = createStore(await SqliteDriver.open(file));
      for (const { q } of QUERIES) expect((await again.search(q, { limit: 1000 })).map((u) => u.user_id)).toEqual(expected(q));
      await again.appendHistory('628161973069', { role: 'user', text: 'setelah migrasi' });
      expect((await again.search('setelah migrasi')).map((u) => u.user_id)).toEqual(['628161973069']);
      await again.close();
      const check = new Database(file, { readonly: true });
      expect(check.pragma('user_version', { simple: true })).toBe(4);
      check.close();
    } finally {
      await t.cleanup();
    }
  });
});
