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

const COLUMNS = 'user_id, data, name, product, created_at, updated_at, messages, search_text';
const SUMMARY_COLUMNS = 'user_id, name, product, created_at, updated_at, messages';

/** The statements of one store, its users table's qualified name written in. */
export interface Sql {
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
}

export function buildSql(users: string): Sql {
  const updateSet = `ON CONFLICT (user_id) DO UPDATE SET data = EXCLUDED.data, name = EXCLUDED.name,
    product = EXCLUDED.product, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
    messages = EXCLUDED.messages, search_text = EXCLUDED.search_text`;
  return {
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
    deleteMany: `DELETE FROM ${users} WHERE user_id = ANY($1::text[])`,
    clear: `DELETE FROM ${users}`,
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
