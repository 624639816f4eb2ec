import Database from 'better-sqlite3';
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { StoreError } from '../errors.js';
import { ensurePrivateDir } from '../fs-util.js';
import type { MemoryRecord } from '../record.js';
import { likeEscape, searchText } from './search-text.js';
import type { ExclusiveContext, ExclusiveScope, Page, ScanOptions, StoreDriver, StoreStats, UserSummary } from './types.js';

type Row = { data: string };
type SummaryRow = { user_id: string; name: string | null; product: string | null; created_at: string; updated_at: string; messages: number };

interface PendingUpdate {
  id: string;
  fn: (current: MemoryRecord | null) => MemoryRecord;
  resolve: (r: MemoryRecord) => void;
  reject: (e: unknown) => void;
}

const SCHEMA_VERSION = 2;
const DELETE_TRIGGER = `CREATE TRIGGER users_totals_delete AFTER DELETE ON users BEGIN
  UPDATE totals SET users = users - 1, messages = messages - OLD.messages, bytes = bytes - length(CAST(OLD.data AS BLOB)) WHERE id = 1;
END`;
const SCAN_BATCH = 500;
const SEARCH_CHUNK = 1000;

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
  private readonly stmts;

  private constructor(
    readonly file: string,
    db: Database.Database,
    /** An empty in-memory stand-in for a database that does not exist yet (read-only opens). */
    private readonly inMemory = false,
  ) {
    this.url = `sqlite:${file}`;
    this.db = db;
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
      chunkEnd: db.prepare<[string, number], { user_id: string }>('SELECT user_id FROM users WHERE user_id > ? ORDER BY user_id LIMIT 1 OFFSET ?'),
      // Two statements, so that both bounds of a chunk are plain range conditions on the key.
      searchChunk: db.prepare<[string, string, string, number], SummaryRow>(
        `SELECT user_id, name, product, created_at, updated_at, messages FROM users
         WHERE user_id > ? AND user_id <= ? AND search_text LIKE ? ESCAPE '\\' ORDER BY user_id LIMIT ?`,
      ),
      searchTail: db.prepare<[string, string, number], SummaryRow>(
        `SELECT user_id, name, product, created_at, updated_at, messages FROM users
         WHERE user_id > ? AND search_text LIKE ? ESCAPE '\\' ORDER BY user_id LIMIT ?`,
      ),
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
  static async open(file: string, options: { readOnly?: boolean } = {}): Promise<SqliteDriver> {
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
      db.pragma('busy_timeout = 10000');
      migrate(db);
    } catch (err) {
      throw new StoreError('E_STORE_OPEN', `cannot open SQLite store ${abs}: ${(err as Error).message}`, { cause: err });
    }
    return new SqliteDriver(abs, db);
  }

  private static openReadOnly(abs: string): SqliteDriver {
    try {
      if (!existsSync(abs)) {
        const db = new Database(':memory:');
        migrate(db);
        return new SqliteDriver(abs, db, true);
      }
      const db = new Database(abs, { readonly: true, fileMustExist: true });
      db.pragma('busy_timeout = 10000');
      const version = db.pragma('user_version', { simple: true }) as number;
      if (version !== SCHEMA_VERSION) throw new Error(`schema version ${version}, expected ${SCHEMA_VERSION}`);
      return new SqliteDriver(abs, db);
    } catch (err) {
      throw new StoreError('E_STORE_OPEN', `cannot open SQLite store ${abs} read-only: ${(err as Error).message}`, { cause: err });
    }
  }

  private row(record: MemoryRecord): Record<string, unknown> {
    return {
      user_id: record.user_id,
      data: JSON.stringify(record),
      name: record.name,
      product: record.product,
      created_at: record.created_at,
      updated_at: record.updated_at,
      messages: record.history.length,
      search_text: searchText(record),
    };
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
        for (const op of batch) {
          let next: MemoryRecord;
          try {
            next = op.fn(this.readRecord(op.id));
          } catch (error) {
            results.push({ ok: false, error });
            continue;
          }
          this.stmts.upsert.run(this.row(next));
          results.push({ ok: true, value: next });
        }
      })();
    } catch (err) {
      const error = new StoreError('E_STORE_WRITE', `SQLite write failed: ${(err as Error).message}`, { cause: err });
      for (const op of batch) op.reject(error);
      return;
    }
    batch.forEach((op, i) => {
      const r = results[i];
      if (r?.ok) op.resolve(r.value);
      else op.reject(r ? r.error : new StoreError('E_STORE_WRITE', 'lost update result'));
    });
  }

  async count(): Promise<number> {
    return this.stmts.totals.get()?.users ?? 0;
  }

  async list(options: { cursor: string | null; limit: number }): Promise<Page<UserSummary>> {
    const rows = this.stmts.list.all(options.cursor ?? '', options.limit + 1);
    const items = rows.slice(0, options.limit);
    const last = items[items.length - 1];
    return { items, next: rows.length > options.limit && last ? last.user_id : null };
  }

  /**
   * Streams from a dedicated read connection inside one read transaction: a consistent snapshot
   * in constant memory while the main connection keeps committing (WAL).
   */
  async *scan(options: ScanOptions = {}): AsyncGenerator<MemoryRecord> {
    for await (const [, json] of this.scanJson(options)) yield JSON.parse(json) as MemoryRecord;
  }

  /**
   * Streams from a dedicated read connection inside one read transaction: a consistent snapshot
   * in constant memory while the main connection keeps committing (WAL). The stored text is
   * `JSON.stringify(record)`, so backups take it as is.
   */
  async *scanJson(options: ScanOptions = {}): AsyncGenerator<[string, string]> {
    if (this.inMemory) return;
    const reader = new Database(this.file, { readonly: true });
    try {
      reader.pragma('busy_timeout = 10000');
      const stmt = reader.prepare<[string], Row & { user_id: string }>('SELECT user_id, data FROM users WHERE user_id > ? ORDER BY user_id');
      reader.prepare('BEGIN').run();
      let n = 0;
      for (const row of stmt.iterate(options.after ?? '')) {
        yield [row.user_id, row.data];
        // Yield to the event loop now and then so a long scan does not starve the hot path.
        if (++n % SCAN_BATCH === 0) await new Promise((r) => setImmediate(r));
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

  /**
   * A full scan, taken in chunks of {@link SEARCH_CHUNK} users with a turn of the event loop between
   * them: better-sqlite3 is synchronous, and one statement over 1M rows held chat writes for ~1.7 s.
   */
  async search(query: string, limit: number): Promise<UserSummary[]> {
    const pattern = `%${likeEscape(query)}%`;
    const out: UserSummary[] = [];
    let after = '';
    while (out.length < limit) {
      const end = this.stmts.chunkEnd.get(after, SEARCH_CHUNK - 1)?.user_id ?? null;
      if (end === null) {
        out.push(...this.stmts.searchTail.all(after, pattern, limit - out.length));
        break;
      }
      out.push(...this.stmts.searchChunk.all(after, end, pattern, limit - out.length));
      after = end;
      await new Promise((r) => setImmediate(r));
    }
    return out;
  }

  async exclusive<T>(_scope: ExclusiveScope, fn: (ctx: ExclusiveContext) => Promise<T>): Promise<T> {
    // One process owns a SQLite store (the daemon, or the CLI when no daemon runs); the core's
    // in-process gate is the whole lock. Each mutation below is still a single transaction.
    const ctx: ExclusiveContext = {
      getMany: async (ids) => ids.map((id) => this.readRecord(id)).filter((r): r is MemoryRecord => r !== null),
      scan: (options) => this.scan(options),
      scanJson: (options) => this.scanJson(options),
      count: () => this.count(),
      delete: async (ids) => this.db.transaction(() => ids.reduce((n, id) => n + this.stmts.del.run(id).changes, 0))(),
      clear: async () => this.db.transaction(() => this.truncate())(),
      forget: (ids) => this.forget(ids),
      putAndDelete: async (records, ids) => {
        this.db.transaction(() => {
          for (const r of records) this.stmts.upsert.run(this.row(r));
          for (const id of ids) this.stmts.del.run(id);
        })();
      },
      putMany: async (records) => {
        this.db.transaction(() => {
          for (const r of records) this.stmts.upsert.run(this.row(r));
        })();
      },
      replaceAll: (records) => this.replaceAll(records),
    };
    return fn(ctx);
  }

  /**
   * Empties the table inside the caller's transaction. SQLite deletes a table in one go only when it
   * has no delete trigger; row by row took ~22 s at 1M users, so the trigger steps aside and the
   * totals are zeroed by hand.
   */
  private truncate(): number {
    const users = this.stmts.totals.get()?.users ?? 0;
    this.db.exec(`DROP TRIGGER users_totals_delete; DELETE FROM main.users; UPDATE totals SET users = 0, messages = 0, bytes = 0 WHERE id = 1; ${DELETE_TRIGGER};`);
    return users;
  }

  /**
   * Deletes with secure_delete (freed bytes zeroed), then VACUUM rebuilds every page, since older
   * versions of the rows, freed before, still sit in free space; the TRUNCATE checkpoint empties the
   * WAL, which held them too. Retried while a reader (a backup's scan) keeps the WAL from emptying.
   */
  private async forget(ids: string[]): Promise<number> {
    this.db.pragma('secure_delete = ON');
    try {
      const n = this.db.transaction(() => ids.reduce((k, id) => k + this.stmts.del.run(id).changes, 0))();
      this.db.exec('VACUUM');
      for (let attempt = 0; ; attempt++) {
        const [r] = this.db.pragma('wal_checkpoint(TRUNCATE)') as { busy: number }[];
        if (r?.busy === 0) break;
        if (attempt >= 100) throw new StoreError('E_STORE_WRITE', `cannot empty the WAL of ${this.file}: a reader holds it`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      return n;
    } finally {
      this.db.pragma('secure_delete = OFF');
    }
  }

  /** Stages rows in batches (no transaction held across awaits), then swaps them in one transaction. */
  private async replaceAll(records: AsyncIterable<MemoryRecord>): Promise<number> {
    this.db.exec('DROP TABLE IF EXISTS temp.staging; CREATE TEMP TABLE staging AS SELECT * FROM main.users WHERE 0');
    const insert = this.db.prepare(
      `INSERT OR REPLACE INTO temp.staging (user_id, data, name, product, created_at, updated_at, messages, search_text)
       VALUES (@user_id, @data, @name, @product, @created_at, @updated_at, @messages, @search_text)`,
    );
    let batch: MemoryRecord[] = [];
    const flush = this.db.transaction((rows: MemoryRecord[]) => {
      for (const r of rows) insert.run(this.row(r));
    });
    for await (const r of records) {
      batch.push(r);
      if (batch.length >= SCAN_BATCH) {
        flush(batch);
        batch = [];
      }
    }
    flush(batch);
    const n = this.db.transaction(() => {
      this.truncate();
      return this.db.prepare('INSERT INTO main.users SELECT * FROM temp.staging').run().changes;
    })();
    this.db.exec('DROP TABLE temp.staging');
    return n;
  }

  async close(): Promise<void> {
    if (this.queue.length > 0) this.flush();
    if (this.db.open) {
      if (!this.db.readonly && !this.inMemory) this.db.pragma('wal_checkpoint(TRUNCATE)');
      this.db.close();
    }
  }

}

function migrate(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new StoreError('E_STORE_VERSION', `store schema version ${version} is newer than this chatmem supports (${SCHEMA_VERSION})`);
  }
  if (version < 1) {
    db.exec(`
      CREATE TABLE IF NOT EXISTS users (
        user_id TEXT PRIMARY KEY NOT NULL,
        data TEXT NOT NULL,
        name TEXT,
        product TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        messages INTEGER NOT NULL,
        search_text TEXT NOT NULL
      ) WITHOUT ROWID;
      PRAGMA user_version = 1;
    `);
  }
  if (version < 2) {
    // Running totals and an index on updated_at make count() and stats() O(1) / O(log n).
    db.transaction(() =>
      db.exec(`
        CREATE TABLE totals (id INTEGER PRIMARY KEY CHECK (id = 1), users INTEGER NOT NULL, messages INTEGER NOT NULL, bytes INTEGER NOT NULL);
        INSERT INTO totals SELECT 1, COUNT(*), COALESCE(SUM(messages), 0), COALESCE(SUM(length(CAST(data AS BLOB))), 0) FROM users;
        CREATE INDEX users_updated_at ON users (updated_at);
        CREATE TRIGGER users_totals_insert AFTER INSERT ON users BEGIN
          UPDATE totals SET users = users + 1, messages = messages + NEW.messages, bytes = bytes + length(CAST(NEW.data AS BLOB)) WHERE id = 1;
        END;
        ${DELETE_TRIGGER};
        CREATE TRIGGER users_totals_update AFTER UPDATE ON users BEGIN
          UPDATE totals SET messages = messages - OLD.messages + NEW.messages,
            bytes = bytes - length(CAST(OLD.data AS BLOB)) + length(CAST(NEW.data AS BLOB)) WHERE id = 1;
        END;
        PRAGMA user_version = 2;
      `),
    )();
  }
}
