import type { QueryResultRow } from 'pg';
import type { WriteTracker } from '../types.js';
import { DELETED_KEEP_HOURS, type Sql } from './sql.js';

/** Beyond this many changed users a feed gives up (overflow), as the in-process tracker does. */
const FEED_LIMIT = 500_000;

/**
 * The users written or deleted since a mark, by every daemon sharing the store: the PostgreSQL form of
 * the in-process write tracker, for a backup copied while writes go on (two-phase clear and restore).
 * The mark is a `pg_snapshot` taken when the feed starts; a user changed since is a row whose `version`
 * (the writing transaction's id) that snapshot does not see, or an entry of the deleted-users log the
 * same way. Exact whatever order writers commit in: a transaction still running at the mark is not
 * visible in it, so its rows are found once it commits. A clear or full restore meanwhile (a null user
 * in the log) is an overflow: the caller copies everything again.
 */
export class ChangeFeed implements WriteTracker {
  readonly ids = new Set<string>();
  overflow = false;
  private readonly marked: Promise<{ snapshot: string; at: number }>;

  constructor(
    private readonly read: <R extends QueryResultRow>(text: string, values: unknown[]) => Promise<R[]>,
    private readonly sql: Sql,
  ) {
    // Stryker disable next-line OptionalChaining,StringLiteral: pg_current_snapshot() is one row, always; the fallbacks are for noUncheckedIndexedAccess
    this.marked = this.read<{ s: string }>(sql.mark, []).then((rows) => ({ snapshot: rows[0]?.s ?? '', at: Date.now() }));
    // Awaited by refresh(); a failure surfaces there, not as an unhandled rejection.
    this.marked.catch(() => undefined);
  }

  /**
   * Brings `ids` and `overflow` up to date with what every daemon committed. The first call also waits
   * for the mark: a copy that must not miss a write starts after it.
   */
  async refresh(): Promise<void> {
    const { snapshot, at } = await this.marked;
    // Stryker disable next-line ConditionalExpression: a saving only; each cause of an overflow is found again (the null log entry outlives the feed, the count and the age only grow)
    if (this.overflow) return;
    // Entries of the deleted-users log older than this may be gone: the feed can no longer be complete.
    if (Date.now() - at > (DELETED_KEEP_HOURS - 1) * 3_600_000) return this.giveUp();
    const rows = await this.read<{ user_id: string | null }>(this.sql.changedSince, [snapshot, FEED_LIMIT + 1]);
    if (rows.length > FEED_LIMIT) return this.giveUp();
    for (const r of rows) {
      if (r.user_id === null) return this.giveUp();
      this.ids.add(r.user_id);
    }
  }

  private giveUp(): void {
    this.overflow = true;
    this.ids.clear();
  }

  stop(): void {
    // Nothing to release: the feed is a query, run on demand.
  }
}
