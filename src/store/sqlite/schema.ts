import type Database from 'better-sqlite3';
import { StoreError } from '../../errors.js';
import type { MemoryRecord } from '../../record.js';
import { profileText } from '../search-text.js';

export const SCHEMA_VERSION = 4;
export const DELETE_TRIGGER = `CREATE TRIGGER users_totals_delete AFTER DELETE ON users BEGIN
  UPDATE totals SET users = users - 1, messages = messages - OLD.messages, bytes = bytes - length(CAST(OLD.data AS BLOB)) WHERE id = 1;
END`;
/**
 * Tables of a generation: built beside the live ones (`*_new_<g>`: a restore's rows, index and
 * documents) or set aside by a clear or restore (`*_old_<g>`), renamed in and out in one transaction
 * so the exclusive section holds only metadata changes. Shadow tables of FTS5 (`…_data`) do not match.
 */
export const GENERATION = /^(users|search_docs|search_fts|search_pending)_(old|new)_([a-z0-9]+)$/;
/**
 * Full-text index work not yet applied to `search_fts`, oldest first (schema 4): an append's
 * transaction records its documents' inserts and 'delete's here (a B-tree append) instead of writing
 * the index, which costs a new FTS5 segment per commit; a background indexer applies them in batches.
 * `text` is the document's text, which a contentless index needs for both. Search reads the pending
 * 'add' rows beside the index, so it never misses a document.
 */
export const PENDING_TABLE = (name: string): string =>
  `CREATE TABLE ${name} (seq INTEGER PRIMARY KEY, op INTEGER NOT NULL, doc_id INTEGER NOT NULL, text TEXT NOT NULL)`;
/** The oldest schema a read-only open reads: schema 3 lacks only the queue, which it would hold empty. */
export const READABLE_FROM = 3;
/**
 * On a read-only connection to a store an older chatmem wrote (schema 3), an empty temporary queue
 * stands in for the one the next writable open adds, so reads and searches work before that open.
 */
export function queueStandIn(db: Database.Database): void {
  const has = db.prepare("SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = 'search_pending'").get();
  if (!has) db.exec(PENDING_TABLE('temp.search_pending'));
}
/** `search_pending.op`: the document goes into the index, or out of it. */
export const PENDING_ADD = 0;
export const PENDING_DELETE = 1;
export const TOTALS_TRIGGERS = `CREATE TRIGGER users_totals_insert AFTER INSERT ON users BEGIN
  UPDATE totals SET users = users + 1, messages = messages + NEW.messages, bytes = bytes + length(CAST(NEW.data AS BLOB)) WHERE id = 1;
END;
${DELETE_TRIGGER};
CREATE TRIGGER users_totals_update AFTER UPDATE ON users BEGIN
  UPDATE totals SET messages = messages - OLD.messages + NEW.messages,
    bytes = bytes - length(CAST(OLD.data AS BLOB)) + length(CAST(NEW.data AS BLOB)) WHERE id = 1;
END`;

/**
 * The users table, a rowid table (the user id a unique key beside it). It was `WITHOUT ROWID`
 * until 2026-11-30: there a row lives in an index b-tree, which keeps at most ~1 KB of a row on its
 * 4 KB page, so every seed-shaped record (~2.2 KB) spilled into an overflow page of its own: 4.7 KB
 * on disk per record, and each read and append went through two pages. As a rowid table the record
 * fits on its leaf (up to ~4 KB): at 100k users, get + parse 42.7 -> 18.8 us and a grouped append
 * 89 -> 61 us (2.2 KB records), 148 -> 98 us (5 KB), the file 29% smaller (BENCHMARKS.md section 12).
 * Stores made before keep their table until the next clear or full restore builds a new one.
 * SQL sees no difference, so older chatmem versions read and write either layout.
 */
const USERS_COLUMNS_SQL = `user_id TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, name TEXT, product TEXT,
      created_at TEXT NOT NULL, updated_at TEXT NOT NULL, messages INTEGER NOT NULL, search_text TEXT NOT NULL`;

/**
 * The live tables' schema under the names of generation `g` (`users_new_<g>`, …). Index names are
 * global in SQLite and stay with a renamed table, so each generation's indexes carry its name.
 */
export function newTablesSql(g: string): string {
  return `CREATE TABLE users_new_${g} (${USERS_COLUMNS_SQL});
    CREATE INDEX users_updated_at_${g} ON users_new_${g} (updated_at);
    CREATE TABLE search_docs_new_${g} (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, kind INTEGER NOT NULL);
    CREATE INDEX search_docs_user_${g} ON search_docs_new_${g} (user_id, kind, id);
    CREATE VIRTUAL TABLE search_fts_new_${g} USING fts5(text, content='', tokenize='trigram');
    ${mergePolicySql(`search_fts_new_${g}`)}
    ${PENDING_TABLE(`search_pending_new_${g}`)};`;
}

/**
 * FTS5 merges its segments inside whichever transaction writes the index, on the event loop. With
 * its default `crisismerge` of 16, one chunk of the background indexer merged a whole level at once
 * and held every append 2.3–2.5 s (a clear of 100k users with 8 writers; at 64: no stall over 100–
 * 175 ms in the same runs; BENCHMARKS.md, "FTS5 crisis merges"). FTS5's incremental merges (automerge)
 * keep the levels short; the crisis merge stays as the bound of segments a search may read per level.
 */
export const FTS_CRISISMERGE = 64;

function mergePolicySql(table: string): string {
  // FTS5 refuses bound values in its config commands ("SQL logic error"): the number is a constant.
  return `INSERT INTO main.${table} (${table}, rank) VALUES ('crisismerge', ${FTS_CRISISMERGE});`;
}

/** Sets the merge policy above on the live index of a store made before it (writes only when it differs). */
export function ensureMergePolicy(db: Database.Database): void {
  const v = db.prepare<[], unknown>("SELECT v FROM main.search_fts_config WHERE k = 'crisismerge'").pluck().get();
  if (v !== FTS_CRISISMERGE) db.exec(mergePolicySql('search_fts'));
}

/** Names of this store's generation tables of `kind`. */
export function generationTables(db: Database.Database, kind: 'old' | 'new' | 'any'): string[] {
  const names = db.prepare<[], string>("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all();
  return names.filter((n) => {
    const m = GENERATION.exec(n);
    return m !== null && (kind === 'any' || m[2] === kind);
  });
}
export const DOC_PROFILE = 0;
export const DOC_MESSAGE = 1;

export const messageText = (h: { text?: unknown } | null | undefined): string => (typeof h?.text === 'string' ? h.text : '');
/** History as stored; data from older versions may lack it. */
export const historyOf = (r: MemoryRecord | null): MemoryRecord['history'] => (r && Array.isArray(r.history) ? r.history : []);

/** FTS5's default budget of pending index data (bytes) before it writes a segment. */
const FTS_HASHSIZE_DEFAULT = 1024 * 1024;
/**
 * Pending index data held in memory during a bulk load: at the default 1 MB, FTS5 writes a small
 * segment every ~2,000 documents and then merges them again and again. Measured on 20k users
 * (280k documents): 2.5 s to index with 1 MB, 1.8 s with 256 MB.
 */
const FTS_HASHSIZE_BULK = 128 * 1024 * 1024;

/**
 * Runs `fn` (inside the caller's transaction) with FTS5's pending-data budget raised for a bulk load,
 * then sets it back: the setting is stored in the index's config table, so a rollback undoes both.
 */
export function bulkIndex<T>(db: Database.Database, fn: () => T): T {
  // FTS5 refuses a bound value here ("SQL logic error"): the numbers are constants of this file.
  db.exec(`INSERT INTO main.search_fts (search_fts, rank) VALUES ('hashsize', ${FTS_HASHSIZE_BULK})`);
  const result = fn();
  db.exec(`INSERT INTO main.search_fts (search_fts, rank) VALUES ('hashsize', ${FTS_HASHSIZE_DEFAULT})`);
  return result;
}

/**
 * A crash may leave old tables not yet dropped, or a restore's half-built new ones: both go at open,
 * in one transaction (a rename of the live tables is atomic, so `users` is always the live table).
 */
export function dropLeftovers(db: Database.Database): void {
  const names = generationTables(db, 'any');
  if (names.length === 0) return;
  db.transaction(() => {
    for (const name of names) db.exec(`DROP TABLE ${name}`);
  })();
}

export function migrate(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new StoreError('E_STORE_VERSION', `store schema version ${version} is newer than this chatmem supports (${SCHEMA_VERSION})`);
  }
  if (version < 1) {
    db.exec(`
      CREATE TABLE IF NOT EXISTS users (${USERS_COLUMNS_SQL});
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
        ${TOTALS_TRIGGERS};
        PRAGMA user_version = 2;
      `),
    )();
  }
  if (version < 3) {
    // Search index: FTS5 with the trigram tokenizer matches any substring of 3+ characters,
    // case-insensitively, from the index. One document per user profile and one per history message,
    // so an append indexes its own message only. Contentless: the text lives in users.data only.
    db.transaction(() => {
      // The index is built from the records here, so a queue of index work left by a later schema's
      // index (a store taken back to an older version) would name documents that no longer exist.
      db.exec(`
        DROP TABLE IF EXISTS search_pending;
        CREATE TABLE search_docs (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, kind INTEGER NOT NULL);
        CREATE INDEX search_docs_user ON search_docs (user_id, kind, id);
        CREATE VIRTUAL TABLE search_fts USING fts5(text, content='', tokenize='trigram');
      `);
      // Existing users are indexed from their records (JSON.parse: no recursion, whatever their depth).
      const rows = db.prepare<[string], { user_id: string; data: string }>('SELECT user_id, data FROM users WHERE user_id > ? ORDER BY user_id LIMIT 1000');
      const insertDoc = db.prepare<[string, number]>('INSERT INTO search_docs (user_id, kind) VALUES (?, ?)');
      const insertFts = db.prepare<[number | bigint, string]>('INSERT INTO search_fts (rowid, text) VALUES (?, ?)');
      const add = (userId: string, kind: number, text: string): void => {
        insertFts.run(insertDoc.run(userId, kind).lastInsertRowid, text);
      };
      // Slices by key: iterate() cannot run beside inserts on one connection, and all() would hold the store in memory.
      for (let after = ''; ; ) {
        const slice = rows.all(after);
        const last = slice[slice.length - 1];
        if (!last) break;
        for (const row of slice) {
          const r = JSON.parse(row.data) as MemoryRecord;
          add(row.user_id, DOC_PROFILE, profileText(r));
          for (const h of historyOf(r)) add(row.user_id, DOC_MESSAGE, messageText(h));
        }
        after = last.user_id;
      }
      // The old search_text values stay (rewriting every row would cost more than the space); new rows store ''.
      db.exec('PRAGMA user_version = 3;');
    })();
  }
  if (version < 4) {
    db.transaction(() => db.exec(`${PENDING_TABLE('search_pending')}; PRAGMA user_version = 4;`))();
  }
}
