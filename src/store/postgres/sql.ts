import type { PoolClient } from 'pg';
import type { MemoryRecord } from '../../record.js';
import { stringifyJson } from '../../json-safe.js';
import { searchText } from '../search-text.js';
import type { UserSummary } from '../types.js';

export type DataRow = { data: string };
export type SummaryRow = UserSummary;
export type CountRow = { n: string };
export type StatsRow = { users: string; messages: string; bytes: string; last: string | null };

export const WRITE_BATCH = 500;

export const COLUMNS = 'user_id, data, name, product, created_at, updated_at, messages, search_text';
const SUMMARY_COLUMNS = 'user_id, name, product, created_at, updated_at, messages';

/** The statements of one store, its users table's qualified name written in. */
export interface Sql {
  /** The users table's qualified name. */
  users: string;
  /**
   * Opens a scan's REPEATABLE READ transaction and locks the users table before any snapshot exists:
   * a whole-store swap (swap.ts) replaces the table, so a snapshot taken before the swap committed
   * must never read the table that replaced it (it would see an empty or a wrong store).
   */
  beginScan: string;
  get: string;
  getForUpdate: string;
  getManyForUpdate: string;
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
  /** Notes in the deleted-users log that the whole store was cleared or replaced (a null user id). */
  markAll: string;
  /** Drops deleted-users entries older than {@link DELETED_KEEP_HOURS}. */
  pruneDeleted: string;
  /** This moment's snapshot (`pg_snapshot` text): the mark a change feed starts from. */
  mark: string;
  /** Users written or deleted by transactions the snapshot $1 does not see (null: a whole-store change), at most $2. */
  changedSince: string;
}

/**
 * How long the deleted-users log keeps an entry. A change feed older than this cannot trust the log
 * and reports an overflow (its caller copies everything again); a clear or restore takes minutes.
 */
export const DELETED_KEEP_HOURS = 24;

export function buildSql(users: string, deleted: string): Sql {
  const updateSet = `ON CONFLICT (user_id) DO UPDATE SET data = EXCLUDED.data, name = EXCLUDED.name,
    product = EXCLUDED.product, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
    messages = EXCLUDED.messages, search_text = EXCLUDED.search_text, version = pg_current_xact_id()`;
  // An insert takes the column's default, pg_current_xact_id(), so every write sets the version.
  const notSeenBy = (table: string) =>
    `SELECT user_id FROM ${table} WHERE version >= pg_snapshot_xmin($1::pg_snapshot) AND NOT pg_visible_in_snapshot(version, $1::pg_snapshot)`;
  return {
    users,
    // Neither statement takes a snapshot (PostgreSQL takes it at the first query), so the snapshot is
    // taken after the lock is granted: after any swap that held the table, and no swap can commit until
    // the scan ends. LOCK resolves the name again when the table it waited for was replaced.
    beginScan: `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; LOCK TABLE ${users} IN ACCESS SHARE MODE`,
    get: `SELECT data FROM ${users} WHERE user_id = $1`,
    getForUpdate: `SELECT data FROM ${users} WHERE user_id = $1 FOR UPDATE`,
    getMany: `SELECT data FROM ${users} WHERE user_id = ANY($1::text[])`,
    getManyForUpdate: `SELECT user_id, data FROM ${users} WHERE user_id = ANY($1::text[]) FOR UPDATE`,
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
    // The log is written in the delete's own statement: both commit or neither.
    deleteMany: `WITH d AS (DELETE FROM ${users} WHERE user_id = ANY($1::text[]) RETURNING user_id) INSERT INTO ${deleted} (user_id) SELECT user_id FROM d`,
    clear: `DELETE FROM ${users}`,
    markAll: `INSERT INTO ${deleted} (user_id) VALUES (NULL)`,
    pruneDeleted: `DELETE FROM ${deleted} WHERE at < now() - interval '${DELETED_KEEP_HOURS} hours'`,
    mark: `SELECT pg_current_snapshot()::text AS s`,
    // The version index is read from the snapshot's xmin: every transaction before it is visible.
    changedSince: `${notSeenBy(users)} UNION ALL ${notSeenBy(deleted)} LIMIT $2`,
  };
}

/**
 * PostgreSQL text cannot hold U+0000 (JSON text escapes it, so the record itself keeps it): the
 * summary and search columns, copies for listing and search, show U+FFFD instead.
 */
const textColumn = <T extends string | null>(s: T): T => (s !== null && s.includes('\0') ? (s.replaceAll('\0', '\ufffd') as T) : s);

export function rowValues(r: MemoryRecord): [string, string, string | null, string | null, string, string, number, string] {
  return [r.user_id, stringifyJson(r), textColumn(r.name), textColumn(r.product), r.created_at, r.updated_at, r.history.length, textColumn(searchText(r))];
}

export function parseData(row: DataRow): MemoryRecord {
  return JSON.parse(row.data) as MemoryRecord;
}

/** Upserts in statements of {@link WRITE_BATCH} rows; within one call the last record of an id wins. */
export async function upsertRecords(client: PoolClient, sql: Sql, records: MemoryRecord[]): Promise<void> {
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
