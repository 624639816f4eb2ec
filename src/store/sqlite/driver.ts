import Database from 'better-sqlite3';
import { existsSync, promises as fsp, statSync } from 'node:fs';
import * as path from 'node:path';
import { isChatmemError, StoreError } from '../../errors.js';
import { ensurePrivateDir } from '../../fs-util.js';
import { compareIds, type MemoryRecord } from '../../record.js';
import { stringifyJson } from '../../json-safe.js';
import { profileText } from '../search-text.js';
import { Checkpointer } from './checkpointer.js';
import { BuildPacer } from './pacer.js';
import { SqliteSearch } from './search.js';
import {
  bulkIndex,
  DELETE_TRIGGER,
  DOC_MESSAGE,
  DOC_PROFILE,
  dropLeftovers,
  ensureMergePolicy,
  generationTables,
  GENERATION,
  historyOf,
  messageText,
  migrate,
  newTablesSql,
  PENDING_ADD,
  queueStandIn,
  READABLE_FROM,
  PENDING_DELETE,
  SCHEMA_VERSION,
  TOTALS_TRIGGERS,
} from './schema.js';
import type { DriverContext, ExclusiveScope, JsonByteBatch, JsonByteScan, ScanOptions, StagedRecords, StoreDriver, StoreStats, UserSummary } from '../types.js';

type Row = { data: string };
type Totals = { users: number; messages: number; bytes: number };
type SummaryRow = { user_id: string; name: string | null; product: string | null; created_at: string; updated_at: string; messages: number };

interface PendingUpdate {
  id: string;
  fn: (current: MemoryRecord | null) => MemoryRecord;
  resolve: (r: MemoryRecord) => void;
  reject: (e: unknown) => void;
}

/** How long a statement waits for a lock held by another connection (this process's scans, another process). */
const BUSY_TIMEOUT_MS = 10_000;
/** Tries of forget's TRUNCATE checkpoint, 100 ms apart: about a minute for a backup's scan to finish. */
const FORGET_WAL_TRIES = 600;
const SCAN_BATCH = 500;
// About 1 MB of stored JSON per batch of `jsonBatches` (~500 seed-shaped users): one write of the backup.
const SCAN_BATCH_BYTES = 1 << 20;
// The most rows in one batch of `jsonBatches` (tiny records).
const SCAN_MAX_ROWS = 1024;
let generationSeq = 0;
/** A name part unique in this store: the clock (base 36, fixed width this century) and a counter. */
const newGeneration = (): string => `${Date.now().toString(36)}${(++generationSeq % 36 ** 4).toString(36).padStart(4, '0')}`;
const USER_COLUMNS = 'user_id, data, name, product, created_at, updated_at, messages, search_text';
/** Base sizes of a chunk of the drop (scaled to its time, see SqliteDriver.chunk): users, other rows. */
const DROP_USERS = 1000;
const DROP_ROWS = 5000;
/**
 * WAL checkpoints run in a worker (checkpointer.ts), never in a commit on the event loop: SQLite's
 * auto-checkpoint copied ~4 MB into the database file and fsynced it inside whichever commit crossed
 * the mark (an append's, or a chunk of the indexer's), a 300–400 ms stall at 100k users
 * (BENCHMARKS.md, "Checkpoints off the event loop"). Every WAL_WATCH_MS the WAL is looked at; once
 * it passed SQLite's mark (1000 pages) and was written since the last look, the worker checkpoints.
 */
const WAL_WATCH_MS = 200;
const WAL_CHECKPOINT_BYTES = 1000 * 4096;
/** Milliseconds one chunk of the old tables' drop aims at (the chunk size adapts to it). */
const DROP_TURN_MS = 10;
/**
 * The scale of a table's first drop chunk: at 1 (1,000 users of 2.2 KB) the first chunk of a clear of
 * 100k users took 220 ms while appends waited; from 1/16 the size doubles per chunk up to its turn.
 */
const DROP_FIRST_SCALE = 1 / 16;
/**
 * Base size of one chunk of the background indexer (queued changes applied to the full-text index),
 * and the batch it waits for: FTS5 writes a segment per transaction, so a change applied in a chunk
 * of 50 cost 88 µs of CPU, in one of 500 14 µs, of 2,000 13 µs (bench/search-pending.mjs, 10k users).
 */
const INDEX_ROWS = 500;
/**
 * How often the indexer looks at the queue after a commit queued work: it runs once a batch of
 * INDEX_ROWS is queued, or the oldest queued change has waited INDEX_MAX_WAIT_MS. A search reads the
 * queue beside the index (~0.3 µs of CPU per queued change, same bench), so the queue stays short.
 */
const INDEX_DELAY_MS = 100;
const INDEX_MAX_WAIT_MS = 1000;
/**
 * How a write changes a user's search documents; computed in JS before any SQL runs. The index is
 * contentless, so removing a document takes the text it was indexed with: the stored record is the
 * source of both, and every write path keeps them in step.
 */
interface IndexPlan {
  /** The new profile text, or null when it did not change. */
  profile: string | null;
  /** The profile text being replaced (null: none). */
  oldProfile: string | null;
  /** Remove every message document (history was replaced, not appended to) rather than the oldest few. */
  rebuild: boolean;
  /** Texts of the message documents to remove, oldest first. */
  drop: string[];
  /** Texts of the entries added at the end of history. */
  add: string[];
}

/**
 * What to change in the search index for `current` -> `next` (null: the user is deleted). An append
 * keeps the entry objects of `current` (applyAppend copies the array, not the entries), so "the old
 * history minus its oldest entries, then new ones" is recognised by identity, and costs the index one
 * document per message added or pushed out. Anything else (put, a patch of history) rebuilds the
 * user's message documents.
 */
function indexPlan(current: MemoryRecord | null, next: MemoryRecord | null): IndexPlan {
  const before = current ? profileText(current) : null;
  const after = next ? profileText(next) : null;
  const c = historyOf(current);
  const n = historyOf(next);
  const plan: IndexPlan = { profile: before === after ? null : after, oldProfile: before === after ? null : before, rebuild: false, drop: [], add: [] };
  if (next === null) return { ...plan, profile: null, oldProfile: before, rebuild: true, drop: c.map(messageText) };
  if (c === n) return plan;
  const first = n[0];
  let drop = first === undefined ? c.length : c.indexOf(first);
  if (drop < 0) drop = c.length;
  const kept = c.length - drop;
  let appended = kept <= n.length;
  for (let i = 0; appended && i < kept; i++) appended = n[i] === c[drop + i];
  if (!appended) return { ...plan, rebuild: true, drop: c.map(messageText), add: n.map(messageText) };
  return { ...plan, drop: c.slice(0, drop).map(messageText), add: n.slice(kept).map(messageText) };
}

/**
 * SQLite driver (better-sqlite3, WAL). One row per user, the record as JSON text, so an append
 * rewrites that user's row only. Concurrent updates arriving within one event-loop turn share a
 * transaction (group commit), which amortises the fsync of synchronous=FULL.
 */
export class SqliteDriver implements StoreDriver {
  readonly kind = 'sqlite' as const;
  readonly url: string;
  private readonly db: Database.Database;
  private queue: PendingUpdate[] = [];
  private flushScheduled = false;
  private staged = 0;
  private readonly stmts;
  /** Read-only connection for searches: a search may pause between rows, and a connection with an open query cannot write. */
  private searchReader: Database.Database | null = null;
  private searcher: SqliteSearch | null = null;
  /** One op's row and index changes, as a savepoint inside the batch transaction. */
  private readonly applyOp: (row: Record<string, unknown>, plan: IndexPlan, id: string) => void;

  private constructor(
    readonly file: string,
    db: Database.Database,
    /** An empty in-memory stand-in for a database that does not exist yet (read-only opens). */
    private readonly inMemory = false,
  ) {
    this.url = `sqlite:${file}`;
    this.db = db;
    // Nested in the batch's transaction, better-sqlite3 makes this a savepoint: an op whose statements
    // fail half-way leaves none of its changes.
    this.applyOp = db.transaction((row: Record<string, unknown>, plan: IndexPlan, id: string) => {
      this.stmts.upsert.run(row);
      this.reindex(id, plan, true);
    });
    this.stmts = {
      get: db.prepare<[string], Row>('SELECT data FROM users WHERE user_id = ?'),
      upsert: db.prepare(
        `INSERT INTO users (user_id, data, name, product, created_at, updated_at, messages, search_text)
         VALUES (@user_id, @data, @name, @product, @created_at, @updated_at, @messages, @search_text)
         ON CONFLICT(user_id) DO UPDATE SET data = excluded.data, name = excluded.name, product = excluded.product,
           created_at = excluded.created_at, updated_at = excluded.updated_at, messages = excluded.messages,
           search_text = excluded.search_text`,
      ),
      del: db.prepare<[string]>('DELETE FROM users WHERE user_id = ?'),
      docsOf: db.prepare<[string, number], number>('SELECT id FROM search_docs WHERE user_id = ? AND kind = ? ORDER BY id').pluck(),
      oldestDocs: db.prepare<[string, number, number], number>('SELECT id FROM search_docs WHERE user_id = ? AND kind = ? ORDER BY id LIMIT ?').pluck(),
      insertDoc: db.prepare<[string, number]>('INSERT INTO search_docs (user_id, kind) VALUES (?, ?)'),
      deleteDoc: db.prepare<[number]>('DELETE FROM search_docs WHERE id = ?'),
      insertFts: db.prepare<[number | bigint, string]>('INSERT INTO search_fts (rowid, text) VALUES (?, ?)'),
      // A contentless table forgets a document given the text it was indexed with (~15 µs; a
      // contentless_delete table took ~900 µs per delete).
      deleteFts: db.prepare<[number, string]>("INSERT INTO search_fts (search_fts, rowid, text) VALUES ('delete', ?, ?)"),
      queue: db.prepare<[number, number | bigint, string]>('INSERT INTO search_pending (op, doc_id, text) VALUES (?, ?, ?)'),
      pendingHead: db.prepare<[number], { seq: number; op: number; doc_id: number; text: string }>('SELECT seq, op, doc_id, text FROM search_pending ORDER BY seq LIMIT ?'),
      pendingDone: db.prepare<[number]>('DELETE FROM search_pending WHERE seq <= ?'),
      hasPending: db.prepare<[], number>('SELECT EXISTS (SELECT 1 FROM search_pending)').pluck(),
      // Kept by triggers: COUNT(*) and SUM() read the whole table, and better-sqlite3 runs them on the event loop.
      totals: db.prepare<[], { users: number; messages: number; bytes: number }>('SELECT users, messages, bytes FROM totals WHERE id = 1'),
      lastUpdate: db.prepare<[], { last: string | null }>('SELECT MAX(updated_at) AS last FROM users'),
      list: db.prepare<[string, number], SummaryRow>(
        `SELECT user_id, name, product, created_at, updated_at, messages FROM users
         WHERE user_id > ? ORDER BY user_id LIMIT ?`,
      ),
    };
  }

  /**
   * Opens (creating if needed) the database at `file`; the directory is created 0700.
   * `readOnly` creates nothing: a missing database reads as an empty store.
   */
  static async open(file: string, options: { readOnly?: boolean; indexDelayMs?: number; indexMaxWaitMs?: number } = {}): Promise<SqliteDriver> {
    const abs = path.resolve(file);
    if (options.readOnly) return SqliteDriver.openReadOnly(abs);
    await ensurePrivateDir(path.dirname(abs));
    let db: Database.Database;
    try {
      // Create with a private mode: better-sqlite3 would use the umask.
      const fh = await fsp.open(abs, 'a', 0o600);
      await fh.close();
      db = new Database(abs);
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      migrate(db);
      dropLeftovers(db);
      ensureMergePolicy(db);
      db.pragma('wal_autocheckpoint = 0');
    } catch (err) {
      throw new StoreError('E_STORE_OPEN', `cannot open SQLite store ${abs}: ${(err as Error).message}`, { cause: err });
    }
    const driver = new SqliteDriver(abs, db);
    driver.watchWal();
    if (options.indexDelayMs !== undefined) driver.indexDelayMs = options.indexDelayMs;
    if (options.indexMaxWaitMs !== undefined) driver.indexMaxWaitMs = options.indexMaxWaitMs;
    // Index work a crash (or a failed close) left queued is resumed in the background.
    if (driver.stmts.hasPending.get() === 1) {
      driver.queuedRows = INDEX_ROWS;
      driver.scheduleIndex();
    }
    return driver;
  }

  private static openReadOnly(abs: string): SqliteDriver {
    try {
      if (!existsSync(abs)) {
        const db = new Database(':memory:');
        migrate(db);
        return new SqliteDriver(abs, db, true);
      }
      const db = new Database(abs, { readonly: true, fileMustExist: true });
      db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      const version = db.pragma('user_version', { simple: true }) as number;
      if (version > SCHEMA_VERSION || version < READABLE_FROM) {
        throw new Error(`schema version ${version}, expected ${READABLE_FROM} to ${SCHEMA_VERSION}${version < READABLE_FROM ? ' (open it writable once, e.g. `chatmem serve`, to upgrade it)' : ''}`);
      }
      queueStandIn(db);
      return new SqliteDriver(abs, db);
    } catch (err) {
      throw new StoreError('E_STORE_OPEN', `cannot open SQLite store ${abs} read-only: ${(err as Error).message}`, { cause: err });
    }
  }

  private row(record: MemoryRecord): Record<string, unknown> {
    return {
      user_id: record.user_id,
      data: stringifyJson(record),
      name: record.name,
      product: record.product,
      created_at: record.created_at,
      updated_at: record.updated_at,
      messages: record.history.length,
      // Superseded by the search_docs / search_fts index (schema 3); the column stays for older readers.
      search_text: '',
    };
  }

  /** With `deferred`, the index change is queued in search_pending for the background indexer. */
  private addDoc(userId: string, kind: number, text: string, deferred: boolean): void {
    const id = this.stmts.insertDoc.run(userId, kind).lastInsertRowid;
    if (deferred) this.enqueue(PENDING_ADD, id, text);
    else this.stmts.insertFts.run(id, text);
  }

  /**
   * Removes documents, oldest first, with the texts they were indexed with. Should the two lists ever
   * disagree in length, the extra documents go with an empty text: their stale index entries then
   * point at an id that no longer exists in search_docs (ids are never reused), which search ignores.
   */
  private dropDocs(ids: number[], texts: string[], deferred: boolean): void {
    ids.forEach((id, i) => {
      if (deferred) this.enqueue(PENDING_DELETE, id, texts[i] ?? '');
      else this.stmts.deleteFts.run(id, texts[i] ?? '');
      this.stmts.deleteDoc.run(id);
    });
  }

  /**
   * Applies `plan` to `userId`'s search documents (inside the caller's transaction). `deferred` (the
   * hot path) queues the full-text index's changes; otherwise they are written now, which is right
   * only once the queue is empty (see {@link applyPending}): a contentless index must see a
   * document's insert before its 'delete'.
   */
  private reindex(userId: string, plan: IndexPlan, deferred: boolean): void {
    if (plan.profile !== null || plan.oldProfile !== null) {
      this.dropDocs(this.stmts.docsOf.all(userId, DOC_PROFILE), plan.oldProfile === null ? [] : [plan.oldProfile], deferred);
      if (plan.profile !== null) this.addDoc(userId, DOC_PROFILE, plan.profile, deferred);
    }
    if (plan.rebuild) this.dropDocs(this.stmts.docsOf.all(userId, DOC_MESSAGE), plan.drop, deferred);
    else if (plan.drop.length > 0) this.dropDocs(this.stmts.oldestDocs.all(userId, DOC_MESSAGE, plan.drop.length), plan.drop, deferred);
    for (const text of plan.add) this.addDoc(userId, DOC_MESSAGE, text, deferred);
  }

  /**
   * Applies up to `limit` queued index changes, oldest first, and deletes them from the queue (inside
   * the caller's transaction, so a crash keeps both or neither). Returns how many it applied.
   */
  private applyPending(limit: number): number {
    const rows = this.stmts.pendingHead.all(limit);
    for (const r of rows) {
      if (r.op === PENDING_ADD) this.stmts.insertFts.run(r.doc_id, r.text);
      else this.stmts.deleteFts.run(r.doc_id, r.text);
    }
    const last = rows[rows.length - 1];
    if (last) this.stmts.pendingDone.run(last.seq);
    return rows.length;
  }

  /** Empties the queue into the index (inside the caller's transaction): before any write of the index that does not queue. */
  private applyAllPending(): void {
    while (this.applyPending(INDEX_ROWS * 4) > 0);
  }

  /** See {@link INDEX_DELAY_MS}; tests hold the indexer back with a long delay and step it with {@link indexChunk}. */
  private indexDelayMs = INDEX_DELAY_MS;
  private indexMaxWaitMs = INDEX_MAX_WAIT_MS;
  private indexTimer: NodeJS.Timeout | null = null;
  private indexing: Promise<void> | null = null;
  /** Changes queued since the indexer last started a chunk (of this process: counted, not read), and since when. */
  private queuedRows = 0;
  private queuedSince = 0;
  /**
   * What the indexer did: timers armed, runs started, chunks begun. For tests that observe its
   * scheduling by counts rather than by the clock. @internal
   */
  readonly indexerCounts = { armed: 0, runs: 0, chunks: 0 };

  /** Whether the indexer's timer is armed, and whether a run is under way. For tests. @internal */
  indexerState(): { armed: boolean; running: boolean } {
    return { armed: this.indexTimer !== null, running: this.indexing !== null };
  }

  private enqueue(op: number, id: number | bigint, text: string): void {
    this.stmts.queue.run(op, id, text);
    if (this.queuedRows++ === 0) this.queuedSince = performance.now();
  }

  /** Arms the indexer's timer (see {@link INDEX_DELAY_MS}), unless it is armed or running. */
  private scheduleIndex(): void {
    if (this.indexTimer || this.indexing || this.closing || this.db.readonly || !this.db.open) return;
    this.indexerCounts.armed++;
    this.indexTimer = setTimeout(() => {
      this.indexTimer = null;
      if (this.queuedRows < INDEX_ROWS && performance.now() - this.queuedSince < this.indexMaxWaitMs) {
        this.scheduleIndex();
        return;
      }
      this.indexerCounts.runs++;
      this.indexing = this.runIndexer()
        // A failure (disk full, say) leaves the queue as it was: it is durable, and the next commit or open retries.
        .catch(() => undefined)
        .finally(() => {
          this.indexing = null;
          if (this.queuedRows > 0) this.scheduleIndex();
        });
    }, this.indexDelayMs);
    // Queued work is durable: it never keeps a process alive (the next open, or close, applies it).
    this.indexTimer.unref();
  }

  /**
   * Applies the queue in chunks sized to ~DROP_TURN_MS (see {@link chunk}), with a pause as long
   * between them so writes keep the event loop, while chunks come out full (a backlog); what arrives
   * after waits for a batch of its own.
   */
  private async runIndexer(): Promise<void> {
    let scale = 1;
    for (;;) {
      if (this.closing || !this.db.open) return;
      this.indexerCounts.chunks++;
      this.queuedRows = 0;
      const limit = Math.max(1, Math.round(INDEX_ROWS * scale));
      let applied = 0;
      scale = this.chunk(scale, () => {
        applied = this.applyPending(limit);
      });
      if (applied < limit) return;
      await new Promise((r) => setTimeout(r, DROP_TURN_MS));
    }
  }

  /**
   * Applies up to `limit` queued index changes now, in one transaction, as one chunk of the background
   * indexer does; returns how many. For tests and benches that step the indexer by hand.
   * @internal
   */
  indexChunk(limit: number): number {
    return this.db.transaction(() => this.applyPending(limit))();
  }

  /** Queued index changes not yet applied. For tests and benches. @internal */
  pendingIndexWork(): number {
    return this.db.prepare<[], number>('SELECT COUNT(*) FROM search_pending').pluck().get() ?? 0;
  }

  /**
   * Deletes users and their search documents (in the caller's transaction). The index changes are
   * queued behind the queued inserts, as an append's are; with `deferred` false they are written now,
   * which is right only after {@link applyAllPending} (a 'delete' must follow its document's insert).
   * Queued rather than applied first: after a full restore the queue holds every document of the store
   * (see stageAll), and applying it in one transaction would hold writes for minutes at 1M users.
   * Returns how many existed.
   */
  private deleteUsers(ids: string[], deferred = true): number {
    let n = 0;
    for (const id of ids) {
      const current = this.readRecord(id);
      if (current) this.reindex(id, indexPlan(current, null), deferred);
      n += this.stmts.del.run(id).changes;
    }
    return n;
  }

  /** Writes whole records (restore, import), replacing each user's documents (in the caller's transaction). */
  private writeRecords(records: MemoryRecord[]): void {
    for (const r of records) {
      const current = this.readRecord(r.user_id);
      this.stmts.upsert.run(this.row(r));
      this.reindex(r.user_id, indexPlan(current, r), true);
    }
  }

  private readRecord(id: string): MemoryRecord | null {
    const row = this.stmts.get.get(id);
    return row ? (JSON.parse(row.data) as MemoryRecord) : null;
  }

  async get(id: string): Promise<MemoryRecord | null> {
    return this.readRecord(id);
  }

  update(id: string, fn: (current: MemoryRecord | null) => MemoryRecord): Promise<MemoryRecord> {
    return new Promise((resolve, reject) => {
      this.queue.push({ id, fn, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    const results: ({ ok: true; value: MemoryRecord } | { ok: false; error: unknown })[] = [];
    try {
      this.db.transaction(() => {
        // Each op's new row is computed inside its own try: one op that throws (a bad record, a value
        // too deep to serialise) fails alone, never the others sharing its transaction.
        for (const op of batch) {
          let next: MemoryRecord;
          let row: Record<string, unknown>;
          let plan: IndexPlan;
          try {
            const current = this.readRecord(op.id);
            next = op.fn(current);
            row = this.row(next);
            plan = indexPlan(current, next);
          } catch (error) {
            results.push({ ok: false, error });
            continue;
          }
          try {
            this.applyOp(row, plan, op.id);
          } catch (err) {
            // A failed statement is undone on its own and the transaction goes on, unless SQLite had to
            // abort the transaction (disk full, I/O error): then the batch fails as a whole, below.
            if (!this.db.inTransaction) throw err;
            results.push({ ok: false, error: new StoreError('E_STORE_WRITE', `SQLite write of user ${JSON.stringify(op.id)} failed: ${(err as Error).message}`, { cause: err }) });
            continue;
          }
          results.push({ ok: true, value: next });
        }
      })();
    } catch (err) {
      const error = new StoreError('E_STORE_WRITE', `SQLite write failed: ${(err as Error).message}`, { cause: err });
      for (const op of batch) op.reject(error);
      return;
    }
    if (this.queuedRows > 0) this.scheduleIndex();
    batch.forEach((op, i) => {
      const r = results[i];
      if (r?.ok) op.resolve(r.value);
      else op.reject(r ? r.error : new StoreError('E_STORE_WRITE', 'lost update result'));
    });
  }

  async count(): Promise<number> {
    return this.stmts.totals.get()?.users ?? 0;
  }

  async list(options: { cursor: string | null; limit: number }): Promise<UserSummary[]> {
    return this.stmts.list.all(options.cursor ?? '', options.limit);
  }

  /**
   * Streams from a dedicated read connection inside one read transaction: a consistent snapshot
   * in constant memory while the main connection keeps committing (WAL). The stored text is
   * `JSON.stringify(record)`, so backups take it as is; as bytes, through `jsonBatches`.
   */
  scanJson(options: ScanOptions = {}): AsyncIterable<[string, string]> & JsonByteScan {
    return {
      [Symbol.asyncIterator]: () => this.scanRows(options),
      jsonBatches: () => this.scanBatches(options),
    };
  }

  // Rows as arrays (raw mode): a row object per user cost ~30% more of the scan (probe, 2026-11-30).
  private async *scanRows(options: ScanOptions): AsyncGenerator<[string, string]> {
    if (this.inMemory) return;
    const reader = new Database(this.file, { readonly: true });
    try {
      reader.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      const stmt = reader.prepare<[string], [string, string]>('SELECT user_id, data FROM users WHERE user_id > ? ORDER BY user_id').raw(true);
      reader.prepare('BEGIN').run();
      let n = 0;
      for (const row of stmt.iterate(options.after ?? '')) {
        yield row;
        // Yield to the event loop now and then so a long scan does not starve the hot path.
        if (++n % SCAN_BATCH === 0) await new Promise((r) => setImmediate(r));
      }
      reader.prepare('COMMIT').run();
    } finally {
      reader.close();
    }
  }

  /**
   * The same snapshot as `scanRows`, as the stored UTF-8 bytes (`CAST … AS BLOB` is the text's bytes
   * as stored) in batches of about SCAN_BATCH_BYTES: decoding each record into a JS string and
   * encoding it back was most of a backup's read (BENCHMARKS.md, "Full backup at the disk's rate").
   * Each batch is one query that concatenates its rows in SQLite, after one that reads their sizes: a
   * row per `iterate` step made a JS array and a Buffer per user, garbage that put a 1M-user backup's
   * peak RSS at 158–165 MB against 141–150 MB now (BENCHMARKS.md section 13). Both queries read the
   * same rows of one read transaction, so the sizes cut the bytes; the writer checks the ids' order.
   * The event loop turns after every batch.
   */
  private async *scanBatches(options: ScanOptions): AsyncGenerator<JsonByteBatch> {
    if (this.inMemory) return;
    const reader = new Database(this.file, { readonly: true });
    try {
      reader.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
      // The sizes first, so that a batch is cut before it passes SCAN_BATCH_BYTES whatever the records'
      // sizes: a row limit alone would let a run of large records after small ones fill memory.
      const sizes = reader
        .prepare<[string, number], number>('SELECT octet_length(data) FROM users WHERE user_id > ? ORDER BY user_id LIMIT ?')
        .pluck(true);
      const rows = reader
        .prepare<[string, number], [string, Buffer]>(
          `SELECT json_group_array(user_id), CAST(group_concat(d, '') AS BLOB)
           FROM (SELECT user_id, CAST(data AS BLOB) AS d FROM users WHERE user_id > ? ORDER BY user_id LIMIT ?)`,
        )
        .raw(true);
      reader.prepare('BEGIN').run();
      let after = options.after ?? '';
      for (;;) {
        const next = sizes.all(after, SCAN_MAX_ROWS);
        let take = 0;
        for (let bytes = 0; take < next.length; take++) {
          bytes += next[take] as number;
          if (take > 0 && bytes > SCAN_BATCH_BYTES) break;
        }
        if (take === 0) break;
        // An aggregate without GROUP BY returns one row, and these `take` rows exist in this snapshot:
        // the same rows, in the same order, as the sizes just read, which cut the bytes into records.
        const [idsJson, all] = rows.get(after, take) as [string, Buffer];
        const ids = JSON.parse(idsJson) as string[];
        const data: Buffer[] = [];
        let off = 0;
        for (const n of next.slice(0, take)) {
          data.push(all.subarray(off, off + n));
          off += n;
        }
        // Stryker disable all: equivalent; both queries read the same rows of one snapshot in the same order, so ids, sizes and bytes always agree. The check turns a broken assumption into an error rather than a backup of misplaced bytes.
        if (ids.length !== take || off !== all.length) {
          throw new StoreError('E_STORE_READ', `SQLite scan of ${this.file}: a batch's ids, sizes and bytes disagree`);
        }
        // Stryker restore all
        yield { ids, data, bytes: all.length };
        after = ids[take - 1] as string;
        await new Promise((r) => setImmediate(r));
      }
      reader.prepare('COMMIT').run();
    } finally {
      reader.close();
    }
  }

  async stats(): Promise<StoreStats> {
    const t = this.stmts.totals.get();
    return { users: t?.users ?? 0, messages: t?.messages ?? 0, bytes: t?.bytes ?? 0, lastUpdate: this.stmts.lastUpdate.get()?.last ?? null };
  }

  /** Opens the searches' connection: called once, when the first search makes {@link searcher}. */
  private openReader(): Database.Database {
    const reader = new Database(this.file, { readonly: true, fileMustExist: true });
    this.searchReader = reader;
    reader.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    queueStandIn(reader);
    // The index and its document map outgrow the default 2 MB page cache at 100k users; with 64 MB
    // an index match cost ~0.7 µs of CPU instead of ~1.5 µs (100k users, probe of 2026-11-30).
    reader.pragma('cache_size = -65536');
    return reader;
  }

  /** See {@link SqliteSearch.search}; on a read-only connection of its own. */
  async search(query: string, limit: number): Promise<UserSummary[]> {
    if (this.inMemory) return new SqliteSearch(this.db).search(query, limit);
    this.searcher ??= new SqliteSearch(this.openReader());
    return this.searcher.search(query, limit);
  }

  async exclusive<T>(_scope: ExclusiveScope, fn: (ctx: DriverContext) => Promise<T>): Promise<T> {
    // One process owns a SQLite store (the daemon, or the CLI when no daemon runs); the core's
    // in-process gate is the whole lock. Each mutation below is still a single transaction.
    const ctx: DriverContext = {
      getMany: async (ids) => ids.map((id) => this.readRecord(id)).filter((r): r is MemoryRecord => r !== null),
      scanJson: (options) => this.scanJson(options),
      count: () => this.count(),
      delete: async (ids) => this.queued(() => this.db.transaction(() => this.deleteUsers(ids))()),
      clear: async () => this.bulk('clear', async () => this.swapGeneration(null)),
      forget: (ids) => this.forget(ids),
      putAndDelete: async (records, ids) =>
        this.queued(() =>
          this.db.transaction(() => {
            this.writeRecords(records);
            this.deleteUsers(ids);
          })(),
        ),
      putMany: async (records) => this.queued(() => this.db.transaction(() => this.writeRecords(records))()),
      replaceAll: (records) => this.bulk('restore', () => this.replaceAll(records)),
      replaceStaged: (staged) => this.bulk('restore', async () => this.swapStaged(staged)),
      putAll: (records) => this.bulk('write', async () => this.queued(await this.putAll(records))),
    };
    return fn(ctx);
  }

  /** Runs `fn` (or takes its result) and wakes the indexer for the index work it queued. */
  private queued<T>(fn: (() => T) | T): T {
    const r = typeof fn === 'function' ? (fn as () => T)() : fn;
    if (this.queuedRows > 0) this.scheduleIndex();
    return r;
  }

  /**
   * Empties the table inside the caller's transaction. SQLite deletes a table in one go only when it
   * has no delete trigger; row by row took ~22 s at 1M users, so the trigger steps aside and the
   * totals are zeroed by hand.
   */
  private truncate(): void {
    this.db.exec(
      `DROP TRIGGER users_totals_delete; DELETE FROM main.users; UPDATE totals SET users = 0, messages = 0, bytes = 0 WHERE id = 1; ${DELETE_TRIGGER};
       DELETE FROM main.search_docs; DELETE FROM main.search_pending; INSERT INTO main.search_fts (search_fts) VALUES ('delete-all');`,
    );
  }

  /**
   * Deletes with secure_delete (freed bytes zeroed), then VACUUM rebuilds every page, since older
   * versions of the rows, freed before, still sit in free space; the TRUNCATE checkpoint empties the
   * WAL, which held them too. Retried, the event loop free between tries, while a reader (a backup's
   * scan) keeps the WAL from emptying: up to about a minute (a full backup of a large store reads for
   * tens of seconds).
   */
  private async forget(ids: string[]): Promise<number> {
    this.db.pragma('secure_delete = ON');
    try {
      // A clear or restore's old tables still hold the users' rows until the background drop ends:
      // they go now, with the section held, so VACUUM below leaves nothing of them.
      this.dropOldNow();
      // The queue holds message texts too: it is applied first (all of it, so the index's 'delete's
      // below follow their inserts), and its rows are deleted with secure_delete on.
      const n = this.db.transaction(() => {
        this.applyAllPending();
        return this.deleteUsers(ids, false);
      })();
      // Merges the full-text index's segments, dropping the deleted users' entries instead of marking them.
      this.db.exec("INSERT INTO main.search_fts (search_fts) VALUES ('optimize')");
      this.db.exec('VACUUM');
      for (let attempt = 0; ; attempt++) {
        // Without the busy handler, which would sleep up to BUSY_TIMEOUT_MS on the event loop while
        // a reader holds the WAL; a backup's scan in this process, which needs the loop to finish,
        // held it through every attempt (a forget during a scan stalled the daemon 10 s a try).
        this.db.pragma('busy_timeout = 0');
        let r: { busy: number } | undefined;
        try {
          [r] = this.db.pragma('wal_checkpoint(TRUNCATE)') as { busy: number }[];
        } finally {
          this.db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
        }
        if (r?.busy === 0) break;
        if (attempt >= this.forgetWal.tries) throw new StoreError('E_STORE_WRITE', `cannot empty the WAL of ${this.file}: a reader holds it`);
        await this.forgetWal.pause();
      }
      return n;
    } finally {
      this.db.pragma('secure_delete = OFF');
    }
  }

  /**
   * Retries of forget's TRUNCATE checkpoint after the first, and the pause before each (the event loop
   * is free during it). Tests shorten both and count the pauses. @internal
   */
  forgetWal = { tries: FORGET_WAL_TRIES, pause: (): Promise<void> => new Promise<void>((resolve) => setTimeout(resolve, 100)) };

  /** SQLite's own errors (SQLITE_FULL on a full disk, say) become E_STORE_WRITE; the source's pass through. */
  private async bulk<T>(what: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (isChatmemError(err) || !(err instanceof Database.SqliteError)) throw err;
      throw new StoreError('E_STORE_WRITE', `SQLite ${what} failed: ${err.message}`, { cause: err });
    }
  }

  /**
   * Copies `records` into a new temp table (on disk, so memory stays flat) in short transactions: no
   * transaction is held across an await, where the hot path's group commits would join it. Rows keep
   * the stream's order (rowid), so in an upsert a later record of a repeated id wins. With `docs`, the
   * search documents of each record are staged too (`<table>_docs`), a repeated user's earlier ones
   * dropped. Returns the table name; the caller drops both tables.
   */
  private async stage(records: AsyncIterable<MemoryRecord>, docs: boolean): Promise<{ table: string; read: number }> {
    // Two sections on disjoint users may stage at once: each gets its own table.
    const table = `temp.staging_${++this.staged}`;
    const docTable = `${table}_docs`;
    // A plain rowid table, appended in stream order: no index to maintain while staging.
    this.db.exec(`DROP TABLE IF EXISTS ${table}; CREATE TABLE ${table} AS SELECT * FROM main.users WHERE 0;
      DROP TABLE IF EXISTS ${docTable}; CREATE TABLE ${docTable} (user_id TEXT NOT NULL, kind INTEGER NOT NULL, text TEXT NOT NULL);
      CREATE INDEX ${table}_docs_user ON ${docTable.slice('temp.'.length)} (user_id)`);
    try {
      const insert = this.db.prepare(
        `INSERT INTO ${table} (user_id, data, name, product, created_at, updated_at, messages, search_text)
         VALUES (@user_id, @data, @name, @product, @created_at, @updated_at, @messages, @search_text)`,
      );
      const dropStagedDocs = this.db.prepare<[string]>(`DELETE FROM ${docTable} WHERE user_id = ?`);
      const stageDoc = this.db.prepare<[string, number, string]>(`INSERT INTO ${docTable} (user_id, kind, text) VALUES (?, ?, ?)`);
      let batch: MemoryRecord[] = [];
      let read = 0;
      const flush = this.db.transaction((rows: MemoryRecord[]) => {
        for (const r of rows) {
          insert.run(this.row(r));
          if (!docs) continue;
          // A user twice in the stream: the last record wins, and only its documents.
          dropStagedDocs.run(r.user_id);
          stageDoc.run(r.user_id, DOC_PROFILE, profileText(r));
          for (const h of historyOf(r)) stageDoc.run(r.user_id, DOC_MESSAGE, messageText(h));
        }
      });
      // Batches sized to ~DROP_TURN_MS of work, a turn of the event loop after each: a full restore
      // stages outside its section while writes go on (500 records a batch stalled appends up to
      // 0.7 s under load, 2026-11-30 probe).
      let limit = SCAN_BATCH;
      for await (const r of records) {
        batch.push(r);
        read++;
        if (batch.length >= limit) {
          const t0 = performance.now();
          flush(batch);
          batch = [];
          const ms = performance.now() - t0;
          if (ms > 2 * DROP_TURN_MS) limit = Math.max(Math.floor(limit / 2), 8);
          else if (ms < DROP_TURN_MS / 2) limit = Math.min(limit * 2, SCAN_BATCH);
          await new Promise((resolve) => setImmediate(resolve));
        }
      }
      flush(batch);
      return { table, read };
    } catch (err) {
      this.dropStaged(table);
      throw err;
    }
  }

  private dropStaged(table: string): void {
    this.db.exec(`DROP TABLE IF EXISTS ${table}; DROP TABLE IF EXISTS ${table}_docs`);
  }

  /** Stages the rows and their search documents, then swaps them in one transaction. */
  private async replaceAll(records: AsyncIterable<MemoryRecord>): Promise<number> {
    const { table } = await this.stage(records, true);
    try {
      return this.swapIn(table);
    } finally {
      this.dropStaged(table);
    }
  }

  private readonly stagedGenerations = new WeakMap<StagedRecords, { g: string; totals: Totals; swapped: boolean }>();

  /**
   * A whole-store replace's preparation, done before its section (a full restore): the records are
   * written straight from the stream into `users_new_<g>` and `search_docs_new_<g>` in short
   * transactions (see {@link BuildPacer}), a turn of the event loop between, so hot-path commits go
   * on. The full-text index is not built here: every document goes into the generation's own queue
   * (`search_pending_new_<g>`) as an 'add', which the swap makes the live queue, and the background
   * indexer applies it after the section; search reads the queue beside the index, so it is right
   * from the swap on. The section then only renames.
   */
  async stageAll(records: AsyncIterable<MemoryRecord>): Promise<StagedRecords> {
    const g = newGeneration();
    let built: { totals: Totals; read: number };
    try {
      this.db.exec(newTablesSql(g));
      built = await this.bulk('restore', () => this.buildGeneration(g, records));
    } catch (err) {
      this.setAside(g);
      throw err;
    }
    const state = { g, totals: built.totals, swapped: false };
    const staged: StagedRecords = {
      read: built.read,
      release: async () => {
        if (!state.swapped) this.setAside(g);
      },
    };
    this.stagedGenerations.set(staged, state);
    return staged;
  }

  /**
   * Fills generation `g`'s tables from `records`; returns their totals (summed here: nothing else
   * writes these tables) and how many records were read. Document ids are assigned here in stream
   * order, a user's profile first and then its messages in history order, as the hot path's
   * `oldestDocs` expects. A user repeated in the stream: the last record wins, with only its documents.
   */
  private async buildGeneration(g: string, records: AsyncIterable<MemoryRecord>): Promise<{ totals: Totals; read: number }> {
    const users = `main.users_new_${g}`;
    const docsTable = `main.search_docs_new_${g}`;
    const queueTable = `main.search_pending_new_${g}`;
    const upsert = this.db.prepare(
      `INSERT INTO ${users} (${USER_COLUMNS}) VALUES (@user_id, @data, @name, @product, @created_at, @updated_at, @messages, @search_text)
       ON CONFLICT(user_id) DO UPDATE SET data = excluded.data, name = excluded.name, product = excluded.product,
         created_at = excluded.created_at, updated_at = excluded.updated_at, messages = excluded.messages, search_text = excluded.search_text`,
    );
    const insertDoc = this.db.prepare<[number, string, number]>(`INSERT INTO ${docsTable} (id, user_id, kind) VALUES (?, ?, ?)`);
    const queue = this.db.prepare<[number, string]>(`INSERT INTO ${queueTable} (op, doc_id, text) VALUES (${PENDING_ADD}, ?, ?)`);
    const previous = this.db.prepare<[string], { messages: number; bytes: number }>(`SELECT messages, length(CAST(data AS BLOB)) AS bytes FROM ${users} WHERE user_id = ?`);
    const unqueue = this.db.prepare<[string]>(`DELETE FROM ${queueTable} WHERE doc_id IN (SELECT id FROM ${docsTable} WHERE user_id = ?)`);
    const undoc = this.db.prepare<[string]>(`DELETE FROM ${docsTable} WHERE user_id = ?`);
    const totals: Totals = { users: 0, messages: 0, bytes: 0 };
    let docId = 0;
    let read = 0;
    let highest: string | null = null;
    const write = this.db.transaction((batch: MemoryRecord[]) => {
      for (const r of batch) {
        const row = this.row(r);
        // Ids in strictly increasing order (a chatmem backup's) cannot repeat: only an id not above the
        // highest so far is looked up.
        if (highest !== null && compareIds(highest, r.user_id) >= 0) {
          const old = previous.get(r.user_id);
          if (old) {
            totals.users--;
            totals.messages -= old.messages;
            totals.bytes -= old.bytes;
            unqueue.run(r.user_id);
            undoc.run(r.user_id);
          }
        }
        else highest = r.user_id;
        upsert.run(row);
        totals.users++;
        totals.messages += row.messages as number;
        totals.bytes += Buffer.byteLength(row.data as string);
        insertDoc.run(++docId, r.user_id, DOC_PROFILE);
        queue.run(docId, profileText(r));
        for (const h of historyOf(r)) {
          insertDoc.run(++docId, r.user_id, DOC_MESSAGE);
          queue.run(docId, messageText(h));
        }
      }
    });
    const pacer = new BuildPacer(DROP_TURN_MS);
    // The build's WAL is checkpointed as it grows, as every write's is (see WAL_WATCH_MS), but
    // without waiting for the watch: a build writes ~0.5 GB of it at 100k users.
    const checkpoint = (): Promise<unknown> => this.checkpointAside();
    try {
      let batch: MemoryRecord[] = [];
      for await (const r of records) {
        batch.push(r);
        read++;
        if (batch.length >= pacer.budget) {
          pacer.run(batch.length, () => this.lightCommit(() => write(batch)));
          batch = [];
          // Stryker disable next-line ConditionalExpression: equivalent as `true`; a checkpoint asked for while one runs is answered by the running one (Checkpointer.checkpoint).
          if (!this.walWorker?.busy) void checkpoint();
          await pacer.turn();
        }
      }
      if (batch.length > 0) this.lightCommit(() => write(batch));
      // The first commit after the build would otherwise find the whole backlog to copy.
      await checkpoint();
    } finally {
      // Stryker disable next-line UnaryOperator: equivalent; no mtime is 1 ms after the epoch either.
      this.walWritten = -1;
    }
    return { totals, read };
  }

  /** Renames generation `g`'s tables (built, half-built or unused) to old ones and drops them in the background. */
  private setAside(g: string): void {
    if (!this.db.open) return;
    const names = generationTables(this.db, 'new').filter((n) => n.endsWith(`_new_${g}`));
    const old = newGeneration();
    this.db.transaction(() => {
      for (const n of names) this.db.exec(`ALTER TABLE ${n} RENAME TO ${n.slice(0, -`_new_${g}`.length)}_old_${old}`);
    })();
    this.scheduleDrop();
  }

  private swapStaged(staged: StagedRecords): number {
    const state = this.stagedGenerations.get(staged);
    if (!state) throw new StoreError('E_STORE_ARG', 'these records were not staged by this store');
    if (state.swapped) throw new StoreError('E_STORE_ARG', 'these staged records were already swapped in');
    this.swapGeneration(state);
    state.swapped = true;
    return state.totals.users;
  }

  /**
   * The change of a clear (`next` null: fresh empty tables) or a full restore (`next`: a built
   * generation), in one transaction of metadata only: the live tables are renamed to `*_old_<o>`
   * (their totals triggers dropped first: trigger names are global and would follow the table), the
   * new ones to the live names, the triggers recreated and the totals set. The old tables are emptied
   * afterwards in small transactions. Returns the number of users the store held before.
   */
  private swapGeneration(next: { g: string; totals: Totals } | null): number {
    const o = newGeneration();
    const before = this.db.transaction(() => {
      const users = this.stmts.totals.get()?.users ?? 0;
      const g = next?.g ?? newGeneration();
      if (!next) this.db.exec(newTablesSql(g));
      const t = next?.totals ?? { users: 0, messages: 0, bytes: 0 };
      this.db.exec(`DROP TRIGGER IF EXISTS users_totals_insert; DROP TRIGGER IF EXISTS users_totals_delete; DROP TRIGGER IF EXISTS users_totals_update;
        ALTER TABLE users RENAME TO users_old_${o}; ALTER TABLE search_docs RENAME TO search_docs_old_${o}; ALTER TABLE search_fts RENAME TO search_fts_old_${o};
        ALTER TABLE search_pending RENAME TO search_pending_old_${o};
        ALTER TABLE users_new_${g} RENAME TO users; ALTER TABLE search_docs_new_${g} RENAME TO search_docs; ALTER TABLE search_fts_new_${g} RENAME TO search_fts;
        ALTER TABLE search_pending_new_${g} RENAME TO search_pending;
        ${TOTALS_TRIGGERS};`);
      this.db.prepare('UPDATE totals SET users = ?, messages = ?, bytes = ? WHERE id = 1').run(t.users, t.messages, t.bytes);
      return users;
    })();
    this.scheduleDrop();
    if (next) {
      // The restored documents are queued (see stageAll): the indexer starts on them at once.
      this.queuedRows = Math.max(this.queuedRows, INDEX_ROWS);
      this.scheduleIndex();
    }
    return before;
  }

  private dropping: Promise<void> | null = null;
  private closing = false;

  /** Starts emptying the old tables in the background unless that already runs. */
  private scheduleDrop(): void {
    if (this.dropping || this.inMemory) return;
    this.dropping = this.dropOld()
      // A failure (disk full, say) leaves the rest for the next clear, forget or open, which drop them too.
      .catch(() => undefined)
      .finally(() => {
        this.dropping = null;
      });
  }

  /**
   * Empties the old tables a few thousand rows per transaction, a turn of the event loop between, and
   * then drops them: one DROP TABLE of a large table frees every page in one transaction (at 1M users,
   * as long as the DELETE of the whole store it replaces).
   */
  private async dropOld(): Promise<void> {
    let scale = DROP_FIRST_SCALE;
    let last: string | undefined;
    for (;;) {
      // A pause as long as a chunk between chunks: writes keep at least about half the event loop
      // (with setImmediate alone, appends during a 1M-user drop fell to 1/5 of the rate after it).
      await new Promise((r) => setTimeout(r, DROP_TURN_MS));
      if (this.closing || !this.db.open) return;
      const name = generationTables(this.db, 'old')[0];
      if (name === undefined) return;
      // Each table's rows cost differently: its first chunk starts small again and grows.
      if (name !== last) scale = DROP_FIRST_SCALE;
      last = name;
      scale = this.chunk(scale, () => this.dropChunk(name, scale));
    }
  }

  /**
   * Runs one chunk of background work (an old table's drop, a restore's build) as its own transaction
   * and returns the next chunk's scale, sized so a chunk takes ~DROP_TURN_MS: a write waits at most
   * about that. The WAL is not fsynced for it: a crash that loses chunks leaves old or half-built
   * tables, which open drops anyway, and the next commit of a write fsyncs these frames with its own.
   */
  private chunk(scale: number, fn: () => void): number {
    const t0 = performance.now();
    this.lightCommit(() => this.db.transaction(fn)());
    return nextChunkScale(scale, performance.now() - t0);
  }

  /**
   * Runs `fn` (one transaction of background work) with the WAL not fsynced at its commit: see
   * {@link chunk} for why a lost chunk is harmless.
   */
  private lightCommit(fn: () => void): void {
    this.db.pragma('synchronous = NORMAL');
    try {
      fn();
    } finally {
      this.db.pragma('synchronous = FULL');
    }
  }

  /** Deletes one chunk of `name`'s rows (`scale` times the base size), or drops it when it is empty. */
  private dropChunk(name: string, scale = 1): void {
    const kind = GENERATION.exec(name)?.[1];
    const del = (table: string, key: string, n: number): number =>
      this.db.prepare(`DELETE FROM ${table} WHERE ${key} IN (SELECT ${key} FROM ${table} LIMIT ${Math.max(1, Math.round(n * scale))})`).run().changes;
    let left = 0;
    if (kind === 'users') left = del(name, 'user_id', DROP_USERS);
    else if (kind === 'search_docs') left = del(name, 'id', DROP_ROWS);
    else if (kind === 'search_pending') left = del(name, 'seq', DROP_ROWS);
    else if (kind === 'search_fts') {
      // The index's rows live in its shadow tables; SQLite lets them be written only outside defensive mode.
      this.db.unsafeMode(true);
      try {
        left = del(`${name}_data`, 'rowid', DROP_USERS) + del(`${name}_docsize`, 'rowid', DROP_ROWS);
      } finally {
        this.db.unsafeMode(false);
      }
    }
    if (left === 0) this.db.exec(`DROP TABLE ${name}`);
  }

  /** Drops every old table now: a forget must not leave its users' rows in one (see forget). */
  private dropOldNow(): void {
    this.db.transaction(() => {
      for (const name of generationTables(this.db, 'old')) this.db.exec(`DROP TABLE ${name}`);
    })();
  }

  /** Empties the store and moves `table` (and its search documents) in, in one transaction. */
  private swapIn(table: string): number {
    return this.db.transaction(() => {
      this.truncate();
      // Staging rowids follow history order per user, so they serve as document ids as they are.
      this.db.exec(`INSERT INTO main.search_docs (id, user_id, kind) SELECT rowid, user_id, kind FROM ${table}_docs ORDER BY rowid`);
      bulkIndex(this.db, () => this.db.exec(`INSERT INTO main.search_fts (rowid, text) SELECT rowid, text FROM ${table}_docs ORDER BY rowid`));
      // A user repeated in the stream: the last record wins, as in putAll and stageAll (a plain INSERT
      // failed the whole restore on the primary key). The totals triggers count each user once.
      this.db.exec(
        `INSERT INTO main.users (${USER_COLUMNS}) SELECT ${USER_COLUMNS} FROM ${table} WHERE true ORDER BY rowid
         ON CONFLICT(user_id) DO UPDATE SET data = excluded.data, name = excluded.name, product = excluded.product,
           created_at = excluded.created_at, updated_at = excluded.updated_at, messages = excluded.messages, search_text = excluded.search_text`,
      );
      return this.stmts.totals.get()?.users ?? 0;
    })();
  }

  /**
   * Stages the rows, then upserts them all in one transaction, each with its search documents: a kill
   * before the commit leaves the store as it was.
   */
  private async putAll(records: AsyncIterable<MemoryRecord>): Promise<number> {
    const { table, read } = await this.stage(records, false);
    try {
      // Read in chunks: better-sqlite3 allows no other statement on the connection while an iterator is open.
      const chunk = this.db.prepare<[number], { rowid: number; data: string }>(`SELECT rowid, data FROM ${table} WHERE rowid > ? ORDER BY rowid LIMIT ${SCAN_BATCH}`);
      this.db.transaction(() => {
        for (let after = 0; ; ) {
          const rows = chunk.all(after);
          if (rows.length === 0) break;
          this.writeRecords(rows.map((r) => JSON.parse(r.data) as MemoryRecord));
          after = rows[rows.length - 1]?.rowid ?? after;
        }
      })();
      return read;
    } finally {
      this.dropStaged(table);
    }
  }

  /** See {@link WAL_WATCH_MS}. */
  private walWorker: Checkpointer | null = null;
  private walWatch: NodeJS.Timeout | null = null;
  /** The WAL's mtime when the last checkpoint was asked for (-1: ask at the next look). */
  // Stryker disable next-line UnaryOperator: equivalent; no WAL's mtime is 1 ms after the epoch either.
  private walWritten = -1;

  private watchWal(): void {
    // Stryker disable next-line ConditionalExpression: equivalent as `false`; an in-memory stand-in has no WAL file, so every look returns at the stat (its `true` twin is killed).
    if (this.inMemory) return;
    this.walWatch = setInterval(() => {
      // Stryker disable next-line ConditionalExpression,LogicalOperator: equivalent as `false` or `&&`; a checkpoint asked for while one runs is answered by the running one, and a closed store's watch is cleared (the `true` twin is killed).
      if (this.walWorker?.busy || !this.db.open) return;
      let st;
      try {
        st = statSync(`${this.file}-wal`);
      } catch {
        return; // No WAL (yet, or after close): nothing to copy.
      }
      // Stryker disable next-line EqualityOperator,ConditionalExpression: equivalent as `<=` (a WAL of exactly 4,096,000 bytes) or the mtime test `false` (a checkpoint with nothing new copies nothing); the other mutants here are killed.
      if (st.size < WAL_CHECKPOINT_BYTES || st.mtimeMs === this.walWritten) return;
      this.walWritten = st.mtimeMs;
      void this.checkpointAside();
    }, WAL_WATCH_MS);
    // A process with nothing else to do may exit: what is in the WAL is committed, and the next open
    // (or this close) checkpoints it.
    this.walWatch.unref();
  }

  /** A checkpoint in the worker now, starting it: for tests that count the file's open descriptors. @internal */
  async checkpointNow(): Promise<void> {
    await this.checkpointAside();
  }

  /**
   * A PASSIVE checkpoint in the worker, started at the first one. A worker that failed is replaced at
   * the next call, and this one's checkpoint done here instead; a failure here (a full disk) leaves
   * the frames in the WAL for the next.
   */
  private async checkpointAside(): Promise<void> {
    if (this.inMemory || this.closing || !this.db.open) return;
    this.walWorker ??= new Checkpointer(this.file);
    const worker = this.walWorker;
    try {
      await worker.checkpoint();
    } catch {
      // Stryker disable next-line ConditionalExpression: equivalent as `true`; only another call's failure can have replaced the worker, and then the next call starts one anyway (the `false` twin is killed).
      if (this.walWorker === worker) this.walWorker = null;
      void worker.close();
      try {
        // Stryker disable next-line ConditionalExpression,LogicalOperator: equivalent as `true` or `||`; on a closed connection the pragma throws and is caught below, and close checkpoints anyway (the `false` twin is killed).
        if (this.db.open && !this.closing) this.db.pragma('wal_checkpoint(PASSIVE)');
      } catch {
        // Kept for the next checkpoint.
      }
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    // Stryker disable next-line ConditionalExpression: equivalent; clearInterval(null) does nothing, and a watch left running after close returns at `!this.db.open` (unref'd: it keeps no process alive).
    if (this.walWatch) clearInterval(this.walWatch);
    this.walWatch = null;
    await this.walWorker?.close();
    this.walWorker = null;
    if (this.queue.length > 0) this.flush();
    if (this.indexTimer) clearTimeout(this.indexTimer);
    this.indexTimer = null;
    if (this.db.open && !this.db.readonly) {
      try {
        // What is left is the last ~INDEX_DELAY_MS of writes: applied now, so a short-lived process
        // (a CLI command) does not leave the queue to grow.
        if (this.stmts.hasPending.get() === 1) this.db.transaction(() => this.applyAllPending())();
      } catch {
        // The queue is durable: the next open applies it.
      }
    }
    this.searchReader?.close();
    this.searchReader = null;
    this.searcher = null;
    if (this.db.open) {
      try {
        if (!this.db.readonly && !this.inMemory) this.db.pragma('wal_checkpoint(TRUNCATE)');
      } catch {
        // A full disk fails the checkpoint; the WAL keeps every commit and the next open replays it.
      }
      this.db.close();
    }
  }

}

/**
 * The scale of the next chunk of background work after one of `scale` took `ms` (see
 * SqliteDriver.chunk): halved after a chunk over twice its turn (down to 1/64), doubled after one
 * under half of it (up to 4), kept otherwise. A function of its own so that tests can give it times.
 * @internal
 */
export function nextChunkScale(scale: number, ms: number): number {
  if (ms > 2 * DROP_TURN_MS) return Math.max(scale / 2, 1 / 64);
  if (ms < DROP_TURN_MS / 2) return Math.min(scale * 2, 4);
  return scale;
}
