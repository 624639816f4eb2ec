/**
 * Sizes the transactions of a bulk build (a full restore's new tables) by time, before they overrun:
 * each batch's item count is what fits in `targetMs` at the cost per item measured so far, starting
 * small. Sizing after the fact (halve after a slow chunk) let chunks aimed at 10 ms take up to 179 ms
 * (20k-user restore under load, 2026-11-30): a batch that grows 2× after one fast chunk overruns.
 */
export class BuildPacer {
  /** Items the next batch should hold. */
  budget: number;
  /** Milliseconds per item, weighted towards the slowest recent batches. */
  private msPerItem: number | null = null;

  constructor(
    private readonly targetMs: number,
    first = 8,
    private readonly max = 4096,
  ) {
    this.budget = first;
  }

  /** Runs one batch of `items` (synchronously), and sizes the next one from its time. */
  run(items: number, fn: () => void): void {
    const t0 = performance.now();
    fn();
    this.measured(items, performance.now() - t0);
  }

  /** Feeds a batch's time in; exported for tests. */
  measured(items: number, ms: number): void {
    if (items <= 0) return;
    const rate = ms / items;
    // A slow batch counts at once; a fast one only half: one quiet moment must not double the next
    // batch into a slow moment. Growth is at most 2× per batch for the same reason.
    // Stryker disable next-line ConditionalExpression: equivalent; null + rate is rate, and max(rate, rate / 2) is rate.
    this.msPerItem = this.msPerItem === null ? rate : Math.max(rate, (this.msPerItem + rate) / 2);
    const fit = Math.floor(this.targetMs / Math.max(this.msPerItem, 1e-6));
    this.budget = Math.max(1, Math.min(this.max, this.budget * 2, fit));
  }

  /** A turn of the event loop: the hot path's group commits run between two batches. */
  turn(): Promise<void> {
    return new Promise((r) => setImmediate(r));
  }
}
