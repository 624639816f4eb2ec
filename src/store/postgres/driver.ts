import type { Pool, QueryResultRow } from 'pg';
import { StoreError } from '../../errors.js';
import type { MemoryRecord } from '../../record.js';
import { isPrefixQuery, likeEscape } from '../search-text.js';
import type { DriverContext, ExclusiveScope, ScanOptions, StoreDriver, StoreStats, UserSummary } from '../types.js';
import { checkOptions, tableNames, type PostgresConnectOptions } from './config.js';
import { Lease, Semaphore, createPool, openError, wrapError } from './connection.js';
import { LockKeys, lockSection, tryLeaderLock, unlockAll, unlockLeader, writeLocksSql } from './locks.js';
import { migrate } from './migrations.js';
import { Section } from './section.js';
import { buildSql, parseData, rowValues, type CountRow, type DataRow, type Sql, type StatsRow, type SummaryRow } from './sql.js';

const SCAN_BATCH = 500;

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
  private readonly locks: LockKeys;
  private readonly writeSlots: Semaphore;
  private readonly inflight = new Set<Promise<unknown>>();
  private closed = false;
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
    this.locks = new LockKeys(lockScope);
    this.writeSlots = new Semaphore(Math.max(1, (pool.options.max ?? 10) - 2));
  }

  /**
   * Connects (from a URL, or through a caller's pool), checks the server and runs pending migrations
   * under an advisory lock, so daemons starting together do not race.
   * Fails with `E_STORE_OPEN` (naming the URL without its password) when the server is unreachable.
   */
  static async connect(opts: PostgresConnectOptions): Promise<PostgresDriver> {
    const { table, url } = checkOptions(opts);
    const pool = opts.pool ?? createPool(opts.connectionString);
    let schema: string;
    let trigram: boolean;
    try {
      ({ schema, trigram } = await migrate(pool, opts.schema, table));
    } catch (err) {
      if (!opts.pool) await pool.end().catch(() => undefined);
      throw openError(err, url, opts.connectionString);
    }
    return new PostgresDriver(pool, !opts.pool, url, tableNames(schema, table).users, `${schema}\0${table}`, trigram);
  }

  private checkOpen(): void {
    if (this.closed) throw new StoreError('E_STORE_CLOSED', `PostgreSQL store ${this.url} is closed`);
  }

  // Callers check `closed` first: a write accepted before close() must still get its connection.
  private async checkout(code: string): Promise<Lease> {
    try {
      return new Lease(await this.pool.connect());
    } catch (err) {
      throw wrapError(code, `connection to ${this.url}`, err);
    }
  }

  private async read<R extends QueryResultRow>(text: string, values: unknown[]): Promise<R[]> {
    this.checkOpen();
    try {
      return (await this.pool.query<R>(text, values)).rows;
    } catch (err) {
      throw wrapError('E_STORE_READ', 'read', err);
    }
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
      await client.query(`BEGIN; ${writeLocksSql(this.locks, id)}`);
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
    this.checkOpen();
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
    this.checkOpen();
    const lease = await this.checkout('E_STORE_WRITE');
    const { client } = lease;
    const section = new Section(this, client, this.sql);
    try {
      try {
        await lockSection(client, this.locks, scope);
      } catch (err) {
        throw wrapError('E_STORE_WRITE', 'exclusive lock', err);
      }
      return await fn(section);
    } finally {
      // Let calls fn started but did not await finish under the lock, then refuse new ones.
      await section.end();
      // Unlocking must not be skipped: a pooled connection keeps session locks when handed back.
      // If it fails the connection is destroyed, which releases them too.
      await unlockAll(client).catch((e: unknown) => lease.poison(e));
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
      if (await tryLeaderLock(lease.client, this.locks)) {
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
      await unlockLeader(lease.client, this.locks).catch(() => undefined);
      lease.poison(new Error('leadership released'));
      lease.release();
    }
    if (this.ownsPool) await this.pool.end();
  }
}
