import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration, parseIntervalMs, subtractDuration } from '../src/duration.js';
import { planRetention } from '../src/backup/retention.js';
import { parseSince } from '../src/cli/command.js';
import { parseInterval } from '../src/server/scheduler.js';

const NOW = new Date('2026-11-30T12:00:00Z');

describe('the one duration syntax', () => {
  it('reads restic units with m as months, plus min and s', () => {
    expect(parseDuration('1y2m3d4h5min6s')).toEqual({ years: 1, months: 2, days: 3, hours: 4, minutes: 5, seconds: 6 });
    expect(parseDuration('90min')).toMatchObject({ minutes: 90, months: 0 });
    expect(parseDuration('30m')).toMatchObject({ months: 30, minutes: 0 });
    expect(formatDuration(parseDuration('30s2h'))).toBe('2h30s');
  });

  it('refuses what it does not know, naming the setting', () => {
    expect(() => parseDuration('30M', { what: '--keep-within' })).toThrow(/invalid --keep-within duration "30M": unknown unit "M"/);
    expect(() => parseDuration('5mins')).toThrow(/expected a number at "s"/);
    expect(() => parseDuration('1min1min')).toThrow(/appears more than once/);
  });

  it('means the same everywhere: 30m is 30 months for --since and --keep-within, refused for backup.every', () => {
    const since = parseSince('30m', NOW);
    expect(since.toISOString()).toBe('2024-05-30T12:00:00.000Z');
    expect(parseSince('30min', NOW).toISOString()).toBe('2026-11-30T11:30:00.000Z');
    // A backup 29 months before the newest is within "30m"; with "30min" it is not.
    const backups = [
      { id: 'new', createdAt: NOW },
      { id: 'old', createdAt: new Date('2024-07-01T00:00:00Z') },
    ];
    expect(planRetention(backups, { within: '30m' }).remove).toEqual([]);
    expect(planRetention(backups, { within: '30min' }).remove).toEqual([{ id: 'old', group: 'full' }]);
    expect(() => parseInterval('30m')).toThrow(/"m" means months; for minutes write "30min"/);
    expect(parseInterval('30min')).toBe(30 * 60_000);
  });

  it('subtracts calendar units like restic and exact units after', () => {
    expect(new Date(subtractDuration(new Date('2025-03-31T00:00:00Z'), parseDuration('1m'))).toISOString()).toBe('2025-03-03T00:00:00.000Z');
    expect(new Date(subtractDuration(NOW, parseDuration('1d1h1min1s'))).toISOString()).toBe('2026-11-29T10:58:59.000Z');
    expect(parseIntervalMs('1d1h1min1s', 'x')).toBe(90_061_000);
  });
});
