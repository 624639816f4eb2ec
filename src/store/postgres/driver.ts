import type { Pool, QueryResultRow } from 'pg';
import { StoreError } from '../../errors.js';
import type { MemoryRecord } from '../../record.js';
import { isPrefixQuery, likeEscape } from '../search-text.js';
import type { DriverContext, ExclusiveScope, ScanOptions, StagedRecords, StoreDriver, StoreStats, UserSummary, WriteTracker } from '../types.js';
import { ChangeFeed } from './changes.js';
import { checkOptions, tableNames, type PostgresConnectOptions } from './config.js';
import { Lease, createPool, openError, wrapError } from './connection.js';
import { LockKeys, batchLocksSql, lockSection, tryLeaderLock, unlockAll, unlockLeader, writeLocksSql } from './locks.js';
import { migrate, type TrigramProblem } from './migrations.js';
import { Section, type StageState } from './section.js';
import { WRITE_BATCH, buildSql, parseData, rowValues, upsertRecords, type CountRow, type DataRow, type Sql, type StatsRow, type SummaryRow } from './sql.js';
import { createStageSql, dropSideTables, keepStage, qualify, sideTableName, type SwapNames } from './swap.js';

const SCAN_BATCH = 500;
/**
 * Most writes in one transaction. Each transaction costs the server ~0.5 ms of CPU whatever it
 * holds; 8 appends in one cut its CPU per append by ~35% (bench/pg-append-probe.mjs, 2026-11-30).
 */
const MAX_BATCH = 32;

/** A batch's COMMIT failed: it may or may not have committed. */
class CommitFailed extends Error {
  constructor(cause: unknown) {
    super('COMMIT failed', { cause });
  }
}

interface PendingWrite {
  id: string;
  fn: (current: MemoryRecord | null) => MemoryRecord;
  resolve: (r: MemoryRecord) => void;
  reject: (e: unknown) => void;
}

/**
 * PostgreSQL driver, for several daemons sharing one database. One row per user, the record as JSON
 * text (key order and unknown fields kept verbatim), so an append rewrites that user's row only.
 * Each transaction costs the server about the same CPU whatever it holds, so writes share them.
 *
 * Cross-daemon locking uses advisory locks:
 * - hot-path writes are committed in batches (every write queued when a connection frees, see
 *   runBatch), each batch one transaction holding the store-wide key SHARED and its users' keys
 *   EXCLUSIVE (transaction-scoped, in ascending order), so writers of one user serialise and writers
 *   of different users do not;
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
  /** Batches of writes in flight at most: the pool's connections less two for reads and sections. */
  private readonly maxBatches: number;
  private batchesRunning = 0;
  private queue: PendingWrite[] = [];
  /** Users with a batch in flight. */
  private readonly busy = new Set<string>();
  private readonly inflight = new Set<Promise<unknown>>();
  private closed = false;
  /** close() has begun: new writes are refused, queued ones still run. */
  private closing = false;
  /** The connection holding the leader lock while this driver leads. */
  private leaderLease: Lease | null = null;
  private readonly swapNames: SwapNames;
  private readonly stages = new WeakMap<StagedRecords, StageState>();
  /** The releases of the stages this driver holds (see keepStage), run at close if their owner did not. */
  private readonly keepers = new Set<() => Promise<void>>();

  private constructor(
    private readonly pool: Pool,
    private readonly ownsPool: boolean,
    url: string,
    names: { schema: string; users: string; deleted: string },
    table: string,
    lockScope: string,
    /** True when search is served by the pg_trgm GIN index; false: a sequential scan (pg_trgm unavailable). */
    readonly searchIndex: boolean,
    /** Why the index could not be made (SQLSTATE and PostgreSQL's message), or null. */
    readonly searchIndexProblem: TrigramProblem | null = null,
  ) {
    this.url = url;
    this.sql = buildSql(names.users, names.deleted);
    this.swapNames = { schema: names.schema, table };
    this.locks = new LockKeys(lockScope);
    this.maxBatches = Math.max(1, (pool.options.max ?? 10) - 2);
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
    let trigramProblem: TrigramProblem | null;
    try {
      ({ schema, trigram, trigramProblem } = await migrate(pool, opts.schema, table));
    } catch (err) {
      if (!opts.pool) await pool.end().catch(() => undefined);
      throw openError(err, url, opts.connectionString);
    }
    if (trigramProblem) {
      // Search still works (a sequential scan), so the store opens; the operator is told why it is slow.
      // PostgreSQL's message names only the extension, schema or index, never a record.
      process.emitWarning(`PostgreSQL store ${url}: search runs without its pg_trgm index (${trigramProblem.code ?? 'no SQLSTATE'}: ${trigramProblem.message})`, {
        code: 'CHATMEM_NO_SEARCH_INDEX',
      });
    }
    const driver = new PostgresDriver(pool, !opts.pool, url, tableNames(schema, table), table, `${schema}\0${table}`, trigram, trigramProblem);
    await driver.dropSideTables();
    return driver;
  }

  /**
   * Drops the side tables no live daemon holds (swap.ts, dropSideTables): at each start and before each
   * staging. A failure (no privilege to drop, say) does not stop the store: it is said and tried again later.
   */
  private async dropSideTables(): Promise<void> {
    try {
      await dropSideTables(this.pool, this.swapNames, this.locks);
    } catch (err) {
      process.emitWarning(`PostgreSQL store ${this.url}: tables left beside the users table by an earlier clear or restore could not be dropped (${err instanceof Error ? err.message : String(err)})`, {
        code: 'CHATMEM_SIDE_TABLES',
      });
    }
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

  update(id: string, fn: (current: MemoryRecord | null) => MemoryRecord): Promise<MemoryRecord> {
    if (this.closing || this.closed) return Promise.reject(new StoreError('E_STORE_CLOSED', `PostgreSQL store ${this.url} is closed`));
    return new Promise((resolve, reject) => {
      this.queue.push({ id, fn, resolve, reject });
      this.pump();
    });
  }

  /**
   * Starts a batch while a write slot is free: every write queued at that moment, up to
   * {@link MAX_BATCH}, goes in one transaction. Under load the queue fills while the slots are busy,
   * so batches grow with the load; alone, a write is a batch of one.
   */
  private pump(): void {
    while (this.queue.length > 0 && this.batchesRunning < this.maxBatches) {
      // A user with a batch in flight waits for it: two transactions could take its lock in either
      // order, and one user's writes apply in the order they came.
      const batch: PendingWrite[] = [];
      const rest: PendingWrite[] = [];
      for (const op of this.queue) {
        if (batch.length < MAX_BATCH && !this.busy.has(op.id)) batch.push(op);
        else rest.push(op);
      }
      if (batch.length === 0) return;
      this.queue = rest;
      const ids = new Set(batch.map((op) => op.id));
      for (const id of ids) this.busy.add(id);
      this.batchesRunning++;
      const run = this.runBatch(batch).finally(() => {
        for (const id of ids) this.busy.delete(id);
        this.batchesRunning--;
        this.inflight.delete(run);
        this.pump();
      });
      this.inflight.add(run);
    }
  }

  /**
   * One transaction for `batch`: the locks of all its users, their rows read FOR UPDATE, each op's
   * function applied in arrival order (an op on a user already in the batch sees the previous op's
   * result), one upsert of the final rows, COMMIT; each promise settles after the COMMIT. An op whose
   * function throws fails alone. A database error fails the transaction of all; the ops are then
   * written one transaction each, so only an op the database itself refuses fails.
   */
  private async runBatch(batch: PendingWrite[]): Promise<void> {
    const [only] = batch;
    // Alone, the one-row statements cost the server less than the array forms (~25%, bench/pg-append-cpu.mjs).
    if (only && batch.length === 1) return this.updateOnce(only.id, only.fn).then(only.resolve, only.reject);
    let lease: Lease | null = null;
    try {
      lease = await this.checkout('E_STORE_WRITE');
      const settled = await this.writeBatch(lease, batch);
      settled.forEach((s, i) => {
        const op = batch[i];
        if (!op) return;
        if (s.ok) op.resolve(s.value);
        else op.reject(s.error);
      });
      return;
    } catch (err) {
      // A failed COMMIT may still have committed (the connection can drop after the server did):
      // writing the ops again could apply them twice, so they fail as one write would.
      if (err instanceof CommitFailed) {
        const error = wrapError('E_STORE_WRITE', `commit of ${batch.length} writes`, err.cause);
        for (const op of batch) op.reject(error);
        return;
      }
      // Anything else rolled the shared transaction back: each op now gets its own answer.
    } finally {
      lease?.release();
    }
    for (const op of batch) {
      await this.updateOnce(op.id, op.fn).then(op.resolve, op.reject);
    }
  }

  private async writeBatch(lease: Lease, batch: PendingWrite[]): Promise<({ ok: true; value: MemoryRecord } | { ok: false; error: unknown })[]> {
    const { client } = lease;
    const ids = [...new Set(batch.map((op) => op.id))];
    try {
      // The locks come in their own statement: in READ COMMITTED the next statement's snapshot is
      // taken after they are granted, so it sees the previous writer's commit (even a row it created).
      await client.query(`BEGIN; ${batchLocksSql(this.locks, ids)}`);
      const rows = (await client.query<DataRow & { user_id: string }>(this.sql.getManyForUpdate, [ids])).rows;
      const current = new Map<string, MemoryRecord | null>(ids.map((id) => [id, null]));
      for (const row of rows) current.set(row.user_id, parseData(row));
      const changed = new Map<string, MemoryRecord>();
      const settled = batch.map((op) => {
        try {
          const next = op.fn(current.get(op.id) ?? null);
          // Serialised here so that a record that cannot be is this caller's error, not a database failure.
          rowValues(next);
          current.set(op.id, next);
          changed.set(op.id, next);
          return { ok: true as const, value: next };
        } catch (error) {
          return { ok: false as const, error };
        }
      });
      if (changed.size > 0) await upsertRecords(client, this.sql, [...changed.values()]);
      try {
        await client.query('COMMIT');
      } catch (err) {
        lease.poison(err);
        throw new CommitFailed(err);
      }
      return settled;
    } catch (err) {
      if (!(err instanceof CommitFailed)) await client.query('ROLLBACK').catch((e: unknown) => lease.poison(e));
      throw err;
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

  /** The users every daemon changes from now on, read from the database (see {@link ChangeFeed}). */
  trackChanges(): WriteTracker {
    this.checkOpen();
    return new ChangeFeed((text, values) => this.read(text, values), this.sql);
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
      open = true;
      await client.query(this.sql.beginScan);
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

  /**
   * A full restore's preparation, before its section: a twin of the users table (same columns,
   * defaults and indexes) filled from `records` in transactions of {@link WRITE_BATCH} rows while
   * writes go on (the live table is not touched), then analysed. The section only swaps it in
   * (`replaceStaged`). The stage is held by this daemon (keepStage) until it is swapped in or released;
   * one left by a killed process is nobody's, and is dropped at the next start or staging of any daemon.
   */
  async stageAll(records: AsyncIterable<MemoryRecord>): Promise<StagedRecords> {
    this.checkOpen();
    await this.dropSideTables();
    const name = sideTableName(this.swapNames.table, 'stage');
    const table = qualify(this.swapNames, name);
    let keeper: () => Promise<void>;
    try {
      keeper = await keepStage(this.pool, this.locks, name);
    } catch (err) {
      throw wrapError('E_STORE_WRITE', 'restore staging', err);
    }
    this.keepers.add(keeper);
    const unkeep = async () => {
      this.keepers.delete(keeper);
      await keeper();
    };
    let lease: Lease;
    try {
      lease = await this.checkout('E_STORE_WRITE');
    } catch (err) {
      await unkeep();
      throw err;
    }
    const { client } = lease;
    const sql = { ...this.sql, upsertMany: buildSql(table, '').upsertMany };
    let read = 0;
    let rows: number;
    // An error of the stream itself (a corrupt backup) is the caller's to interpret and passes as thrown.
    let sourceFailed = false;
    try {
      await client.query(createStageSql(this.sql, table));
      const it = records[Symbol.asyncIterator]();
      try {
        let batch: MemoryRecord[] = [];
        for (;;) {
          let next: IteratorResult<MemoryRecord>;
          try {
            next = await it.next();
          } catch (err) {
            sourceFailed = true;
            throw err;
          }
          if (next.done) break;
          batch.push(next.value);
          read++;
          if (batch.length >= WRITE_BATCH) {
            await upsertRecords(client, sql, batch);
            batch = [];
          }
        }
        await upsertRecords(client, sql, batch);
        rows = Number((await client.query<CountRow>(`SELECT COUNT(*) AS n FROM ${table}`)).rows[0]?.n ?? 0);
        await client.query(`ANALYZE ${table}`);
      } catch (err) {
        if (!sourceFailed) await it.return?.().catch(() => undefined);
        await client.query(`DROP TABLE IF EXISTS ${table}`).catch((e: unknown) => lease.poison(e));
        throw err;
      }
    } catch (err) {
      // A stage whose drop failed too is left to the next dropSideTables.
      await unkeep();
      if (sourceFailed) throw err;
      throw wrapError('E_STORE_WRITE', 'restore staging', err);
    } finally {
      lease.release();
    }
    const state: StageState = { table, rows, swapped: false };
    const staged: StagedRecords = {
      read,
      release: async () => {
        try {
          if (!state.swapped) await this.pool.query(`DROP TABLE IF EXISTS ${table}`);
        } finally {
          await unkeep();
        }
      },
    };
    this.stages.set(staged, state);
    return staged;
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
    const section = new Section(this, client, this.sql, this.swapNames, (staged) => this.stages.get(staged));
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
      // After the section: the drop unlinks the old table's files, O(its size), while writers go on.
      // Its rows are in the operation's verified backup; a table not dropped here (the process died,
      // or the drop failed) is dropped by the next dropSideTables.
      for (const old of section.setAside) {
        await this.pool.query(`DROP TABLE IF EXISTS ${old}`).catch((err: unknown) =>
          process.emitWarning(`PostgreSQL store ${this.url}: the table set aside by a swap could not be dropped yet (${err instanceof Error ? err.message : String(err)})`, {
            code: 'CHATMEM_SIDE_TABLES',
          }),
        );
      }
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
    if (this.closed || this.closing) return;
    this.closing = true;
    // Writes already accepted run to their end, queued ones included (each batch starts the next).
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
    this.closed = true;
    // Stages never released: their tables become nobody's and go at the next dropSideTables.
    await Promise.all([...this.keepers].map((release) => release()));
    this.keepers.clear();
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
