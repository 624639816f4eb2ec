import {
  DEFAULT_HISTORY_CAP,
  applyAppendMany,
  applyContext,
  applyFillSlots,
  newSeedRecord,
  newSessionToken,
  applyClearFlag,
  applyPatch,
  applySetKey,
  nowIso,
  parseHistoryInput,
  parseRecord,
  validateUserId,
  type ContextInput,
  type HistoryInput,
  type MemoryRecord,
  type RecordInput,
  type RecordPatch,
} from '../record.js';
import { RecordError, StoreError } from '../errors.js';
import { WriteGate } from './gate.js';
import { parseScan } from './types.js';
import type {
  ExclusiveContext,
  ExclusiveScope,
  ListOptions,
  Page,
  ScanOptions,
  Store,
  StoreDriver,
  StoreStats,
  StagedRecords,
  UserSummary,
  WriteTracker,
} from './types.js';

/** Beyond this many changed users a tracker gives up (overflow) rather than hold an unbounded set. */
const TRACK_LIMIT = 500_000;

class Tracker implements WriteTracker {
  readonly ids = new Set<string>();
  overflow = false;
  constructor(private readonly trackers: Set<Tracker>) {
    trackers.add(this);
  }
  note(id: string): void {
    if (this.overflow) return;
    this.ids.add(id);
    if (this.ids.size > TRACK_LIMIT) this.giveUp();
  }
  giveUp(): void {
    this.overflow = true;
    this.ids.clear();
  }
  stop(): void {
    this.trackers.delete(this);
  }
}

export interface StoreOptions {
  /** History entries kept per user; default 50, as the seed. */
  historyCap?: number;
  /** Refuse every write (used by read-only CLI commands while another process owns the store). */
  readOnly?: boolean;
}

/** What a PUT of `record` makes of `current`: a replacement that keeps `created_at` unless given. */
export function applyPut(current: MemoryRecord | null, id: string, record: RecordInput): MemoryRecord {
  const now = nowIso();
  const input: Record<string, unknown> = { ...record };
  if (input.created_at === undefined) input.created_at = current?.created_at ?? now;
  if (input.updated_at === undefined) input.updated_at = now;
  return parseRecord(id, input, now);
}

/** The core: validation and merge rules from record.ts, in-process locking, over a thin driver. */
class CoreStore implements Store {
  readonly kind;
  readonly url;
  readonly historyCap: number;
  private readonly gate = new WriteGate();
  private closed = false;
  private readonly trackers = new Set<Tracker>();

  constructor(
    private readonly driver: StoreDriver,
    private readonly options: StoreOptions,
  ) {
    this.kind = driver.kind;
    this.url = driver.url;
    this.historyCap = options.historyCap ?? DEFAULT_HISTORY_CAP;
    if (!Number.isInteger(this.historyCap) || this.historyCap < 1) {
      throw new StoreError('E_STORE_CONFIG', `history cap must be a positive integer, got ${String(options.historyCap)}`);
    }
  }

  private checkWritable(): void {
    if (this.closed) throw new StoreError('E_STORE_CLOSED', 'the store is closed');
    if (this.options.readOnly) throw new StoreError('E_STORE_READONLY', `store ${this.url} is open read-only`);
  }

  // Every public method validates its user id once, before it comes here; the drivers rely on it.
  private async write(id: string, fn: (current: MemoryRecord | null) => MemoryRecord): Promise<MemoryRecord> {
    this.checkWritable();
    return this.gate.write(id, async () => {
      // Noted once the write has settled too: a tracker started while it was in flight must see it.
      this.noteWrite(id);
      try {
        return await this.driver.update(id, fn);
      } finally {
        this.noteWrite(id);
      }
    });
  }

  private noteWrite(id: string): void {
    for (const t of this.trackers) t.note(id);
  }

  private noteAll(): void {
    for (const t of this.trackers) t.giveUp();
  }

  async stage(records: AsyncIterable<MemoryRecord>): Promise<StagedRecords | null> {
    this.checkWritable();
    return this.driver.stageAll ? this.driver.stageAll(records) : null;
  }

  trackWrites(): WriteTracker | null {
    // A shared store tracks every process's writes itself (PostgreSQL: a version column and a log of deletes).
    if (this.driver.trackChanges) return this.driver.trackChanges();
    // Another process may write a shared PostgreSQL store: an in-process set would miss its changes.
    if (this.kind === 'postgres') return null;
    return new Tracker(this.trackers);
  }

  async get(id: string): Promise<MemoryRecord | null> {
    validateUserId(id);
    return this.driver.get(id);
  }

  async put(id: string, record: RecordInput): Promise<MemoryRecord> {
    validateUserId(id);
    // Validate before queueing so a bad body fails fast and never reaches the driver.
    parseRecord(id, record);
    return this.write(id, (current) => applyPut(current, id, record));
  }

  async patch(id: string, patch: RecordPatch): Promise<MemoryRecord> {
    applyPatch(null, validateUserId(id), patch);
    return this.write(id, (current) => applyPatch(current, id, patch));
  }

  async appendHistory(id: string, entry: HistoryInput): Promise<MemoryRecord> {
    return this.appendHistoryMany(id, [entry]);
  }

  async appendHistoryMany(id: string, entries: HistoryInput[]): Promise<MemoryRecord> {
    validateUserId(id);
    if (!Array.isArray(entries) || entries.length === 0) throw new RecordError('E_RECORD', 'give at least one history entry');
    const now = nowIso();
    const parsed = entries.map((e) => parseHistoryInput(e, now));
    return this.write(id, (current) => applyAppendMany(current, id, parsed, this.historyCap));
  }

  async ensure(id: string): Promise<MemoryRecord> {
    validateUserId(id);
    // Reads stay reads: only an unknown user costs a write.
    const existing = await this.driver.get(id);
    if (existing) return existing;
    const token = newSessionToken();
    return this.write(id, (current) => current ?? newSeedRecord(id, token));
  }

  async refreshSessionToken(id: string): Promise<MemoryRecord> {
    validateUserId(id);
    const token = newSessionToken();
    return this.write(id, (current) => ({ ...(current ?? newSeedRecord(id, token)), session_token: token, updated_at: nowIso() }));
  }

  async addContext(id: string, input: ContextInput): Promise<MemoryRecord> {
    applyContext(null, validateUserId(id), input);
    return this.write(id, (current) => applyContext(current, id, input));
  }

  async fillSlots(id: string, values: Record<string, unknown>): Promise<MemoryRecord> {
    applyFillSlots(null, validateUserId(id), values);
    return this.write(id, (current) => applyFillSlots(current, id, values));
  }

  async setFlag(id: string, key: string, value: unknown): Promise<MemoryRecord> {
    applySetKey(null, validateUserId(id), 'flags', key, value);
    return this.write(id, (current) => applySetKey(current, id, 'flags', key, value));
  }

  async clearFlag(id: string, key: string): Promise<MemoryRecord> {
    validateUserId(id);
    return this.write(id, (current) => applyClearFlag(current, id, key));
  }

  async setSlot(id: string, key: string, value: unknown): Promise<MemoryRecord> {
    applySetKey(null, validateUserId(id), 'slots', key, value);
    return this.write(id, (current) => applySetKey(current, id, 'slots', key, value));
  }

  async delete(ids: string[]): Promise<number> {
    ids.forEach(validateUserId);
    return this.section({ ids }, (ctx) => ctx.delete(ids));
  }

  async clear(): Promise<number> {
    return this.section('all', (ctx) => ctx.clear());
  }

  async count(): Promise<number> {
    return this.driver.count();
  }

  async list(options: ListOptions = {}): Promise<Page<UserSummary>> {
    const limit = options.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      throw new StoreError('E_STORE_ARG', `list limit must be an integer from 1 to 1000, got ${String(options.limit)}`);
    }
    // One row more than asked tells whether another page follows.
    const rows = await this.driver.list({ cursor: options.cursor ?? null, limit: limit + 1 });
    const items = rows.slice(0, limit);
    return { items, next: rows.length > limit ? (items[items.length - 1]?.user_id ?? null) : null };
  }

  scan(options?: ScanOptions): AsyncIterable<MemoryRecord> {
    return this.driver.scan ? this.driver.scan(options) : parseScan(this.driver.scanJson(options));
  }

  scanJson(options?: ScanOptions): AsyncIterable<[string, string]> {
    return this.driver.scanJson(options);
  }

  async stats(): Promise<StoreStats> {
    return this.driver.stats();
  }

  async search(query: string, options: { limit?: number } = {}): Promise<UserSummary[]> {
    const q = query.trim();
    if (q.length === 0) throw new StoreError('E_STORE_ARG', 'search query must not be empty');
    return this.driver.search(q, options.limit ?? 100);
  }

  async exclusive<T>(scope: ExclusiveScope, fn: (ctx: ExclusiveContext) => Promise<T>): Promise<T> {
    this.checkWritable();
    if (scope !== 'all') scope.ids.forEach(validateUserId);
    return this.section(scope, fn);
  }

  private async section<T>(scope: ExclusiveScope, fn: (ctx: ExclusiveContext) => Promise<T>): Promise<T> {
    this.checkWritable();
    // The sections' changes bypass write(): note them for the trackers running when they land (a tracker may
    // start while a section is open), before and after.
    const noted = <A extends unknown[], R>(f: (...a: A) => Promise<R>, note: (...a: A) => void) => async (...a: A): Promise<R> => {
      note(...a);
      try {
        return await f(...a);
      } finally {
        note(...a);
      }
    };
    return this.gate.exclusive(scope, () =>
      this.driver.exclusive(scope, (ctx) =>
        fn(
          // Object.create keeps a driver's prototype methods working.
          Object.assign(Object.create(ctx) as ExclusiveContext, {
            scan: ctx.scan ? ctx.scan.bind(ctx) : (options?: ScanOptions) => parseScan(ctx.scanJson(options)),
            delete: noted(ctx.delete.bind(ctx), (ids) => ids.forEach((id) => this.noteWrite(id))),
            putMany: noted(ctx.putMany.bind(ctx), (records) => records.forEach((r) => this.noteWrite(r.user_id))),
            clear: noted(ctx.clear.bind(ctx), () => this.noteAll()),
            replaceAll: noted(ctx.replaceAll.bind(ctx), (_records) => this.noteAll()),
            ...(ctx.replaceStaged ? { replaceStaged: noted(ctx.replaceStaged.bind(ctx), (_staged: StagedRecords) => this.noteAll()) } : {}),
            // A stream's ids are known only as it is read: a tracker running then gives up (imports are rare).
            putAll: noted(ctx.putAll.bind(ctx), (_records) => this.noteAll()),
            ...(ctx.putAndDelete
              ? { putAndDelete: noted(ctx.putAndDelete.bind(ctx), (records: MemoryRecord[], ids: string[]) => [...records.map((r) => r.user_id), ...ids].forEach((id) => this.noteWrite(id))) }
              : {}),
            ...(ctx.forget ? { forget: noted(ctx.forget.bind(ctx), (ids: string[]) => ids.forEach((id) => this.noteWrite(id))) } : {}),
          }),
        ),
      ),
    );
  }

  async isLeader(): Promise<boolean> {
    return this.driver.leader ? this.driver.leader() : true;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.driver.close();
  }
}

/** Wraps a driver into the full {@link Store}. */
export function createStore(driver: StoreDriver, options: StoreOptions = {}): Store {
  return new CoreStore(driver, options);
}
