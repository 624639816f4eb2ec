import type { PoolClient, QueryResult, QueryResultRow } from 'pg';
import { StoreError } from '../../errors.js';
import type { MemoryRecord } from '../../record.js';
import type { DriverContext, ScanOptions, StagedRecords, StoreDriver } from '../types.js';
import { inTransaction, wrapError } from './connection.js';
import { WRITE_BATCH, parseData, upsertRecords, type CountRow, type DataRow, type Sql } from './sql.js';
import { copyFromStageSql, stageTableName, swapTable, type SwapNames, type SwapResult } from './swap.js';

/** A staged table (driver.stageAll), as the section sees it. */
export interface StageState {
  table: string;
  /** Rows in the staged table (a user repeated in the stream counts once), counted when it was built. */
  rows: number;
  swapped: boolean;
}

/**
 * The context of one exclusive section. Its reads and writes run on the section's own connection, in
 * order: they must not need a second pooled connection, which could all be taken by writers waiting
 * for this very section. Scans use their own connection and snapshot, as the driver's scan does, so
 * code may write while it iterates (deleting what it has backed up, for example).
 */
export class Section implements DriverContext {
  private tail: Promise<unknown> = Promise.resolve();
  private ended = false;
  /** Tables a swap set aside (qualified): the driver drops them once the section is over. */
  readonly setAside: string[] = [];

  constructor(
    private readonly driver: Pick<StoreDriver, 'scanJson'>,
    private readonly client: PoolClient,
    private readonly sql: Sql,
    private readonly names: SwapNames,
    private readonly staged: (s: StagedRecords) => StageState | undefined,
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

  private async query<R extends QueryResultRow>(text: string, values: unknown[]): Promise<QueryResult<R>> {
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

  isEmpty(): Promise<boolean> {
    return this.run(async () => (await this.query<{ e: boolean }>(`SELECT NOT EXISTS (SELECT 1 FROM ${this.sql.users}) AS e`, [])).rows[0]?.e ?? true);
  }

  delete(ids: string[]): Promise<number> {
    return this.run(() =>
      inTransaction(this.client, 'delete', async () => {
        const n = (await this.client.query(this.sql.deleteMany, [ids])).rowCount ?? 0;
        await this.client.query(this.sql.pruneDeleted);
        return n;
      }),
    );
  }

  /**
   * Swaps in an empty twin of the users table (swap.ts): O(1) in rows, where a `DELETE` writes every
   * row's `xmax` (7.6 s at 100k users). Not TRUNCATE, which is not MVCC-safe; the swap is, for this
   * store's readers (see `Sql.beginScan`). When the table's lock cannot be had (a long scan holds it),
   * or the table has what a swap would lose (a view on it, triggers, ...: swap.ts), the `DELETE` as before.
   */
  clear(): Promise<number> {
    return this.run(async () => {
      // Exact: every writer of every daemon waits for this section.
      let n: number;
      try {
        n = Number((await this.client.query<CountRow>(this.sql.count)).rows[0]?.n ?? 0);
      } catch (err) {
        throw wrapError('E_STORE_WRITE', 'clear', err);
      }
      if (this.swapped(await swapTable(this.client, this.sql, this.names, stageTableName(this.names), true, 'clear'), 'clear')) return n;
      return inTransaction(this.client, 'clear', async () => {
        const deleted = (await this.client.query(this.sql.clear)).rowCount ?? 0;
        // A change feed running meanwhile (another daemon's clear copying its backup) must copy again.
        await this.client.query(`${this.sql.markAll}; ${this.sql.pruneDeleted}`);
        return deleted;
      });
    });
  }

  /**
   * Makes the table staged before the section the users table: a swap, O(1) in rows; when the lock
   * cannot be had or the swap is refused (swap.ts), the live rows are replaced by the stage's in one
   * transaction (O(store), no JSON).
   */
  replaceStaged(staged: StagedRecords): Promise<number> {
    return this.run(async () => {
      const state = this.staged(staged);
      if (!state) throw new StoreError('E_STORE_ARG', 'these records were not staged by this store');
      if (state.swapped) throw new StoreError('E_STORE_ARG', 'these staged records were already swapped in');
      if (this.swapped(await swapTable(this.client, this.sql, this.names, state.table, false, 'restore'), 'restore')) {
        state.swapped = true;
      } else {
        await inTransaction(this.client, 'restore', () =>
          this.client.query(`${copyFromStageSql(this.sql, state.table)}; ${this.sql.markAll}; ${this.sql.pruneDeleted}`),
        );
      }
      // Counted when staged: a count here would read every row inside the section.
      return state.rows;
    });
  }

  /** Notes a swap's set-aside table, or says why the row path is taken instead. */
  private swapped(result: SwapResult, what: 'clear' | 'restore'): boolean {
    if (result.swapped) {
      this.setAside.push(result.old);
      return true;
    }
    process.emitWarning(`PostgreSQL ${what}: the users table is not swapped (${result.why}); its rows are replaced in place, which holds writers for a time that grows with the store`, {
      code: 'CHATMEM_SWAP_FALLBACK',
    });
    return false;
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
      await this.client.query(`${this.sql.clear}; ${this.sql.markAll}; ${this.sql.pruneDeleted}`);
      await this.upsertStream(records, failed);
      // Counted in the database: a set of ids would not be constant memory at 1M users.
      return Number((await this.client.query<CountRow>(this.sql.count)).rows[0]?.n ?? 0);
    });
  }
}
