import { ConfigError, isChatmemError } from '../errors.js';
import { parseIntervalMs } from '../duration.js';
import { isEmptyPolicy, type RetentionPolicy } from '../backup/retention.js';
import type { Actor } from '../ops/audit.js';
import type { Operations } from '../ops/operations.js';
import { expiryCutoff, type ExpirePolicy } from '../ops/expire.js';
import type { Metrics } from './metrics.js';

/** setTimeout fires at once for delays above 2^31-1 ms, so longer waits are taken in slices. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Parses a backup interval in chatmem's one duration syntax (src/duration.ts): `30s`, `15min`,
 * `1h`, `1h30min`, `7d`. `m` is months there, so `30m` is refused with a hint to write `30min`.
 * Returns milliseconds, or null for "off" (`off`, `0`, or an empty string). At least one second.
 * @throws ConfigError `E_CONFIG` for anything else.
 */
export function parseInterval(text: string): number | null {
  const s = text.trim();
  if (s === '' || s === 'off' || s === '0') return null;
  const ms = parseIntervalMs(text, 'backup.every');
  if (!Number.isSafeInteger(ms)) throw new ConfigError('E_CONFIG', `invalid backup.every "${text}": too large`);
  if (ms < 1000) throw new ConfigError('E_CONFIG', `invalid backup.every "${text}": the shortest interval is 1s`);
  return ms;
}

/** The subset of a pino logger the scheduler writes to. */
export interface SchedulerLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface SchedulerOptions {
  ops: Operations;
  /** Interval in milliseconds (see {@link parseInterval}). */
  everyMs: number;
  /** Applied after each scheduled backup unless empty. */
  retention: RetentionPolicy;
  metrics?: Metrics;
  log: SchedulerLog;
  /**
   * Asked before every run; a run happens only when it resolves true. Shared stores (PostgreSQL,
   * several daemons) elect one daemon here; a file store has a single owner, so the default is true.
   */
  tryLeader?: () => Promise<boolean>;
  actor?: Actor;
  /** Clock, for tests. */
  now?: () => number;
}

/** Outcome of one scheduled run. */
export interface ScheduledRun {
  skipped?: 'not-leader';
  backup?: string;
  pruned?: string[];
  error?: { code: string; message: string };
}

/**
 * Scheduled backups, each followed by the retention policy. The next run is due one interval after
 * the newest scheduled backup on disk, so restarts neither postpone backups forever nor repeat them;
 * with none on disk the first runs at start. Runs never overlap, and a failure is counted and
 * logged but never stops the daemon or the schedule.
 */
export class BackupScheduler {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<ScheduledRun> | null = null;
  private stopped = false;
  private dueAt = 0;
  private readonly now: () => number;
  private readonly prune: boolean;

  constructor(private readonly options: SchedulerOptions) {
    if (!Number.isSafeInteger(options.everyMs) || options.everyMs < 1000) {
      throw new ConfigError('E_CONFIG', `backup interval must be at least 1000 ms, got ${options.everyMs}`);
    }
    this.now = options.now ?? Date.now;
    // Validates the policy now, so a bad one stops the daemon at start rather than failing every hour.
    this.prune = !isEmptyPolicy(options.retention);
  }

  /** When the next run is due (ms since the epoch). */
  get nextRunAt(): number {
    return this.dueAt;
  }

  async start(): Promise<void> {
    let last: number | null = null;
    try {
      for (const b of await this.options.ops.listBackups()) {
        if (b.reason !== 'scheduled' || !b.createdAt) continue;
        const t = Date.parse(b.createdAt);
        if (last === null || t > last) last = t;
      }
    } catch (err) {
      this.options.log.warn({ err: describe(err) }, 'cannot list backups to plan the schedule; running the first backup now');
    }
    this.dueAt = last === null ? this.now() : last + this.options.everyMs;
    this.options.log.info(
      { every: `${this.options.everyMs / 1000}s`, next: new Date(this.dueAt).toISOString(), prune: this.prune },
      'scheduled backups on',
    );
    this.arm();
  }

  private arm(): void {
    if (this.stopped) return;
    const delay = Math.min(Math.max(0, this.dueAt - this.now()), MAX_TIMER_MS);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.now() < this.dueAt) return this.arm();
      void this.runOnce().finally(() => {
        // Due from the run's end: a slow backup must not make the next one start at once.
        this.dueAt = this.now() + this.options.everyMs;
        this.arm();
      });
    }, delay);
    // The HTTP server keeps the daemon alive; a pending backup alone must not.
    this.timer.unref();
  }

  /** Runs one scheduled backup (and retention) now, unless one is already running. */
  runOnce(): Promise<ScheduledRun> {
    if (!this.running) {
      this.running = this.run().finally(() => {
        this.running = null;
      });
    }
    return this.running;
  }

  private async run(): Promise<ScheduledRun> {
    const { ops, log, metrics, actor } = this.options;
    try {
      if (this.options.tryLeader && !(await this.options.tryLeader())) {
        log.info({}, 'scheduled backup skipped: another daemon is the leader');
        return { skipped: 'not-leader' };
      }
    } catch (err) {
      log.error({ err: describe(err) }, 'scheduled backup skipped: leader election failed');
      return { error: describe(err) };
    }
    const result: ScheduledRun = {};
    const t0 = this.now();
    try {
      const b = await ops.createBackup({ reason: 'scheduled', actor });
      result.backup = b.id;
      if (metrics) {
        metrics.scheduledBackups++;
        metrics.noteBackup(new Date(b.manifest.created_at));
      }
      log.info({ action: 'backup', reason: 'scheduled', backup: b.id, users: b.manifest.users, ms: this.now() - t0 }, 'scheduled backup written');
    } catch (err) {
      if (metrics) metrics.backupFailures++;
      result.error = describe(err);
      log.error({ action: 'backup', reason: 'scheduled', err: result.error }, 'scheduled backup failed');
      // No retention after a failed backup: pruning then could leave fewer good backups than the policy promises.
      return result;
    }
    if (this.prune) {
      try {
        const p = await ops.prune(this.options.retention, { actor });
        result.pruned = p.removed;
        log.info({ action: 'prune', removed: p.removed, kept: p.keep.length }, 'retention applied');
      } catch (err) {
        if (metrics) metrics.pruneFailures++;
        result.error = describe(err);
        log.error({ action: 'prune', err: result.error }, 'retention after scheduled backup failed');
      }
    }
    return result;
  }

  /** Cancels the timer and waits for a run in progress to end. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running?.catch(() => undefined);
  }
}

function describe(err: unknown): { code: string; message: string } {
  return { code: isChatmemError(err) ? err.code : 'E_INTERNAL', message: err instanceof Error ? err.message : String(err) };
}

export interface ExpireSchedulerOptions {
  ops: Operations;
  policy: ExpirePolicy;
  /** How often to look for inactive users (default daily). */
  everyMs?: number;
  log: SchedulerLog;
  /** As for scheduled backups: on PostgreSQL only the leader expires users. */
  tryLeader?: () => Promise<boolean>;
  actor?: Actor;
  /** Clock, for tests: the inactivity cutoff is computed from it. */
  now?: () => number;
}

/**
 * Expires inactive users (`users.inactiveAfter`) at start and then every `everyMs` (daily). Runs never
 * overlap; a failure is logged (with its code, never the user ids) and the schedule goes on.
 */
export class ExpireScheduler {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<ExpireRun> | null = null;
  private stopped = false;
  private readonly now: () => number;
  private readonly everyMs: number;

  constructor(private readonly options: ExpireSchedulerOptions) {
    this.now = options.now ?? Date.now;
    this.everyMs = options.everyMs ?? 24 * 3600 * 1000;
    // Checked now, so a bad duration stops the daemon at start rather than failing every day.
    expiryCutoff(options.policy.inactiveAfter, new Date(this.now()));
  }

  start(): void {
    this.options.log.info({ inactiveAfter: this.options.policy.inactiveAfter, mode: this.options.policy.mode ?? 'delete' }, 'expiry of inactive users on');
    this.arm(0);
  }

  private arm(delay: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.runOnce().finally(() => this.arm(Math.min(this.everyMs, MAX_TIMER_MS)));
    }, delay);
    this.timer.unref();
  }

  /** One expiry run now, unless one is already running. */
  runOnce(): Promise<ExpireRun> {
    this.running ??= this.run().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async run(): Promise<ExpireRun> {
    const { ops, log, actor, policy } = this.options;
    try {
      if (this.options.tryLeader && !(await this.options.tryLeader())) return { skipped: 'not-leader' };
      const r = await ops.expire(policy, { now: new Date(this.now()), actor });
      if (r.expired > 0) log.info({ action: 'expire', mode: r.mode, expired: r.expired, backup: r.backup, cutoff: r.cutoff }, 'inactive users expired');
      return { expired: r.expired, backup: r.backup };
    } catch (err) {
      const error = describe(err);
      log.error({ action: 'expire', err: { code: error.code } }, 'expiry of inactive users failed');
      return { error };
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running?.catch(() => undefined);
  }
}

/** Outcome of one expiry run. */
export interface ExpireRun {
  skipped?: 'not-leader';
  expired?: number;
  backup?: string | null;
  error?: { code: string; message: string };
}
