const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/** The offset of `timeZone` from UTC at instant `ms`, in milliseconds (Asia/Jakarta: +7 h). */
export function timeZoneOffsetMs(timeZone: string, ms: number): number {
  const parts: Record<string, number> = {};
  for (const p of formatter(timeZone).formatToParts(new Date(ms))) if (p.type !== 'literal') parts[p.type] = Number(p.value);
  const asUtc = Date.UTC(parts.year ?? 0, (parts.month ?? 1) - 1, parts.day ?? 1, parts.hour ?? 0, parts.minute ?? 0, parts.second ?? 0);
  return asUtc - (ms - (ms % 1000));
}

/**
 * The instant at which the clocks of `timeZone` showed `wallClock` (given as a Date whose UTC
 * fields hold the wall-clock reading, as backup names are parsed). A time repeated by a DST change
 * maps to its first occurrence; a time skipped by one is read with the offset before the change
 * (02:30 in a 02:00→03:00 gap is 03:30 after it), as java.time and Go do.
 */
export function wallClockToInstant(wallClock: Date, timeZone: string): Date {
  const local = wallClock.getTime();
  if (timeZone === 'UTC') return new Date(local);
  // Offsets change at most once within a day: the ones a day before and after are the candidates.
  const before = timeZoneOffsetMs(timeZone, local - 86_400_000);
  const after = timeZoneOffsetMs(timeZone, local + 86_400_000);
  const valid = [before, after].map((o) => local - o).filter((t) => t === local - timeZoneOffsetMs(timeZone, t));
  return new Date(valid.length > 0 ? Math.min(...valid) : local - before);
}
