import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, expect, it } from 'vitest';
import { PostgresDriver } from '../../src/store/postgres/index.js';
import { newRecord } from '../../src/record.js';
import { PG_URL, createSchema, describePg, pgUnreachable } from '../helpers/pg.js';

// What a start makes of the database it finds (src/store/postgres/migrations.ts), on databases and a
// role made for each test: the encoding check, the pg_trgm index created where the role may create it
// and search without it where it may not, and the index name at PostgreSQL's 63-byte limit. Apart from
// test/mutation/postgres.test.ts because creating databases costs seconds, paid only for this file.

const admin = pgUnreachable === null ? new pg.Pool({ connectionString: PG_URL, max: 2 }) : null;
afterAll(async () => {
  await admin?.end();
});

function adminPool(): pg.Pool {
  if (!admin) throw new Error('PostgreSQL is unreachable');
  return admin;
}

function urlFor(db: string, user?: string): string {
  const u = new URL(PG_URL);
  u.pathname = `/${db}`;
  if (user) u.username = user;
  return u.toString();
}

/** A database of its own (names are unique per run), dropped by the returned function. */
async function database(encoding: string): Promise<{ name: string; drop: () => Promise<void> }> {
  const name = `chatmem_mut_${process.pid}_${randomBytes(4).toString('hex')}`;
  await adminPool().query(`CREATE DATABASE "${name}" TEMPLATE template0 ENCODING '${encoding}' LC_COLLATE 'C' LC_CTYPE 'C'`);
  return { name, drop: async () => void (await adminPool().query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)) };
}

describePg('postgres migrations on fresh databases, for mutation testing', () => {
  it('refuses a database that is neither UTF8 nor SQL_ASCII, naming its encoding; opens an SQL_ASCII one', async () => {
    const latin = await database('LATIN1');
    const ascii = await database('SQL_ASCII');
    try {
      const err = (await PostgresDriver.connect({ connectionString: urlFor(latin.name), schema: 's' }).then(
        () => null,
        (e: unknown) => e,
      )) as { code?: string; message?: string } | null;
      expect(err?.code).toBe('E_STORE_OPEN');
      expect(err?.message).toContain('the database encoding is LATIN1; chatmem needs UTF8 (emoji and any script in names and messages)');
      // The refused start ended its pool: its backend exits (at once, not after pg's 10 s idle timeout).
      const end = Date.now() + 3_000;
      const left = async () => Number((await adminPool().query<{ n: string }>('SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = $1', [latin.name])).rows[0]?.n);
      while ((await left()) > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      expect(await left()).toBe(0);
      const driver = await PostgresDriver.connect({ connectionString: urlFor(ascii.name), schema: 's' });
      await driver.update('a', () => newRecord('a'));
      expect(await driver.count()).toBe(1);
      await driver.close();
    } finally {
      await latin.drop();
      await ascii.drop();
    }
  });

  it('creates pg_trgm where it may; a role that may not create it opens a schema made for it and searches without the index', async () => {
    const db = await database('UTF8');
    const role = `chatmem_mut_role_${process.pid}_${randomBytes(3).toString('hex')}`;
    const c = new pg.Client({ connectionString: urlFor(db.name) });
    await c.connect();
    try {
      await adminPool().query(`CREATE ROLE "${role}" LOGIN`);
      await adminPool().query(`REVOKE CREATE ON DATABASE "${db.name}" FROM PUBLIC`);
      // The schema exists and is the role's, but the role may not create schemas or extensions.
      await c.query(`CREATE SCHEMA app AUTHORIZATION "${role}"`);
      const warnings: Error[] = [];
      const onWarning = (w: Error): void => void warnings.push(w);
      process.on('warning', onWarning);
      const limited = await PostgresDriver.connect({ connectionString: urlFor(db.name, role), schema: 'app' });
      // A process warning is emitted on the next tick.
      await new Promise((r) => setImmediate(r));
      process.off('warning', onWarning);
      try {
        expect(limited.searchIndex).toBe(false);
        // Not silent: why is kept (insufficient_privilege) and said once as a process warning.
        expect(limited.searchIndexProblem?.code).toBe('42501');
        expect(limited.searchIndexProblem?.message).toContain('pg_trgm');
        const said = warnings.filter((w) => (w as { code?: string }).code === 'CHATMEM_NO_SEARCH_INDEX');
        expect(said.map((w) => w.message)).toEqual([expect.stringContaining('search runs without its pg_trgm index (42501: ')]);
        await limited.update('u1', () => ({ ...newRecord('u1'), name: 'Siti Rahayu' }));
        expect((await limited.search('rahayu', 5)).map((r) => r.user_id)).toEqual(['u1']);
      } finally {
        await limited.close();
      }
      expect((await c.query("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")).rowCount).toBe(0);
      // The owner may: the extension and the index are made at the next start.
      const owner = await PostgresDriver.connect({ connectionString: urlFor(db.name), schema: 'app' });
      try {
        expect(owner.searchIndex).toBe(true);
        expect(owner.searchIndexProblem).toBeNull();
        expect((await owner.search('rahayu', 5)).map((r) => r.user_id)).toEqual(['u1']);
      } finally {
        await owner.close();
      }
      const idx = await c.query<{ indexname: string }>("SELECT indexname FROM pg_indexes WHERE schemaname = 'app' AND indexdef LIKE '%gin_trgm_ops%'");
      expect(idx.rows.map((r) => r.indexname)).toEqual(['chatmem_users_search_trgm']);
    } finally {
      await c.end();
      await db.drop();
      await adminPool().query(`DROP ROLE IF EXISTS "${role}"`);
    }
  });

  it('a start whose CREATE EXTENSION meets another session creating pg_trgm tries again and gets the index', async () => {
    const db = await database('UTF8');
    const c = new pg.Client({ connectionString: urlFor(db.name) });
    const other = new pg.Client({ connectionString: urlFor(db.name) });
    await c.connect();
    await other.connect();
    try {
      await c.query('CREATE SCHEMA app');
      // Another session (a second daemon's test helper, an operator) creating the extension, not yet committed.
      await other.query('BEGIN');
      await other.query('CREATE EXTENSION pg_trgm SCHEMA public');
      const starting = PostgresDriver.connect({ connectionString: urlFor(db.name), schema: 'app' });
      // The start's CREATE EXTENSION waits on the other's row of pg_extension: seen before letting it go.
      for (;;) {
        const waiting = await c.query("SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND query LIKE 'CREATE EXTENSION%'", [db.name]);
        if (waiting.rowCount === 1) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      await other.query('COMMIT');
      const driver = await starting;
      try {
        expect([driver.searchIndex, driver.searchIndexProblem]).toEqual([true, null]);
      } finally {
        await driver.close();
      }
      const idx = await c.query<{ indexname: string }>("SELECT indexname FROM pg_indexes WHERE schemaname = 'app' AND indexdef LIKE '%gin_trgm_ops%'");
      expect(idx.rows.map((r) => r.indexname)).toEqual(['chatmem_users_search_trgm']);
    } finally {
      await other.end();
      await c.end();
      await db.drop();
    }
  });

  it('a failure that is no concurrent change is not tried again: one CREATE EXTENSION for a role that may not create it', async () => {
    const db = await database('UTF8');
    const role = `chatmem_mut_role_${process.pid}_${randomBytes(3).toString('hex')}`;
    const c = new pg.Client({ connectionString: urlFor(db.name) });
    await c.connect();
    try {
      await adminPool().query(`CREATE ROLE "${role}" LOGIN`);
      await adminPool().query(`REVOKE CREATE ON DATABASE "${db.name}" FROM PUBLIC`);
      await c.query(`CREATE SCHEMA app AUTHORIZATION "${role}"`);
      // Each try counted by an event trigger before the command runs, on a sequence: its refusal's
      // rollback does not take the count back.
      await c.query(`CREATE SEQUENCE public.tries;
        CREATE FUNCTION public.count_try() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN PERFORM nextval('public.tries'); END $$;
        CREATE EVENT TRIGGER count_try ON ddl_command_start WHEN TAG IN ('CREATE EXTENSION') EXECUTE FUNCTION public.count_try()`);
      const onWarning = (): void => undefined;
      process.on('warning', onWarning);
      const limited = await PostgresDriver.connect({ connectionString: urlFor(db.name, role), schema: 'app' });
      await new Promise((r) => setImmediate(r));
      process.off('warning', onWarning);
      await limited.close();
      expect(limited.searchIndexProblem?.code).toBe('42501');
      const { rows } = await c.query<{ n: string }>('SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM public.tries');
      expect(Number(rows[0]?.n)).toBe(1);
    } finally {
      await c.end();
      await db.drop();
      await adminPool().query(`DROP ROLE IF EXISTS "${role}"`);
    }
  });

  it('a start tries twice only: a second concurrent catalogue change (the trigram index name taken meanwhile) is said, not retried', async () => {
    const db = await database('UTF8');
    const c = new pg.Client({ connectionString: urlFor(db.name) });
    const ext = new pg.Client({ connectionString: urlFor(db.name) });
    const idx = new pg.Client({ connectionString: urlFor(db.name) });
    await c.connect();
    await ext.connect();
    await idx.connect();
    const waitingOn = async (like: string): Promise<void> => {
      for (;;) {
        const w = await c.query("SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND query LIKE $2", [db.name, like]);
        if (w.rowCount === 1) return;
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    try {
      await c.query('CREATE SCHEMA app; CREATE TABLE app.other (x int)');
      // First try: CREATE EXTENSION meets another session's uncommitted pg_trgm (23505 once it commits).
      await ext.query('BEGIN; CREATE EXTENSION pg_trgm SCHEMA public');
      // Second try: the index's name is being taken by another session's uncommitted index (23505 again).
      await idx.query('BEGIN; CREATE INDEX chatmem_users_search_trgm ON app.other (x)');
      const starting = PostgresDriver.connect({ connectionString: urlFor(db.name), schema: 'app' });
      await waitingOn('CREATE EXTENSION%');
      await ext.query('COMMIT');
      await waitingOn('%gin_trgm_ops%');
      await idx.query('COMMIT');
      const driver = await starting;
      try {
        // A third try would find the name taken (IF NOT EXISTS: a notice) and claim an index users lacks.
        expect(driver.searchIndex).toBe(false);
        expect(driver.searchIndexProblem?.code).toBe('23505');
        await driver.update('u1', () => ({ ...newRecord('u1'), name: 'Siti Rahayu' }));
        expect((await driver.search('rahayu', 5)).map((r) => r.user_id)).toEqual(['u1']);
      } finally {
        await driver.close();
      }
      const trgm = await c.query("SELECT 1 FROM pg_indexes WHERE schemaname = 'app' AND indexdef LIKE '%gin_trgm_ops%'");
      expect(trgm.rowCount).toBe(0);
    } finally {
      await idx.end();
      await ext.end();
      await c.end();
      await db.drop();
    }
  });

  it('an index name of exactly 63 bytes is kept as it is', async () => {
    const s = await createSchema();
    try {
      const table = `t${'x'.repeat(50)}`;
      expect(Buffer.byteLength(`${table}_search_trgm`)).toBe(63);
      const driver = await PostgresDriver.connect({ connectionString: PG_URL, schema: s.schema, table });
      await driver.close();
      const idx = await adminPool().query<{ indexname: string }>("SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND indexdef LIKE '%gin_trgm_ops%'", [s.schema]);
      expect(idx.rows.map((r) => r.indexname)).toEqual([`${table}_search_trgm`]);
    } finally {
      await s.drop();
    }
  });
});
