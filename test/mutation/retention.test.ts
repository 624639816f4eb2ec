import { describe, expect, it } from 'vitest';
import { parseDuration, planRetention, type RetentionGroup } from '../../src/backup/retention.js';

// Operators read these messages when a `prune` policy is refused: each must say what is wrong.
function durationError(s: string): string {
  try {
    parseDuration(s);
  } catch (err) {
    expect(err).toMatchObject({ code: 'E_RETENTION_POLICY' });
    return (err as Error).message;
  }
  throw new Error(`parseDuration(${JSON.stringify(s)}) did not throw`);
}

describe('parseDuration explains each refusal', () => {
  it.each([
    ['', 'invalid duration "": it is empty; expected e.g. "7d", "1y2m3d4h" or "30min"'],
    ['-7d', 'invalid duration "-7d": negative numbers are not allowed'],
    ['d7', 'invalid duration "d7": expected a number at "d7"'],
    ['x7d', 'invalid duration "x7d": expected a number at "x7d"'],
    ['7d-1h', 'invalid duration "7d-1h": negative numbers are not allowed'],
    ['7', 'invalid duration "7": no unit after number 7; use y (years), m (months), d (days), h (hours), min (minutes), s (seconds)'],
    ['7 d', 'invalid duration "7 d": no unit after number 7; use y (years), m (months), d (days), h (hours), min (minutes), s (seconds)'],
    ['3w', 'invalid duration "3w": unknown unit "w" after number 3; use y (years), m (months), d (days), h (hours), min (minutes), s (seconds)'],
    ['1d2d', 'invalid duration "1d2d": unit "d" appears more than once'],
    ['99999999999999999999h', 'invalid duration "99999999999999999999h": number 99999999999999999999 is too large'],
  ])('%j', (input, message) => {
    expect(durationError(input)).toBe(message);
  });
});

const at = (id: string, iso: string) => ({ id, createdAt: new Date(iso) });

describe('planRetention edges', () => {
  it('names the backup whose date is invalid', () => {
    let caught: unknown;
    try {
      planRetention([at('good', '2026-01-01T00:00:00Z'), { id: 'broken', createdAt: new Date('nope') }], { last: 1 });
    } catch (err) {
      caught = err;
    }
    expect(caught).toMatchObject({ code: 'E_RETENTION_INPUT', message: 'backup "broken" has an invalid creation date', details: { id: 'broken' } });
  });

  it('an empty list gives an empty plan under any policy', () => {
    expect(planRetention([], { last: 3, within: '7d', withinDaily: '30d' })).toEqual({ keep: [], remove: [] });
  });

  it('orders backups with equal times by id descending whatever the input order', () => {
    const t = '2026-03-01T12:00:00Z';
    const ids = ['b', 'd', 'a', 'c'];
    // Every rotation, plus the reverse: a comparator that only handles one direction fails some of them.
    const orders = [...ids.map((_, i) => [...ids.slice(i), ...ids.slice(0, i)]), ['a', 'b', 'c', 'd'], ['d', 'c', 'b', 'a']];
    for (const order of orders) {
      const plan = planRetention(order.map((id) => at(id, t)), { last: 4 });
      expect(plan.keep.map((k) => k.id), order.join('')).toEqual(['d', 'c', 'b', 'a']);
    }
  });

  it('a within-window rule keeps only backups strictly newer than newest minus the window', () => {
    // Alone in its day, so only the cutoff decides.
    const atCutoff = planRetention([at('newest', '2026-03-10T12:00:00Z'), at('at-cutoff', '2026-03-09T12:00:00Z')], { withinDaily: '1d' });
    expect(atCutoff).toEqual({ keep: [{ id: 'newest', group: 'full', reasons: ['daily within 1d'] }], remove: [{ id: 'at-cutoff', group: 'full' }] });
    const inside = planRetention([at('newest', '2026-03-10T12:00:00Z'), at('inside', '2026-03-09T12:00:01Z')], { withinDaily: '1d' });
    expect(inside.keep.map((k) => k.id)).toEqual(['newest', 'inside']);
    expect(inside.remove).toEqual([]);
  });
});

describe('planRetention across groups', () => {
  const t = '2026-03-01T12:00:00Z';
  const inGroup = (id: string, group: RetentionGroup, createdAt: Date | null = new Date(t)) => ({ id, group, createdAt });

  it('names the backup whose group is unknown', () => {
    let caught: unknown;
    try {
      planRetention([inGroup('fine', 'full'), inGroup('odd', 'nightly' as RetentionGroup)], { last: 1 });
    } catch (err) {
      caught = err;
    }
    expect(caught).toMatchObject({ code: 'E_RETENTION_INPUT', message: 'backup "odd" has an unknown retention group "nightly"', details: { id: 'odd' } });
  });

  it('merges both groups into one list, equal times by id descending, whatever the input order', () => {
    const full = ['a', 'd', 'e', 'h'];
    const user = ['b', 'c', 'f', 'g'];
    const inputs = [
      [...full.map((id) => inGroup(id, 'full')), ...user.map((id) => inGroup(id, 'user'))],
      [...user.map((id) => inGroup(id, 'user')), ...full.map((id) => inGroup(id, 'full'))].reverse(),
    ];
    for (const input of inputs) {
      const all = planRetention(input, { last: 4 });
      expect(all.keep.map((k) => `${k.id}:${k.group}`)).toEqual(['h:full', 'g:user', 'f:user', 'e:full', 'd:full', 'c:user', 'b:user', 'a:full']);
      // Each group keeps its own highest id; the rest, from both groups, in one list.
      const one = planRetention(input, { last: 1 });
      expect(one.keep.map((k) => k.id)).toEqual(['h', 'g']);
      expect(one.remove.map((r) => `${r.id}:${r.group}`)).toEqual(['f:user', 'e:full', 'd:full', 'c:user', 'b:user', 'a:full']);
    }
  });

  it('lists dateless backups of both groups last, by id descending, whatever the input order', () => {
    const dateless = ['n2', 'n4', 'n1', 'n3'];
    for (const order of [dateless, [...dateless].reverse(), ['n1', 'n2', 'n3', 'n4'], ['n3', 'n1', 'n4', 'n2']]) {
      const input = [inGroup('dated', 'full'), ...order.map((id, i) => inGroup(id, i % 2 === 0 ? 'full' : 'user', null))];
      const plan = planRetention(input, { last: 1 });
      expect(plan.keep.map((k) => k.id), order.join(',')).toEqual(['dated', 'n4', 'n3', 'n2', 'n1']);
      expect(plan.keep.slice(1).every((k) => k.reasons.join() === 'no date')).toBe(true);
    }
  });
});
