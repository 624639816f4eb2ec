import type { Pool, PoolClient } from 'pg';
import { StoreError } from '../../errors.js';
import type { MemoryRecord } from '../../record.js';
import { searchText } from '../search-text.js';
import { derivedName, quoteIdent, tableNames } from './config.js';
import { Lease } from './connection.js';
import { hashKey, lockMigrations } from './locks.js';
import { WRITE_BATCH } from './sql.js';

/**
 * Versioned migrations; entry i takes the schema from version i to i + 1. Each is idempotent on its
 * own as well, so a lost version row cannot break a start.
 */
const MIGRATIONS: readonly ((t: { users: string; deleted: string; table: string }) => string | ((client: PoolClient) => Promise<void>))[] = [
  // data is JSON text, not JSONB: JSONB reorders keys and drops duplicates, and unknown fields must
  // come back exactly as written (the seed format is the contract). user_id uses the "C" collation so
  // ORDER BY and keyset pagination follow UTF-8 byte order, the order of backups.
  (t) => `CREATE TABLE IF NOT EXISTS ${t.users} (
    user_id TEXT COLLATE "C" PRIMARY KEY,
    data TEXT NOT NULL,
    name TEXT,
    product TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    messages INT NOT NULL,
    search_text TEXT NOT NULL
  )`,
  // search_text gains the user id, name and address: rebuilt in JS from each record (PostgreSQL's own
  // JSON parser recurses, and records from before the limits may be nested thousands of levels deep).
  (t) => async (client) => {
    let after = '';
    for (;;) {
      const { rows } = await client.query<{ user_id: string; data: string }>(
        `SELECT user_id, data FROM ${t.users} WHERE user_id > $1 ORDER BY user_id LIMIT ${WRITE_BATCH}`,
        [after],
      );
      const last = rows[rows.length - 1];
      if (!last) break;
      const texts = rows.map((r) => searchText(JSON.parse(r.data) as MemoryRecord));
      await client.query(
        `UPDATE ${t.users} AS u SET search_text = x.s FROM unnest($1::text[], $2::text[]) AS x(id, s) WHERE u.user_id = x.id`,
        [rows.map((r) => r.user_id), texts],
      );
      after = last.user_id;
    }
  },
  // What a clear or full restore needs to copy its backup while other daemons write (two-phase, see
  // changes.ts): `version` is the writing transaction's id, so "changed since a snapshot" is the rows
  // whose version that snapshot does not see (exact, whatever order the writers committed in, which a
  // sequence value taken at write time is not); deletes leave a row in the deleted-users log (a null
  // user id: the whole store was cleared or replaced). Added without a default first, then given one:
  // a volatile default in ADD COLUMN would rewrite every row. Rows from before keep a null version,
  // which every later snapshot sees.
  (t) => `ALTER TABLE ${t.users} ADD COLUMN IF NOT EXISTS version xid8;
    ALTER TABLE ${t.users} ALTER COLUMN version SET DEFAULT pg_current_xact_id();
    CREATE INDEX IF NOT EXISTS ${quoteIdent(derivedName(t.table, 'version'), 'index')} ON ${t.users} (version) WHERE version IS NOT NULL;
    CREATE TABLE IF NOT EXISTS ${t.deleted} (
      user_id TEXT COLLATE "C",
      version xid8 NOT NULL DEFAULT pg_current_xact_id(),
      at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX IF NOT EXISTS ${quoteIdent(derivedName(t.table, 'deleted_version'), 'index')} ON ${t.deleted} (version)`,
];

/** Latest schema version this build knows. */
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS.length;

/** Why the trigram index could not be made: PostgreSQL's SQLSTATE and message (catalogue names only, never a record). */
export interface TrigramProblem {
  code: string | undefined;
  message: string;
}

/**
 * The SQLSTATE of a catalogue change made by another session at the same moment: CREATE EXTENSION
 * waits on another session's uncommitted pg_trgm (a test helper's, an operator's, another database
 * user's; chatmem's own migrations hold one lock) and then fails on pg_extension's unique name index.
 * The next try sees the finished change.
 */
const CONCURRENT_CATALOGUE = '23505';

/**
 * Creates (once) the pg_trgm GIN index that makes substring search an index lookup. Tried on every
 * start, in a savepoint: where the extension cannot be created (not installed, or no privilege) search
 * falls back to a sequential scan and the store still opens. A failure is tried once more when it was
 * another session's concurrent catalogue change, and otherwise returned, so it is not silent.
 */
async function ensureTrigramIndex(client: PoolClient, users: string, indexName: string): Promise<TrigramProblem | null> {
  for (let attempt = 1; ; attempt++) {
    await client.query('SAVEPOINT chatmem_trgm');
    try {
      await client.query('CREATE EXTENSION IF NOT EXISTS pg_trgm');
      const { rows } = await client.query<{ s: string }>("SELECT extnamespace::regnamespace::text AS s FROM pg_extension WHERE extname = 'pg_trgm'");
      const ns = rows[0]?.s;
      if (!ns) throw new Error('pg_trgm is not installed');
      await client.query(`CREATE INDEX IF NOT EXISTS ${quoteIdent(Buffer.byteLength(indexName) <= 63 ? indexName : `chatmem_search_trgm_${hashKey(indexName) >>> 0}`, 'index')} ON ${users} USING gin (search_text ${ns}.gin_trgm_ops)`);
      await client.query('RELEASE SAVEPOINT chatmem_trgm');
      return null;
    } catch (err) {
      await client.query('ROLLBACK TO SAVEPOINT chatmem_trgm');
      const code = (err as { code?: unknown }).code;
      const problem = { code: typeof code === 'string' ? code : undefined, message: err instanceof Error ? err.message : String(err) };
      if (attempt >= 2 || problem.code !== CONCURRENT_CATALOGUE) return problem;
    }
  }
}

/**
 * Creates the schema if needed and applies pending migrations, all in one transaction under an
 * advisory lock. Returns the schema used: `wanted`, else the connection's current schema (so a
 * `search_path` set in the URL's `options` is honoured; `public` by default).
 */
export async function migrate(pool: Pool, wanted: string | undefined, table: string): Promise<{ schema: string; trigram: boolean; trigramProblem: TrigramProblem | null }> {
  const client = await pool.connect();
  const lease = new Lease(client);
  try {
    const settings = (
      await client.query<{ encoding: string; schema: string | null }>(
        "SELECT current_setting('server_encoding') AS encoding, current_schema() AS schema",
      )
    ).rows[0];
    const encoding = settings?.encoding;
    if (encoding !== 'UTF8' && encoding !== 'SQL_ASCII') {
      // Plain errors: connect() turns them into E_STORE_OPEN naming the URL.
      throw new Error(`the database encoding is ${String(encoding)}; chatmem needs UTF8 (emoji and any script in names and messages)`);
    }
    const schema = wanted ?? settings?.schema;
    if (!schema) {
      throw new Error('the search_path names no existing schema: create it, or name the schema to use');
    }
    const names = tableNames(schema, table);
    await client.query('BEGIN');
    await lockMigrations(client);
    // Checked rather than CREATE SCHEMA IF NOT EXISTS, which needs the CREATE privilege even when
    // the schema exists.
    const exists = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
    if (exists.rowCount === 0) await client.query(`CREATE SCHEMA ${names.schema}`);
    await client.query(`CREATE TABLE IF NOT EXISTS ${names.versions} (table_name TEXT PRIMARY KEY, version INT NOT NULL)`);
    const row = (await client.query<{ version: number }>(`SELECT version FROM ${names.versions} WHERE table_name = $1`, [table])).rows[0];
    const from = row?.version ?? 0;
    if (from > MIGRATIONS.length) {
      throw new StoreError(
        'E_STORE_VERSION',
        `store schema version ${from} is newer than this chatmem supports (${MIGRATIONS.length}); upgrade chatmem`,
      );
    }
    for (const step of MIGRATIONS.slice(from)) {
      const todo = step({ ...names, table });
      if (typeof todo === 'string') await client.query(todo);
      else await todo(client);
    }
    const trigramProblem = await ensureTrigramIndex(client, names.users, `${table}_search_trgm`);
    if (from < MIGRATIONS.length) {
      await client.query(
        `INSERT INTO ${names.versions} (table_name, version) VALUES ($1, $2)
         ON CONFLICT (table_name) DO UPDATE SET version = EXCLUDED.version`,
        [table, MIGRATIONS.length],
      );
    }
    await client.query('COMMIT');
    return { schema, trigram: trigramProblem === null, trigramProblem };
  } catch (err) {
    await client.query('ROLLBACK').catch((e: unknown) => lease.poison(e));
    throw err;
  } finally {
    lease.release();
  }
}
