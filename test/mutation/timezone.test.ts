import { describe, expect, it } from 'vitest';
import { timeZoneOffsetMs, wallClockToInstant } from '../../src/backup/timezone.js';

// The promises of src/backup/timezone.ts: the seed named its backups in the server's local time; a name
// read in that zone gives the instant its clocks showed it, across DST changes (a repeated time is its
// first occurrence, a skipped one is read with the offset before the change, as java.time and Go do).

const H = 3_600_000;
const wall = (iso: string) => new Date(`${iso}Z`);
const instant = (iso: string, zone: string) => wallClockToInstant(wall(iso), zone).toISOString();

describe('timeZoneOffsetMs', () => {
  it('gives the zone offset at an instant, fractional hours and DST included, whatever the milliseconds', () => {
    const t = Date.parse('2025-11-25T13:28:11.789Z');
    expect(timeZoneOffsetMs('Asia/Jakarta', t)).toBe(7 * H);
    expect(timeZoneOffsetMs('UTC', t)).toBe(0);
    expect(timeZoneOffsetMs('Asia/Kolkata', t)).toBe(5.5 * H);
    expect(timeZoneOffsetMs('Asia/Kathmandu', t)).toBe(5.75 * H);
    expect(timeZoneOffsetMs('America/St_Johns', t)).toBe(-3.5 * H);
    expect(timeZoneOffsetMs('America/New_York', t)).toBe(-5 * H);
    expect(timeZoneOffsetMs('America/New_York', Date.parse('2025-07-01T12:00:00.001Z'))).toBe(-4 * H);
    expect(timeZoneOffsetMs('Pacific/Kiritimati', t)).toBe(14 * H);
    // The day and the year roll over in the zone, not in UTC.
    expect(timeZoneOffsetMs('Pacific/Kiritimati', Date.parse('2025-12-31T23:59:59.999Z'))).toBe(14 * H);
    expect(timeZoneOffsetMs('America/Anchorage', Date.parse('2026-01-01T00:00:00.000Z'))).toBe(-9 * H);
    // Midnight shows as 00, not 24 (hourCycle h23).
    expect(timeZoneOffsetMs('Europe/Berlin', Date.parse('2025-11-24T23:00:00.000Z'))).toBe(1 * H);
    // The same formatter twice (cached) answers the same.
    expect(timeZoneOffsetMs('Europe/Berlin', Date.parse('2025-06-24T22:00:00.000Z'))).toBe(2 * H);
  });
});

describe('wallClockToInstant', () => {
  it('reads a wall-clock time in its zone; UTC unchanged', () => {
    expect(instant('2025-11-25T13:28:11', 'Asia/Jakarta')).toBe('2025-11-25T06:28:11.000Z');
    expect(instant('2025-11-25T13:28:11', 'UTC')).toBe('2025-11-25T13:28:11.000Z');
    expect(instant('2025-11-25T01:00:00', 'Asia/Kolkata')).toBe('2025-11-24T19:30:00.000Z');
    expect(instant('2025-07-01T08:00:00', 'America/New_York')).toBe('2025-07-01T12:00:00.000Z');
    expect(instant('2025-12-01T08:00:00', 'America/New_York')).toBe('2025-12-01T13:00:00.000Z');
  });

  it('a time repeated by the autumn change is its first occurrence', () => {
    // New York, 2025-11-02: 01:00–02:00 happens twice (EDT, then EST).
    expect(instant('2025-11-02T01:30:00', 'America/New_York')).toBe('2025-11-02T05:30:00.000Z');
    // Berlin, 2025-10-26: 02:00–03:00 twice.
    expect(instant('2025-10-26T02:30:00', 'Europe/Berlin')).toBe('2025-10-26T00:30:00.000Z');
    // Just outside the repeated hour: one answer each.
    expect(instant('2025-11-02T00:59:59', 'America/New_York')).toBe('2025-11-02T04:59:59.000Z');
    expect(instant('2025-11-02T02:00:00', 'America/New_York')).toBe('2025-11-02T07:00:00.000Z');
  });

  it('a time skipped by the spring change is read with the offset before it', () => {
    // New York, 2025-03-09: 02:00 → 03:00; 02:30 EST is 07:30Z (03:30 EDT).
    expect(instant('2025-03-09T02:30:00', 'America/New_York')).toBe('2025-03-09T07:30:00.000Z');
    // Berlin, 2025-03-30: 02:00 → 03:00.
    expect(instant('2025-03-30T02:30:00', 'Europe/Berlin')).toBe('2025-03-30T01:30:00.000Z');
    // Lord Howe moves by half an hour: 02:00 → 02:30; 02:15 is read at +10:30.
    expect(instant('2025-10-05T02:15:00', 'Australia/Lord_Howe')).toBe('2025-10-04T15:45:00.000Z');
    // Right after each change: the new offset.
    expect(instant('2025-03-09T03:00:00', 'America/New_York')).toBe('2025-03-09T07:00:00.000Z');
  });
});
