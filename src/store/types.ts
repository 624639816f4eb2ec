import { stringifyJson } from '../json-safe.js';
import type { ContextInput, HistoryInput, MemoryRecord, RecordInput, RecordPatch } from '../record.js';

/** One row of the user listing. */
export interface UserSummary {
  user_id: string;
  name: string | null;
  product: string | null;
  created_at: string;
  updated_at: string;
  messages: number;
}

/** A page of a cursor-paginated listing; `next` is the cursor of the following page, or null at the end. */
export interface Page<T> {
  items: T[];
  next: string | null;
}

export interface StoreStats {
  users: number;
  messages: number;
  /** Bytes of serialised records (the size a backup will roughly have). */
  bytes: number;
  /** Newest `updated_at`, or null when empty. */
  lastUpdate: string | null;
}

export interface ListOptions {
  /** Cursor from a previous page: the last user id seen. */
  cursor?: string | null;
  /** Page size, 1..1000; default 100. */
  limit?: number;
}

export interface ScanOptions {
  /** Start after this user id. */
  after?: string;
}

export type StoreKind = 'sqlite' | 'json' | 'postgres';

/** Which users an exclusive section covers: a set of ids, or the whole store. */
export type ExclusiveScope = { ids: string[] } | 'all';

/**
 * What code inside an exclusive section may do. These calls bypass the section's own lock;
 * they are the only paths that delete.
 */
export interface ExclusiveContext {
  getMany(ids: string[]): Promise<MemoryRecord[]>;
  /** All records in user_id order, streaming. */
  scan(options?: ScanOptions): AsyncIterable<MemoryRecord>;
  /** As `scan`, as `[user_id, JSON text]` pairs: what backups write. */
  scanJson(options?: ScanOptions): AsyncIterable<[string, string]>;
  count(): Promise<number>;
  /** Optional: whether the store holds no user, without counting them (PostgreSQL counts by reading every row). */
  isEmpty?(): Promise<boolean>;
  /** Deletes in one transaction; returns how many existed. */
  delete(ids: string[]): Promise<number>;
  /** Deletes everything in one transaction; returns how many existed. */
  clear(): Promise<number>;
  /**
   * Optional: deletes as `delete` does and leaves no trace of the rows in the store's files (a forget).
   * Without it `delete` is enough: the JSON store rewrites its file whole, PostgreSQL keeps its own files.
   */
  forget?(ids: string[]): Promise<number>;
  /** Optional: upserts `records` and deletes `ids` in one transaction (a merge). Without it: `putMany`, then `delete`. */
  putAndDelete?(records: MemoryRecord[], ids: string[]): Promise<void>;
  /** Upserts in one transaction. */
  putMany(records: MemoryRecord[]): Promise<void>;
  /**
   * Upserts a stream of records (later ones win for a repeated id) all-or-nothing, even across a
   * crash: one transaction or one atomic file write. Returns how many records it read.
   */
  putAll(records: AsyncIterable<MemoryRecord>): Promise<number>;
  /** Makes the store hold exactly `records` (streamed), atomically. Returns how many were written. */
  replaceAll(records: AsyncIterable<MemoryRecord>): Promise<number>;
  /** Optional: `replaceAll` of rows staged before the section ({@link Store.stage}); only the swap runs here. */
  replaceStaged?(staged: StagedRecords): Promise<number>;
}

/** Records copied into the store's own scratch space outside any section, for a later `replaceStaged`. */
export interface StagedRecords {
  /** How many records were read. */
  readonly read: number;
  /** Drops the scratch copy (after the swap, or when it is not used). */
  release(): Promise<void>;
}

/** An exclusive section as a driver gives it: `scan` is optional there, as on {@link StoreDriver}. */
export type DriverContext = Omit<ExclusiveContext, 'scan'> & Partial<Pick<ExclusiveContext, 'scan'>>;

/**
 * The thin interface each backend implements (cf. unstorage drivers). Validation, merge rules
 * and in-process locking live in the core {@link Store}; drivers only persist.
 */
export interface StoreDriver {
  readonly kind: StoreKind;
  /** The store URL with any password removed. */
  readonly url: string;
  get(id: string): Promise<MemoryRecord | null>;
  /**
   * Atomic read-modify-write of one record, durable when the promise resolves.
   * `fn` is pure, and may be called again with a fresh `current` (a driver that batches writes
   * retries them one by one when their shared transaction fails); if it throws, nothing is written
   * and the error propagates.
   */
  update(id: string, fn: (current: MemoryRecord | null) => MemoryRecord): Promise<MemoryRecord>;
  count(): Promise<number>;
  /** At most `limit` summaries of the users after `cursor` (all when null), in user_id order. The core pages. */
  list(options: { cursor: string | null; limit: number }): Promise<UserSummary[]>;
  /** All records as `[user_id, JSON.stringify(record)]` pairs, in user_id order, streaming: what backups write. */
  scanJson(options?: ScanOptions): AsyncIterable<[string, string]>;
  /**
   * Optional: copies `records` into scratch space (SQLite: a temp table) without taking any lock, so a
   * whole-store replace later holds its section only for the swap (`ExclusiveContext.replaceStaged`).
   */
  stageAll?(records: AsyncIterable<MemoryRecord>): Promise<StagedRecords>;
  /**
   * Optional: a tracker of the users changed from now on by every process writing the store (a shared
   * backend), read from the store itself; its `refresh` must be awaited before `ids` is read. Without
   * it the core tracks this process's writes, and a store kind that other processes write gets none.
   */
  trackChanges?(): WriteTracker;
  /**
   * Optional fast path for a backend that holds parsed records (the JSON file store): without it the
   * core parses `scanJson`.
   */
  scan?(options?: ScanOptions): AsyncIterable<MemoryRecord>;
  stats(): Promise<StoreStats>;
  /**
   * Users matching `query` (trimmed, non-empty, as the caller typed it), in user_id order, at most
   * `limit`. See {@link Store.search} for what matches.
   */
  search(query: string, limit: number): Promise<UserSummary[]>;
  /**
   * Runs `fn` while the backend-level lock for `scope` is held (a cluster-wide lock for
   * shared backends). Single-writer backends rely on the core's in-process lock alone.
   */
  exclusive<T>(scope: ExclusiveScope, fn: (ctx: DriverContext) => Promise<T>): Promise<T>;
  /**
   * Whether this process leads singleton jobs such as scheduled backups. Shared backends elect one
   * holder of a cluster-wide lock; without this method the single owning process always leads.
   */
  leader?(): Promise<boolean>;
  /** Releases files, connections and locks. Pending writes are flushed first. */
  close(): Promise<void>;
}

/** The store API used by the daemon, the CLI and the guarded operations. */
export interface Store {
  readonly kind: StoreKind;
  readonly url: string;
  readonly historyCap: number;
  get(id: string): Promise<MemoryRecord | null>;
  /** Replaces the record (created if missing). Unknown fields are kept. */
  put(id: string, record: RecordInput): Promise<MemoryRecord>;
  /** Top-level merge; `flags` and `slots` merge key by key. Creates the record if missing. */
  patch(id: string, patch: RecordPatch): Promise<MemoryRecord>;
  /** Adds a history entry, applies the cap, sets `last_answer` for user messages, touches `updated_at`. */
  appendHistory(id: string, entry: HistoryInput): Promise<MemoryRecord>;
  /**
   * Appends entries in order, in one write. An entry whose `id` the user's history already holds is
   * skipped, so a retried request never duplicates a turn.
   */
  appendHistoryMany(id: string, entries: HistoryInput[]): Promise<MemoryRecord>;
  /** The record, created (with a session token, as the seed did) when the user is unknown. */
  ensure(id: string): Promise<MemoryRecord>;
  /** A new session token; creates the user when unknown. */
  refreshSessionToken(id: string): Promise<MemoryRecord>;
  /** Adds a distinct `summary_context` entry (newest `maxItems` kept) and sets product/serials, atomically. */
  addContext(id: string, input: ContextInput): Promise<MemoryRecord>;
  /** Sets several slots verbatim (null included). */
  fillSlots(id: string, values: Record<string, unknown>): Promise<MemoryRecord>;
  setFlag(id: string, key: string, value: unknown): Promise<MemoryRecord>;
  clearFlag(id: string, key: string): Promise<MemoryRecord>;
  setSlot(id: string, key: string, value: unknown): Promise<MemoryRecord>;
  /** Deletes users. Only the guarded operations in `ops/` call this: it takes no backup. */
  delete(ids: string[]): Promise<number>;
  /** Deletes everything. Only the guarded operations in `ops/` call this: it takes no backup. */
  clear(): Promise<number>;
  count(): Promise<number>;
  list(options?: ListOptions): Promise<Page<UserSummary>>;
  /** All records in user_id (UTF-8 byte) order, in constant memory. */
  scan(options?: ScanOptions): AsyncIterable<MemoryRecord>;
  /** As `scan`, as `[user_id, JSON text of the record]` pairs (what backups write). */
  scanJson(options?: ScanOptions): AsyncIterable<[string, string]>;
  stats(): Promise<StoreStats>;
  /**
   * Finds users, in user_id order. A query of 3 or more characters matches, case-insensitively and
   * literally, anywhere in the user id, name, address, product, summary_context or history text. A
   * shorter query matches user ids that start with it (case-sensitive).
   */
  search(query: string, options?: { limit?: number }): Promise<UserSummary[]>;
  /**
   * Runs `fn` with writes to `scope` held back (in this process, and across processes where the
   * backend is shared). Writes to other users continue. Used to make "back up, then delete" atomic.
   */
  exclusive<T>(scope: ExclusiveScope, fn: (ctx: ExclusiveContext) => Promise<T>): Promise<T>;
  /** True when this process should run singleton jobs (scheduled backups); see {@link StoreDriver.leader}. */
  isLeader(): Promise<boolean>;
  /**
   * Starts recording which users change, for a copy taken while writes go on (the first phase of a
   * clear's backup): this process's writes, or on a shared backend every process's, read from the
   * database (await `refresh()` first). Null where neither is possible, so that only the exclusive
   * section's own copy is exact.
   */
  trackWrites(): WriteTracker | null;
  /** Stages records for a later `ctx.replaceStaged` outside any section; null where the driver cannot. */
  stage(records: AsyncIterable<MemoryRecord>): Promise<StagedRecords | null>;
  close(): Promise<void>;
}

/**
 * The users changed since {@link Store.trackWrites} was called: written, deleted or put in an exclusive
 * section. `overflow` means the set is not complete (the whole store was cleared or replaced, or too
 * many users changed to keep): the caller must then copy the whole store again.
 */
export interface WriteTracker {
  readonly ids: ReadonlySet<string>;
  readonly overflow: boolean;
  /**
   * Present where the changes are read from a shared store (PostgreSQL): brings `ids` and `overflow` up
   * to date with every process's commits. The first call waits for the tracker's start mark, so a copy
   * that relies on the tracker begins after it. Without it `ids` is always current (in-process).
   */
  refresh?(): Promise<void>;
  stop(): void;
}

/** Rows of a scan as stored bytes: `data[i]` is the UTF-8 JSON text of user `ids[i]`; `bytes` sums them. */
export interface JsonByteBatch {
  ids: string[];
  data: Buffer[];
  bytes: number;
}

/**
 * What a driver's `scanJson` result may also offer: the same rows, in the same order and from the same
 * snapshot, in batches of UTF-8 bytes. A full backup writes these as they are, without decoding every
 * record into a string and encoding it back (BENCHMARKS.md, "Full backup at the disk's rate"). A scan
 * is iterated one way or the other, once.
 */
export interface JsonByteScan {
  jsonBatches(): AsyncIterable<JsonByteBatch>;
}

/** Whether a `scanJson` result offers its rows as byte batches too. */
export function hasJsonBatches<T extends object>(scan: T): scan is T & JsonByteScan {
  return typeof (scan as Partial<JsonByteScan>).jsonBatches === 'function';
}

/** `scanJson` for a driver that holds parsed records. */
export async function* stringifyScan(records: AsyncIterable<MemoryRecord>): AsyncGenerator<[string, string]> {
  for await (const r of records) yield [r.user_id, stringifyJson(r)];
}

/** `scan` derived from `scanJson`: the stored text is `JSON.stringify` of a record already validated when written. */
export async function* parseScan(pairs: AsyncIterable<[string, string]>): AsyncGenerator<MemoryRecord> {
  for await (const [, json] of pairs) yield JSON.parse(json) as MemoryRecord;
}

export function summarize(record: MemoryRecord): UserSummary {
  return {
    user_id: record.user_id,
    name: record.name,
    product: record.product,
    created_at: record.created_at,
    updated_at: record.updated_at,
    messages: record.history.length,
  };
}
