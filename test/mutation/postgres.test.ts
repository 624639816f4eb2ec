import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { POSTGRES_SCHEMA_VERSION, PostgresDriver } from '../../src/store/postgres/index.js';
import { RecordError } from '../../src/errors.js';
import { LockKeys } from '../../src/store/postgres/locks.js';
import type { DriverContext } from '../../src/store/types.js';
import { PG_URL, createSchema, describePg, pgUnreachable, urlWithSchema } from '../helpers/pg.js';

// The PostgreSQL driver's promises (src/store/postgres/), on the real server, each test fast enough to
// run once per mutant: the configuration checks, the errors and what they keep, the section's
// all-or-nothing writes and its order, batches past 500 rows, the advisory locks between daemons and
// between stores, the bounded write slots, leader election, and the migrations of an older schema.

const NS_CTRL = 0x63686d63;
const NS_USER = 0x63686d75;

const admin = pgUnreachable === null ? new pg.Pool({ connectionString: PG_URL, max: 2 }) : null;
afterAll(async () => {
  await admin?.end();
});

function adminPool(): pg.Pool {
  if (!admin) throw new Error('PostgreSQL is unreachable');
  return admin;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function rec(id: string, extra: Partial<MemoryRecord> & Record<string, unknown> = {}): MemoryRecord {
  return { ...newRecord(id, '2026-01-01T00:00:00.000Z'), ...extra };
}

function entry(text: string) {
  return { id: randomBytes(6).toString('hex'), role: 'user' as const, text, ts: '2026-01-01T00:00:00.000Z' };
}

async function rejection(p: Promise<unknown>): Promise<Error & { code?: string; cause?: unknown }> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err as Error & { code?: string; cause?: unknown },
  );
}

function syncError(fn: () => unknown): Error & { code?: string } {
  try {
    fn();
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected a throw');
}

/** Advisory lock waits in PostgreSQL on `key` (two-int form), not yet granted. */
async function waiting(ns: number, key: number): Promise<number> {
  const { rows } = await adminPool().query<{ n: string }>(
    `SELECT COUNT(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = $1::oid AND objid = $2::oid`,
    [ns, key >>> 0],
  );
  return Number(rows[0]?.n ?? 0);
}

async function until(what: string, cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
}

/** Settles to 'pending' when `p` has not settled within `ms`. */
async function stateAfter(p: Promise<unknown>, ms: number): Promise<'done' | 'failed' | 'pending'> {
  return Promise.race([p.then(() => 'done' as const, () => 'failed' as const), sleep(ms).then(() => 'pending' as const)]);
}

async function* stream(records: MemoryRecord[], fail?: Error): AsyncGenerator<MemoryRecord> {
  for (const r of records) yield r;
  if (fail) throw fail;
}

async function ids(driver: PostgresDriver): Promise<string[]> {
  const out: string[] = [];
  for await (const [id] of driver.scanJson()) out.push(id);
  return out;
}

describePg('postgres driver, for mutation testing', () => {
  let schema: string;
  let drop: () => Promise<void>;
  let d: PostgresDriver;
  beforeAll(async () => {
    ({ schema, drop } = await createSchema());
    d = await PostgresDriver.connect({ connectionString: PG_URL, schema });
    return async () => {
      await d.close();
      await drop();
    };
  });

  /** A second store of its own (another schema), closed and dropped by the returned function. */
  async function fresh(opts: { table?: string; pool?: pg.Pool } = {}): Promise<{ driver: PostgresDriver; schema: string; done: () => Promise<void> }> {
    const s = await createSchema();
    const driver = await PostgresDriver.connect(opts.pool ? { pool: opts.pool, schema: s.schema, ...(opts.table ? { table: opts.table } : {}) } : { connectionString: PG_URL, schema: s.schema, ...(opts.table ? { table: opts.table } : {}) });
    return {
      driver,
      schema: s.schema,
      done: async () => {
        await driver.close();
        await s.drop();
      },
    };
  }

  describe('options', () => {
    it('refuses a pool and a URL together, neither, bad names and the version table name, before connecting', async () => {
      const pool = new pg.Pool({ connectionString: PG_URL, max: 1 });
      try {
        const both = await rejection(PostgresDriver.connect({ pool, connectionString: PG_URL }));
        expect(both).toMatchObject({ code: 'E_STORE_CONFIG', message: 'pass either a PostgreSQL connection string or a pool, not both' });
        const none = await rejection(PostgresDriver.connect({}));
        expect(none).toMatchObject({ code: 'E_STORE_CONFIG', message: 'a PostgreSQL connection string or pool is required' });
        expect(await rejection(PostgresDriver.connect({ connectionString: PG_URL, table: '' }))).toMatchObject({
          code: 'E_STORE_CONFIG',
          message: 'invalid PostgreSQL table name "": 1 to 63 bytes, no NUL',
        });
        expect(await rejection(PostgresDriver.connect({ connectionString: PG_URL, table: 'a\0b' }))).toMatchObject({ code: 'E_STORE_CONFIG' });
        // 32 characters, 64 bytes: PostgreSQL would truncate it.
        expect(await rejection(PostgresDriver.connect({ connectionString: PG_URL, schema: 'é'.repeat(32) }))).toMatchObject({
          code: 'E_STORE_CONFIG',
          message: expect.stringContaining('invalid PostgreSQL schema name') as string,
        });
        expect(await rejection(PostgresDriver.connect({ connectionString: PG_URL, schema: '' }))).toMatchObject({ code: 'E_STORE_CONFIG' });
        expect(await rejection(PostgresDriver.connect({ connectionString: PG_URL, table: 'chatmem_schema' }))).toMatchObject({
          code: 'E_STORE_CONFIG',
          message: 'the table cannot be named chatmem_schema',
        });
        // None of these touched the caller's pool.
        expect(pool.totalCount).toBe(0);
      } finally {
        await pool.end();
      }
    });

    it('names of 63 bytes, quotes and the default table: tables created where named, and a long index name hashed', async () => {
      const table = `t"q${'x'.repeat(60)}`;
      expect(Buffer.byteLength(table)).toBe(63);
      const s = await fresh({ table });
      try {
        await s.driver.update('u', () => rec('u', { name: 'Quoted' }));
        const { rows } = await adminPool().query<{ tablename: string }>('SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename', [s.schema]);
        // The deleted-users log's name would pass 63 bytes: hashed, as the index's.
        expect(rows.map((r) => r.tablename)).toEqual([expect.stringMatching(/^chatmem_deleted_\d+$/), 'chatmem_schema', table]);
        const idx = await adminPool().query<{ indexname: string }>("SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND indexdef LIKE '%gin_trgm_ops%'", [s.schema]);
        expect(idx.rows).toHaveLength(1);
        expect(idx.rows[0]?.indexname).toMatch(/^chatmem_search_trgm_\d+$/);
        expect(s.driver.searchIndex).toBe(true);
        expect((await s.driver.search('quot', 10)).map((r) => r.user_id)).toEqual(['u']);
      } finally {
        await s.done();
      }
      const { rows } = await adminPool().query<{ tablename: string }>('SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename', [schema]);
      expect(rows.map((r) => r.tablename)).toEqual(['chatmem_schema', 'chatmem_users', 'chatmem_users_deleted']);
      const idx = await adminPool().query<{ indexname: string }>('SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = $2', [schema, 'chatmem_users']);
      expect(idx.rows.map((r) => r.indexname).sort()).toEqual(['chatmem_users_pkey', 'chatmem_users_search_trgm', 'chatmem_users_version']);
      // The deleted-users log's index is named after the users table too (a rerun's IF NOT EXISTS finds it).
      const logIdx = await adminPool().query<{ indexname: string }>('SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = $2', [schema, 'chatmem_users_deleted']);
      expect(logIdx.rows.map((r) => r.indexname)).toEqual(['chatmem_users_deleted_version']);
    });

    it('two tables in one schema keep their own versions and rows', async () => {
      const other = await PostgresDriver.connect({ connectionString: PG_URL, schema, table: 'second' });
      try {
        await other.update('only-in-second', () => rec('only-in-second'));
        expect(await d.get('only-in-second')).toBeNull();
        const { rows } = await adminPool().query(`SELECT table_name, version FROM "${schema}".chatmem_schema ORDER BY table_name`);
        expect(rows).toEqual([
          { table_name: 'chatmem_users', version: POSTGRES_SCHEMA_VERSION },
          { table_name: 'second', version: POSTGRES_SCHEMA_VERSION },
        ]);
      } finally {
        await other.close();
        await adminPool().query(`DROP TABLE "${schema}".second, "${schema}".second_deleted`);
        await adminPool().query(`DELETE FROM "${schema}".chatmem_schema WHERE table_name = 'second'`);
      }
    });
  });

  describe('records and reads', () => {
    it('stores the summary columns from the record: list, stats and search read them', async () => {
      const s = await fresh();
      try {
        const a = rec('a1', { name: 'Ayu', product: 'EAC', address: 'Jalan Mawar', history: [entry('one'), entry('two')], updated_at: '2026-02-01T00:00:00.000Z' });
        const b = rec('b1', { name: null, product: null, summary_context: ['Kulkas Rusak'], address: 'Jalan Melati', updated_at: '2026-03-01T00:00:00.000Z' });
        await s.driver.update('a1', () => a);
        await s.driver.update('b1', () => b);
        await s.driver.update('A0', () => rec('A0'));
        expect((await s.driver.list({ cursor: null, limit: 10 })).map((r) => r.user_id)).toEqual(['A0', 'a1', 'b1']);
        expect(await s.driver.list({ cursor: 'A0', limit: 10 })).toEqual([
          { user_id: 'a1', name: 'Ayu', product: 'EAC', created_at: a.created_at, updated_at: a.updated_at, messages: 2 },
          { user_id: 'b1', name: null, product: null, created_at: b.created_at, updated_at: b.updated_at, messages: 0 },
        ]);
        expect((await s.driver.list({ cursor: 'a1', limit: 10 })).map((r) => r.user_id)).toEqual(['b1']);
        expect((await s.driver.list({ cursor: null, limit: 1 })).map((r) => r.user_id)).toEqual(['A0']);
        await s.driver.exclusive('all', (ctx) => ctx.delete(['A0']));
        expect(await s.driver.stats()).toEqual({
          users: 2,
          messages: 2,
          bytes: Buffer.byteLength(JSON.stringify(a)) + Buffer.byteLength(JSON.stringify(b)),
          lastUpdate: '2026-03-01T00:00:00.000Z',
        });
        expect(await s.driver.count()).toBe(2);
        // Substring search is case-insensitive (search_text is lower-cased), prefix search is on the id.
        expect((await s.driver.search('MAWAR', 10)).map((r) => r.user_id)).toEqual(['a1']);
        expect((await s.driver.search('kulkas', 10)).map((r) => r.user_id)).toEqual(['b1']);
        expect((await s.driver.search('ayu', 10)).map((r) => r.user_id)).toEqual(['a1']);
        expect((await s.driver.search('jalan', 10)).map((r) => r.user_id)).toEqual(['a1', 'b1']);
        expect((await s.driver.search('jalan', 1)).map((r) => r.user_id)).toEqual(['a1']);
        // Literal, not a LIKE pattern.
        expect(await s.driver.search('j_lan', 10)).toEqual([]);
        // Under three characters a query matches user ids by prefix only (every search text holds a '1').
        expect(await s.driver.search('1', 10)).toEqual([]);
        const prefix = await s.driver.search('b', 10);
        expect(prefix.map((r) => r.user_id)).toEqual(['b1']);
      } finally {
        await s.done();
      }
    });

    it('an empty store: count 0, stats of nothing, no list, no scan', async () => {
      const s = await fresh();
      try {
        expect(await s.driver.count()).toBe(0);
        expect(await s.driver.stats()).toEqual({ users: 0, messages: 0, bytes: 0, lastUpdate: null });
        expect(await s.driver.list({ cursor: null, limit: 5 })).toEqual([]);
        expect(await ids(s.driver)).toEqual([]);
      } finally {
        await s.done();
      }
    });

    it('scans more than two batches in order, one snapshot, after a cursor', async () => {
      const s = await fresh();
      try {
        const all = Array.from({ length: 1001 }, (_, i) => rec(`S${String(i).padStart(4, '0')}`));
        await s.driver.exclusive('all', (ctx) => ctx.putMany(all));
        const seen: [string, string][] = [];
        for await (const pair of s.driver.scanJson()) seen.push(pair);
        expect(seen.map(([id]) => id)).toEqual(all.map((r) => r.user_id));
        expect(seen[1000]?.[1]).toBe(JSON.stringify(all[1000]));
        const after: string[] = [];
        for await (const [id] of s.driver.scanJson({ after: 'S0499' })) after.push(id);
        expect(after).toHaveLength(501);
        expect(after[0]).toBe('S0500');
        // Exactly one batch: 500 rows, then the empty fetch ends it.
        const five = await fresh();
        try {
          await five.driver.exclusive('all', (ctx) => ctx.putMany(all.slice(0, 1000)));
          expect(await ids(five.driver)).toHaveLength(1000);
        } finally {
          await five.done();
        }
      } finally {
        await s.done();
      }
    });

    it('a failing update function or unserialisable record writes nothing and throws the caller\'s own error', async () => {
      const boom = new Error('boom');
      expect(
        await rejection(
          d.update('fn-fails', () => {
            throw boom;
          }),
        ),
      ).toBe(boom);
      const big = await rejection(d.update('bigint', () => rec('bigint', { n: 10n as unknown as number })));
      expect(big).toBeInstanceOf(TypeError);
      expect(big.code).toBeUndefined();
      expect(await d.get('fn-fails')).toBeNull();
      expect(await d.get('bigint')).toBeNull();
      // Its locks and its connection were given back.
      expect(await d.update('fn-fails', () => rec('fn-fails'))).toMatchObject({ user_id: 'fn-fails' });
    });

    it('a database error in a write is E_STORE_WRITE naming the user, with its cause; reads E_STORE_READ', async () => {
      const s = await fresh();
      try {
        // PostgreSQL text cannot hold NUL: the insert fails in the database.
        const err = await rejection(s.driver.update('nul', () => rec('nul', { user_id: 'n\u0000ul' })));
        expect(err.code).toBe('E_STORE_WRITE');
        expect(err.message).toMatch(/^PostgreSQL write of user "nul" failed: /);
        expect((err.cause as { code?: string }).code).toBe('22021');
        expect(await s.driver.count()).toBe(0);
        await s.driver.update('ok', () => rec('ok'));
        await adminPool().query(`DROP TABLE "${s.schema}".chatmem_users`);
        const read = await rejection(s.driver.get('ok'));
        expect(read).toMatchObject({ code: 'E_STORE_READ', message: expect.stringMatching(/^PostgreSQL read failed: relation .* does not exist$/) as string });
        expect((read.cause as { code?: string }).code).toBe('42P01');
        const scan = await rejection(ids(s.driver));
        expect(scan).toMatchObject({ code: 'E_STORE_READ', message: expect.stringMatching(/^PostgreSQL scan failed: /) as string });
        await s.driver.exclusive('all', async (ctx) => {
          expect(await rejection(ctx.count())).toMatchObject({ code: 'E_STORE_READ', message: expect.stringMatching(/^PostgreSQL read failed: /) as string });
          expect(await rejection(ctx.getMany(['ok']))).toMatchObject({ code: 'E_STORE_READ' });
          expect(await rejection(ctx.delete(['ok']))).toMatchObject({ code: 'E_STORE_WRITE', message: expect.stringMatching(/^PostgreSQL delete failed: /) as string });
          expect(await rejection(ctx.clear())).toMatchObject({ code: 'E_STORE_WRITE', message: expect.stringMatching(/^PostgreSQL clear failed: /) as string });
          expect(await rejection(ctx.putMany([rec('x')]))).toMatchObject({ code: 'E_STORE_WRITE', message: expect.stringMatching(/^PostgreSQL write failed: /) as string });
          expect(await rejection(ctx.replaceAll(stream([rec('x')])))).toMatchObject({ code: 'E_STORE_WRITE', message: expect.stringMatching(/^PostgreSQL restore failed: /) as string });
          expect(await rejection(ctx.putAndDelete!([rec('x')], []))).toMatchObject({ code: 'E_STORE_WRITE', message: expect.stringMatching(/^PostgreSQL write failed: /) as string });
          // The section's connection is still usable after the failed transactions rolled back.
          expect((await rejection(ctx.count())).code).toBe('E_STORE_READ');
        });
      } finally {
        await s.done();
      }
    });

    it('after close every call is refused with E_STORE_CLOSED naming the store; close twice is fine', async () => {
      const s = await fresh();
      await s.driver.close();
      const closed = { code: 'E_STORE_CLOSED', message: `PostgreSQL store ${s.driver.url} is closed` };
      expect(await rejection(s.driver.get('x'))).toMatchObject(closed);
      expect(await rejection(s.driver.update('x', () => rec('x')))).toMatchObject(closed);
      expect(await rejection(s.driver.count())).toMatchObject(closed);
      expect(await rejection(s.driver.exclusive('all', async () => 1))).toMatchObject(closed);
      expect(await rejection(s.driver.leader())).toMatchObject(closed);
      expect(await rejection(ids(s.driver))).toMatchObject(closed);
      await s.done();
    });

    it('a caller\'s pool: connections refused once it is ended are store errors; a failed start leaves it open', async () => {
      const pool = new pg.Pool({ connectionString: PG_URL, max: 3 });
      pool.on('error', () => undefined);
      const s = await createSchema();
      try {
        const driver = await PostgresDriver.connect({ pool, schema: s.schema });
        expect(driver.url).toBe('postgres://(pool)');
        await driver.close();
        // close() left the caller's pool open.
        expect((await pool.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one).toBe(1);
        await adminPool().query(`UPDATE "${s.schema}".chatmem_schema SET version = 99`);
        const newer = await rejection(PostgresDriver.connect({ pool, schema: s.schema }));
        expect(newer).toMatchObject({
          code: 'E_STORE_VERSION',
          message: `store schema version 99 is newer than this chatmem supports (${POSTGRES_SCHEMA_VERSION}); upgrade chatmem`,
        });
        expect((await pool.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one).toBe(1);
        // The failed start rolled back: its connection, back in the pool, holds no migration lock.
        const elsewhere = await createSchema();
        try {
          const start = PostgresDriver.connect({ connectionString: PG_URL, schema: elsewhere.schema });
          expect(await stateAfter(start, 5_000)).toBe('done');
          await (await start).close();
        } finally {
          await elsewhere.drop();
        }
        await adminPool().query(`UPDATE "${s.schema}".chatmem_schema SET version = $1`, [POSTGRES_SCHEMA_VERSION]);
        const again = await PostgresDriver.connect({ pool, schema: s.schema });
        await pool.end();
        const w = await rejection(again.update('x', () => rec('x')));
        expect(w).toMatchObject({ code: 'E_STORE_WRITE', message: expect.stringMatching(/^PostgreSQL connection to postgres:\/\/\(pool\) failed: /) as string });
        const r = await rejection(ids(again));
        expect(r).toMatchObject({ code: 'E_STORE_READ', message: expect.stringMatching(/^PostgreSQL connection to /) as string });
        expect(await rejection(again.exclusive('all', async () => 1))).toMatchObject({ code: 'E_STORE_WRITE' });
        expect(await rejection(again.get('x'))).toMatchObject({ code: 'E_STORE_READ', message: expect.stringMatching(/^PostgreSQL read failed: /) as string });
        expect(await again.leader().then(() => 'resolved', (e: { code?: string }) => e.code)).toBe('E_STORE_READ');
      } finally {
        if (!pool.ended) await pool.end();
        await s.drop();
      }
    });

    it('a chatmem error raised while a section writes comes out as it is; leases leave no listener behind', async () => {
      const pool = new pg.Pool({ connectionString: PG_URL, max: 1 });
      pool.on('error', () => undefined);
      const s = await createSchema();
      try {
        const driver = await PostgresDriver.connect({ pool, schema: s.schema });
        const refused = new RecordError('E_RECORD', 'not serialisable');
        const odd = { ...rec('odd'), lazy: { toJSON: () => { throw refused; } } };
        await driver.exclusive('all', async (ctx) => {
          expect(await rejection(ctx.putMany([odd]))).toBe(refused);
        });
        for (let i = 0; i < 15; i++) await driver.update(`l${i}`, () => rec(`l${i}`));
        await driver.exclusive('all', (ctx) => ctx.count());
        for await (const pair of driver.scanJson()) void pair;
        await driver.close();
        const client = await pool.connect();
        try {
          expect(client.listenerCount('error')).toBe(0);
        } finally {
          client.release();
        }
      } finally {
        await pool.end();
        await s.drop();
      }
    });

    it('a failed start ends the pool it made: no connection is left behind', async () => {
      const s = await createSchema();
      const app = `chatmem-mut-${process.pid}-${randomBytes(3).toString('hex')}`;
      try {
        const first = await PostgresDriver.connect({ connectionString: PG_URL, schema: s.schema });
        await first.close();
        await adminPool().query(`UPDATE "${s.schema}".chatmem_schema SET version = 99`);
        const u = new URL(PG_URL);
        u.searchParams.set('application_name', app);
        expect((await rejection(PostgresDriver.connect({ connectionString: u.toString(), schema: s.schema }))).code).toBe('E_STORE_VERSION');
        // The pool is ended once its clients closed their sockets; the server lists a backend until it has exited.
        // Left open, its idle connection would stay for pg's 10 s idle timeout.
        const count = async () => Number((await adminPool().query<{ n: string }>('SELECT COUNT(*) AS n FROM pg_stat_activity WHERE application_name = $1', [app])).rows[0]?.n);
        await until('the connections close', async () => (await count()) === 0, 3_000);
      } finally {
        await s.drop();
      }
    });

    it('close ends the pool it made: its connections are gone', async () => {
      const s = await createSchema();
      const app = `chatmem-mut-${process.pid}-${randomBytes(3).toString('hex')}`;
      try {
        const u = new URL(PG_URL);
        u.searchParams.set('application_name', app);
        const driver = await PostgresDriver.connect({ connectionString: u.toString(), schema: s.schema });
        await Promise.all([driver.get('a'), driver.get('b'), driver.count()]);
        const count = async () => Number((await adminPool().query<{ n: string }>('SELECT COUNT(*) AS n FROM pg_stat_activity WHERE application_name = $1', [app])).rows[0]?.n);
        expect(await count()).toBeGreaterThanOrEqual(1);
        await driver.close();
        await until('the connections close', async () => (await count()) === 0, 3_000);
      } finally {
        await s.drop();
      }
    });

    it('an unreachable or malformed URL is E_STORE_OPEN naming the URL without its password, in the cause too', async () => {
      const down = await rejection(PostgresDriver.connect({ connectionString: 'postgres://chatmem:Sekr1tPw@127.0.0.1:1/test' }));
      expect(down.code).toBe('E_STORE_OPEN');
      expect(down.message).toMatch(/^cannot open PostgreSQL store postgres:\/\/chatmem:\*\*\*@127\.0\.0\.1:1\/test: /);
      expect(down.cause).toBeInstanceOf(Error);
      const bad = 'postgres://chatmem:Sekr1tPw@[::1/test';
      const malformed = await rejection(PostgresDriver.connect({ connectionString: bad }));
      expect(malformed.code).toBe('E_STORE_OPEN');
      const cause = malformed.cause as Error & { input?: string };
      for (const text of [malformed.message, cause.message, cause.stack ?? '', String(cause.input)]) expect(text).not.toContain('Sekr1tPw');
      // A server error quoting a secret (here a database named like the password) is scrubbed too.
      const quoted = await rejection(PostgresDriver.connect({ connectionString: `postgres://${new URL(PG_URL).host}/Sekr1tDb?user=postgres&password=Sekr1tDb` }));
      expect(quoted.code).toBe('E_STORE_OPEN');
      expect(quoted.message).toContain('database "***" does not exist');
      const qc = quoted.cause as Error;
      expect(qc.message).toBe('database "***" does not exist');
      expect(qc.stack).toContain('database "***" does not exist');
      expect(qc.stack).not.toContain('Sekr1tDb');
    });

    it('names its connections "chatmem" and survives the server dropping an idle one', async () => {
      const s = await fresh();
      try {
        await s.driver.get('probe');
        const find = () =>
          adminPool().query<{ pid: number; application_name: string }>('SELECT pid, application_name FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()', [
            `%"${s.schema}"%`,
          ]);
        const { rows } = await find();
        expect(rows.length).toBeGreaterThanOrEqual(1);
        for (const r of rows) expect(r.application_name).toBe('chatmem');
        // Without a pool 'error' listener the dropped idle connection would crash the process.
        await adminPool().query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()', [`%"${s.schema}"%`]);
        await sleep(200);
        expect(await s.driver.get('probe')).toBeNull();
      } finally {
        await s.done();
      }
    });
  });

  describe('exclusive sections', () => {
    it('section calls run in order, one transaction each, and finish before the section ends; later calls are refused', async () => {
      const s = await fresh();
      try {
        await s.driver.update('keep', () => rec('keep'));
        const bad = new Error('corrupt backup');
        let kept: DriverContext | undefined;
        const results = await s.driver.exclusive('all', (ctx) => {
          kept = ctx;
          // Neither awaited: the replace fails after its DELETE; the put must not commit that DELETE.
          const replaced = ctx.replaceAll(
            (async function* () {
              yield rec('r1');
              await sleep(50);
              throw bad;
            })(),
          ).catch((e: unknown) => e);
          const put = ctx.putMany([rec('late')]);
          void ctx.putAndDelete!([rec('tail')], []);
          return Promise.all([replaced, put]);
        });
        expect(results[0]).toBe(bad);
        expect(await ids(s.driver)).toEqual(['keep', 'late', 'tail']);
        const closed = { code: 'E_STORE_CLOSED', message: 'the exclusive section has ended' };
        expect(await rejection(kept!.count())).toMatchObject(closed);
        expect(await rejection(kept!.getMany(['keep']))).toMatchObject(closed);
        expect(await rejection(kept!.delete(['keep']))).toMatchObject(closed);
        expect(syncError(() => kept!.scanJson())).toMatchObject(closed);
        expect(await s.driver.count()).toBe(3);
      } finally {
        await s.done();
      }
    });

    it('a failed call does not stop the next one queued behind it', async () => {
      const s = await fresh();
      try {
        const out = await s.driver.exclusive('all', async (ctx) => {
          const failing = ctx.putAll(stream([rec('a')], new Error('source'))).catch((e: Error) => e.message);
          const next = ctx.putMany([rec('b')]);
          const n = ctx.count();
          return Promise.all([failing, next, n]);
        });
        expect(out).toEqual(['source', undefined, 1]);
      } finally {
        await s.done();
      }
    });

    it('getMany, count, delete, clear, putAndDelete, putAll and replaceAll keep their promises across batches', async () => {
      const s = await fresh();
      try {
        const many = Array.from({ length: 1201 }, (_, i) => rec(`m${String(i).padStart(4, '0')}`, { name: `n${i}` }));
        await s.driver.exclusive('all', async (ctx) => {
          expect(await ctx.putAll(stream(many))).toBe(1201);
          expect(await ctx.count()).toBe(1201);
          // Asked order kept, missing ids left out.
          const got = await ctx.getMany(['m0010', 'nobody', 'm0002']);
          expect(got.map((r) => [r.user_id, r.name])).toEqual([
            ['m0010', 'n10'],
            ['m0002', 'n2'],
          ]);
          expect(await ctx.delete(['m0000', 'm0001', 'nobody'])).toBe(2);
          // Within one call the last record of an id wins.
          await ctx.putMany([rec('dup', { name: 'first' }), rec('other'), rec('dup', { name: 'last' })]);
          expect((await ctx.getMany(['dup']))[0]?.name).toBe('last');
          await ctx.putAndDelete!([rec('merged', { name: 'M' })], ['dup', 'other']);
          expect((await ctx.getMany(['merged', 'dup', 'other'])).map((r) => r.user_id)).toEqual(['merged']);
          expect(await ctx.count()).toBe(1200);
          expect(await ctx.replaceAll(stream(many.slice(0, 700)))).toBe(700);
          expect(await ctx.clear()).toBe(700);
          expect(await ctx.replaceAll(stream([]))).toBe(0);
          expect(await ctx.putAll(stream([]))).toBe(0);
        });
        expect(await s.driver.count()).toBe(0);
      } finally {
        await s.done();
      }
    });

    it('a stream is written in statements of 500 rows as it is read, and may be scanned while the section writes', async () => {
      const s = await fresh();
      try {
        // The section's connection between two statements: has it sent a batch yet?
        const batchesSent = async () =>
          Number(
            (
              await adminPool().query<{ n: string }>(
                "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE state = 'idle in transaction' AND query LIKE $1 AND query LIKE '%unnest(%'",
                [`INSERT INTO "${s.schema}".%`],
              )
            ).rows[0]?.n,
          );
        const seen: number[] = [];
        async function* watched(): AsyncGenerator<MemoryRecord> {
          for (let i = 0; i < 501; i++) {
            if (i === 1 || i === 499 || i === 500) seen.push(await batchesSent());
            yield rec(`b${String(i).padStart(4, '0')}`);
          }
        }
        await s.driver.exclusive('all', async (ctx) => {
          expect(await ctx.putAll(watched())).toBe(501);
          // Deleting what was read while the scan goes on (its own connection and snapshot).
          const scanned: string[] = [];
          for await (const [id] of ctx.scanJson({ after: 'b0497' })) {
            scanned.push(id);
            expect(await ctx.delete([id])).toBe(1);
          }
          expect(scanned).toEqual(['b0498', 'b0499', 'b0500']);
        });
        expect(seen).toEqual([0, 0, 1]);
        expect(await s.driver.count()).toBe(498);
      } finally {
        await s.done();
      }
    });

    it('putMany writes each row once, in statements of 500 rows', async () => {
      const s = await fresh();
      try {
        const many = Array.from({ length: 1201 }, (_, i) => rec(`w${String(i).padStart(4, '0')}`));
        await s.driver.exclusive('all', (ctx) => ctx.putMany(many));
        expect(await s.driver.count()).toBe(1201);
        // A backend sends its table statistics when idle for 10 s, or when it exits: closing makes them arrive.
        await s.driver.close();
        const stats = async () => {
          const c = await adminPool().connect();
          try {
            await c.query('SELECT pg_stat_clear_snapshot()');
            return (await c.query<{ ins: string; upd: string }>('SELECT n_tup_ins AS ins, n_tup_upd AS upd FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2', [s.schema, 'chatmem_users'])).rows[0];
          } finally {
            c.release();
          }
        };
        await until('the statistics arrive', async () => Number((await stats())?.ins) === 1201);
        expect(Number((await stats())?.upd)).toBe(0);
      } finally {
        await s.done();
      }
    });

    it('a stream error comes out as thrown and rolls back; a database error inside a batch is a store error', async () => {
      const s = await fresh();
      try {
        await s.driver.update('keep', () => rec('keep'));
        // A real refusal by the server for names starting with "refuse" (a trigger of this schema).
        await adminPool().query(`CREATE FUNCTION "${s.schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN IF NEW.name LIKE 'refuse%' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; RETURN NEW; END $$`);
        await adminPool().query(`CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON "${s.schema}".chatmem_users FOR EACH ROW EXECUTE FUNCTION "${s.schema}".refuse()`);
        const many = Array.from({ length: 600 }, (_, i) => rec(`p${String(i).padStart(4, '0')}`));
        const bad = new Error('corrupt backup');
        await s.driver.exclusive('all', async (ctx) => {
          expect(await rejection(ctx.putAll(stream(many, bad)))).toBe(bad);
          // A stream that fails before its first record.
          expect(await rejection(ctx.putAll(stream([], bad)))).toBe(bad);
          expect(await rejection(ctx.replaceAll(stream([], bad)))).toBe(bad);
          expect(await rejection(ctx.replaceAll(stream(many, bad)))).toBe(bad);
          // The 500th record makes the first batch fail in the database, inside the loop.
          const poisoned = many.map((r, i) => (i === 499 ? { ...r, name: 'refuse me' } : r));
          const inLoop = await rejection(ctx.putAll(stream(poisoned)));
          expect(inLoop).toMatchObject({ code: 'E_STORE_WRITE', message: expect.stringMatching(/^PostgreSQL write failed: /) as string });
          const replaced = await rejection(ctx.replaceAll(stream(poisoned)));
          expect(replaced).toMatchObject({ code: 'E_STORE_WRITE', message: expect.stringMatching(/^PostgreSQL restore failed: /) as string });
          // In the last, partial batch.
          const last = many.map((r, i) => (i === 599 ? { ...r, name: 'refuse me' } : r));
          expect((await rejection(ctx.putAll(stream(last)))).code).toBe('E_STORE_WRITE');
        });
        expect(await ids(s.driver)).toEqual(['keep']);
      } finally {
        await s.done();
      }
    });

    it("a section holds back another daemon's writes until it ends, and close() waits for a write in flight", async () => {
      const s = await fresh();
      const other = await PostgresDriver.connect({ connectionString: PG_URL, schema: s.schema });
      const keys = new LockKeys(`${s.schema}\0chatmem_users`);
      try {
        let write: Promise<MemoryRecord> | undefined;
        let closing: Promise<void> | undefined;
        const order: string[] = [];
        await s.driver.exclusive('all', async (ctx) => {
          write = other.update('held', (cur) => ({ ...(cur ?? rec('held')), name: 'after' }));
          // More writes than the pool's 8 write slots: two wait for a slot, not yet for a connection.
          const more = Promise.all(Array.from({ length: 9 }, (_, i) => other.update(`more${i}`, () => rec(`more${i}`))));
          void Promise.all([write, more]).then(() => order.push('written'));
          await until('the writes wait on the store-wide key', async () => (await waiting(NS_CTRL, keys.global)) === 8);
          closing = other.close().then(() => void order.push('closed'));
          expect(await stateAfter(closing, 100)).toBe('pending');
          await ctx.putMany([rec('held', { name: 'before' })]);
          order.push('section-end');
        });
        await closing;
        expect(order).toEqual(['section-end', 'written', 'closed']);
        expect((await s.driver.get('held'))?.name).toBe('after');
        expect(await s.driver.count()).toBe(10);
      } finally {
        await other.close();
        await s.done();
      }
    });

    it("scoped sections: up to 256 users lock only those users; more take the store-wide key; another store's keys are its own", async () => {
      const s = await fresh();
      const other = await PostgresDriver.connect({ connectionString: PG_URL, schema: s.schema });
      const elsewhere = await fresh();
      const keys = new LockKeys(`${s.schema}\0chatmem_users`);
      try {
        const scope = Array.from({ length: 256 }, (_, i) => `in${i}`);
        await s.driver.exclusive({ ids: [...scope, 'in0', 'in0'] }, async () => {
          // Another user of the same store, and the same user in another store, are not held.
          expect(await stateAfter(other.update('out', () => rec('out')), 5_000)).toBe('done');
          expect(await stateAfter(elsewhere.driver.update('in5', () => rec('in5')), 5_000)).toBe('done');
          const held = other.update('in5', () => rec('in5'));
          await until('the write waits on its user key', async () => (await waiting(NS_USER, keys.user('in5'))) === 1);
          expect(await stateAfter(held, 50)).toBe('pending');
        });
        const big = [...scope, 'in256'];
        await s.driver.exclusive({ ids: big }, async () => {
          const held = other.update('out2', () => rec('out2'));
          await until('the write waits on the store-wide key', async () => (await waiting(NS_CTRL, keys.global)) === 1);
          expect(await stateAfter(held, 50)).toBe('pending');
        });
        await s.driver.exclusive('all', async () => {
          expect(await stateAfter(elsewhere.driver.update('x', () => rec('x')), 5_000)).toBe('done');
          expect(await stateAfter(elsewhere.driver.exclusive('all', async () => 'ok'), 5_000)).toBe('done');
        });
        expect(await other.count()).toBe(3);
      } finally {
        await other.close();
        await elsewhere.done();
        await s.done();
      }
    });

    it("a section whose lock wait fails is E_STORE_WRITE, and the daemon's next section runs", async () => {
      const s = await fresh();
      const other = await PostgresDriver.connect({ connectionString: PG_URL, schema: s.schema });
      const keys = new LockKeys(`${s.schema}\0chatmem_users`);
      try {
        let failed: Promise<Error & { code?: string }> | undefined;
        await s.driver.exclusive('all', async () => {
          failed = rejection(other.exclusive('all', async () => 'never'));
          await until('the second section waits', async () => (await waiting(NS_CTRL, keys.ops)) === 1);
          await adminPool().query("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = $1::oid AND objid = $2::oid", [
            NS_CTRL,
            keys.ops >>> 0,
          ]);
          const err = await failed;
          expect(err).toMatchObject({ code: 'E_STORE_WRITE', message: expect.stringMatching(/^PostgreSQL exclusive lock failed: /) as string });
        });
        expect(await stateAfter(other.exclusive('all', async (ctx) => ctx.count()), 5_000)).toBe('done');
      } finally {
        await other.close();
        await s.done();
      }
    });

    it('sections of two daemons never overlap, even for different users, and release every lock', async () => {
      const s = await fresh();
      const other = await PostgresDriver.connect({ connectionString: PG_URL, schema: s.schema });
      const keys = new LockKeys(`${s.schema}\0chatmem_users`);
      try {
        const order: string[] = [];
        let second: Promise<unknown> | undefined;
        await s.driver.exclusive({ ids: ['a'] }, async () => {
          second = other.exclusive({ ids: ['b'] }, async () => void order.push('second'));
          await until('the second section waits on the operations key', async () => (await waiting(NS_CTRL, keys.ops)) === 1);
          order.push('first');
        });
        await second;
        expect(order).toEqual(['first', 'second']);
        const { rows } = await adminPool().query<{ n: string }>(
          'SELECT COUNT(*) AS n FROM pg_locks WHERE locktype = $1 AND classid = ANY($2::oid[]) AND objid = ANY($3::oid[])',
          ['advisory', [NS_CTRL, NS_USER], [keys.ops >>> 0, keys.global >>> 0, keys.user('a') >>> 0, keys.user('b') >>> 0]],
        );
        expect(Number(rows[0]?.n)).toBe(0);
      } finally {
        await other.close();
        await s.done();
      }
    });

    it('concurrent writes to one new user from two daemons lose nothing', async () => {
      const s = await fresh();
      const other = await PostgresDriver.connect({ connectionString: PG_URL, schema: s.schema });
      try {
        const n = 30;
        await Promise.all(
          Array.from({ length: n }, (_, i) =>
            (i % 2 ? other : s.driver).update('hot', (cur) => ({ ...(cur ?? rec('hot')), history: [...(cur?.history ?? []), entry(`m${i}`)] })),
          ),
        );
        const got = await s.driver.get('hot');
        expect(got?.history.map((e) => e.text).sort()).toEqual(Array.from({ length: n }, (_, i) => `m${i}`).sort());
      } finally {
        await other.close();
        await s.done();
      }
    });

    it('writes held by a section take at most pool size - 2 connections: reads and a scan still get one', async () => {
      const s = await fresh();
      const pool = new pg.Pool({ connectionString: PG_URL, max: 4 });
      pool.on('error', () => undefined);
      const keys = new LockKeys(`${s.schema}\0chatmem_users`);
      try {
        const small = await PostgresDriver.connect({ pool, schema: s.schema });
        await small.update('seen', () => rec('seen'));
        let writes: Promise<unknown> | undefined;
        await s.driver.exclusive('all', async () => {
          writes = Promise.all(Array.from({ length: 6 }, (_, i) => small.update(`w${i}`, () => rec(`w${i}`))));
          await until('two writes wait on the store-wide key', async () => (await waiting(NS_CTRL, keys.global)) >= 2);
          expect(await stateAfter(small.get('seen'), 5_000)).toBe('done');
          expect(await stateAfter(ids(small), 5_000)).toBe('done');
          expect(await waiting(NS_CTRL, keys.global)).toBe(2);
        });
        await writes;
        expect(await small.count()).toBe(7);
        await small.close();
      } finally {
        await pool.end();
        await s.done();
      }
    });
  });

  describe('leader', () => {
    it('one leader; its lost connection hands over; close hands over at once', async () => {
      const s = await fresh();
      const b = await PostgresDriver.connect({ connectionString: PG_URL, schema: s.schema });
      const c = await PostgresDriver.connect({ connectionString: PG_URL, schema: s.schema });
      const keys = new LockKeys(`${s.schema}\0chatmem_users`);
      try {
        expect(await s.driver.leader()).toBe(true);
        const holder = async () =>
          (
            await adminPool().query<{ pid: number }>("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1::oid AND objid = $2::oid", [
              NS_CTRL,
              keys.leader >>> 0,
            ])
          ).rows.map((r) => r.pid);
        const first = await holder();
        expect(first).toHaveLength(1);
        // Asked again, it keeps leading on the same connection: the lock is never let go in between.
        for (let i = 0; i < 3; i++) {
          const [again, rival] = await Promise.all([s.driver.leader(), b.leader()]);
          expect([again, rival]).toEqual([true, false]);
          expect(await holder()).toEqual(first);
        }
        // Another store in the same database elects its own leader.
        const elsewhere = await fresh();
        try {
          expect(await elsewhere.driver.leader()).toBe(true);
        } finally {
          await elsewhere.done();
        }
        // The leader's connection dies: the server frees its lock, and it must stop leading.
        const { rows } = await adminPool().query<{ pid: number }>(
          "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1::oid AND objid = $2::oid",
          [NS_CTRL, keys.leader >>> 0],
        );
        expect(rows).toHaveLength(1);
        await adminPool().query('SELECT pg_terminate_backend($1)', [rows[0]?.pid]);
        await until('the lock is freed', async () => (await adminPool().query("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::oid AND objid = $2::oid", [NS_CTRL, keys.leader >>> 0])).rowCount === 0);
        expect(await b.leader()).toBe(true);
        expect(await s.driver.leader()).toBe(false);
        expect(await c.leader()).toBe(false);
        await b.close();
        expect(await c.leader()).toBe(true);
        // Leading takes no section's key: sections still run.
        expect(await stateAfter(s.driver.exclusive('all', async () => 1), 5_000)).toBe('done');
      } finally {
        await b.close();
        await c.close();
        await s.done();
      }
    });
  });

  describe('migrations', () => {
    it('creates a missing schema; uses the search_path schema; refuses a search_path naming none', async () => {
      const name = `chatmem_mut_${process.pid}_${randomBytes(4).toString('hex')}`;
      try {
        const driver = await PostgresDriver.connect({ connectionString: PG_URL, schema: name });
        await driver.update('x', () => rec('x'));
        await driver.close();
        const viaPath = await PostgresDriver.connect({ connectionString: urlWithSchema(name) });
        expect(await viaPath.get('x')).not.toBeNull();
        await viaPath.close();
      } finally {
        await adminPool().query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
      }
      const none = await rejection(PostgresDriver.connect({ connectionString: urlWithSchema(name) }));
      expect(none).toMatchObject({
        code: 'E_STORE_OPEN',
        message: expect.stringContaining('the search_path names no existing schema: create it, or name the schema to use') as string,
      });
    });

    it('a version 1 store gets its search text rebuilt from each record, past one batch, and is marked current', async () => {
      const s = await createSchema();
      try {
        const first = await PostgresDriver.connect({ connectionString: PG_URL, schema: s.schema });
        await first.exclusive('all', (ctx) =>
          ctx.putMany(Array.from({ length: 502 }, (_, i) => rec(`A${String(i).padStart(4, '0')}`, { name: `Name${i}`, address: `Street ${i}` }))),
        );
        await first.close();
        await adminPool().query(`UPDATE "${s.schema}".chatmem_users SET search_text = ''`);
        await adminPool().query(`UPDATE "${s.schema}".chatmem_schema SET version = 1`);
        const upgraded = await PostgresDriver.connect({ connectionString: PG_URL, schema: s.schema });
        try {
          expect((await upgraded.search('name0', 10)).map((r) => r.user_id)).toEqual(['A0000']);
          expect((await upgraded.search('street 501', 10)).map((r) => r.user_id)).toEqual(['A0501']);
          const { rows } = await adminPool().query<{ n: string }>(`SELECT COUNT(*) AS n FROM "${s.schema}".chatmem_users WHERE search_text = ''`);
          expect(Number(rows[0]?.n)).toBe(0);
          const v = await adminPool().query(`SELECT version FROM "${s.schema}".chatmem_schema`);
          expect(v.rows).toEqual([{ version: POSTGRES_SCHEMA_VERSION }]);
        } finally {
          await upgraded.close();
        }
      } finally {
        await s.drop();
      }
    });

    it('a lost version row: the migrations run again over existing data and nothing is lost', async () => {
      const s = await createSchema();
      try {
        const first = await PostgresDriver.connect({ connectionString: PG_URL, schema: s.schema });
        await first.update('kept', () => rec('kept', { name: 'Kept' }));
        await first.close();
        await adminPool().query(`DELETE FROM "${s.schema}".chatmem_schema`);
        const again = await PostgresDriver.connect({ connectionString: PG_URL, schema: s.schema });
        expect((await again.get('kept'))?.name).toBe('Kept');
        expect((await again.search('kept', 5)).map((r) => r.user_id)).toEqual(['kept']);
        await again.close();
        const v = await adminPool().query(`SELECT table_name, version FROM "${s.schema}".chatmem_schema`);
        expect(v.rows).toEqual([{ table_name: 'chatmem_users', version: POSTGRES_SCHEMA_VERSION }]);
      } finally {
        await s.drop();
      }
    });

    it('concurrent starts on a missing schema all succeed', async () => {
      const name = `chatmem_mut_${process.pid}_${randomBytes(4).toString('hex')}`;
      try {
        const drivers = await Promise.all(Array.from({ length: 4 }, () => PostgresDriver.connect({ connectionString: PG_URL, schema: name })));
        await Promise.all(drivers.map((x) => x.close()));
        const v = await adminPool().query(`SELECT version FROM "${name}".chatmem_schema`);
        expect(v.rows).toEqual([{ version: POSTGRES_SCHEMA_VERSION }]);
      } finally {
        await adminPool().query(`DROP SCHEMA IF EXISTS "${name}" CASCADE`);
      }
    });
  });
});
