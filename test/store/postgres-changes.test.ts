import pg from 'pg';
import { afterEach, expect, it } from 'vitest';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { POSTGRES_SCHEMA_VERSION, PostgresDriver } from '../../src/store/postgres/index.js';
import type { WriteTracker } from '../../src/store/types.js';
import { PG_URL, createSchema, describePg, driverInSchema } from '../helpers/pg.js';

/**
 * The change feed behind the two-phase clear and restore on PostgreSQL (src/store/postgres/changes.ts):
 * the users every daemon wrote or deleted since a mark, from the rows' `version` (the writing
 * transaction's id) and the deleted-users log, and the migration that adds them to a schema 2 store.
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

const setup = () => driverInSchema(cleanups);

const record = (id: string, text = 'hello'): MemoryRecord => ({ ...newRecord(id), history: [{ role: 'user', text, ts: '2026-11-30T00:00:00.000Z' }] });

async function changed(feed: WriteTracker): Promise<string[]> {
  await feed.refresh?.();
  return [...feed.ids].sort();
}

describePg('PostgreSQL change feed', () => {
  it('finds a write whose transaction began before the mark and committed after a newer one (commit order is not id order)', async () => {
    const { driver, admin, users } = await setup();
    for (const id of ['a', 'b', 'c']) await driver.update(id, () => record(id));
    // A transaction with its id taken before the mark, committed last.
    const early = new pg.Client({ connectionString: PG_URL });
    await early.connect();
    cleanups.push(() => early.end());
    await early.query('BEGIN');
    const xid = (await early.query<{ x: string }>('SELECT pg_current_xact_id()::text AS x')).rows[0]?.x;
    const feed = driver.trackChanges();
    expect(await changed(feed)).toEqual([]);
    await driver.update('b', () => record('b', 'newer'));
    const later = (await admin.query<{ v: string }>(`SELECT version::text AS v FROM ${users} WHERE user_id = 'b'`)).rows[0]?.v;
    // The later writer has the higher id and committed first: a high-water mark of ids would now skip `early`.
    expect(BigInt(later ?? '0')).toBeGreaterThan(BigInt(xid ?? '0'));
    expect(await changed(feed)).toEqual(['b']);
    await early.query(`UPDATE ${users} SET data = data, version = pg_current_xact_id() WHERE user_id = 'a'`);
    expect(await changed(feed)).toEqual(['b']);
    await early.query('COMMIT');
    expect(await changed(feed)).toEqual(['a', 'b']);
    expect(feed.overflow).toBe(false);
  });

  it('every write path sets the version to its transaction: one write, a batch, a section; deletes go to the log; a clear is an overflow', async () => {
    const { driver, admin, users, schema } = await setup();
    await driver.update('old', () => record('old'));
    const feed = driver.trackChanges();
    await feed.refresh?.();
    // Writes queued together share a transaction (the batch path): each row's version is that transaction.
    await Promise.all(['p', 'q', 'r', 's'].map((id) => driver.update(id, () => record(id))));
    await driver.exclusive({ ids: ['t'] }, (ctx) => ctx.putMany([record('t')]));
    const { rows } = await admin.query<{ user_id: string; v: string | null; x: string }>(`SELECT user_id, version::text AS v, xmin::text AS x FROM ${users} ORDER BY user_id`);
    for (const r of rows) expect(r.v, r.user_id).toBe(r.x);
    expect(await changed(feed)).toEqual(['p', 'q', 'r', 's', 't']);
    // A delete: the row is gone, the log says who.
    expect(await driver.exclusive({ ids: ['old', 'nobody'] }, (ctx) => ctx.delete(['old', 'nobody']))).toBe(1);
    expect(await changed(feed)).toEqual(['old', 'p', 'q', 'r', 's', 't']);
    const log = await admin.query<{ user_id: string | null }>(`SELECT user_id FROM "${schema}".chatmem_users_deleted`);
    expect(log.rows).toEqual([{ user_id: 'old' }]);
    // A merge deletes too.
    await driver.exclusive('all', (ctx) => ctx.putAndDelete?.([record('p', 'merged')], ['q']) ?? Promise.resolve());
    const merged = driver.trackChanges();
    expect(await changed(merged)).toEqual([]);
    // Entries older than the log keeps are pruned by the next delete.
    await admin.query(`UPDATE "${schema}".chatmem_users_deleted SET at = now() - interval '25 hours'`);
    await driver.exclusive({ ids: ['r'] }, (ctx) => ctx.delete(['r']));
    expect((await admin.query<{ user_id: string }>(`SELECT user_id FROM "${schema}".chatmem_users_deleted`)).rows).toEqual([{ user_id: 'r' }]);
    // A whole-store change cannot be told user by user: the feed says to copy everything again.
    const before = driver.trackChanges();
    await before.refresh?.();
    await driver.exclusive('all', (ctx) => ctx.clear());
    await before.refresh?.();
    expect(before.overflow).toBe(true);
    expect(before.ids.size).toBe(0);
    const restore = driver.trackChanges();
    await restore.refresh?.();
    await driver.exclusive('all', (ctx) => ctx.replaceAll((async function* () { yield record('z'); })()));
    await restore.refresh?.();
    expect(restore.overflow).toBe(true);
  });

  it('a schema 2 store gains the version column and the deleted-users log; its rows keep a null version, seen by every mark', async () => {
    const { schema, drop } = await createSchema();
    cleanups.push(drop);
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    cleanups.push(() => admin.end());
    const users = `"${schema}".chatmem_users`;
    // What migrations 1 and 2 left (the previous release), with one user in it.
    await admin.query(`CREATE TABLE "${schema}".chatmem_schema (table_name TEXT PRIMARY KEY, version INT NOT NULL);
      INSERT INTO "${schema}".chatmem_schema VALUES ('chatmem_users', 2);
      CREATE TABLE ${users} (user_id TEXT COLLATE "C" PRIMARY KEY, data TEXT NOT NULL, name TEXT, product TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, messages INT NOT NULL, search_text TEXT NOT NULL)`);
    await admin.query(`INSERT INTO ${users} VALUES ('before', $1, NULL, NULL, '2026-11-30T00:00:00.000Z', '2026-11-30T00:00:00.000Z', 1, 'before hello')`, [JSON.stringify(record('before'))]);
    await admin.query(`INSERT INTO ${users} VALUES ('gone', $1, NULL, NULL, '2026-11-30T00:00:00.000Z', '2026-11-30T00:00:00.000Z', 1, 'gone hello')`, [JSON.stringify(record('gone'))]);
    const driver = await PostgresDriver.connect({ connectionString: PG_URL, schema });
    cleanups.push(() => driver.close());
    expect(POSTGRES_SCHEMA_VERSION).toBe(3);
    expect((await admin.query(`SELECT version FROM "${schema}".chatmem_schema`)).rows).toEqual([{ version: 3 }]);
    expect((await admin.query(`SELECT user_id, version FROM ${users} ORDER BY user_id`)).rows).toEqual([
      { user_id: 'before', version: null },
      { user_id: 'gone', version: null },
    ]);
    expect((await driver.get('before'))?.history.map((h) => h.text)).toEqual(['hello']);
    const feed = driver.trackChanges();
    expect(await changed(feed)).toEqual([]);
    await driver.update('before', () => record('before', 'after the upgrade'));
    await driver.update('new', () => record('new'));
    await driver.exclusive({ ids: ['gone'] }, (ctx) => ctx.delete(['gone']));
    expect(await changed(feed)).toEqual(['before', 'gone', 'new']);
    // A second start finds nothing to do.
    const again = await PostgresDriver.connect({ connectionString: PG_URL, schema });
    await again.close();
    expect((await admin.query(`SELECT version FROM "${schema}".chatmem_schema`)).rows).toEqual([{ version: 3 }]);
  });
});
