import type Database from 'better-sqlite3';
import { compareIds, type MemoryRecord } from '../../record.js';
import { isPrefixQuery, likeEscape, searchText } from '../search-text.js';
import type { UserSummary } from '../types.js';
import { PENDING_ADD } from './schema.js';

/** How long a search works between two turns of the event loop, and how it starts its walk. */
export interface SearchTurns {
  /** Milliseconds of each turn given to the index's match list (checked every {@link CLOCK_EVERY} rows). */
  indexMs: number;
  /** Milliseconds of each turn given to the id-order walk (checked after each window of users). */
  walkMs: number;
  /** Users in the walk's first window (and the fewest in any); later windows are sized to fit `walkMs` at the rate measured so far. */
  firstWindow: number;
  /** Largest window when SQLite filters the users first (see {@link walkPattern}). */
  maxWindow: number;
  /** Largest window when each record must be parsed in JS (no safe filter). */
  maxParsedWindow: number;
}

/**
 * Turns of ~2 ms per way: an append waits at most one turn (~4 ms of CPU) behind a search. Both
 * ways get the same time, so a search costs about twice the cheaper one: on the bench machine an
 * index match (FTS5 phrase step plus its search_docs lookup) ~0.7 µs of CPU at 100k users, a user
 * filtered by LIKE in SQLite ~2 µs, a user parsed and checked in JS ~30 µs.
 */
export const DEFAULT_TURNS: SearchTurns = { indexMs: 2, walkMs: 2, firstWindow: 64, maxWindow: 2048, maxParsedWindow: 128 };
/** Index rows read between two looks at the clock. */
const CLOCK_EVERY = 64;

const SUMMARY = 'user_id, name, product, created_at, updated_at, messages';
/** SQLite's default limit on a LIKE pattern (SQLITE_MAX_LIKE_PATTERN_LENGTH). */
const MAX_LIKE_PATTERN = 50_000;

/** A pattern for `data LIKE ? ESCAPE '\'` that every matching record's JSON text satisfies, and extra characters to let through. */
interface WalkFilter {
  pattern: string;
  /** Characters whose lower case contains ASCII (U+0130 İ -> "i̇", U+212A Kelvin -> "k"): rows holding them skip the filter. */
  alsoIf: string[];
}

/**
 * A LIKE filter over the stored JSON text that lets through every user whose searchText contains
 * `needle` (lower-cased), or null when no such filter is safe. The stored text is JSON.stringify of
 * the record, so a string field appears in it verbatim unless it holds a character JSON escapes
 * (`"`, `\`, controls, lone surrogates): a needle with one of those gets no filter. LIKE folds ASCII
 * letters only, so the needle may hold ASCII and characters without case (emoji, CJK), for which
 * LIKE's exact comparison is what toLowerCase gives. Two non-ASCII letters lower-case to ASCII; rows
 * containing them are let through whole. False positives (a match in a key, a token, a timestamp) are
 * removed by the exact check that follows.
 */
export function walkPattern(needle: string): WalkFilter | null {
  if (!needle.isWellFormed()) return null;
  for (const c of needle) {
    const cp = c.codePointAt(0) ?? 0;
    if (cp < 0x20 || cp === 0x7f || c === '"' || c === '\\') return null;
    if (cp >= 0x80 && (c.toUpperCase() !== c || c.toLowerCase() !== c)) return null;
  }
  const pattern = `%${likeEscape(needle)}%`;
  if (pattern.length > MAX_LIKE_PATTERN) return null;
  const alsoIf: string[] = [];
  if (needle.includes('i') || needle.includes('\u0307')) alsoIf.push('\u0130');
  if (needle.includes('k')) alsoIf.push('\u212a');
  return { pattern, alsoIf };
}

/** Inserts `id` into `first` (sorted, unique, at most `limit` long) if it is among the `limit` smallest. */
function keepSmallest(first: string[], id: string, limit: number): void {
  const worst = first[first.length - 1];
  if (first.length >= limit && worst !== undefined && compareIds(id, worst) >= 0) return;
  let lo = 0;
  let hi = first.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareIds(first[mid]!, id) < 0) lo = mid + 1;
    else hi = mid;
  }
  if (first[lo] === id) return;
  first.splice(lo, 0, id);
  if (first.length > limit) first.pop();
}

/** An FTS5 phrase: the query matched literally as a substring (trigram tokens at consecutive positions). */
function ftsPhrase(query: string): string {
  return `"${query.replace(/"/g, '""')}"`;
}

type WalkRow = { user_id: string; data: string | null };
type PendingRow = { user_id: string; text: string };

/**
 * The index way's matches: the queued documents not yet in the full-text index (search_pending 'add'
 * rows, see schema.ts) whose text contains `needle` (already lower-cased, as searchText folds), then
 * the index's own matches. A document is in exactly one of the two in any one state of the store (the
 * indexer moves it in one transaction), and both statements read one state: SQLite holds a connection's
 * read snapshot while any of its statements is running, both start in the same synchronous stretch
 * (where no commit of this process can happen), and the index's statement runs until the end. A
 * document deleted since it was queued or indexed is dropped by the join with search_docs.
 */
function* indexMatches(db: Database.Database, query: string, needle: string, filter: WalkFilter | null): Generator<string, void, undefined> {
  // The walk's LIKE filter holds for a document's plain text as for the JSON text (which it takes
  // verbatim): SQLite drops most queued documents before JS looks at them.
  const like = filter ? ` AND (p.text LIKE ? ESCAPE '\\'${filter.alsoIf.map((c) => ` OR instr(p.text, '${c}') > 0`).join('')})` : '';
  // Prepared per search: a statement can run one iteration at a time, and searches overlap.
  const pending = db
    .prepare<unknown[], PendingRow>(`SELECT d.user_id, p.text FROM search_pending AS p JOIN search_docs AS d ON d.id = p.doc_id WHERE p.op = ?${like}`)
    .iterate(...(filter ? [PENDING_ADD, filter.pattern] : [PENDING_ADD]));
  const matches = db
    .prepare<[string], string>('SELECT d.user_id FROM search_fts JOIN search_docs AS d ON d.id = search_fts.rowid WHERE search_fts MATCH ?')
    .pluck()
    .iterate(ftsPhrase(query));
  try {
    const firstPending = pending.next();
    const firstMatch = matches.next();
    for (let p = firstPending; !p.done; p = pending.next()) if (p.value.text.toLowerCase().includes(needle)) yield p.value.user_id;
    for (let m = firstMatch; !m.done; m = matches.next()) yield m.value;
  } finally {
    // Ends the statements (and their read transaction) when the search stops early (the walk won).
    pending.return?.();
    matches.return?.();
  }
}

/**
 * Search over a SQLite store's `users` table and its FTS5 trigram index (`search_fts`, one document
 * per profile and per message, `search_docs` mapping a document to its user). Runs on a connection of
 * its own (read-only in the daemon) so that a search paused between turns never holds up a write.
 */
export class SqliteSearch {
  private readonly stmts;

  constructor(
    private readonly db: Database.Database,
    private readonly turns: SearchTurns = DEFAULT_TURNS,
  ) {
    this.stmts = {
      prefix: db.prepare<[string, string, number], UserSummary>(`SELECT ${SUMMARY} FROM users WHERE user_id >= ? AND user_id < ? ORDER BY user_id LIMIT ?`),
      walk: db.prepare<[string, number], WalkRow>('SELECT user_id, data FROM users WHERE user_id > ? ORDER BY user_id LIMIT ?'),
      summary: db.prepare<[string], UserSummary>(`SELECT ${SUMMARY} FROM users WHERE user_id = ?`),
    };
  }

  /** The walk's statement for `filter`: every user's id in order, the data only of those passing the filter. */
  private filteredWalk(filter: WalkFilter): Database.Statement<[string, string, number], WalkRow> {
    const also = filter.alsoIf.map((c) => ` OR instr(data, '${c}') > 0`).join('');
    return this.db.prepare(`SELECT user_id, CASE WHEN data LIKE ? ESCAPE '\\'${also} THEN data END AS data FROM users WHERE user_id > ? ORDER BY user_id LIMIT ?`);
  }

  /**
   * Users matching `query` (trimmed, non-empty), the first `limit` in user_id order. Queries shorter
   * than 3 characters are an id-prefix range on the primary key. Longer ones run two ways in turns of
   * equal time, each exact alone, until one finishes: the index's matches, all of them, keeping the
   * smallest ids (cost grows with the number of matching documents), and a walk of the users in id
   * order (cost grows with how far the limit-th match sits). A rare term ends the first way fast, a
   * common one the second. The walk sits out turns while its projected cost exceeds what the index
   * has cost so far. The event loop gets a turn between turns.
   */
  async search(query: string, limit: number): Promise<UserSummary[]> {
    if (isPrefixQuery(query)) return this.stmts.prefix.all(query, `${query}\u{10FFFF}`, limit);
    const needle = query.toLowerCase();
    const filter = walkPattern(needle);
    const filtered = filter ? this.filteredWalk(filter) : null;
    const maxWindow = filter ? this.turns.maxWindow : this.turns.maxParsedWindow;
    const walkSlice = (after: string, window: number): WalkRow[] =>
      filtered && filter ? filtered.all(filter.pattern, after, window) : this.stmts.walk.all(after, window);
    const matches = indexMatches(this.db, query, needle, filter);
    // toLowerCase turns U+0130 (İ) into "i" + U+0307, FTS5's folding does not: the index would miss
    // such matches, so a needle holding U+0307 is answered by the walk alone.
    const indexed = !needle.includes('\u0307');
    const first: string[] = [];
    const walked: string[] = [];
    let after = '';
    let window = Math.min(this.turns.firstWindow, maxWindow);
    let result: string[] | null = null;
    let indexSpent = 0;
    let walkSpent = 0;
    let walkRows = 0;
    try {
      while (result === null) {
        const indexStart = performance.now();
        const indexUntil = indexStart + this.turns.indexMs;
        for (let k = 1; indexed; k++) {
          const next = matches.next();
          if (next.done) {
            result = first;
            break;
          }
          keepSmallest(first, next.value, limit);
          if (k % CLOCK_EVERY === 0 && performance.now() >= indexUntil) break;
        }
        if (result !== null) break;
        indexSpent += performance.now() - indexStart;
        // The walk's cost to the limit-th match, projected from its own rate so far (optimistic by
        // one match): while that exceeds what the index has cost, the index gets the turn alone. A
        // term matching 1 user in 200 then costs its index matches plus a few ms of walk, instead of
        // twice its index matches.
        if (indexed && walkSpent > 0 && (walkSpent * (limit - walked.length)) / (walked.length + 1) > indexSpent) {
          await new Promise((r) => setImmediate(r));
          continue;
        }
        const walkStart = performance.now();
        const walkUntil = walkStart + this.turns.walkMs;
        do {
          const rows = walkSlice(after, window);
          for (const row of rows) {
            if (row.data !== null && searchText(JSON.parse(row.data) as MemoryRecord).includes(needle)) walked.push(row.user_id);
            if (walked.length >= limit) break;
          }
          const last = rows[rows.length - 1];
          if (walked.length >= limit || rows.length < window || !last) result = walked.slice(0, limit);
          else after = last.user_id;
          walkRows += rows.length;
          // The next window is what fits in one turn at the rate seen so far: one SQL statement cannot
          // be cut, and a fixed size would hold the event loop for 1–16 ms depending on the query.
          const perRow = (walkSpent + performance.now() - walkStart) / walkRows;
          window = Math.max(this.turns.firstWindow, Math.min(maxWindow, Math.floor(this.turns.walkMs / perRow)));
        } while (result === null && performance.now() < walkUntil);
        walkSpent += performance.now() - walkStart;
        if (result === null) await new Promise((r) => setImmediate(r));
      }
    } finally {
      // Ends the index query's statements (and their read transaction) if the walk won.
      matches.return();
    }
    // A user deleted since the match was read is left out.
    return result.map((id) => this.stmts.summary.get(id)).filter((r): r is UserSummary => r !== undefined);
  }
}
