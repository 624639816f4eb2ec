import { describe, expect, it } from 'vitest';
import { formatDuration, isZeroDuration, parseDuration, parseIntervalMs, subtractDuration, type Duration } from '../../src/duration.js';

// The one duration syntax (backup.every, --keep-within, --since): what each refusal tells the
// operator, which error code it carries, and what each unit means in arithmetic.

const ZERO: Duration = { years: 0, months: 0, days: 0, hours: 0, minutes: 0, seconds: 0 };

function failure(f: () => unknown): { code: string; message: string; details?: unknown } {
  try {
    f();
  } catch (err) {
    return err as { code: string; message: string; details?: unknown };
  }
  throw new Error('did not throw');
}

describe('parseDuration', () => {
  it('ignores surrounding spaces, but the message quotes the text as given', () => {
    expect(parseDuration('  7d \n')).toEqual({ ...ZERO, days: 7 });
    expect(failure(() => parseDuration(' 7 ', { what: 'backup.every' }))).toEqual(
      expect.objectContaining({ code: 'E_CONFIG', message: 'invalid backup.every duration " 7 ": no unit after number 7; use y (years), m (months), d (days), h (hours), min (minutes), s (seconds)', details: { value: ' 7 ' } }),
    );
  });

  it('throws E_CONFIG unless told another code, with the value in details', () => {
    expect(failure(() => parseDuration('x'))).toMatchObject({ code: 'E_CONFIG', message: 'invalid duration "x": expected a number at "x"', details: { value: 'x' } });
    expect(failure(() => parseDuration('x', { code: 'E_RETENTION_POLICY', what: '--keep-within' }))).toMatchObject({
      code: 'E_RETENTION_POLICY',
      message: 'invalid --keep-within duration "x": expected a number at "x"',
    });
    expect(failure(() => parseDuration('7q')).message).toBe('invalid duration "7q": unknown unit "q" after number 7; use y (years), m (months), d (days), h (hours), min (minutes), s (seconds)');
    expect(failure(() => parseDuration('7d8')).message).toBe('invalid duration "7d8": no unit after number 8; use y (years), m (months), d (days), h (hours), min (minutes), s (seconds)');
  });
});

describe('isZeroDuration and formatDuration', () => {
  const fields: (keyof Duration)[] = ['years', 'months', 'days', 'hours', 'minutes', 'seconds'];

  it('zero only when every field is zero', () => {
    expect(isZeroDuration(ZERO)).toBe(true);
    for (const f of fields) expect(isZeroDuration({ ...ZERO, [f]: 1 }), f).toBe(false);
  });

  it('writes each unit with its own letter, largest first, and 0s for zero', () => {
    expect(formatDuration(ZERO)).toBe('0s');
    const letters = ['y', 'm', 'd', 'h', 'min', 's'];
    fields.forEach((f, i) => expect(formatDuration({ ...ZERO, [f]: 3 })).toBe(`3${letters[i]}`));
    expect(formatDuration({ years: 1, months: 2, days: 3, hours: 4, minutes: 5, seconds: 6 })).toBe('1y2m3d4h5min6s');
    for (const text of ['1y', '2m', '3d', '4h', '5min', '6s', '1y2m3d4h5min6s']) expect(formatDuration(parseDuration(text))).toBe(text);
  });
});

describe('subtractDuration', () => {
  const from = new Date('2026-03-31T12:00:00Z');
  it('steps back years, months and days on the calendar, then hours, minutes and seconds exactly', () => {
    expect(new Date(subtractDuration(from, { ...ZERO, years: 2 })).toISOString()).toBe('2024-03-31T12:00:00.000Z');
    expect(new Date(subtractDuration(from, { ...ZERO, months: 1 })).toISOString()).toBe('2026-03-03T12:00:00.000Z');
    expect(new Date(subtractDuration(from, { ...ZERO, days: 31 })).toISOString()).toBe('2026-02-28T12:00:00.000Z');
    expect(new Date(subtractDuration(from, { ...ZERO, hours: 1, minutes: 2, seconds: 3 })).toISOString()).toBe('2026-03-31T10:57:57.000Z');
  });

  it('a step before the earliest date is -Infinity, not NaN', () => {
    expect(subtractDuration(from, { ...ZERO, years: 300_000 })).toBe(Number.NEGATIVE_INFINITY);
    expect(subtractDuration(from, { ...ZERO, days: 200_000_000 })).toBe(Number.NEGATIVE_INFINITY);
  });
});

describe('parseIntervalMs', () => {
  it('adds days, hours, minutes and seconds', () => {
    expect(parseIntervalMs('1d2h3min4s', 'backup.every')).toBe(((24 + 2) * 60 + 3) * 60_000 + 4000);
    expect(parseIntervalMs('45s', 'backup.every')).toBe(45_000);
  });

  it('a text that is no duration at all is refused naming the setting', () => {
    expect(failure(() => parseIntervalMs('soon', 'backup.every'))).toMatchObject({ code: 'E_CONFIG', message: 'invalid backup.every duration "soon": expected a number at "soon"' });
  });

  it('refuses months with a hint to write min, and years, naming the setting', () => {
    expect(failure(() => parseIntervalMs(' 30m ', 'backup.every'))).toMatchObject({
      code: 'E_CONFIG',
      message: 'invalid backup.every " 30m ": "m" means months; for minutes write "30min" (units for an interval: d, h, min, s)',
      details: { value: ' 30m ' },
    });
    expect(failure(() => parseIntervalMs('1h30m', 'backup.every')).message).toBe(
      'invalid backup.every "1h30m": "m" means months; for minutes write "1h30min" (units for an interval: d, h, min, s)',
    );
    // Only the month is rewritten, not a minute written right already.
    expect(failure(() => parseIntervalMs('5min2m', 'x')).message).toContain('write "5min2min"');
    expect(failure(() => parseIntervalMs('12m', 'x')).message).toContain('write "12min"');
    expect(failure(() => parseIntervalMs('1y', 'backup.every'))).toMatchObject({
      code: 'E_CONFIG',
      message: 'invalid backup.every "1y": "y" (years) is not an interval (units for an interval: d, h, min, s)',
      details: { value: '1y' },
    });
    expect(failure(() => parseIntervalMs('1y2m', 'x')).message).toContain('"m" means months');
  });
});
