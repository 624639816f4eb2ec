import { describe, it, expect } from 'vitest';
import { isEmptyPolicy, parseDuration, planRetention, type RetentionPolicy } from '../../src/backup/retention.js';
import { BackupError, ConfigError } from '../../src/errors.js';

type Backup = { id: string; createdAt: Date };

const b = (id: string, iso: string): Backup => ({ id, createdAt: new Date(iso) });

// Expected plans are written out by hand; the helper only shortens the notation.
function plan(keep: [string, ...string[]][], remove: string[]) {
  return {
    keep: keep.map(([id, ...reasons]) => ({ id, group: 'full', reasons })),
    remove: remove.map((id) => ({ id, group: 'full' })),
  };
}

function expectPolicyError(fn: () => unknown, message?: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(ConfigError);
  expect((caught as ConfigError).code).toBe('E_RETENTION_POLICY');
  if (message !== undefined) expect((caught as ConfigError).message).toMatch(message);
}

describe('planRetention basics', () => {
  it('returns an empty plan for no backups', () => {
    expect(planRetention([], { daily: 7 })).toEqual({ keep: [], remove: [] });
    expect(planRetention([], {})).toEqual({ keep: [], remove: [] });
  });

  it('keeps everything, newest first, under an empty policy', () => {
    const backups = [b('old', '2024-01-01T00:00:00Z'), b('new', '2024-03-01T00:00:00Z'), b('mid', '2024-02-01T00:00:00Z')];
    const expected = plan(
      [
        ['new', 'policy is empty'],
        ['mid', 'policy is empty'],
        ['old', 'policy is empty'],
      ],
      [],
    );
    expect(planRetention(backups, {})).toEqual(expected);
    // Zero counts and zero durations switch rules off, so this is empty too.
    expect(planRetention(backups, { last: 0, daily: 0, within: '0d', withinDaily: '0y0m0d0h' })).toEqual(expected);
  });

  it('orders equal times by id descending and does not mutate the input', () => {
    const backups = [b('a', '2024-01-01T00:00:00Z'), b('c', '2024-01-01T00:00:00Z'), b('b', '2024-01-01T00:00:00Z')];
    expect(planRetention(backups, { last: 2 })).toEqual(plan([['c', 'last backup'], ['b', 'last backup']], ['a']));
    expect(backups.map((x) => x.id)).toEqual(['a', 'c', 'b']);
  });

  it('lists every input exactly once', () => {
    const backups: Backup[] = [];
    for (let i = 0; i < 200; i++) {
      backups.push(b(`id${i}`, new Date(Date.UTC(2023, 0, 1) + i * 7_919_000).toISOString()));
    }
    const result = planRetention(backups, { hourly: 5, daily: 3, weekly: 2, monthly: 1, withinDaily: '3d' });
    const ids = [...result.keep.map((k) => k.id), ...result.remove.map((r) => r.id)];
    expect(ids).toHaveLength(200);
    expect(new Set(ids).size).toBe(200);
  });

  it('rejects a backup with an invalid date', () => {
    let caught: unknown;
    try {
      planRetention([b('ok', '2024-01-01T00:00:00Z'), b('bad', 'not a date')], { last: 1 });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(BackupError);
    expect((caught as BackupError).code).toBe('E_RETENTION_INPUT');
  });
});

describe('last', () => {
  const backups = [
    b('n1', '2024-05-05T00:00:00Z'),
    b('n2', '2024-05-04T00:00:00Z'),
    b('n3', '2024-05-03T00:00:00Z'),
    b('n4', '2024-05-02T00:00:00Z'),
    b('n5', '2024-05-01T00:00:00Z'),
  ];

  it('keeps the N newest regardless of period', () => {
    expect(planRetention(backups, { last: 2 })).toEqual(plan([['n1', 'last backup'], ['n2', 'last backup']], ['n3', 'n4', 'n5']));
  });

  it('keeps all when N exceeds the number of backups, without an "oldest" reason', () => {
    expect(planRetention(backups.slice(0, 3), { last: 10 })).toEqual(
      plan(
        [
          ['n1', 'last backup'],
          ['n2', 'last backup'],
          ['n3', 'last backup'],
        ],
        [],
      ),
    );
  });

  it('keeps all with -1', () => {
    expect(planRetention(backups, { last: -1 }).remove).toEqual([]);
  });
});

describe('hourly and daily buckets (UTC)', () => {
  const hours = [
    b('h1', '2024-05-17T10:05:00Z'),
    b('h2', '2024-05-17T09:41:00Z'),
    b('h3', '2024-05-17T09:36:00Z'),
    b('h4', '2024-05-17T08:59:59Z'),
    b('h5', '2024-05-16T10:30:00Z'),
  ];

  it('keeps the newest backup of each hour', () => {
    // h3 shares 09h with h2; the count runs out after 10h, 09h, 08h.
    expect(planRetention(hours, { hourly: 3 })).toEqual(
      plan(
        [
          ['h1', 'hourly backup'],
          ['h2', 'hourly backup'],
          ['h4', 'hourly backup'],
        ],
        ['h3', 'h5'],
      ),
    );
  });

  it('treats the same hour on another day as another period', () => {
    expect(planRetention(hours, { hourly: 4 })).toEqual(
      plan(
        [
          ['h1', 'hourly backup'],
          ['h2', 'hourly backup'],
          ['h4', 'hourly backup'],
          ['h5', 'hourly backup'],
        ],
        ['h3'],
      ),
    );
  });

  it('cuts days at UTC midnight, not at the offset in the timestamp', () => {
    const backups = [
      b('u0', '2024-05-17T00:30:00Z'),
      b('u1', '2024-05-17T01:00:00+02:00'), // 2024-05-16T23:00Z
      b('u2', '2024-05-16T22:00:00Z'),
    ];
    expect(planRetention(backups, { daily: 2 })).toEqual(plan([['u0', 'daily backup'], ['u1', 'daily backup']], ['u2']));
  });
});

describe('oldest backup when a count is not used up', () => {
  const days = [
    b('d1', '2024-03-10T20:00:00Z'),
    b('d2', '2024-03-10T08:00:00Z'),
    b('d3', '2024-03-09T23:00:00Z'),
    b('d4', '2024-03-09T01:00:00Z'),
  ];

  it('keeps the oldest backup when the count has some left', () => {
    // daily=5: 10th (4 left), 9th (3 left), then d4 shares the 9th but is the oldest.
    expect(planRetention(days, { daily: 5 })).toEqual(
      plan(
        [
          ['d1', 'daily backup'],
          ['d3', 'daily backup'],
          ['d4', 'oldest daily backup'],
        ],
        ['d2'],
      ),
    );
  });

  it('does not keep the oldest once the count is used up', () => {
    expect(planRetention(days, { daily: 2 })).toEqual(plan([['d1', 'daily backup'], ['d3', 'daily backup']], ['d2', 'd4']));
    expect(planRetention(days, { daily: 1 })).toEqual(plan([['d1', 'daily backup']], ['d2', 'd3', 'd4']));
  });

  it('always keeps the oldest with an unlimited count', () => {
    expect(planRetention(days, { daily: -1 })).toEqual(
      plan(
        [
          ['d1', 'daily backup'],
          ['d3', 'daily backup'],
          ['d4', 'oldest daily backup'],
        ],
        ['d2'],
      ),
    );
    const sameDay = [b('c1', '2024-01-01T10:00:00Z'), b('c2', '2024-01-01T09:00:00Z'), b('c3', '2024-01-01T08:00:00Z')];
    expect(planRetention(sameDay, { daily: -1 })).toEqual(
      plan([['c1', 'daily backup'], ['c3', 'oldest daily backup']], ['c2']),
    );
  });

  it('uses the plain reason when the oldest starts a period of its own', () => {
    const distinct = [b('e1', '2024-03-10T00:00:00Z'), b('e2', '2024-03-09T00:00:00Z'), b('e3', '2024-03-08T00:00:00Z')];
    expect(planRetention(distinct, { daily: 5 })).toEqual(
      plan(
        [
          ['e1', 'daily backup'],
          ['e2', 'daily backup'],
          ['e3', 'daily backup'],
        ],
        [],
      ),
    );
  });

  it('lists an "oldest" reason for every rule that keeps the oldest', () => {
    const backups = [b('b1', '2024-01-15T10:00:00Z'), b('b2', '2024-01-15T08:00:00Z')];
    expect(planRetention(backups, { daily: 5, monthly: 5 })).toEqual(
      plan(
        [
          ['b1', 'daily backup', 'monthly backup'],
          ['b2', 'oldest daily backup', 'oldest monthly backup'],
        ],
        [],
      ),
    );
  });
});

describe('ISO weeks, months and years across year ends', () => {
  it('puts 2025-12-29 into 2026-W01', () => {
    const backups = [
      b('w1', '2026-01-05T12:00:00Z'), // Mon, 2026-W02
      b('w2', '2026-01-01T12:00:00Z'), // Thu, 2026-W01
      b('w3', '2025-12-29T12:00:00Z'), // Mon, 2026-W01
      b('w4', '2025-12-28T12:00:00Z'), // Sun, 2025-W52
    ];
    expect(planRetention(backups, { weekly: 10 })).toEqual(
      plan(
        [
          ['w1', 'weekly backup'],
          ['w2', 'weekly backup'],
          ['w4', 'weekly backup'],
        ],
        ['w3'],
      ),
    );
    // Calendar months split the same backups differently: w3 and w4 are both December 2025.
    expect(planRetention(backups, { monthly: 10 })).toEqual(
      plan(
        [
          ['w1', 'monthly backup'],
          ['w3', 'monthly backup'],
          ['w4', 'oldest monthly backup'],
        ],
        ['w2'],
      ),
    );
  });

  const turnOf2021 = [
    b('x1', '2021-01-04T00:00:00Z'), // Mon, 2021-W01
    b('x2', '2021-01-03T23:59:00Z'), // Sun, 2020-W53
    b('x3', '2021-01-01T00:00:00Z'), // Fri, 2020-W53
    b('x4', '2020-12-31T10:00:00Z'), // Thu, 2020-W53
    b('x5', '2020-12-27T10:00:00Z'), // Sun, 2020-W52
    b('x6', '2020-12-20T10:00:00Z'), // Sun, 2020-W51
  ];

  it('keeps 2021-01-03 and 2020-12-31 in the same week 2020-W53', () => {
    expect(planRetention(turnOf2021, { weekly: 3 })).toEqual(
      plan(
        [
          ['x1', 'weekly backup'],
          ['x2', 'weekly backup'],
          ['x5', 'weekly backup'],
        ],
        ['x3', 'x4', 'x6'],
      ),
    );
  });

  it('uses calendar years for yearly', () => {
    expect(planRetention(turnOf2021, { yearly: 5 })).toEqual(
      plan(
        [
          ['x1', 'yearly backup'],
          ['x4', 'yearly backup'],
          ['x6', 'oldest yearly backup'],
        ],
        ['x2', 'x3', 'x5'],
      ),
    );
  });

  it('uses calendar months, including a leap day', () => {
    const backups = [
      b('m1', '2024-03-01T00:00:00Z'),
      b('m2', '2024-02-29T23:59:00Z'),
      b('m3', '2024-02-01T00:00:00Z'),
      b('m4', '2024-01-31T23:00:00Z'),
      b('m5', '2023-12-31T23:59:59Z'),
    ];
    expect(planRetention(backups, { monthly: 3 })).toEqual(
      plan(
        [
          ['m1', 'monthly backup'],
          ['m2', 'monthly backup'],
          ['m4', 'monthly backup'],
        ],
        ['m3', 'm5'],
      ),
    );
  });
});

describe('within', () => {
  it('measures from the newest backup, not from now, and excludes the exact cutoff', () => {
    // Newest is 2020-06-10T12:00Z; 7d back is 2020-06-03T12:00Z.
    const backups = [
      b('n1', '2020-06-10T12:00:00Z'),
      b('n2', '2020-06-05T12:00:00Z'),
      b('n3', '2020-06-03T12:00:01Z'),
      b('n4', '2020-06-03T12:00:00Z'),
      b('n5', '2020-05-01T00:00:00Z'),
    ];
    expect(planRetention(backups, { within: '7d' })).toEqual(
      plan(
        [
          ['n1', 'within 7d'],
          ['n2', 'within 7d'],
          ['n3', 'within 7d'],
        ],
        ['n4', 'n5'],
      ),
    );
  });

  it('counts hours exactly', () => {
    // 2024-01-02T12:00Z minus 36h is 2024-01-01T00:00Z.
    const backups = [b('a', '2024-01-02T12:00:00Z'), b('b', '2024-01-01T00:00:01Z'), b('c', '2024-01-01T00:00:00Z')];
    expect(planRetention(backups, { within: '36h' })).toEqual(plan([['a', 'within 36h'], ['b', 'within 36h']], ['c']));
  });

  it('normalizes month ends like Go AddDate: Mar 31 minus 1 month is Mar 3', () => {
    // 2023-03-31 - 1m = "2023-02-31" = 2023-03-03 (not clamped to Feb 28).
    const backups = [
      b('p1', '2023-03-31T12:00:00Z'),
      b('p2', '2023-03-03T12:00:01Z'),
      b('p3', '2023-03-03T12:00:00Z'),
      b('p4', '2023-03-01T00:00:00Z'),
    ];
    expect(planRetention(backups, { within: '1m' })).toEqual(plan([['p1', 'within 1m'], ['p2', 'within 1m']], ['p3', 'p4']));
  });

  it('normalizes in leap years: 2024-03-31 minus 1m is Mar 2, 2024-02-29 minus 1y is 2023-03-01', () => {
    const leapMonth = [b('l1', '2024-03-31T00:00:00Z'), b('l2', '2024-03-02T00:00:01Z'), b('l3', '2024-03-02T00:00:00Z')];
    expect(planRetention(leapMonth, { within: '1m' })).toEqual(plan([['l1', 'within 1m'], ['l2', 'within 1m']], ['l3']));
    const leapYear = [
      b('k1', '2024-02-29T00:00:00Z'),
      b('k2', '2023-03-01T00:00:01Z'),
      b('k3', '2023-03-01T00:00:00Z'),
      b('k4', '2023-02-28T23:00:00Z'),
    ];
    expect(planRetention(leapYear, { within: '1y' })).toEqual(plan([['k1', 'within 1y'], ['k2', 'within 1y']], ['k3', 'k4']));
  });

  it('combines all units and prints the duration in canonical form', () => {
    // 2024-05-10T10:00Z: -1y -2m -3d gives 2023-03-07T10:00Z, then -3h gives 07:00Z.
    const backups = [b('c1', '2024-05-10T10:00:00Z'), b('c2', '2023-03-07T07:00:01Z'), b('c3', '2023-03-07T07:00:00Z')];
    expect(planRetention(backups, { within: '1y2m3d3h' })).toEqual(
      plan([['c1', 'within 1y2m3d3h'], ['c2', 'within 1y2m3d3h']], ['c3']),
    );
    expect(planRetention(backups.slice(0, 1), { within: '3h0m1d' })).toEqual(plan([['c1', 'within 1d3h']], []));
  });

  it('keeps everything when the window reaches past the earliest representable date', () => {
    const backups = [b('z1', '2024-01-01T00:00:00Z'), b('z2', '1970-01-01T00:00:00Z')];
    expect(planRetention(backups, { within: '9999999y' })).toEqual(
      plan([['z1', 'within 9999999y'], ['z2', 'within 9999999y']], []),
    );
  });

  it('keeps the newest backup of each day within the window', () => {
    // Newest 2024-06-10T18:00Z; 2d back is 2024-06-08T18:00Z.
    const backups = [
      b('q1', '2024-06-10T18:00:00Z'),
      b('q2', '2024-06-10T06:00:00Z'),
      b('q3', '2024-06-09T20:00:00Z'),
      b('q4', '2024-06-09T10:00:00Z'),
      b('q5', '2024-06-08T19:00:00Z'),
      b('q6', '2024-06-08T17:00:00Z'),
      b('q7', '2024-06-01T00:00:00Z'),
    ];
    // Within rules have no "oldest" special case, so q7 goes.
    expect(planRetention(backups, { withinDaily: '2d' })).toEqual(
      plan(
        [
          ['q1', 'daily within 2d'],
          ['q3', 'daily within 2d'],
          ['q5', 'daily within 2d'],
        ],
        ['q2', 'q4', 'q6', 'q7'],
      ),
    );
  });

  it('keeps the newest backup of each hour within the window', () => {
    // Newest 18:30Z; 3h back is 15:30Z.
    const backups = [
      b('r1', '2024-06-10T18:30:00Z'),
      b('r2', '2024-06-10T18:05:00Z'),
      b('r3', '2024-06-10T17:59:00Z'),
      b('r4', '2024-06-10T16:00:00Z'),
      b('r5', '2024-06-10T15:45:00Z'),
      b('r6', '2024-06-10T15:30:00Z'),
      b('r7', '2024-06-10T15:10:00Z'),
    ];
    expect(planRetention(backups, { withinHourly: '3h' })).toEqual(
      plan(
        [
          ['r1', 'hourly within 3h'],
          ['r3', 'hourly within 3h'],
          ['r4', 'hourly within 3h'],
          ['r5', 'hourly within 3h'],
        ],
        ['r2', 'r6', 'r7'],
      ),
    );
  });

  it('keeps the newest backup of each ISO week within the window', () => {
    // Newest 2021-01-05T00:00Z; 14d back is 2020-12-22T00:00Z.
    const backups = [
      b('s1', '2021-01-05T00:00:00Z'), // 2021-W01
      b('s2', '2021-01-04T00:00:00Z'), // 2021-W01
      b('s3', '2021-01-02T00:00:00Z'), // 2020-W53
      b('s4', '2020-12-28T00:00:00Z'), // 2020-W53
      b('s5', '2020-12-22T00:00:01Z'), // 2020-W52
      b('s6', '2020-12-21T12:00:00Z'), // 2020-W52, outside
    ];
    expect(planRetention(backups, { withinWeekly: '14d' })).toEqual(
      plan(
        [
          ['s1', 'weekly within 14d'],
          ['s3', 'weekly within 14d'],
          ['s5', 'weekly within 14d'],
        ],
        ['s2', 's4', 's6'],
      ),
    );
  });

  it('keeps monthly and yearly within their own windows', () => {
    // Newest 2024-02-15: 2m back is 2023-12-15, 2y back is 2022-02-15.
    const backups = [
      b('t1', '2024-02-15T00:00:00Z'),
      b('t2', '2024-01-20T00:00:00Z'),
      b('t3', '2023-12-20T00:00:00Z'),
      b('t4', '2023-12-10T00:00:00Z'),
      b('t5', '2022-06-01T00:00:00Z'),
      b('t6', '2022-02-14T00:00:00Z'),
    ];
    expect(planRetention(backups, { withinMonthly: '2m', withinYearly: '2y' })).toEqual(
      plan(
        [
          ['t1', 'monthly within 2m', 'yearly within 2y'],
          ['t2', 'monthly within 2m'],
          ['t3', 'monthly within 2m', 'yearly within 2y'],
          ['t5', 'yearly within 2y'],
        ],
        ['t4', 't6'],
      ),
    );
  });
});

describe('combined rules', () => {
  it('ORs rules and lists every reason in a fixed order', () => {
    // within 1d from 2024-04-10T12:00Z: cutoff 2024-04-09T12:00Z (exclusive).
    const backups = [
      b('a1', '2024-04-10T12:00:00Z'),
      b('a2', '2024-04-10T06:00:00Z'),
      b('a3', '2024-04-09T12:00:00Z'),
      b('a4', '2024-04-01T12:00:00Z'),
    ];
    const policy: RetentionPolicy = { last: 1, daily: 2, weekly: 1, within: '1d' };
    expect(planRetention(backups, policy)).toEqual(
      plan(
        [
          ['a1', 'within 1d', 'last backup', 'daily backup', 'weekly backup'],
          ['a2', 'within 1d'],
          ['a3', 'daily backup'],
        ],
        ['a4'],
      ),
    );
  });

  it('puts count reasons before within-bucket reasons', () => {
    expect(planRetention([b('only', '2024-01-01T00:00:00Z')], { withinDaily: '1d', yearly: 1, last: -1 })).toEqual(
      plan([['only', 'last backup', 'yearly backup', 'daily within 1d']], []),
    );
  });
});

describe('policy validation', () => {
  it('rejects negative counts other than -1 and non-integers', () => {
    for (const bad of [-2, -100, 1.5, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      expectPolicyError(() => planRetention([b('x', '2024-01-01T00:00:00Z')], { daily: bad }), /daily/);
      // Invalid policies fail even when there is nothing to plan.
      expectPolicyError(() => planRetention([], { weekly: bad }), /weekly/);
      expectPolicyError(() => isEmptyPolicy({ last: bad }));
    }
  });

  it('rejects invalid durations in any within rule', () => {
    expectPolicyError(() => planRetention([], { within: 'xyz' }), /^invalid duration "xyz": /);
    expectPolicyError(() => planRetention([], { withinHourly: '7w' }), /invalid duration "7w"/);
    expectPolicyError(() => isEmptyPolicy({ withinYearly: '' }));
  });
});

describe('parseDuration', () => {
  it('parses restic durations', () => {
    expect(parseDuration('1y2m3d3h')).toEqual({ years: 1, months: 2, days: 3, hours: 3, minutes: 0, seconds: 0 });
    expect(parseDuration('7d')).toEqual({ years: 0, months: 0, days: 7, hours: 0, minutes: 0, seconds: 0 });
    expect(parseDuration('36h')).toEqual({ years: 0, months: 0, days: 0, hours: 36, minutes: 0, seconds: 0 });
    expect(parseDuration('3h1d')).toEqual({ years: 0, months: 0, days: 1, hours: 3, minutes: 0, seconds: 0 });
    expect(parseDuration(' 2m ')).toEqual({ years: 0, months: 2, days: 0, hours: 0, minutes: 0, seconds: 0 });
    expect(parseDuration('0d')).toEqual({ years: 0, months: 0, days: 0, hours: 0, minutes: 0, seconds: 0 });
    expect(parseDuration('1d30min')).toEqual({ years: 0, months: 0, days: 1, hours: 0, minutes: 30, seconds: 0 });
    expect(parseDuration('007d')).toEqual({ years: 0, months: 0, days: 7, hours: 0, minutes: 0, seconds: 0 });
  });

  it('rejects anything else', () => {
    for (const bad of ['', '   ', 'xyz', '7', 'd', '7w', '7D', '1d2d', '-1d', '1.5d', '7 d', '1d 2h', '+1d', '99999999999999999999d']) {
      expectPolicyError(() => parseDuration(bad), /^invalid duration "/);
    }
  });
});

describe('isEmptyPolicy', () => {
  it('is true only when no rule is active', () => {
    expect(isEmptyPolicy({})).toBe(true);
    expect(isEmptyPolicy({ last: 0, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0 })).toBe(true);
    expect(isEmptyPolicy({ within: '0d', withinDaily: '0h' })).toBe(true);
    expect(isEmptyPolicy({ daily: -1 })).toBe(false);
    expect(isEmptyPolicy({ last: 1 })).toBe(false);
    expect(isEmptyPolicy({ within: '1h' })).toBe(false);
    expect(isEmptyPolicy({ withinYearly: '1y' })).toBe(false);
  });
});

describe('groups: full and per-user backups are planned apart', () => {
  // The day's failure: a clear (full), a restore of one deleted user (a per-user backup of what it
  // overwrote: nothing), two deletes (one user each). Older full backups come before.
  const day = (h: string): Date => new Date(`2026-11-29T${h}:00Z`);
  const history = [
    { id: 'full-08', createdAt: day('08:00'), group: 'full' as const },
    { id: 'full-09', createdAt: day('09:00'), group: 'full' as const },
    { id: 'clear-10', createdAt: day('10:00'), group: 'full' as const },
    { id: 'restore-11', createdAt: day('11:00'), group: 'user' as const },
    { id: 'delete-12', createdAt: day('12:00'), group: 'user' as const },
    { id: 'delete-13', createdAt: day('13:00'), group: 'user' as const },
  ];

  it('keep-last 2 keeps the two newest of each group, never trading the full backups for small ones', () => {
    expect(planRetention(history, { last: 2 })).toEqual({
      keep: [
        { id: 'delete-13', group: 'user', reasons: ['last backup'] },
        { id: 'delete-12', group: 'user', reasons: ['last backup'] },
        { id: 'clear-10', group: 'full', reasons: ['last backup'] },
        { id: 'full-09', group: 'full', reasons: ['last backup'] },
      ],
      remove: [
        { id: 'restore-11', group: 'user' },
        { id: 'full-08', group: 'full' },
      ],
    });
  });

  it('keep-daily 7 keeps the newest full backup of the day and the newest per-user one', () => {
    const plan = planRetention(history, { daily: 7 });
    expect(plan.keep.map((k) => [k.id, ...k.reasons])).toEqual([
      ['delete-13', 'daily backup'],
      // The counts are not used up at the oldest backup of each group: restic keeps it too.
      ['restore-11', 'oldest daily backup'],
      ['clear-10', 'daily backup'],
      ['full-08', 'oldest daily backup'],
    ]);
  });

  it('windows are measured from each group\'s own newest backup', () => {
    const plan = planRetention(history, { within: '2h' });
    // Per-user: after 11:00; full: after 08:00 (the cutoff itself is outside, as in restic).
    expect(plan.keep.map((k) => k.id)).toEqual(['delete-13', 'delete-12', 'clear-10', 'full-09']);
  });

  it('keeps a group\'s oldest inside a within-window with an "oldest" reason, as restic does', () => {
    const plan = planRetention(history, { withinDaily: '2d' });
    expect(plan.keep.map((k) => [k.id, ...k.reasons])).toEqual([
      ['delete-13', 'daily within 2d'],
      ['restore-11', 'oldest daily within 2d'],
      ['clear-10', 'daily within 2d'],
      ['full-08', 'oldest daily within 2d'],
    ]);
    // The window does not reach the oldest: nothing beyond the newest of each day is kept.
    const older = [{ id: 'old', createdAt: new Date('2026-11-01T00:00:00Z') }, ...history.filter((b) => b.group === 'full')];
    expect(planRetention(older, { withinDaily: '2d' }).keep.map((k) => k.id)).toEqual(['clear-10']);
  });

  it('many per-user backups never remove a full backup', () => {
    const burst = Array.from({ length: 50 }, (_, i) => ({ id: `u${String(i).padStart(2, '0')}`, createdAt: new Date(Date.UTC(2026, 10, 30, 0, i)), group: 'user' as const }));
    const plan = planRetention([...history.filter((b) => b.group === 'full'), ...burst], { last: 3 });
    expect(plan.keep.filter((k) => k.group === 'full').map((k) => k.id)).toEqual(['clear-10', 'full-09', 'full-08']);
    expect(plan.keep.filter((k) => k.group === 'user')).toHaveLength(3);
  });

  it('keeps backups without a date, in their group, whatever the policy', () => {
    const plan = planRetention([...history, { id: 'legacy', createdAt: null, group: 'user' }], { last: 1 });
    expect(plan.keep.at(-1)).toEqual({ id: 'legacy', group: 'user', reasons: ['no date'] });
    expect(plan.remove.some((r) => r.id === 'legacy')).toBe(false);
  });

  it('treats input without a group as full, and refuses an unknown group', () => {
    expect(planRetention([b('x', '2026-01-01T00:00:00Z')], { last: 1 }).keep).toEqual([{ id: 'x', group: 'full', reasons: ['last backup'] }]);
    let caught: unknown;
    try {
      planRetention([{ id: 'x', createdAt: new Date(), group: 'weekly' as unknown as 'full' }], { last: 1 });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(BackupError);
    expect((caught as BackupError).code).toBe('E_RETENTION_INPUT');
  });
});
