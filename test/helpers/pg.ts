import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, it } from 'vitest';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { PostgresDriver } from '../../src/store/postgres/index.js';
import { redactUrl } from '../../src/store/url.js';

/** Tests run against a real PostgreSQL (trust auth, database `test`); override with CHATMEM_TEST_PG. */
export const PG_URL = process.env.CHATMEM_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';

async function probe(url: string): Promise<string | null> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    // Created in public before any test makes it: CREATE EXTENSION installs into the first schema of
    // the search_path, and a test's connection names its own schema, which it drops with CASCADE at
    // the end, taking the extension and every other test's trigram index with it.
    await client.query('CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public').catch(() => undefined);
    return null;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Why PostgreSQL cannot be reached, or null when it can. Probed once per test file. */
export const pgUnreachable: string | null = await probe(PG_URL);

/**
 * Registers the tests of `body` when PostgreSQL is reachable. Otherwise, under CI=true a failing
 * test says why (never a silent skip); locally the suite is skipped with a warning.
 */
export function describePg(name: string, body: () => void): void {
  if (pgUnreachable === null) {
    describe(name, body);
  } else if (process.env.CI === 'true') {
    describe(name, () => {
      it('reaches PostgreSQL', () => {
        throw new Error(`PostgreSQL unreachable at ${redactUrl(PG_URL)} (CI=true: not skipping): ${pgUnreachable}`);
      });
    });
  } else {
    console.warn(`PostgreSQL unreachable at ${redactUrl(PG_URL)} (${pgUnreachable}): skipping "${name}". Under CI=true it fails instead.`);
    describe.skip(name, body);
  }
}

/** The test URL with `search_path` set, the way an operator points a daemon at a schema. */
export function urlWithSchema(schema: string): string {
  const u = new URL(PG_URL);
  u.searchParams.set('options', `-c search_path=${schema}`);
  return u.toString();
}

/** A fresh schema of its own, so test files running in parallel never share tables or locks. */
export async function createSchema(): Promise<{ schema: string; url: string; drop: () => Promise<void> }> {
  const schema = `chatmem_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    await client.query(`CREATE SCHEMA "${schema}"`);
  } finally {
    await client.end();
  }
  return {
    schema,
    url: urlWithSchema(schema),
    drop: async () => {
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      try {
        await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      } finally {
        await c.end();
      }
    },
  };
}

/**
 * A driver on a fresh schema and an admin client beside it; their closing and the schema's drop go on
 * `cleanups`, which the caller's afterEach runs last first. `users` is the table's qualified name.
 */
export async function driverInSchema(cleanups: (() => Promise<void>)[]): Promise<{ driver: PostgresDriver; admin: pg.Client; users: string; schema: string }> {
  const { schema, drop } = await createSchema();
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  cleanups.push(drop, () => admin.end());
  const driver = await PostgresDriver.connect({ connectionString: PG_URL, schema });
  cleanups.push(() => driver.close());
  return { driver, admin, users: `"${schema}".chatmem_users`, schema };
}

/** A record with one message of `text` at a fixed time: what the swap tests store and read back. */
export const swapRecord = (id: string, text = 'hello'): MemoryRecord => ({ ...newRecord(id), history: [{ role: 'user', text, ts: '2026-11-30T00:00:00.000Z' }] });

export async function* fromArray<T>(items: T[]): AsyncGenerator<T> {
  for (const x of items) yield x;
}

/** The table's oid, as text ('' when it does not exist): it changes when a swap puts a new table in. */
export async function tableOid(admin: pg.Client, table: string): Promise<string> {
  return (await admin.query<{ o: string }>('SELECT $1::regclass::oid::text AS o', [table])).rows[0]?.o ?? '';
}

/** Polls (no sleep-and-hope) until another backend whose query names `marker` (a test's schema) waits on a lock. */
export async function waitUntilBlocked(admin: pg.Client, marker: string): Promise<void> {
  for (;;) {
    const { rows } = await admin.query(
      `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`,
      [marker],
    );
    if (rows.length > 0) return;
    await new Promise((r) => setTimeout(r, 5));
  }
}
