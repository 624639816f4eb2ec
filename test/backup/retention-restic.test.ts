// Cases derived from restic's policy test vectors (internal/data/snapshot_policy_test.go and
// internal/data/testdata/policy_keep_snapshots_N, restic a80be1478), BSD-2-Clause,
// Copyright (c) 2014, Alexander Neumann <alexander@bumpern.de>. Data only: restic's input snapshots and,
// per policy, the snapshots it keeps with their reasons ('snapshot' reads 'backup' here).
import { describe, expect, it } from 'vitest';
import { planRetention, type RetentionPolicy } from '../../src/backup/retention.js';

// restic's TestApplyPolicy input, in its order (UTC). Tags and paths are left out: chatmem has neither.
const RESTIC_INPUT = [
  '2014-09-01 10:20:30', '2014-09-02 10:20:30', '2014-09-05 10:20:30', '2014-09-06 10:20:30',
  '2014-09-08 10:20:30', '2014-09-09 10:20:30', '2014-09-10 10:20:30', '2014-09-11 10:20:30',
  '2014-09-20 10:20:30', '2014-09-22 10:20:30', '2014-08-08 10:20:30', '2014-08-10 10:20:30',
  '2014-08-12 10:20:30', '2014-08-13 10:20:30', '2014-08-13 10:20:30.1', '2014-08-15 10:20:30',
  '2014-08-18 10:20:30', '2014-08-20 10:20:30', '2014-08-21 10:20:30', '2014-08-22 10:20:30',
  '2014-10-01 10:20:30', '2014-10-02 10:20:30', '2014-10-05 10:20:30', '2014-10-06 10:20:30',
  '2014-10-08 10:20:30', '2014-10-09 10:20:30', '2014-10-10 10:20:30', '2014-10-11 10:20:30',
  '2014-10-20 10:20:30', '2014-10-22 10:20:30', '2014-11-08 10:20:30', '2014-11-10 10:20:30',
  '2014-11-12 10:20:30', '2014-11-13 10:20:30', '2014-11-13 10:20:30.1', '2014-11-15 10:20:30',
  '2014-11-18 10:20:30', '2014-11-20 10:20:30', '2014-11-21 10:20:30', '2014-11-22 10:20:30',
  '2015-09-01 10:20:30', '2015-09-02 10:20:30', '2015-09-05 10:20:30', '2015-09-06 10:20:30',
  '2015-09-08 10:20:30', '2015-09-09 10:20:30', '2015-09-10 10:20:30', '2015-09-11 10:20:30',
  '2015-09-20 10:20:30', '2015-09-22 10:20:30', '2015-08-08 10:20:30', '2015-08-10 10:20:30',
  '2015-08-12 10:20:30', '2015-08-13 10:20:30', '2015-08-13 10:20:30.1', '2015-08-15 10:20:30',
  '2015-08-18 10:20:30', '2015-08-20 10:20:30', '2015-08-21 10:20:30', '2015-08-22 10:20:30',
  '2015-10-01 10:20:30', '2015-10-02 10:20:30', '2015-10-05 10:20:30', '2015-10-06 10:20:30',
  '2015-10-08 10:20:30', '2015-10-09 10:20:30', '2015-10-10 10:20:30', '2015-10-11 10:20:30',
  '2015-10-20 10:20:30', '2015-10-22 10:20:30', '2015-10-22 10:20:30', '2015-10-22 10:20:30',
  '2015-10-22 10:20:30', '2015-10-22 10:20:30', '2015-11-08 10:20:30', '2015-11-10 10:20:30',
  '2015-11-12 10:20:30', '2015-11-13 10:20:30', '2015-11-13 10:20:30.1', '2015-11-15 10:20:30',
  '2015-11-18 10:20:30', '2015-11-20 10:20:30', '2015-11-21 10:20:30', '2015-11-22 10:20:30',
  '2016-01-01 01:02:03', '2016-01-01 01:03:03', '2016-01-01 07:08:03', '2016-01-03 07:02:03',
  '2016-01-04 10:23:03', '2016-01-04 11:23:03', '2016-01-04 12:23:03', '2016-01-04 12:24:03',
  '2016-01-04 12:28:03', '2016-01-04 12:30:03', '2016-01-04 16:23:03', '2016-01-05 09:02:03',
  '2016-01-06 08:02:03', '2016-01-07 10:02:03', '2016-01-08 20:02:03', '2016-01-09 21:02:03',
  '2016-01-12 21:02:03', '2016-01-12 21:08:03', '2016-01-18 12:02:03',
];

type Case = { vector: number; policy: RetentionPolicy; keep: [string, ...string[]][] };

const CASES: Case[] = [
  {
    vector: 1,
    policy: { last: 10 },
    keep: [
      ['2016-01-18 12:02:03', 'last backup'],
      ['2016-01-12 21:08:03', 'last backup'],
      ['2016-01-12 21:02:03', 'last backup'],
      ['2016-01-09 21:02:03', 'last backup'],
      ['2016-01-08 20:02:03', 'last backup'],
      ['2016-01-07 10:02:03', 'last backup'],
      ['2016-01-06 08:02:03', 'last backup'],
      ['2016-01-05 09:02:03', 'last backup'],
      ['2016-01-04 16:23:03', 'last backup'],
      ['2016-01-04 12:30:03', 'last backup'],
    ],
  },
  {
    vector: 5,
    policy: { hourly: 20 },
    keep: [
      ['2016-01-18 12:02:03', 'hourly backup'],
      ['2016-01-12 21:08:03', 'hourly backup'],
      ['2016-01-09 21:02:03', 'hourly backup'],
      ['2016-01-08 20:02:03', 'hourly backup'],
      ['2016-01-07 10:02:03', 'hourly backup'],
      ['2016-01-06 08:02:03', 'hourly backup'],
      ['2016-01-05 09:02:03', 'hourly backup'],
      ['2016-01-04 16:23:03', 'hourly backup'],
      ['2016-01-04 12:30:03', 'hourly backup'],
      ['2016-01-04 11:23:03', 'hourly backup'],
      ['2016-01-04 10:23:03', 'hourly backup'],
      ['2016-01-03 07:02:03', 'hourly backup'],
      ['2016-01-01 07:08:03', 'hourly backup'],
      ['2016-01-01 01:03:03', 'hourly backup'],
      ['2015-11-22 10:20:30', 'hourly backup'],
      ['2015-11-21 10:20:30', 'hourly backup'],
      ['2015-11-20 10:20:30', 'hourly backup'],
      ['2015-11-18 10:20:30', 'hourly backup'],
      ['2015-11-15 10:20:30', 'hourly backup'],
      ['2015-11-13 10:20:30.1', 'hourly backup'],
    ],
  },
  {
    vector: 6,
    policy: { daily: 3 },
    keep: [
      ['2016-01-18 12:02:03', 'daily backup'],
      ['2016-01-12 21:08:03', 'daily backup'],
      ['2016-01-09 21:02:03', 'daily backup'],
    ],
  },
  {
    vector: 9,
    policy: { last: 5, daily: 5 },
    keep: [
      ['2016-01-18 12:02:03', 'last backup', 'daily backup'],
      ['2016-01-12 21:08:03', 'last backup', 'daily backup'],
      ['2016-01-12 21:02:03', 'last backup'],
      ['2016-01-09 21:02:03', 'last backup', 'daily backup'],
      ['2016-01-08 20:02:03', 'last backup', 'daily backup'],
      ['2016-01-07 10:02:03', 'daily backup'],
    ],
  },
  {
    vector: 10,
    policy: { last: 2, daily: 10 },
    keep: [
      ['2016-01-18 12:02:03', 'last backup', 'daily backup'],
      ['2016-01-12 21:08:03', 'last backup', 'daily backup'],
      ['2016-01-09 21:02:03', 'daily backup'],
      ['2016-01-08 20:02:03', 'daily backup'],
      ['2016-01-07 10:02:03', 'daily backup'],
      ['2016-01-06 08:02:03', 'daily backup'],
      ['2016-01-05 09:02:03', 'daily backup'],
      ['2016-01-04 16:23:03', 'daily backup'],
      ['2016-01-03 07:02:03', 'daily backup'],
      ['2016-01-01 07:08:03', 'daily backup'],
    ],
  },
  {
    vector: 11,
    policy: { weekly: 2 },
    keep: [
      ['2016-01-18 12:02:03', 'weekly backup'],
      ['2016-01-12 21:08:03', 'weekly backup'],
    ],
  },
  {
    vector: 13,
    policy: { daily: 3, weekly: 4 },
    keep: [
      ['2016-01-18 12:02:03', 'daily backup', 'weekly backup'],
      ['2016-01-12 21:08:03', 'daily backup', 'weekly backup'],
      ['2016-01-09 21:02:03', 'daily backup', 'weekly backup'],
      ['2016-01-03 07:02:03', 'weekly backup'],
    ],
  },
  {
    vector: 14,
    policy: { monthly: 6 },
    keep: [
      ['2016-01-18 12:02:03', 'monthly backup'],
      ['2015-11-22 10:20:30', 'monthly backup'],
      ['2015-10-22 10:20:30', 'monthly backup'],
      ['2015-09-22 10:20:30', 'monthly backup'],
      ['2015-08-22 10:20:30', 'monthly backup'],
      ['2014-11-22 10:20:30', 'monthly backup'],
    ],
  },
  {
    vector: 15,
    policy: { daily: 2, weekly: 2, monthly: 6 },
    keep: [
      ['2016-01-18 12:02:03', 'daily backup', 'weekly backup', 'monthly backup'],
      ['2016-01-12 21:08:03', 'daily backup', 'weekly backup'],
      ['2015-11-22 10:20:30', 'monthly backup'],
      ['2015-10-22 10:20:30', 'monthly backup'],
      ['2015-09-22 10:20:30', 'monthly backup'],
      ['2015-08-22 10:20:30', 'monthly backup'],
      ['2014-11-22 10:20:30', 'monthly backup'],
    ],
  },
  {
    vector: 16,
    policy: { yearly: 10 },
    keep: [
      ['2016-01-18 12:02:03', 'yearly backup'],
      ['2015-11-22 10:20:30', 'yearly backup'],
      ['2014-11-22 10:20:30', 'yearly backup'],
      ['2014-08-08 10:20:30', 'oldest yearly backup'],
    ],
  },
  {
    vector: 17,
    policy: { daily: 7, weekly: 2, monthly: 3, yearly: 10 },
    keep: [
      ['2016-01-18 12:02:03', 'daily backup', 'weekly backup', 'monthly backup', 'yearly backup'],
      ['2016-01-12 21:08:03', 'daily backup', 'weekly backup'],
      ['2016-01-09 21:02:03', 'daily backup'],
      ['2016-01-08 20:02:03', 'daily backup'],
      ['2016-01-07 10:02:03', 'daily backup'],
      ['2016-01-06 08:02:03', 'daily backup'],
      ['2016-01-05 09:02:03', 'daily backup'],
      ['2015-11-22 10:20:30', 'monthly backup', 'yearly backup'],
      ['2015-10-22 10:20:30', 'monthly backup'],
      ['2014-11-22 10:20:30', 'yearly backup'],
      ['2014-08-08 10:20:30', 'oldest yearly backup'],
    ],
  },
  {
    vector: 39,
    policy: { daily: 3, weekly: 2, monthly: -1, yearly: -1 },
    keep: [
      ['2016-01-18 12:02:03', 'daily backup', 'weekly backup', 'monthly backup', 'yearly backup'],
      ['2016-01-12 21:08:03', 'daily backup', 'weekly backup'],
      ['2016-01-09 21:02:03', 'daily backup'],
      ['2015-11-22 10:20:30', 'monthly backup', 'yearly backup'],
      ['2015-10-22 10:20:30', 'monthly backup'],
      ['2015-09-22 10:20:30', 'monthly backup'],
      ['2015-08-22 10:20:30', 'monthly backup'],
      ['2014-11-22 10:20:30', 'monthly backup', 'yearly backup'],
      ['2014-10-22 10:20:30', 'monthly backup'],
      ['2014-09-22 10:20:30', 'monthly backup'],
      ['2014-08-22 10:20:30', 'monthly backup'],
      ['2014-08-08 10:20:30', 'oldest monthly backup', 'oldest yearly backup'],
    ],
  },
  {
    vector: 21,
    policy: { within: '1d' },
    keep: [
      ['2016-01-18 12:02:03', 'within 1d'],
    ],
  },
  {
    vector: 23,
    policy: { within: '7d' },
    keep: [
      ['2016-01-18 12:02:03', 'within 7d'],
      ['2016-01-12 21:08:03', 'within 7d'],
      ['2016-01-12 21:02:03', 'within 7d'],
    ],
  },
  {
    vector: 24,
    policy: { within: '1m' },
    keep: [
      ['2016-01-18 12:02:03', 'within 1m'],
      ['2016-01-12 21:08:03', 'within 1m'],
      ['2016-01-12 21:02:03', 'within 1m'],
      ['2016-01-09 21:02:03', 'within 1m'],
      ['2016-01-08 20:02:03', 'within 1m'],
      ['2016-01-07 10:02:03', 'within 1m'],
      ['2016-01-06 08:02:03', 'within 1m'],
      ['2016-01-05 09:02:03', 'within 1m'],
      ['2016-01-04 16:23:03', 'within 1m'],
      ['2016-01-04 12:30:03', 'within 1m'],
      ['2016-01-04 12:28:03', 'within 1m'],
      ['2016-01-04 12:24:03', 'within 1m'],
      ['2016-01-04 12:23:03', 'within 1m'],
      ['2016-01-04 11:23:03', 'within 1m'],
      ['2016-01-04 10:23:03', 'within 1m'],
      ['2016-01-03 07:02:03', 'within 1m'],
      ['2016-01-01 07:08:03', 'within 1m'],
      ['2016-01-01 01:03:03', 'within 1m'],
      ['2016-01-01 01:02:03', 'within 1m'],
    ],
  },
  {
    vector: 27,
    policy: { within: '13d23h' },
    keep: [
      ['2016-01-18 12:02:03', 'within 13d23h'],
      ['2016-01-12 21:08:03', 'within 13d23h'],
      ['2016-01-12 21:02:03', 'within 13d23h'],
      ['2016-01-09 21:02:03', 'within 13d23h'],
      ['2016-01-08 20:02:03', 'within 13d23h'],
      ['2016-01-07 10:02:03', 'within 13d23h'],
      ['2016-01-06 08:02:03', 'within 13d23h'],
      ['2016-01-05 09:02:03', 'within 13d23h'],
      ['2016-01-04 16:23:03', 'within 13d23h'],
    ],
  },
  {
    vector: 28,
    policy: { within: '2m2h' },
    keep: [
      ['2016-01-18 12:02:03', 'within 2m2h'],
      ['2016-01-12 21:08:03', 'within 2m2h'],
      ['2016-01-12 21:02:03', 'within 2m2h'],
      ['2016-01-09 21:02:03', 'within 2m2h'],
      ['2016-01-08 20:02:03', 'within 2m2h'],
      ['2016-01-07 10:02:03', 'within 2m2h'],
      ['2016-01-06 08:02:03', 'within 2m2h'],
      ['2016-01-05 09:02:03', 'within 2m2h'],
      ['2016-01-04 16:23:03', 'within 2m2h'],
      ['2016-01-04 12:30:03', 'within 2m2h'],
      ['2016-01-04 12:28:03', 'within 2m2h'],
      ['2016-01-04 12:24:03', 'within 2m2h'],
      ['2016-01-04 12:23:03', 'within 2m2h'],
      ['2016-01-04 11:23:03', 'within 2m2h'],
      ['2016-01-04 10:23:03', 'within 2m2h'],
      ['2016-01-03 07:02:03', 'within 2m2h'],
      ['2016-01-01 07:08:03', 'within 2m2h'],
      ['2016-01-01 01:03:03', 'within 2m2h'],
      ['2016-01-01 01:02:03', 'within 2m2h'],
      ['2015-11-22 10:20:30', 'within 2m2h'],
      ['2015-11-21 10:20:30', 'within 2m2h'],
      ['2015-11-20 10:20:30', 'within 2m2h'],
      ['2015-11-18 10:20:30', 'within 2m2h'],
    ],
  },
  {
    vector: 32,
    policy: { withinWeekly: '1y2m3d3h' },
    keep: [
      ['2016-01-18 12:02:03', 'weekly within 1y2m3d3h'],
      ['2016-01-12 21:08:03', 'weekly within 1y2m3d3h'],
      ['2016-01-09 21:02:03', 'weekly within 1y2m3d3h'],
      ['2016-01-03 07:02:03', 'weekly within 1y2m3d3h'],
      ['2015-11-22 10:20:30', 'weekly within 1y2m3d3h'],
      ['2015-11-15 10:20:30', 'weekly within 1y2m3d3h'],
      ['2015-11-08 10:20:30', 'weekly within 1y2m3d3h'],
      ['2015-10-22 10:20:30', 'weekly within 1y2m3d3h'],
      ['2015-10-11 10:20:30', 'weekly within 1y2m3d3h'],
      ['2015-10-02 10:20:30', 'weekly within 1y2m3d3h'],
      ['2015-09-22 10:20:30', 'weekly within 1y2m3d3h'],
      ['2015-09-20 10:20:30', 'weekly within 1y2m3d3h'],
      ['2015-09-11 10:20:30', 'weekly within 1y2m3d3h'],
      ['2015-09-06 10:20:30', 'weekly within 1y2m3d3h'],
      ['2015-08-22 10:20:30', 'weekly within 1y2m3d3h'],
      ['2015-08-15 10:20:30', 'weekly within 1y2m3d3h'],
      ['2015-08-08 10:20:30', 'weekly within 1y2m3d3h'],
      ['2014-11-22 10:20:30', 'weekly within 1y2m3d3h'],
      ['2014-11-15 10:20:30', 'weekly within 1y2m3d3h'],
    ],
  },
  {
    vector: 33,
    policy: { withinMonthly: '1y2m3d3h' },
    keep: [
      ['2016-01-18 12:02:03', 'monthly within 1y2m3d3h'],
      ['2015-11-22 10:20:30', 'monthly within 1y2m3d3h'],
      ['2015-10-22 10:20:30', 'monthly within 1y2m3d3h'],
      ['2015-09-22 10:20:30', 'monthly within 1y2m3d3h'],
      ['2015-08-22 10:20:30', 'monthly within 1y2m3d3h'],
      ['2014-11-22 10:20:30', 'monthly within 1y2m3d3h'],
    ],
  },
  {
    vector: 34,
    policy: { withinYearly: '1y2m3d3h' },
    keep: [
      ['2016-01-18 12:02:03', 'yearly within 1y2m3d3h'],
      ['2015-11-22 10:20:30', 'yearly within 1y2m3d3h'],
      ['2014-11-22 10:20:30', 'yearly within 1y2m3d3h'],
    ],
  },
  {
    vector: 35,
    policy: { within: '1h', withinHourly: '1d', withinDaily: '7d', withinWeekly: '1m', withinMonthly: '1y', withinYearly: '9999y' },
    keep: [
      ['2016-01-18 12:02:03', 'within 1h', 'hourly within 1d', 'daily within 7d', 'weekly within 1m', 'monthly within 1y', 'yearly within 9999y'],
      ['2016-01-12 21:08:03', 'daily within 7d', 'weekly within 1m'],
      ['2016-01-09 21:02:03', 'weekly within 1m'],
      ['2016-01-03 07:02:03', 'weekly within 1m'],
      ['2015-11-22 10:20:30', 'monthly within 1y', 'yearly within 9999y'],
      ['2015-10-22 10:20:30', 'monthly within 1y'],
      ['2015-09-22 10:20:30', 'monthly within 1y'],
      ['2015-08-22 10:20:30', 'monthly within 1y'],
      ['2014-11-22 10:20:30', 'yearly within 9999y'],
      ['2014-08-08 10:20:30', 'oldest yearly within 9999y'],
    ],
  },
];

const toDate = (t: string): Date => new Date(t.replace(' ', 'T') + 'Z');
const short = (d: Date): string => d.toISOString().replace('T', ' ').replace(/\.?0*Z$/, '');

// Equal times keep restic's input order (a stable sort); planRetention puts the higher id first, so ids fall with the index.
const INPUT = RESTIC_INPUT.map((t, i) => ({ id: `r${String(999 - i)}`, createdAt: toDate(t) }));
const TIME = new Map(INPUT.map((b) => [b.id, b.createdAt]));

function planned(policy: RetentionPolicy): [string, ...string[]][] {
  return planRetention(INPUT, policy).keep.map((k) => [short(TIME.get(k.id) ?? new Date(NaN)), ...k.reasons]);
}

describe("restic's policy vectors", () => {
  it('has restic\'s 103 input snapshots', () => {
    expect(INPUT).toHaveLength(103);
    expect(short(toDate('2014-08-13 10:20:30.1'))).toBe('2014-08-13 10:20:30.1');
  });

  for (const c of CASES) {
    it(`vector ${c.vector}: ${JSON.stringify(c.policy)} keeps what restic keeps, for the same reasons`, () => {
      expect(planned(c.policy)).toEqual(c.keep);
    });
  }

  it('vectors 36-38: unlimited counts keep every snapshot (or every hour) as restic does', () => {
    expect(planRetention(INPUT, { last: -1 }).remove).toEqual([]);
    expect(planRetention(INPUT, { last: -1, hourly: -1 }).remove).toEqual([]);
    // restic keeps 90 of the 103: one per hour, plus the oldest.
    expect(planRetention(INPUT, { hourly: -1 }).keep).toHaveLength(90);
  });

  it('the oldest-within rule only reaches the oldest backup when the window covers it (vectors 34 and 35)', () => {
    const inside = CASES.find((c) => c.vector === 35);
    const outside = CASES.find((c) => c.vector === 34);
    expect(inside?.keep.at(-1)).toEqual(['2014-08-08 10:20:30', 'oldest yearly within 9999y']);
    expect(outside?.keep.flat().some((r) => r.startsWith('oldest'))).toBe(false);
  });
});
