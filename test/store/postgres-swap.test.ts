import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterEach, expect, it } from 'vitest';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { PostgresDriver } from '../../src/store/postgres/index.js';
import { SWAP_TRIES } from '../../src/store/postgres/swap.js';
import type { StagedRecords } from '../../src/store/types.js';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { openStore } from '../../src/store/open.js';
import { PG_URL, createSchema, describePg, driverInSchema, fromArray, swapRecord as record, tableOid as oid, waitUntilBlocked } from '../helpers/pg.js';
import { tempDir } from '../helpers/tmp.js';

/**
 * The whole-store swap on PostgreSQL (src/store/postgres/swap.ts): a clear and a staged full restore
 * replace the users table by a twin built beside it, renamed in the section (O(1) in rows), and every
 * scan is safe against it: its snapshot is taken after it holds the table, so it never reads the new
 * table with a snapshot from before the swap.
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

interface Setup {
  driver: PostgresDriver;
  admin: pg.Client;
  users: string;
  schema: string;
}

const setup = (): Promise<Setup> => driverInSchema(cleanups);

async function client(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  cleanups.push(() => c.end());
  return c;
}

/** The users table's indexes: name and definition with the name taken out. */
async function indexes(admin: pg.Client, users: string): Promise<string[]> {
  const { rows } = await admin.query<{ d: string }>(
    `SELECT c.relname || ': ' || replace(pg_get_indexdef(i.indexrelid), c.relname, '#') AS d
     FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass ORDER BY 1`,
    [users],
  );
  return rows.map((r) => r.d);
}

async function tables(admin: pg.Client, schema: string): Promise<string[]> {
  const { rows } = await admin.query<{ t: string }>('SELECT tablename AS t FROM pg_tables WHERE schemaname = $1 ORDER BY 1', [schema]);
  return rows.map((r) => r.t);
}

async function collect(it: AsyncIterable<[string, string]>): Promise<string[]> {
  const ids: string[] = [];
  for await (const [id] of it) ids.push(id);
  return ids;
}

describePg('PostgreSQL whole-store swap', () => {
  it('a restore whose swap cannot have the table copies its staged rows into the live table instead, and the reader keeps its store', async () => {
    const { driver, admin, users, schema } = await setup();
    for (const id of ['a', 'b', 'c']) await driver.update(id, () => record(id));
    const before = { oid: await oid(admin, users), tables: await tables(admin, schema) };
    const staged = (await driver.stageAll?.(fromArray([record('n1', 'restored needle'), record('n2')]))) as StagedRecords;
    const scan = driver.scanJson()[Symbol.asyncIterator]();
    expect((await scan.next()).value?.[0]).toBe('a');
    expect(await driver.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged))).toBe(2);
    // The row path: the same table, its rows the stage's.
    expect(await oid(admin, users)).toBe(before.oid);
    const rest: string[] = [];
    for (let r = await scan.next(); !r.done; r = await scan.next()) rest.push(r.value[0]);
    expect(rest).toEqual(['b', 'c']);
    expect(await collect(driver.scanJson())).toEqual(['n1', 'n2']);
    expect((await driver.get('n1'))?.history[0]?.text).toBe('restored needle');
    expect((await driver.search('restored', 10)).map((u) => u.user_id)).toEqual(['n1']);
    await staged.release();
    expect(await tables(admin, schema)).toEqual(before.tables);
  });

  it(`a swap that cannot have the table tries ${SWAP_TRIES} times, each within its lock timeout, before the row path`, async () => {
    // Counted by an event trigger in a database of its own (event triggers are per database), on a
    // sequence, which a rollback does not take back: each try creates its empty twin, then rolls back.
    const name = `chatmem_swap_${process.pid}_${randomBytes(4).toString('hex')}`;
    const admin = await client();
    await admin.query(`CREATE DATABASE "${name}"`);
    cleanups.push(async () => void (await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)));
    const u = new URL(PG_URL);
    u.pathname = `/${name}`;
    const driver = await PostgresDriver.connect({ connectionString: u.toString() });
    cleanups.push(() => driver.close());
    for (const id of ['a', 'b']) await driver.update(id, () => record(id));
    const db = new pg.Client({ connectionString: u.toString() });
    await db.connect();
    cleanups.push(() => db.end());
    await db.query(`CREATE SEQUENCE tries;
      CREATE FUNCTION count_try() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM nextval('tries'); END $$;
      CREATE EVENT TRIGGER count_try ON ddl_command_start WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION count_try()`);
    const reader = new pg.Client({ connectionString: u.toString() });
    await reader.connect();
    cleanups.push(() => reader.end());
    await reader.query('BEGIN; LOCK TABLE chatmem_users IN ACCESS SHARE MODE');
    expect(await driver.exclusive('all', (ctx) => ctx.clear())).toBe(2);
    expect(await driver.count()).toBe(0);
    await reader.query('COMMIT');
    const { rows } = await db.query<{ n: string }>('SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM tries');
    expect(Number(rows[0]?.n)).toBe(SWAP_TRIES);
    // With the table free, one try.
    await driver.update('c', () => record('c'));
    expect(await driver.exclusive('all', (ctx) => ctx.clear())).toBe(1);
    expect(Number((await db.query<{ n: string }>('SELECT last_value AS n FROM tries')).rows[0]?.n)).toBe(SWAP_TRIES + 1);
  });

  it('indexes the operator doubled on the table each keep their own name through a swap', async () => {
    const { driver, admin, users, schema } = await setup();
    // Two indexes alike in every way the swap pairs them by: each twin index matches both.
    await admin.query(`CREATE INDEX extra_version_1 ON ${users} (version) WHERE version IS NOT NULL; CREATE INDEX extra_version_2 ON ${users} (version) WHERE version IS NOT NULL`);
    for (const id of ['a', 'b']) await driver.update(id, () => record(id));
    const before = { oid: await oid(admin, users), indexes: await indexes(admin, users), tables: await tables(admin, schema) };
    expect(before.indexes.filter((d) => d.startsWith('extra_version_') || d.includes('_version:'))).toHaveLength(3);
    expect(await driver.exclusive('all', (ctx) => ctx.clear())).toBe(2);
    expect(await oid(admin, users)).not.toBe(before.oid);
    expect(await indexes(admin, users)).toEqual(before.indexes);
    expect(await tables(admin, schema)).toEqual(before.tables);
    await driver.update('c', () => record('c'));
    expect(await collect(driver.scanJson())).toEqual(['c']);
  });

  it('a swap the database refuses for another reason than the lock (its stage dropped under it) is E_STORE_WRITE and changes nothing', async () => {
    const { driver, admin, users, schema } = await setup();
    for (const id of ['a', 'b']) await driver.update(id, () => record(id));
    const staged = (await driver.stageAll?.(fromArray([record('n1')]))) as StagedRecords;
    const stage = (await tables(admin, schema)).find((t) => t.includes('_stage_')) ?? '';
    await admin.query(`DROP TABLE "${schema}"."${stage}"`);
    const before = { oid: await oid(admin, users), tables: await tables(admin, schema) };
    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }) => warnings.push(w.code ?? '');
    process.on('warning', onWarning);
    const err = await driver.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged)).then(
      () => null,
      (e: unknown) => e as { code?: string; message?: string; cause?: { code?: string } },
    );
    await new Promise((r) => setImmediate(r));
    process.off('warning', onWarning);
    expect(err).toMatchObject({ code: 'E_STORE_WRITE', message: expect.stringMatching(/^PostgreSQL restore failed: /) as string });
    // undefined_table, at the first statement naming the stage: thrown, not retried and then sent down
    // the row path (which fails on the same missing table) as a lock timeout would be.
    expect(err?.cause?.code).toBe('42P01');
    expect(warnings).not.toContain('CHATMEM_SWAP_FALLBACK');
    expect(await oid(admin, users)).toBe(before.oid);
    expect(await tables(admin, schema)).toEqual(before.tables);
    expect(await collect(driver.scanJson())).toEqual(['a', 'b']);
    await staged.release();
    await driver.update('c', () => record('c'));
    expect(await driver.count()).toBe(3);
  });

  it('a clear swaps in an empty twin (no row is deleted one by one); indexes keep their names, writes and search work after', async () => {
    const { driver, admin, users, schema } = await setup();
    for (const id of ['a', 'b', 'c']) await driver.update(id, () => record(id, 'needle in a haystack'));
    const before = { oid: await oid(admin, users), indexes: await indexes(admin, users), tables: await tables(admin, schema) };
    const feed = driver.trackChanges();
    await feed.refresh?.();
    const n = await driver.exclusive('all', (ctx) => ctx.clear());
    expect(n).toBe(3);
    // A new table, not the old one emptied: a DELETE keeps the table and writes every row's xmax.
    expect(await oid(admin, users)).not.toBe(before.oid);
    expect(await indexes(admin, users)).toEqual(before.indexes);
    expect(await tables(admin, schema)).toEqual(before.tables);
    expect(await driver.count()).toBe(0);
    expect(await collect(driver.scanJson())).toEqual([]);
    // A change feed marked before the swap must copy everything again.
    await feed.refresh?.();
    expect(feed.overflow).toBe(true);
    // Writes on the new table: the version default, the trigram search, the primary key.
    await driver.update('d', () => record('d', 'another needle'));
    await driver.update('d', () => record('d', 'another needle, again'));
    expect((await driver.search('needle', 10)).map((u) => u.user_id)).toEqual(['d']);
    const v = (await admin.query<{ v: string | null }>(`SELECT version::text AS v FROM ${users} WHERE user_id = 'd'`)).rows[0]?.v;
    expect(v).toMatch(/^\d+$/);
    const fresh = driver.trackChanges();
    await fresh.refresh?.();
    await driver.update('e', () => record('e'));
    await fresh.refresh?.();
    expect([...fresh.ids]).toEqual(['e']);
    // A restart's migration finds every index by name: no second trigram index.
    const again = await PostgresDriver.connect({ connectionString: PG_URL, schema });
    await again.close();
    expect(await indexes(admin, users)).toEqual(before.indexes);
  });

  it('a full restore is staged beside the live table while writes go on; the section only swaps it in', async () => {
    const { driver, admin, users, schema } = await setup();
    for (const id of ['old1', 'old2']) await driver.update(id, () => record(id));
    const before = { indexes: await indexes(admin, users), tables: await tables(admin, schema) };
    expect(driver.stageAll).toBeTypeOf('function');
    const staged = (await driver.stageAll?.(fromArray([record('n1', 'restored needle'), record('n2'), record('n1', 'restored needle twice')]))) as StagedRecords;
    expect(staged.read).toBe(3);
    // The live table is untouched by the staging, and writable meanwhile.
    await driver.update('old3', () => record('old3'));
    expect((await driver.list({ cursor: null, limit: 10 })).map((u) => u.user_id)).toEqual(['old1', 'old2', 'old3']);
    const stageOid = (
      await admin.query<{ o: string }>(`SELECT c.oid::text AS o FROM pg_class c WHERE c.relnamespace = $1::regnamespace AND c.relname LIKE 'chatmem_users_stage_%' AND c.relkind = 'r'`, [`"${schema}"`])
    ).rows[0]?.o;
    expect(stageOid).toBeDefined();
    const written = await driver.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged));
    expect(written).toBe(2);
    await staged.release();
    expect(await oid(admin, users)).toBe(stageOid);
    expect(await indexes(admin, users)).toEqual(before.indexes);
    expect(await tables(admin, schema)).toEqual(before.tables);
    expect(await collect(driver.scanJson())).toEqual(['n1', 'n2']);
    expect((await driver.get('n1'))?.history[0]?.text).toBe('restored needle twice');
    expect((await driver.search('restored', 10)).map((u) => u.user_id)).toEqual(['n1']);
    // Swapped once only.
    await expect(driver.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged))).rejects.toMatchObject({ code: 'E_STORE_ARG' });
  });

  it('a staged restore released unused leaves no table behind', async () => {
    const { driver, admin, schema } = await setup();
    const before = await tables(admin, schema);
    const staged = (await driver.stageAll?.(fromArray([record('x')]))) as StagedRecords;
    expect((await tables(admin, schema)).length).toBe(before.length + 1);
    await staged.release();
    expect(await tables(admin, schema)).toEqual(before);
  });

  it('a stream that fails while staging leaves no table and its error passes as thrown', async () => {
    const { driver, admin, schema } = await setup();
    const before = await tables(admin, schema);
    const boom = new Error('corrupt backup line 2');
    async function* bad(): AsyncGenerator<MemoryRecord> {
      yield record('x');
      throw boom;
    }
    await expect(driver.stageAll?.(bad())).rejects.toBe(boom);
    expect(await tables(admin, schema)).toEqual(before);
  });

  it('a scan racing a swap reads one whole store, in both orders: old rows when it holds the table first, new ones when the swap does', async () => {
    const { driver, admin, users, schema } = await setup();
    for (const id of ['a', 'b']) await driver.update(id, () => record(id));
    const swapper = await client();
    // A swap as swap.ts makes it, held open at the point that matters; its rows are inserted in its own
    // transaction, so a snapshot from before its commit cannot see them.
    const twin = `"${schema}".twin`;
    const begin = async () => {
      await swapper.query(`BEGIN; CREATE TABLE ${twin} (LIKE ${users} INCLUDING ALL)`);
      await swapper.query(`INSERT INTO ${twin} (user_id, data, created_at, updated_at, messages, search_text) SELECT 'n' || g, '{}', '', '', 0, '' FROM generate_series(1, 3) g`);
    };
    const finish = async () => {
      await swapper.query(`DROP TABLE ${users}; ALTER TABLE ${twin} RENAME TO chatmem_users; COMMIT`);
    };

    // Order 1: the swap holds the table first; the scan waits for it, then reads the new table whole.
    await begin();
    await swapper.query(`LOCK TABLE ${users} IN ACCESS EXCLUSIVE MODE`);
    const waiting = collect(driver.scanJson());
    await waitUntilBlocked(admin, schema);
    await finish();
    expect(await waiting).toEqual(['n1', 'n2', 'n3']);

    // Order 2: the scan holds the table first; the swap waits for it, and the scan reads the old rows whole.
    const scan = driver.scanJson()[Symbol.asyncIterator]();
    const first = await scan.next();
    await begin();
    const locking = swapper.query(`LOCK TABLE ${users} IN ACCESS EXCLUSIVE MODE`);
    await waitUntilBlocked(admin, schema);
    const rest: string[] = [];
    for (let r = await scan.next(); !r.done; r = await scan.next()) rest.push(r.value[0]);
    expect([first.value?.[0], ...rest]).toEqual(['n1', 'n2', 'n3']);
    await locking;
    await swapper.query(`DELETE FROM ${twin} WHERE user_id = 'n3'`);
    await finish();
    expect(await collect(driver.scanJson())).toEqual(['n1', 'n2']);
  });

  it('when a reader holds the table past the lock timeout, the clear falls back to DELETE and the reader keeps its store', async () => {
    const { driver, admin, users } = await setup();
    for (const id of ['a', 'b', 'c']) await driver.update(id, () => record(id));
    const before = await oid(admin, users);
    const scan = driver.scanJson()[Symbol.asyncIterator]();
    expect((await scan.next()).value?.[0]).toBe('a');
    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }) => warnings.push(`${w.code ?? ''} ${w.message}`);
    process.on('warning', onWarning);
    try {
      expect(await driver.exclusive('all', (ctx) => ctx.clear())).toBe(3);
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings).toEqual([`CHATMEM_SWAP_FALLBACK PostgreSQL clear: the users table is not swapped (another session held the table for ${SWAP_TRIES} tries of 50 ms); its rows are replaced in place, which holds writers for a time that grows with the store`]);
    expect(await oid(admin, users)).toBe(before);
    expect(await driver.count()).toBe(0);
    const rest: string[] = [];
    for (let r = await scan.next(); !r.done; r = await scan.next()) rest.push(r.value[0]);
    expect(rest).toEqual(['b', 'c']);
  });

  it('another daemon (its own pool) keeps writing across swaps, with writes between every two, none fails, and both daemons see one store', async () => {
    const { driver, schema } = await setup();
    const other = await PostgresDriver.connect({ connectionString: PG_URL, schema });
    cleanups.push(() => other.close());
    let stop = false;
    let acked = 0;
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        await other.update(`w${i % 20}`, (cur) => ({ ...(cur ?? newRecord(`w${i % 20}`)), history: [...(cur?.history ?? []), { role: 'user', text: `m${i}`, ts: '2026-11-30T00:00:00.000Z' }] }));
        acked++;
      }
    })();
    let clears = 0;
    while (acked < 200 || clears < 3) {
      const before = acked;
      await driver.exclusive('all', (ctx) => ctx.clear());
      clears++;
      // Writes both before and after each swap.
      while (acked < before + 10) await new Promise((r) => setTimeout(r, 2));
    }
    stop = true;
    await writer;
    expect(clears).toBeGreaterThanOrEqual(3);
    expect(await other.count()).toBeGreaterThan(0);
    expect(await driver.count()).toBe(await other.count());
  });

  it('the operations: a clear-all swaps in an empty twin staged before its section and reports the users its backup holds; a full restore swaps in its staged copy', async () => {
    const { schema, url, drop } = await createSchema();
    cleanups.push(drop);
    const admin = await client();
    const users = `"${schema}".chatmem_users`;
    const t = await tempDir('chatmem-pgswap-');
    cleanups.push(t.cleanup);
    const store = await openStore(url);
    cleanups.push(() => store.close());
    const ops = new Operations({ store, backupDir: `${t.dir}/backups`, audit: new AuditLog(`${t.dir}/audit.log`), actor: { kind: 'os', name: 'test' } });
    for (const id of ['a', 'b', 'c', 'd']) await store.appendHistory(id, { role: 'user', text: `hi ${id}` });
    const source = await ops.createBackup();
    await store.appendHistory('e', { role: 'user', text: 'hi e' });
    const before = await oid(admin, users);
    const cleared = await ops.clearAll();
    expect(cleared.deleted).toBe(5);
    expect(await oid(admin, users)).not.toBe(before);
    expect(await store.count()).toBe(0);
    expect((await ops.verifyBackups()).find((v) => v.id === cleared.backup)?.ok).toBe(true);
    const stages = async () => (await tables(admin, schema)).filter((n) => n.includes('_stage_'));
    expect(await stages()).toEqual([]);
    await store.appendHistory('z', { role: 'user', text: 'after the clear' });
    const mid = await oid(admin, users);
    const restored = await ops.restore(source.id, { wholeStore: true });
    expect(restored.written).toBe(4);
    expect(await oid(admin, users)).not.toBe(mid);
    expect((await store.list()).items.map((u) => u.user_id)).toEqual(['a', 'b', 'c', 'd']);
    expect(restored.backup).not.toBeNull();
    expect(await stages()).toEqual([]);
  });
});
