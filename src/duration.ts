import { ConfigError } from './errors.js';

/**
 * The one duration syntax of chatmem, used by `backup.every`, `--keep-within*` / retention
 * policies and `--since`: restic's `<number><unit>` pairs, `1y2m3d4h`, extended with `min`
 * (minutes) and `s` (seconds). `m` is always months, as in restic; minutes are written `min`.
 * All fields are non-negative integers.
 */
export interface Duration {
  years: number;
  months: number;
  days: number;
  hours: number;
  minutes: number;
  seconds: number;
}

const UNITS: Record<string, keyof Duration> = { y: 'years', m: 'months', d: 'days', h: 'hours', min: 'minutes', s: 'seconds' };
/** Longest first, so `min` is not read as `m` followed by garbage. */
const UNIT_RE = /^(\d+)(min|[ymdhs])/;

export const DURATION_UNITS_HELP = 'y (years), m (months), d (days), h (hours), min (minutes), s (seconds)';

export interface ParseDurationOptions {
  /** Names the setting in messages, e.g. `backup.every` or `--keep-within`. */
  what?: string;
  /** The error code to throw (default `E_CONFIG`). */
  code?: string;
}

/**
 * Parses `1y2m3d4h`, `7d`, `36h`, `90min`, `1h30min`, `30s`: one or more `<integer><unit>` pairs,
 * in any order, each unit at most once, units in lower case (as restic), surrounding spaces ignored.
 *
 * @throws ConfigError (code from `options.code`) for anything else: empty input, a number without
 *   unit, an unknown unit, a negative number, a repeated unit.
 */
export function parseDuration(text: string, options: ParseDurationOptions = {}): Duration {
  const input = text.trim();
  const what = options.what ? `${options.what} ` : '';
  const fail = (why: string): ConfigError =>
    new ConfigError(options.code ?? 'E_CONFIG', `invalid ${what}duration "${text}": ${why}`, { details: { value: text } });
  if (input === '') throw fail('it is empty; expected e.g. "7d", "1y2m3d4h" or "30min"');
  const result: Duration = { years: 0, months: 0, days: 0, hours: 0, minutes: 0, seconds: 0 };
  const seen = new Set<string>();
  let rest = input;
  while (rest !== '') {
    const match = UNIT_RE.exec(rest);
    if (match === null) {
      const lead = /^(\d+)(\S*)/.exec(rest);
      if (rest.startsWith('-')) throw fail('negative numbers are not allowed');
      if (lead === null) throw fail(`expected a number at "${rest}"`);
      if (lead[2] === '') throw fail(`no unit after number ${lead[1] ?? ''}; use ${DURATION_UNITS_HELP}`);
      throw fail(`unknown unit "${lead[2] ?? ''}" after number ${lead[1] ?? ''}; use ${DURATION_UNITS_HELP}`);
    }
    const digits = match[1] ?? '';
    const unit = match[2] ?? '';
    if (seen.has(unit)) throw fail(`unit "${unit}" appears more than once`);
    seen.add(unit);
    const value = Number(digits);
    if (!Number.isSafeInteger(value)) throw fail(`number ${digits} is too large`);
    result[UNITS[unit] as keyof Duration] = value;
    rest = rest.slice(match[0].length);
  }
  return result;
}

export function isZeroDuration(d: Duration): boolean {
  return d.years === 0 && d.months === 0 && d.days === 0 && d.hours === 0 && d.minutes === 0 && d.seconds === 0;
}

/** Canonical form, e.g. `1y2m3d4h30min`; `0s` for zero. */
export function formatDuration(d: Duration): string {
  const parts: [number, string][] = [
    [d.years, 'y'],
    [d.months, 'm'],
    [d.days, 'd'],
    [d.hours, 'h'],
    [d.minutes, 'min'],
    [d.seconds, 's'],
  ];
  return parts.filter(([n]) => n !== 0).map(([n, u]) => `${n}${u}`).join('') || '0s';
}

/**
 * `from` minus `d`, as Go's time.AddDate with negated fields (restic): years, months and days in
 * one calendar step (UTC) and then normalised, so Mar 31 minus 1 month is Mar 3; hours, minutes
 * and seconds are exact afterwards. A result before the earliest representable date is -Infinity.
 */
export function subtractDuration(from: Date, d: Duration): number {
  const t = new Date(from.getTime());
  t.setUTCFullYear(t.getUTCFullYear() - d.years, t.getUTCMonth() - d.months, t.getUTCDate() - d.days);
  if (Number.isNaN(t.getTime())) return Number.NEGATIVE_INFINITY;
  return t.getTime() - d.hours * 3_600_000 - d.minutes * 60_000 - d.seconds * 1000;
}

/**
 * A fixed interval in milliseconds (`backup.every`): days, hours, minutes and seconds only. `m`
 * (months) and `y` are refused rather than read as a calendar step: `30m` meant minutes in
 * earlier versions, and silently meaning 30 months would be a trap.
 *
 * @throws ConfigError `E_CONFIG` naming `what` and suggesting `min` for `m`.
 */
export function parseIntervalMs(text: string, what: string): number {
  const d = parseDuration(text, { what });
  if (d.months > 0 || d.years > 0) {
    const hint = d.months > 0 ? `"m" means months; for minutes write "${text.trim().replace(/(\d+)m(?!in)/i, '$1min')}"` : '"y" (years) is not an interval';
    throw new ConfigError('E_CONFIG', `invalid ${what} "${text}": ${hint} (units for an interval: d, h, min, s)`, { details: { value: text } });
  }
  return ((d.days * 24 + d.hours) * 60 + d.minutes) * 60_000 + d.seconds * 1000;
}
