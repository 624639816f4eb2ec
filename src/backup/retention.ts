import { BackupError, ConfigError } from '../errors.js';
import { formatDuration, isZeroDuration, parseDuration as parseAnyDuration, subtractDuration, type Duration } from '../duration.js';

/**
 * Which backups to keep, with the semantics of `restic forget`.
 *
 * Counts: a positive number keeps that many periods, `-1` keeps every period,
 * `0` or `undefined` turns the rule off. Durations use restic's syntax
 * (`1y2m3d4h`, `7d`, `36h`) and are measured back from the newest backup,
 * never from the current time. Rules are ORed: a backup is kept if any rule
 * keeps it.
 */
export interface RetentionPolicy {
  /** Keep the N newest backups. */
  last?: number;
  /** Keep the newest backup of each of the N newest hours that have one. */
  hourly?: number;
  /** Keep the newest backup of each of the N newest days that have one. */
  daily?: number;
  /** Keep the newest backup of each of the N newest ISO weeks that have one. */
  weekly?: number;
  /** Keep the newest backup of each of the N newest months that have one. */
  monthly?: number;
  /** Keep the newest backup of each of the N newest years that have one. */
  yearly?: number;
  /** Keep every backup made within this duration of the newest backup. */
  within?: string;
  /** Keep the newest backup of each hour within this duration of the newest backup. */
  withinHourly?: string;
  /** Keep the newest backup of each day within this duration of the newest backup. */
  withinDaily?: string;
  /** Keep the newest backup of each ISO week within this duration of the newest backup. */
  withinWeekly?: string;
  /** Keep the newest backup of each month within this duration of the newest backup. */
  withinMonthly?: string;
  /** Keep the newest backup of each year within this duration of the newest backup. */
  withinYearly?: string;
}

/**
 * Which group a backup is planned in. Counts and windows apply within each group, as restic applies
 * them per host and paths: a burst of small per-user backups must never push whole-store backups out.
 * `full` holds whole-store backups (and the seed's full memory.json copies), `user` holds backups of
 * some users (taken before a delete, an import or a selective restore, and the seed's per-user files).
 */
export type RetentionGroup = 'full' | 'user';

export const RETENTION_GROUPS: readonly RetentionGroup[] = ['full', 'user'];

/** One backup as {@link planRetention} sees it. */
export interface RetentionInput {
  id: string;
  /** `null` for a backup whose name carries no date: it cannot be placed in a calendar and is always kept. */
  createdAt: Date | null;
  /** Defaults to `full`, so that unscoped input is protected like whole-store backups. */
  group?: RetentionGroup;
}

/**
 * The outcome of {@link planRetention}. Both lists are ordered newest first (equal times and
 * dateless backups, which come last: higher id first) and every input backup appears in exactly one of them.
 */
export interface RetentionPlan {
  keep: { id: string; group: RetentionGroup; reasons: string[] }[];
  remove: { id: string; group: RetentionGroup }[];
}

/** A calendar duration (see src/duration.ts): restic's `y m d h`, plus `min` and `s`. */
export type RetentionDuration = Duration;

type Period = (d: Date, index: number) => string;

interface CountRule {
  count: number;
  period: Period;
  reason: string;
}

interface WithinRule {
  duration: RetentionDuration;
  period: Period;
  reason: string;
}

interface NormalizedPolicy {
  counts: CountRule[];
  within: RetentionDuration | undefined;
  withinRules: WithinRule[];
}

const COUNT_KEYS = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;
const WITHIN_KEYS = ['withinHourly', 'withinDaily', 'withinWeekly', 'withinMonthly', 'withinYearly'] as const;

const pad2 = (n: number): string => String(n).padStart(2, '0');

const byYear: Period = (d) => String(d.getUTCFullYear());
const byMonth: Period = (d) => `${byYear(d, 0)}-${pad2(d.getUTCMonth() + 1)}`;
const byDay: Period = (d) => `${byMonth(d, 0)}-${pad2(d.getUTCDate())}`;
const byHour: Period = (d) => `${byDay(d, 0)}T${pad2(d.getUTCHours())}`;
// Every backup is its own period, so `last` keeps the N newest regardless of time.
const byIndex: Period = (_d, index) => `#${index}`;

const DAY_MS = 86_400_000;

const byIsoWeek: Period = (d) => {
  // The ISO week belongs to the year that holds its Thursday, which is why
  // 2025-12-29 is 2026-W01 and 2021-01-03 is 2020-W53.
  const midnight = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
  const mondayBased = (d.getUTCDay() + 6) % 7;
  const thursday = new Date(midnight + (3 - mondayBased) * DAY_MS);
  const isoYear = thursday.getUTCFullYear();
  const jan1 = new Date(0);
  jan1.setUTCFullYear(isoYear, 0, 1);
  const week = 1 + Math.floor((thursday.getTime() - jan1.getTime()) / DAY_MS / 7);
  return `${isoYear}-W${pad2(week)}`;
};

const PERIODS: Record<(typeof COUNT_KEYS)[number], { period: Period; name: string }> = {
  last: { period: byIndex, name: 'last' },
  hourly: { period: byHour, name: 'hourly' },
  daily: { period: byDay, name: 'daily' },
  weekly: { period: byIsoWeek, name: 'weekly' },
  monthly: { period: byMonth, name: 'monthly' },
  yearly: { period: byYear, name: 'yearly' },
};

const WITHIN_PERIODS: Record<(typeof WITHIN_KEYS)[number], { period: Period; name: string }> = {
  withinHourly: { period: byHour, name: 'hourly' },
  withinDaily: { period: byDay, name: 'daily' },
  withinWeekly: { period: byIsoWeek, name: 'weekly' },
  withinMonthly: { period: byMonth, name: 'monthly' },
  withinYearly: { period: byYear, name: 'yearly' },
};

function policyError(message: string): ConfigError {
  return new ConfigError('E_RETENTION_POLICY', message);
}

/**
 * Parses a retention duration such as `1y2m3d4h`, `7d` or `36h` (`m` is months, as in restic;
 * minutes are `min`), with the one parser every duration in chatmem goes through.
 *
 * @throws ConfigError `E_RETENTION_POLICY` for anything else, including the
 *   empty string, negative numbers and repeated units.
 */
export function parseDuration(s: string): RetentionDuration {
  return parseAnyDuration(s, { code: 'E_RETENTION_POLICY' });
}

function normalizePolicy(p: RetentionPolicy): NormalizedPolicy {
  const counts: CountRule[] = [];
  for (const key of COUNT_KEYS) {
    const count = p[key];
    if (count === undefined || count === 0) continue;
    if (!Number.isInteger(count) || count < -1) {
      throw policyError(`${key} must be a non-negative integer or -1 (unlimited), got ${String(count)}`);
    }
    const { period, name } = PERIODS[key];
    counts.push({ count, period, reason: `${name} backup` });
  }

  const parseField = (key: 'within' | (typeof WITHIN_KEYS)[number]): RetentionDuration | undefined => {
    const raw = p[key];
    if (raw === undefined) return undefined;
    const parsed = parseDuration(raw);
    // A zero window is the same as an unset one, as in restic.
    return isZeroDuration(parsed) ? undefined : parsed;
  };

  const within = parseField('within');
  const withinRules: WithinRule[] = [];
  for (const key of WITHIN_KEYS) {
    const duration = parseField(key);
    if (duration === undefined) continue;
    const { period, name } = WITHIN_PERIODS[key];
    withinRules.push({ duration, period, reason: `${name} within ${formatDuration(duration)}` });
  }
  return { counts, within, withinRules };
}

function isEmptyNormalized(n: NormalizedPolicy): boolean {
  return n.counts.length === 0 && n.within === undefined && n.withinRules.length === 0;
}

/**
 * True when no rule is active: every count is 0 or unset and every duration is
 * unset or zero. {@link planRetention} keeps everything under such a policy.
 *
 * @throws ConfigError `E_RETENTION_POLICY` if the policy is invalid.
 */
export function isEmptyPolicy(p: RetentionPolicy): boolean {
  return isEmptyNormalized(normalizePolicy(p));
}

/**
 * Decides which backups to keep and which to remove, following `restic forget`:
 *
 * - backups are split into groups (`full`, `user`; see {@link RetentionGroup}) and every rule
 *   below applies to each group on its own, as restic does per host and paths;
 * - within a group, backups are ordered newest first (equal times: higher id first);
 * - each count rule keeps the newest backup of each of its N newest periods
 *   (UTC hour, day, ISO week, month, year; `last` treats every backup as its own period);
 * - a count rule that is unlimited or not used up by the time the walk reaches
 *   the oldest backup keeps that one too (reason prefixed with "oldest" when
 *   it shares a period with a newer kept backup);
 * - `within` keeps every backup strictly newer than the group's newest backup minus
 *   the duration; `withinHourly` etc. keep the newest backup of each period
 *   inside that window, and the group's oldest backup when it lies inside the window
 *   ("oldest yearly within 2y" when it shares its period with a newer kept one);
 * - the newest full backup is always kept, whatever the policy ("newest full backup");
 * - a backup without a date is always kept ("no date");
 * - an empty policy keeps everything with reason "policy is empty".
 *
 * The function is pure: the current time plays no part.
 *
 * @throws ConfigError `E_RETENTION_POLICY` if the policy is invalid.
 * @throws BackupError `E_RETENTION_INPUT` if a backup has an invalid date or group.
 */
export function planRetention(backups: readonly RetentionInput[], policy: RetentionPolicy): RetentionPlan {
  const normalized = normalizePolicy(policy);
  const dated = new Map<RetentionGroup, { id: string; createdAt: Date }[]>(RETENTION_GROUPS.map((g) => [g, []]));
  const dateless: { id: string; group: RetentionGroup }[] = [];
  for (const b of backups) {
    const group = b.group ?? 'full';
    const list = dated.get(group);
    if (list === undefined) {
      throw new BackupError('E_RETENTION_INPUT', `backup "${b.id}" has an unknown retention group ${JSON.stringify(group)}`, {
        details: { id: b.id },
      });
    }
    if (b.createdAt === null) {
      dateless.push({ id: b.id, group });
      continue;
    }
    if (!(b.createdAt instanceof Date) || Number.isNaN(b.createdAt.getTime())) {
      throw new BackupError('E_RETENTION_INPUT', `backup "${b.id}" has an invalid creation date`, {
        details: { id: b.id },
      });
    }
    list.push({ id: b.id, createdAt: b.createdAt });
  }

  const keep: (RetentionPlan['keep'][number] & { time: number })[] = [];
  const remove: (RetentionPlan['remove'][number] & { time: number })[] = [];
  for (const [group, list] of dated) {
    const sorted = list.sort(newestFirst);
    const plan = planGroup(sorted, normalized);
    if (group === 'full' && sorted[0] !== undefined) {
      // Restic's rules already keep every group's newest backup under any non-empty policy; this
      // states the promise outright so that no future rule can trade the last full backup away.
      const newest = sorted[0].id;
      const at = plan.remove.indexOf(newest);
      if (at >= 0) {
        plan.remove.splice(at, 1);
        plan.keep.unshift({ id: newest, reasons: ['newest full backup'] });
      }
    }
    const time = new Map(sorted.map((b) => [b.id, b.createdAt.getTime()]));
    for (const k of plan.keep) keep.push({ ...k, group, time: time.get(k.id) ?? 0 });
    for (const id of plan.remove) remove.push({ id, group, time: time.get(id) ?? 0 });
  }
  const byTime = (a: { id: string; time: number }, b: { id: string; time: number }): number =>
    b.time - a.time || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
  return {
    keep: [
      ...keep.sort(byTime).map(({ id, group, reasons }) => ({ id, group, reasons })),
      ...dateless.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)).map(({ id, group }) => ({ id, group, reasons: ['no date'] })),
    ],
    remove: remove.sort(byTime).map(({ id, group }) => ({ id, group })),
  };
}

function newestFirst(a: { id: string; createdAt: Date }, b: { id: string; createdAt: Date }): number {
  const dt = b.createdAt.getTime() - a.createdAt.getTime();
  if (dt !== 0) return dt;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

/** One group's plan; `sorted` is newest first. */
function planGroup(sorted: { id: string; createdAt: Date }[], normalized: NormalizedPolicy): { keep: { id: string; reasons: string[] }[]; remove: string[] } {
  const plan: { keep: { id: string; reasons: string[] }[]; remove: string[] } = { keep: [], remove: [] };
  const newest = sorted[0];
  if (newest === undefined) return plan;

  if (isEmptyNormalized(normalized)) {
    plan.keep = sorted.map((b) => ({ id: b.id, reasons: ['policy is empty'] }));
    return plan;
  }

  const withinCutoff = normalized.within === undefined ? undefined : subtractDuration(newest.createdAt, normalized.within);
  const withinReason = normalized.within === undefined ? '' : `within ${formatDuration(normalized.within)}`;
  const counts = normalized.counts.map((rule) => ({ ...rule, lastPeriod: undefined as string | undefined }));
  const windows = normalized.withinRules.map((rule) => ({
    ...rule,
    cutoff: subtractDuration(newest.createdAt, rule.duration),
    lastPeriod: undefined as string | undefined,
  }));
  const oldestIndex = sorted.length - 1;

  sorted.forEach((backup, index) => {
    const time = backup.createdAt.getTime();
    const isOldest = index === oldestIndex;
    const reasons: string[] = [];

    if (withinCutoff !== undefined && time > withinCutoff) reasons.push(withinReason);

    for (const rule of counts) {
      if (rule.count === 0) continue;
      const period = rule.period(backup.createdAt, index);
      if (period === rule.lastPeriod && !isOldest) continue;
      // Keeping the oldest while counts remain stretches the kept history as
      // far back as it goes until enough periods exist to use the count up.
      reasons.push(period === rule.lastPeriod ? `oldest ${rule.reason}` : rule.reason);
      rule.lastPeriod = period;
      if (rule.count > 0) rule.count -= 1;
    }

    for (const rule of windows) {
      if (time <= rule.cutoff) continue;
      const period = rule.period(backup.createdAt, index);
      // As restic: a window reaching back to the oldest backup keeps it, so the history inside the
      // window goes as far back as it can.
      if (period === rule.lastPeriod && !isOldest) continue;
      reasons.push(period === rule.lastPeriod ? `oldest ${rule.reason}` : rule.reason);
      rule.lastPeriod = period;
    }

    if (reasons.length > 0) plan.keep.push({ id: backup.id, reasons });
    else plan.remove.push(backup.id);
  });

  return plan;
}
