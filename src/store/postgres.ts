import { createHash } from 'node:crypto';
import pg from 'pg';
import type { Pool, PoolClient } from 'pg';
import { StoreError, isChatmemError } from '../errors.js';
import type { MemoryRecord } from '../record.js';
import { stringifyJson } from '../json-safe.js';
import { isPrefixQuery, likeEscape, searchText } from './search-text.js';
import { redactSecrets, redactUrl } from './url.js';
import type { DriverContext, ExclusiveScope, ScanOptions, StoreDriver, StoreStats, UserSummary } from './types.js';

/** How to reach the database: a URL (the driver owns its pool) or a pool the caller owns. */
export interface PostgresConnectOptions {
  /** `postgres://user:password@host:port/db`; the driver creates a pool and ends it in `close()`. */
  connectionString?: string;
  /**
   * A pool owned by the caller (kysely style); `close()` leaves it open. As pg requires, the caller
   * listens for the pool's 'error' events.
   */
  pool?: Pool;
  /**
   * Schema holding the tables; created if missing. Default: the connection's current schema, which
   * is `public` unless the URL sets a search_path (`?options=-c%20search_path%3Dname`).
   */
  schema?: string;
  /** Name of the users table. Default `chatmem_users`. */
  table?: string;
}

type DataRow = { data: string };
type SummaryRow = UserSummary;
type CountRow = { n: string };
type StatsRow = { users: string; messages: string; bytes: string; last: string | null };

const DEFAULT_TABLE = 'chatmem_users';
/** One row per users table, so several stores can share a schema without sharing a version. */
const VERSION_TABLE = 'chatmem_schema';
const SCAN_BATCH = 500;
const WRITE_BATCH = 500;

/*
 * Advisory lock keys use the two-int4 form, whose key space is separate from the one-bigint form,
 * and a chatmem-specific first int so other applications' advisory locks do not collide with ours.
 * The second int hashes the qualified table name, so two stores in one database never block each other.
 */
const NS_CTRL = 0x63686d63; // 'chmc': store-wide keys
const NS_USER = 0x63686d75; // 'chmu': one key per user
/** Serialises migrations of every chatmem store in the database (schema creation races otherwise). */
const MIGRATE_KEY = 0;
/**
 * A scoped section takes one lock per user. Advisory locks live in the shared lock table
 * (max_locks_per_transaction × max_connections slots, 6400 by default), so a larger scope takes the
 * store-wide key instead: correct, only less concurrent.
 */
const MAX_SCOPED_LOCKS = 256;

const COLUMNS = 'user_id, data, name, product, created_at, updated_at, messages, search_text';
const SUMMARY_COLUMNS = 'user_id, name, product, created_at, updated_at, messages';

/**
 * Versioned migrations; entry i takes the schema from version i to i + 1. Each is idempotent on its
 * own as well, so a lost version row cannot break a start.
 */
const MIGRATIONS: readonly ((t: { users: string }) => string | ((client: PoolClient) => Promise<void>))[] = [
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
];

/** Latest schema version this build knows. */
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS.length;

function quoteIdent(name: string, what: string): string {
  if (name.length === 0 || name.includes('\0') || Buffer.byteLength(name) > 63) {
    // PostgreSQL silently truncates longer identifiers, which could make two names refer to one table.
    throw new StoreError('E_STORE_CONFIG', `invalid PostgreSQL ${what} name ${JSON.stringify(name)}: 1 to 63 bytes, no NUL`);
  }
  return `"${name.replace(/"/g, '""')}"`;
}

function hashKey(text: string): number {
  return createHash('sha256').update(text).digest().readInt32BE(0);
}

function rowValues(r: MemoryRecord): [string, string, string | null, string | null, string, string, number, string] {
  return [r.user_id, stringifyJson(r), r.name, r.product, r.created_at, r.updated_at, r.history.length, searchText(r)];
}

function parseData(row: DataRow): MemoryRecord {
  return JSON.parse(row.data) as MemoryRecord;
}

/** Keeps chatmem errors (and errors thrown by caller code) as they are; wraps database errors. */
function wrapError(code: string, what: string, err: unknown): Error {
  if (isChatmemError(err)) return err;
  const message = redactSecrets(err instanceof Error ? err.message : String(err));
  return new StoreError(code, `PostgreSQL ${what} failed: ${message}`, { cause: err });
}

/**
 * A client checked out of the pool. pg-pool removes its error listener from checked-out clients, so
 * a connection dropped between two queries would crash the process; the lease listens instead and
 * destroys such a client on release rather than handing it back to the pool.
 */
class Lease {
  private error: Error | undefined;
  private readonly onError = (err: Error): void => {
    this.error = err;
  };

  constructor(readonly client: PoolClient) {
    client.on('error', this.onError);
  }

  /** Marks the connection unusable (e.g. a failed ROLLBACK left it in an unknown state). */
  poison(err: unknown): void {
    this.error ??= err instanceof Error ? err : new Error(String(err));
  }

  release(): void {
    this.client.removeListener('error', this.onError);
    this.client.release(this.error);
  }
}

/** Bounds concurrent hot-path transactions so reads, scans and sections always find a pooled connection. */
class Semaphore {
  private waiters: (() => void)[] = [];

  constructor(private free: number) {}

  async acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.free++;
  }
}

/** Runs a transaction on `client`; errors from `body` that are not database errors pass through unchanged. */
async function inTransaction<T>(client: PoolClient, what: string, body: () => Promise<T>): Promise<T> {
  try {
    await client.query('BEGIN');
    const result = await body();
    await client.query('COMMIT');
    return result;
  } catch (err) {
    // A failed ROLLBACK means a broken connection: the section's unlock then fails too and destroys it.
    await client.query('ROLLBACK').catch(() => undefined);
    throw wrapError('E_STORE_WRITE', what, err);
  }
}

interface Sql {
  get: string;
  getForUpdate: string;
  getMany: string;
  upsert: string;
  upsertMany: string;
  count: string;
  list: string;
  scan: string;
  stats: string;
  search: string;
  searchPrefix: string;
  deleteMany: string;
  clear: string;
}

function buildSql(users: string): Sql {
  const updateSet = `ON CONFLICT (user_id) DO UPDATE SET data = EXCLUDED.data, name = EXCLUDED.name,
    product = EXCLUDED.product, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
    messages = EXCLUDED.messages, search_text = EXCLUDED.search_text`;
  return {
    get: `SELECT data FROM ${users} WHERE user_id = $1`,
    getForUpdate: `SELECT data FROM ${users} WHERE user_id = $1 FOR UPDATE`,
    getMany: `SELECT data FROM ${users} WHERE user_id = ANY($1::text[])`,
    upsert: `INSERT INTO ${users} (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ${updateSet}`,
    upsertMany: `INSERT INTO ${users} (${COLUMNS})
      SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int4[], $8::text[])
      ${updateSet}`,
    count: `SELECT COUNT(*) AS n FROM ${users}`,
    list: `SELECT ${SUMMARY_COLUMNS} FROM ${users} WHERE user_id > $1 ORDER BY user_id LIMIT $2`,
    scan: `DECLARE chatmem_scan NO SCROLL CURSOR FOR SELECT user_id, data FROM ${users} WHERE user_id > $1 ORDER BY user_id`,
    stats: `SELECT COUNT(*) AS users, COALESCE(SUM(messages), 0) AS messages,
      COALESCE(SUM(octet_length(data)), 0) AS bytes, MAX(updated_at) AS last FROM ${users}`,
    search: `SELECT ${SUMMARY_COLUMNS} FROM ${users} WHERE search_text LIKE $1 ESCAPE '\\' ORDER BY user_id LIMIT $2`,
    // Under the "C" collation a LIKE prefix is a range scan of the primary key.
    searchPrefix: `SELECT ${SUMMARY_COLUMNS} FROM ${users} WHERE user_id LIKE $1 ESCAPE '\\' ORDER BY user_id LIMIT $2`,
    deleteMany: `DELETE FROM ${users} WHERE user_id = ANY($1::text[])`,
    clear: `DELETE FROM ${users}`,
  };
}

/** Upserts in statements of {@link WRITE_BATCH} rows; within one call the last record of an id wins. */
async function upsertRecords(client: PoolClient, sql: Sql, records: MemoryRecord[]): Promise<void> {
  // ON CONFLICT DO UPDATE refuses to touch one row twice in a statement, so collapse duplicates first.
  const unique = new Map<string, MemoryRecord>();
  for (const r of records) {
    unique.delete(r.user_id);
    unique.set(r.user_id, r);
  }
  const all = [...unique.values()];
  for (let i = 0; i < all.length; i += WRITE_BATCH) {
    const columns: unknown[][] = [[], [], [], [], [], [], [], []];
    for (const r of all.slice(i, i + WRITE_BATCH)) {
      rowValues(r).forEach((v, c) => columns[c]?.push(v));
    }
    await client.query(sql.upsertMany, columns);
  }
}

/**
 * PostgreSQL driver, for several daemons sharing one database. One row per user, the record as JSON
 * text (key order and unknown fields kept verbatim), so an append rewrites that user's row only.
 *
 * Cross-daemon locking uses advisory locks:
 * - every hot-path write is one transaction holding the store-wide key SHARED and its user's key
 *   EXCLUSIVE (transaction-scoped), so writers of one user serialise and writers of different users
 *   do not;
 * - an exclusive section holds, on one dedicated connection (session-scoped), the operations key, so
 *   guarded operations on different daemons never interleave, then either the store-wide key
 *   EXCLUSIVE (scope `all`) or each user's key (scope ids). A write waits until the section ends,
 *   and commits before a section can start, so nothing acknowledged escapes a backup taken inside it.
 * A daemon that dies mid-section loses its session, and PostgreSQL drops its locks.
 */
export class PostgresDriver implements StoreDriver {
  readonly kind = 'postgres' as const;
  readonly url: string;
  private readonly sql: Sql;
  private readonly globalKey: number;
  private readonly opsKey: number;
  private readonly userKeyPrefix: string;
  private readonly writeSlots: Semaphore;
  private readonly inflight = new Set<Promise<unknown>>();
  private closed = false;
  private readonly leaderKey: number;
  /** The connection holding the leader lock while this driver leads. */
  private leaderLease: Lease | null = null;

  private constructor(
    private readonly pool: Pool,
    private readonly ownsPool: boolean,
    url: string,
    qualifiedUsers: string,
    lockScope: string,
    /** True when search is served by the pg_trgm GIN index; false: a sequential scan (pg_trgm unavailable). */
    readonly searchIndex: boolean,
  ) {
    this.url = url;
    this.sql = buildSql(qualifiedUsers);
    this.globalKey = hashKey(`${lockScope}\0global`);
    this.opsKey = hashKey(`${lockScope}\0ops`);
    this.leaderKey = hashKey(`${lockScope}\0leader`);
    this.userKeyPrefix = `${lockScope}\0user\0`;
    this.writeSlots = new Semaphore(Math.max(1, (pool.options.max ?? 10) - 2));
  }

  /**
   * Connects (from a URL, or through a caller's pool), checks the server and runs pending migrations
   * under an advisory lock, so daemons starting together do not race.
   * Fails with `E_STORE_OPEN` (naming the URL without its password) when the server is unreachable.
   */
  static async connect(opts: PostgresConnectOptions): Promise<PostgresDriver> {
    if (opts.pool && opts.connectionString) {
      throw new StoreError('E_STORE_CONFIG', 'pass either a PostgreSQL connection string or a pool, not both');
    }
    if (!opts.pool && !opts.connectionString) {
      throw new StoreError('E_STORE_CONFIG', 'a PostgreSQL connection string or pool is required');
    }
    const table = opts.table ?? DEFAULT_TABLE;
    quoteIdent(table, 'table');
    if (opts.schema !== undefined) quoteIdent(opts.schema, 'schema');
    if (table === VERSION_TABLE) throw new StoreError('E_STORE_CONFIG', `the table cannot be named ${VERSION_TABLE}`);
    const url = opts.connectionString ? redactUrl(opts.connectionString) : 'postgres://(pool)';
    let pool: Pool;
    if (opts.pool) {
      pool = opts.pool;
    } else {
      pool = new pg.Pool({
        connectionString: opts.connectionString,
        // Without a timeout an unreachable (blackholed) server hangs the start forever.
        connectionTimeoutMillis: 10_000,
        // Sections hold a connection idle for a long time; keepalive notices a dead peer so its locks are freed.
        keepAlive: true,
        application_name: 'chatmem',
      });
      // An idle connection the server dropped is discarded by the pool; the next checkout reconnects.
      // Without a listener the 'error' event would crash the daemon.
      pool.on('error', () => undefined);
    }
    let schema: string;
    let trigram: boolean;
    try {
      ({ schema, trigram } = await migrate(pool, opts.schema, table));
    } catch (err) {
      if (!opts.pool) await pool.end().catch(() => undefined);
      if (isChatmemError(err)) throw err;
      // A driver or URL-parse error may quote the connection string; the cause is kept, scrubbed.
      if (err instanceof Error) {
        err.message = redactSecrets(err.message, opts.connectionString);
        if (err.stack) err.stack = redactSecrets(err.stack, opts.connectionString);
        if ('input' in err && typeof err.input === 'string') err.input = redactUrl(err.input);
      }
      const message = err instanceof Error ? err.message : String(err);
      throw new StoreError('E_STORE_OPEN', `cannot open PostgreSQL store ${url}: ${message}`, { cause: err });
    }
    return new PostgresDriver(pool, !opts.pool, url, tableNames(schema, table).users, `${schema}\0${table}`, trigram);
  }

  private checkOpen(): void {
    if (this.closed) throw new StoreError('E_STORE_CLOSED', `PostgreSQL store ${this.url} is closed`);
  }

  private async checkout(code: string): Promise<Lease> {
    this.checkOpen();
    try {
      return new Lease(await this.pool.connect());
    } catch (err) {
      throw wrapError(code, `connection to ${this.url}`, err);
    }
  }

  private async read<R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<R[]> {
    this.checkOpen();
    try {
      return (await this.pool.query<R>(text, values)).rows;
    } catch (err) {
      throw wrapError('E_STORE_READ', 'read', err);
    }
  }

  private userKey(id: string): number {
    return hashKey(this.userKeyPrefix + id);
  }

  async get(id: string): Promise<MemoryRecord | null> {
    const row = (await this.read<DataRow>(this.sql.get, [id]))[0];
    return row ? parseData(row) : null;
  }

  async update(id: string, fn: (current: MemoryRecord | null) => MemoryRecord): Promise<MemoryRecord> {
    this.checkOpen();
    const op = (async () => {
      await this.writeSlots.acquire();
      try {
        return await this.updateOnce(id, fn);
      } finally {
        this.writeSlots.release();
      }
    })();
    this.inflight.add(op);
    try {
      return await op;
    } finally {
      this.inflight.delete(op);
    }
  }

  private async updateOnce(id: string, fn: (current: MemoryRecord | null) => MemoryRecord): Promise<MemoryRecord> {
    const lease = await this.checkout('E_STORE_WRITE');
    const { client } = lease;
    let fnFailed = false;
    try {
      // The locks come in their own statement: in READ COMMITTED the next statement's snapshot is
      // taken after they are granted, so it sees the previous writer's commit (even a row it created).
      // The keys are integers computed here, so inlining them is safe and saves round trips.
      await client.query(
        `BEGIN; SELECT pg_advisory_xact_lock_shared(${NS_CTRL}, ${this.globalKey}); ` +
          `SELECT pg_advisory_xact_lock(${NS_USER}, ${this.userKey(id)})`,
      );
      const row = (await client.query<DataRow>(this.sql.getForUpdate, [id])).rows[0];
      let next: MemoryRecord;
      let values: unknown[];
      try {
        next = fn(row ? parseData(row) : null);
        // Serialised here so that a record that cannot be is this caller's error, not a database failure.
        values = rowValues(next);
      } catch (err) {
        fnFailed = true;
        throw err;
      }
      await client.query(this.sql.upsert, values);
      await client.query('COMMIT');
      return next;
    } catch (err) {
      await client.query('ROLLBACK').catch((e: unknown) => lease.poison(e));
      if (fnFailed) throw err;
      throw wrapError('E_STORE_WRITE', `write of user ${JSON.stringify(id)}`, err);
    } finally {
      lease.release();
    }
  }

  async count(): Promise<number> {
    return Number((await this.read<CountRow>(this.sql.count, []))[0]?.n ?? 0);
  }

  async list(options: { cursor: string | null; limit: number }): Promise<UserSummary[]> {
    return this.read<SummaryRow>(this.sql.list, [options.cursor ?? '', options.limit]);
  }

  /**
   * Streams in user_id (byte) order from one REPEATABLE READ snapshot, through a server-side cursor
   * fetched {@link SCAN_BATCH} rows at a time: constant memory however large the store, while writes
   * continue. The snapshot is taken at the first `next()`. The connection is given back when the
   * iteration ends, including an early `break`. Yields the stored JSON text (what backups write)
   * without parsing it; the core parses it for `scan`.
   */
  async *scanJson(options: ScanOptions = {}): AsyncGenerator<[string, string]> {
    const lease = await this.checkout('E_STORE_READ');
    const { client } = lease;
    let open = false;
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      open = true;
      await client.query(this.sql.scan, [options.after ?? '']);
      while (true) {
        const { rows } = await client.query<DataRow & { user_id: string }>(`FETCH ${SCAN_BATCH} FROM chatmem_scan`);
        for (const row of rows) yield [row.user_id, row.data];
        if (rows.length < SCAN_BATCH) break;
      }
      await client.query('COMMIT');
      open = false;
    } catch (err) {
      throw wrapError('E_STORE_READ', 'scan', err);
    } finally {
      if (open) await client.query('ROLLBACK').catch((e: unknown) => lease.poison(e));
      lease.release();
    }
  }

  async stats(): Promise<StoreStats> {
    const row = (await this.read<StatsRow>(this.sql.stats, []))[0];
    return {
      users: Number(row?.users ?? 0),
      messages: Number(row?.messages ?? 0),
      bytes: Number(row?.bytes ?? 0),
      lastUpdate: row?.last ?? null,
    };
  }

  async search(query: string, limit: number): Promise<UserSummary[]> {
    if (isPrefixQuery(query)) return this.read<SummaryRow>(this.sql.searchPrefix, [`${likeEscape(query)}%`, limit]);
    return this.read<SummaryRow>(this.sql.search, [`%${likeEscape(query.toLowerCase())}%`, limit]);
  }

  /**
   * Holds the cluster-wide lock for `scope` on a dedicated connection while `fn` runs; see the class
   * comment. Waits (without a timeout) for a section held by another daemon to end.
   */
  async exclusive<T>(scope: ExclusiveScope, fn: (ctx: DriverContext) => Promise<T>): Promise<T> {
    const lease = await this.checkout('E_STORE_WRITE');
    const { client } = lease;
    const section = new Section(this, client, this.sql);
    try {
      try {
        await client.query('SELECT pg_advisory_lock($1, $2)', [NS_CTRL, this.opsKey]);
        const keys = scope === 'all' ? [] : [...new Set(scope.ids.map((id) => this.userKey(id)))].sort((a, b) => a - b);
        if (scope === 'all' || keys.length > MAX_SCOPED_LOCKS) {
          await client.query('SELECT pg_advisory_lock($1, $2)', [NS_CTRL, this.globalKey]);
        } else {
          await client.query('SELECT pg_advisory_lock($1, k) FROM unnest($2::int4[]) AS k', [NS_USER, keys]);
        }
      } catch (err) {
        throw wrapError('E_STORE_WRITE', 'exclusive lock', err);
      }
      return await fn(section);
    } finally {
      // Let calls fn started but did not await finish under the lock, then refuse new ones.
      await section.end();
      // Unlocking must not be skipped: a pooled connection keeps session locks when handed back.
      // If it fails the connection is destroyed, which releases them too.
      await client.query('SELECT pg_advisory_unlock_all()').catch((e: unknown) => lease.poison(e));
      lease.release();
    }
  }

  /**
   * Elects one daemon among all that share this store (for scheduled backups): the winner holds a
   * session-level advisory lock on a connection of its own until it closes or that connection dies,
   * when another daemon takes over at its next try.
   */
  async leader(): Promise<boolean> {
    this.checkOpen();
    if (this.leaderLease) {
      const alive = await this.leaderLease.client.query('SELECT 1').then(() => true, () => false);
      if (alive) return true;
      this.leaderLease.poison(new Error('leader connection lost'));
      this.leaderLease.release();
      this.leaderLease = null;
    }
    const lease = await this.checkout('E_STORE_READ');
    try {
      const { rows } = await lease.client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [NS_CTRL, this.leaderKey]);
      if (rows[0]?.ok) {
        this.leaderLease = lease;
        return true;
      }
    } catch (err) {
      lease.poison(err);
    }
    lease.release();
    return false;
  }

  /** Waits for in-flight writes, then ends the pool if this driver created it. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.inflight]);
    if (this.leaderLease) {
      const lease = this.leaderLease;
      this.leaderLease = null;
      // Unlocking first makes the hand-over immediate: a destroyed connection releases its lock only
      // when the server notices the socket is gone, after close() has returned (seen in CI: the next
      // daemon's try, made right after, still lost). The connection is destroyed either way.
      await lease.client.query('SELECT pg_advisory_unlock($1, $2)', [NS_CTRL, this.leaderKey]).catch(() => undefined);
      lease.poison(new Error('leadership released'));
      lease.release();
    }
    if (this.ownsPool) await this.pool.end();
  }
}

/**
 * The context of one exclusive section. Its reads and writes run on the section's own connection, in
 * order: they must not need a second pooled connection, which could all be taken by writers waiting
 * for this very section. Scans use their own connection and snapshot, as the driver's scan does, so
 * code may write while it iterates (deleting what it has backed up, for example).
 */
class Section implements DriverContext {
  private tail: Promise<unknown> = Promise.resolve();
  private ended = false;

  constructor(
    private readonly driver: PostgresDriver,
    private readonly client: PoolClient,
    private readonly sql: Sql,
  ) {}

  /** Queues `op` behind earlier calls: two transactions on one connection must not interleave. */
  private run<T>(op: () => Promise<T>): Promise<T> {
    if (this.ended) return Promise.reject(new StoreError('E_STORE_CLOSED', 'the exclusive section has ended'));
    const result = this.tail.then(op);
    this.tail = result.catch(() => undefined);
    return result;
  }

  async end(): Promise<void> {
    this.ended = true;
    await this.tail;
  }

  private async query<R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<pg.QueryResult<R>> {
    try {
      return await this.client.query<R>(text, values);
    } catch (err) {
      throw wrapError('E_STORE_READ', 'read', err);
    }
  }

  getMany(ids: string[]): Promise<MemoryRecord[]> {
    return this.run(async () => {
      const { rows } = await this.query<DataRow>(this.sql.getMany, [ids]);
      const byId = new Map<string, MemoryRecord>();
      for (const row of rows) {
        const r = parseData(row);
        byId.set(r.user_id, r);
      }
      return ids.map((id) => byId.get(id)).filter((r): r is MemoryRecord => r !== undefined);
    });
  }

  scanJson(options?: ScanOptions): AsyncIterable<[string, string]> {
    if (this.ended) throw new StoreError('E_STORE_CLOSED', 'the exclusive section has ended');
    return this.driver.scanJson(options);
  }

  count(): Promise<number> {
    return this.run(async () => Number((await this.query<CountRow>(this.sql.count, [])).rows[0]?.n ?? 0));
  }

  delete(ids: string[]): Promise<number> {
    return this.run(() =>
      inTransaction(this.client, 'delete', async () => (await this.client.query(this.sql.deleteMany, [ids])).rowCount ?? 0),
    );
  }

  clear(): Promise<number> {
    // DELETE, not TRUNCATE: TRUNCATE is not MVCC-safe, so a backup reading an older snapshot on
    // another daemon would see an empty table.
    return this.run(() =>
      inTransaction(this.client, 'clear', async () => (await this.client.query(this.sql.clear)).rowCount ?? 0),
    );
  }

  putMany(records: MemoryRecord[]): Promise<void> {
    return this.run(() => inTransaction(this.client, 'write', () => upsertRecords(this.client, this.sql, records)));
  }

  /**
   * Upserts `records` in batches on this section's connection (inside the caller's transaction). An error
   * thrown by the stream itself (a corrupt backup, say) is kept in `failed`, so the caller can rethrow it
   * as it was once the transaction rolled back: it is the caller's to interpret, not a store failure.
   */
  private async upsertStream(records: AsyncIterable<MemoryRecord>, failed: { source?: { error: unknown } }): Promise<number> {
    let batch: MemoryRecord[] = [];
    let read = 0;
    let inBody = false;
    try {
      for await (const r of records) {
        inBody = true;
        batch.push(r);
        read++;
        if (batch.length >= WRITE_BATCH) {
          await upsertRecords(this.client, this.sql, batch);
          batch = [];
        }
        inBody = false;
      }
    } catch (error) {
      if (!inBody) failed.source = { error };
      throw error;
    }
    await upsertRecords(this.client, this.sql, batch);
    return read;
  }

  /** Runs `body` in one transaction; the stream's own error comes out as it was thrown. */
  private streamed<T>(mode: 'write' | 'restore', body: (failed: { source?: { error: unknown } }) => Promise<T>): Promise<T> {
    const failed: { source?: { error: unknown } } = {};
    return this.run(async () => {
      try {
        return await inTransaction(this.client, mode, () => body(failed));
      } catch (err) {
        if (failed.source) throw failed.source.error;
        throw err;
      }
    });
  }

  /** One transaction, the stream upserted in batches: other daemons see all of it or none of it. */
  putAll(records: AsyncIterable<MemoryRecord>): Promise<number> {
    return this.streamed('write', (failed) => this.upsertStream(records, failed));
  }

  putAndDelete(records: MemoryRecord[], ids: string[]): Promise<void> {
    return this.run(() =>
      inTransaction(this.client, 'write', async () => {
        await upsertRecords(this.client, this.sql, records);
        await this.client.query(this.sql.deleteMany, [ids]);
      }),
    );
  }

  /**
   * One transaction: delete everything, insert the stream in batches. Other daemons keep reading the
   * old rows (MVCC) until the commit; an error from the source rolls everything back and is rethrown.
   */
  replaceAll(records: AsyncIterable<MemoryRecord>): Promise<number> {
    return this.streamed('restore', async (failed) => {
      await this.client.query(this.sql.clear);
      await this.upsertStream(records, failed);
      // Counted in the database: a set of ids would not be constant memory at 1M users.
      return Number((await this.client.query<CountRow>(this.sql.count)).rows[0]?.n ?? 0);
    });
  }
}

function tableNames(schema: string, table: string): { schema: string; users: string; versions: string } {
  const qs = quoteIdent(schema, 'schema');
  return { schema: qs, users: `${qs}.${quoteIdent(table, 'table')}`, versions: `${qs}.${quoteIdent(VERSION_TABLE, 'table')}` };
}

/**
 * Creates the schema if needed and applies pending migrations, all in one transaction under an
 * advisory lock. Returns the schema used: `wanted`, else the connection's current schema (so a
 * `search_path` set in the URL's `options` is honoured; `public` by default).
 */
/**
 * Creates (once) the pg_trgm GIN index that makes substring search an index lookup. Tried on every
 * start, in a savepoint: where the extension cannot be created (not installed, or no privilege) search
 * falls back to a sequential scan and the store still opens. Returns whether the index exists.
 */
async function ensureTrigramIndex(client: PoolClient, users: string, indexName: string): Promise<boolean> {
  await client.query('SAVEPOINT chatmem_trgm');
  try {
    await client.query('CREATE EXTENSION IF NOT EXISTS pg_trgm');
    const { rows } = await client.query<{ s: string }>("SELECT extnamespace::regnamespace::text AS s FROM pg_extension WHERE extname = 'pg_trgm'");
    const ns = rows[0]?.s;
    if (!ns) throw new Error('pg_trgm is not installed');
    await client.query(`CREATE INDEX IF NOT EXISTS ${quoteIdent(Buffer.byteLength(indexName) <= 63 ? indexName : `chatmem_search_trgm_${hashKey(indexName) >>> 0}`, 'index')} ON ${users} USING gin (search_text ${ns}.gin_trgm_ops)`);
    await client.query('RELEASE SAVEPOINT chatmem_trgm');
    return true;
  } catch {
    await client.query('ROLLBACK TO SAVEPOINT chatmem_trgm');
    return false;
  }
}

async function migrate(pool: Pool, wanted: string | undefined, table: string): Promise<{ schema: string; trigram: boolean }> {
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
    await client.query('SELECT pg_advisory_xact_lock($1, $2)', [NS_CTRL, MIGRATE_KEY]);
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
      const todo = step(names);
      if (typeof todo === 'string') await client.query(todo);
      else await todo(client);
    }
    const trigram = await ensureTrigramIndex(client, names.users, `${table}_search_trgm`);
    if (from < MIGRATIONS.length) {
      await client.query(
        `INSERT INTO ${names.versions} (table_name, version) VALUES ($1, $2)
         ON CONFLICT (table_name) DO UPDATE SET version = EXCLUDED.version`,
        [table, MIGRATIONS.length],
      );
    }
    await client.query('COMMIT');
    return { schema, trigram };
  } catch (err) {
    await client.query('ROLLBACK').catch((e: unknown) => lease.poison(e));
    throw err;
  } finally {
    lease.release();
  }
}
