import type Database from 'better-sqlite3';
import { stringifyJson } from '../../json-safe.js';
import { applyAppendMany, compareIds, type HistoryEntry, type MemoryRecord } from '../../record.js';

/**
 * Appends not yet folded into their user's row (schema 5). An append whose caller does not need the
 * record back (`Store.appendHistoryMinimal`) writes one row here instead of reading, parsing,
 * rewriting the user's ~2 KB row: the core can prove its result without the record, because
 * `applyAppendMany` is a function of (record, entries, cap, now) alone, so the entries, the cap and
 * the clock of the append are stored, and replaying them in `seq` order on the stored record gives
 * exactly the record the append would have written (duplicate ids skipped, the cap applied,
 * `updated_at` and `last_answer` set, a new user created). Every read of a record replays them;
 * a background compactor, and any other write of the user, folds them into the row.
 * WITHOUT ROWID, keyed by user: a user's pending appends are one range of one B-tree.
 */
export const APPENDS_TABLE = (name: string): string =>
  `CREATE TABLE ${name} (user_id TEXT NOT NULL, seq INTEGER NOT NULL, now TEXT NOT NULL, cap INTEGER NOT NULL, entries TEXT NOT NULL, PRIMARY KEY (user_id, seq)) WITHOUT ROWID`;

/** One pending append as stored. */
export interface DeltaRow {
  now: string;
  cap: number;
  entries: string;
}

/** `stored` with the pending appends `deltas` (oldest first) replayed, as the appends would have written it. */
export function foldDeltas(id: string, stored: MemoryRecord | null, deltas: DeltaRow[]): MemoryRecord | null {
  let record = stored;
  for (const d of deltas) record = applyAppendMany(record, id, JSON.parse(d.entries) as HistoryEntry[], d.cap, d.now);
  return record;
}

/**
 * The rows of a scan (`[user_id, JSON text]` in user_id order) with the pending appends `pending`
 * (read in the same snapshot, by user, oldest first) replayed: a user with some gets its record
 * re-serialised, a user known only from them (created by an append) comes in its place in the order.
 * A writing connection folds before it scans, so this matters to read-only connections.
 */
export function* withPending(rows: Iterable<{ user_id: string; data: string }>, pending: Map<string, DeltaRow[]>): Generator<[string, string]> {
  const ids = [...pending.keys()].sort(compareIds);
  let i = 0;
  const fold = (id: string, data: string | null): [string, string] => [id, stringifyJson(foldDeltas(id, data === null ? null : (JSON.parse(data) as MemoryRecord), pending.get(id) ?? []))];
  for (const row of rows) {
    for (; i < ids.length && compareIds(ids[i]!, row.user_id) < 0; i++) yield fold(ids[i]!, null);
    if (ids[i] === row.user_id) i++;
    yield pending.has(row.user_id) ? fold(row.user_id, row.data) : [row.user_id, row.data];
  }
  for (; i < ids.length; i++) yield fold(ids[i]!, null);
}

/** The pending appends after `after` on `db`, by user. */
export function pendingAfter(db: Database.Database, after: string): Map<string, DeltaRow[]> {
  const out = new Map<string, DeltaRow[]>();
  const rows = db.prepare<[string], DeltaRow & { user_id: string }>('SELECT user_id, now, cap, entries FROM appends WHERE user_id > ? ORDER BY user_id, seq').all(after);
  for (const r of rows) {
    const list = out.get(r.user_id);
    if (list) list.push(r);
    else out.set(r.user_id, [r]);
  }
  return out;
}
