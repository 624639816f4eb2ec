import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isEmptyPolicy, planRetention, type RetentionGroup, type RetentionInput, type RetentionPolicy } from '../../src/backup/retention.js';

const COUNT_KEYS = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;
const WITHIN_KEYS = ['within', 'withinHourly', 'withinDaily', 'withinWeekly', 'withinMonthly', 'withinYearly'] as const;

interface Duration {
  y: number;
  m: number;
  d: number;
  h: number;
}
const durationText = (d: Duration): string => `${d.y}y${d.m}m${d.d}d${d.h}h`;

// Times cluster within a few years and often share an hour, day or week, so that periods collide.
const BASE = Date.UTC(2024, 0, 1);
const timeArb = fc.oneof(
  fc.integer({ min: 0, max: 3 * 365 * 24 }).map((h) => BASE + h * 3_600_000),
  fc.integer({ min: 0, max: 3 * 365 * 24 * 60 }).map((m) => BASE + m * 60_000),
  fc.integer({ min: 0, max: 40 }).map((d) => BASE + d * 86_400_000),
);

const backupsArb: fc.Arbitrary<RetentionInput[]> = fc
  .array(
    fc.record({
      createdAt: fc.option(timeArb, { nil: null, freq: 15 }),
      group: fc.constantFrom<RetentionGroup>('full', 'user'),
    }),
    { maxLength: 60 },
  )
  .map((xs) => xs.map((x, i) => ({ id: `b${String(i).padStart(3, '0')}`, createdAt: x.createdAt === null ? null : new Date(x.createdAt), group: x.group })));

const durationArb: fc.Arbitrary<Duration> = fc.record({
  y: fc.integer({ min: 0, max: 2 }),
  m: fc.integer({ min: 0, max: 14 }),
  d: fc.integer({ min: 0, max: 40 }),
  h: fc.integer({ min: 0, max: 72 }),
});

interface PolicySpec {
  counts: Partial<Record<(typeof COUNT_KEYS)[number], number>>;
  windows: Partial<Record<(typeof WITHIN_KEYS)[number], Duration>>;
}

const specArb: fc.Arbitrary<PolicySpec> = fc.record({
  counts: fc.record(Object.fromEntries(COUNT_KEYS.map((k) => [k, fc.integer({ min: -1, max: 8 })])) as Record<(typeof COUNT_KEYS)[number], fc.Arbitrary<number>>, { requiredKeys: [] }),
  windows: fc.record(Object.fromEntries(WITHIN_KEYS.map((k) => [k, durationArb])) as Record<(typeof WITHIN_KEYS)[number], fc.Arbitrary<Duration>>, { requiredKeys: [] }),
});

function toPolicy(s: PolicySpec): RetentionPolicy {
  const p: RetentionPolicy = { ...s.counts };
  for (const [k, d] of Object.entries(s.windows) as [(typeof WITHIN_KEYS)[number], Duration][]) p[k] = durationText(d);
  return p;
}

/** The same policy with one count raised or one window widened. */
const biggerArb = (s: PolicySpec): fc.Arbitrary<PolicySpec> =>
  fc.oneof(
    fc.record({ key: fc.constantFrom(...COUNT_KEYS), by: fc.integer({ min: 1, max: 5 }), unlimited: fc.boolean() }).map(({ key, by, unlimited }) => {
      const cur = s.counts[key] ?? 0;
      const next = cur === -1 || unlimited ? -1 : cur + by;
      return { counts: { ...s.counts, [key]: next }, windows: s.windows };
    }),
    fc.record({ key: fc.constantFrom(...WITHIN_KEYS), unit: fc.constantFrom<keyof Duration>('y', 'm', 'd', 'h'), by: fc.integer({ min: 1, max: 30 }) }).map(({ key, unit, by }) => {
      const cur = s.windows[key] ?? { y: 0, m: 0, d: 0, h: 0 };
      return { counts: s.counts, windows: { ...s.windows, [key]: { ...cur, [unit]: cur[unit] + by } } };
    }),
  );

const keptIds = (backups: RetentionInput[], p: RetentionPolicy): Set<string> => new Set(planRetention(backups, p).keep.map((k) => k.id));

function newestFull(backups: RetentionInput[]): string | undefined {
  let best: RetentionInput | undefined;
  for (const b of backups) {
    if ((b.group ?? 'full') !== 'full' || b.createdAt === null) continue;
    if (!best || b.createdAt.getTime() > (best.createdAt?.getTime() ?? 0) || (b.createdAt.getTime() === best.createdAt?.getTime() && b.id > best.id)) best = b;
  }
  return best?.id;
}

const RUNS = { numRuns: 400 };

describe('planRetention properties', () => {
  it('keep and remove partition the input, each backup in its own group', () => {
    fc.assert(
      fc.property(backupsArb, specArb, (backups, spec) => {
        const plan = planRetention(backups, toPolicy(spec));
        const all = [...plan.keep, ...plan.remove];
        expect(all.map((x) => x.id).sort()).toEqual(backups.map((b) => b.id).sort());
        const group = new Map(backups.map((b) => [b.id, b.group]));
        for (const x of all) expect(x.group).toBe(group.get(x.id));
        for (const k of plan.keep) expect(k.reasons.length).toBeGreaterThan(0);
      }),
      RUNS,
    );
  });

  it('never removes the newest full backup, nor a backup without a date', () => {
    fc.assert(
      fc.property(backupsArb, specArb, (backups, spec) => {
        const kept = keptIds(backups, toPolicy(spec));
        const newest = newestFull(backups);
        if (newest !== undefined) expect(kept.has(newest)).toBe(true);
        for (const b of backups) if (b.createdAt === null) expect(kept.has(b.id)).toBe(true);
      }),
      RUNS,
    );
  });

  it('a bigger policy (a count raised, a window widened) keeps a superset', () => {
    const arb = specArb
      .filter((s) => !isEmptyPolicy(toPolicy(s)))
      .chain((s) => fc.tuple(fc.constant(s), biggerArb(s)));
    fc.assert(
      fc.property(backupsArb, arb, (backups, [small, big]) => {
        const a = keptIds(backups, toPolicy(small));
        const b = keptIds(backups, toPolicy(big));
        for (const id of a) expect(b.has(id)).toBe(true);
      }),
      RUNS,
    );
  });

  it('per-user backups never change which full backups are kept', () => {
    fc.assert(
      fc.property(backupsArb, specArb, (backups, spec) => {
        const p = toPolicy(spec);
        const fullOnly = backups.filter((b) => b.group === 'full');
        const withUsers = planRetention(backups, p).keep.filter((k) => k.group === 'full');
        expect(withUsers).toEqual(planRetention(fullOnly, p).keep);
      }),
      RUNS,
    );
  });

  it('a policy of positive counts keeps at most the sum of its counts per group, as restic checks', () => {
    const countsArb = fc.record(Object.fromEntries(COUNT_KEYS.map((k) => [k, fc.integer({ min: 1, max: 6 })])) as Record<(typeof COUNT_KEYS)[number], fc.Arbitrary<number>>, { requiredKeys: [] });
    fc.assert(
      fc.property(backupsArb, countsArb, (backups, counts) => {
        const sum = Object.values(counts).reduce((a, n) => a + n, 0);
        const plan = planRetention(backups, counts);
        for (const g of ['full', 'user'] as const) {
          const dated = plan.keep.filter((k) => k.group === g && !k.reasons.includes('no date'));
          if (sum > 0) expect(dated.length).toBeLessThanOrEqual(sum);
        }
      }),
      RUNS,
    );
  });

  it('is idempotent: planning again on the kept backups removes nothing', () => {
    fc.assert(
      fc.property(backupsArb, specArb, (backups, spec) => {
        const p = toPolicy(spec);
        const kept = keptIds(backups, p);
        const again = planRetention(backups.filter((b) => kept.has(b.id)), p);
        expect(again.remove).toEqual([]);
      }),
      RUNS,
    );
  });

  it('does not depend on the input order', () => {
    fc.assert(
      fc.property(backupsArb, specArb, fc.integer(), (backups, spec, seed) => {
        const shuffled = [...backups].sort((x, y) => ((x.id.charCodeAt(3) * seed) % 7) - ((y.id.charCodeAt(3) * seed) % 7));
        expect(planRetention(shuffled, toPolicy(spec))).toEqual(planRetention(backups, toPolicy(spec)));
      }),
      RUNS,
    );
  });
});
