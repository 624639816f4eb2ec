import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { errnoCode, isChatmemError } from '../errors.js';
import { ensurePrivateDir } from '../fs-util.js';
import { parseBackupName, manifestName } from '../backup/format.js';
import type { BackupInfo, OffsiteHooks } from '../ops/operations.js';
import { OffsiteTarget, type OffsiteConfig, type RemoteBackup } from './target.js';

export type OffsiteLog = (level: 'info' | 'warn', message: string) => void;

export interface UploaderOptions {
  /** Attempts per backup before giving up (the daemon: never; the CLI: a few, then `offsite sync` later). */
  maxAttempts?: number;
  /** First retry delay, doubled after each failure up to `maxDelayMs`. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  log?: OffsiteLog;
}

interface Job {
  fileName: string;
  createdAt: number;
  attempts: number;
  notBefore: number;
  lastError?: { code: string; message: string };
}

function errorOf(err: unknown): { code: string; message: string } {
  return { code: isChatmemError(err) ? err.code : errnoCode(err) ?? 'E_OFFSITE_REQUEST', message: (err as Error).message };
}

/**
 * Off-site copies of the backups of one backup directory: the uploader queue (in the background, one
 * upload at a time, retried with exponential backoff) and the hooks the operations use to list, fetch and
 * remove off-site copies. The local verified backup is the guarantee a destructive operation waits for;
 * an upload only follows it, and its failure is counted and logged, never the operation's failure.
 */
export class OffsiteService implements OffsiteHooks {
  readonly target: OffsiteTarget;
  /** Upload attempts that failed (each retry counts). */
  failures = 0;
  uploaded = 0;
  /** Backups given up on after `maxAttempts` (CLI): `chatmem offsite sync` uploads them later. */
  readonly gaveUp: { fileName: string; error: { code: string; message: string } }[] = [];
  private readonly jobs = new Map<string, Job>();
  private running = false;
  private closed = false;
  private timer: NodeJS.Timeout | null = null;
  private waiters: (() => void)[] = [];
  private readonly maxAttempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly log: OffsiteLog;

  constructor(
    config: OffsiteConfig,
    readonly backupDir: string,
    options: UploaderOptions = {},
  ) {
    this.target = new OffsiteTarget(config);
    this.maxAttempts = options.maxAttempts ?? Infinity;
    this.baseDelayMs = options.baseDelayMs ?? 1000;
    this.maxDelayMs = options.maxDelayMs ?? 5 * 60_000;
    this.log = options.log ?? (() => undefined);
  }

  get display(): string {
    return this.target.display;
  }

  backupVerified(fileName: string, createdAt: string): void {
    this.enqueue(fileName, Date.parse(createdAt));
  }

  warn(message: string): void {
    this.log('warn', message);
  }

  enqueue(fileName: string, createdAt: number = Date.now()): void {
    if (this.closed || this.jobs.has(fileName)) return;
    this.jobs.set(fileName, { fileName, createdAt: Number.isFinite(createdAt) ? createdAt : Date.now(), attempts: 0, notBefore: 0 });
    this.kick();
  }

  /** Backups waiting for their upload (queued or between retries), oldest first. */
  pending(): { fileName: string; createdAt: string; attempts: number; lastError?: { code: string; message: string } }[] {
    return [...this.jobs.values()]
      .sort((a, b) => a.createdAt - b.createdAt)
      .map((j) => ({ fileName: j.fileName, createdAt: new Date(j.createdAt).toISOString(), attempts: j.attempts, ...(j.lastError ? { lastError: j.lastError } : {}) }));
  }

  /** Upload lag: seconds since the oldest backup not yet uploaded was written (0 when none waits). */
  lagSeconds(now = Date.now()): number {
    let oldest = Infinity;
    for (const j of this.jobs.values()) oldest = Math.min(oldest, j.createdAt);
    return oldest === Infinity ? 0 : Math.max(0, (now - oldest) / 1000);
  }

  /** Resolves once the queue is empty (uploaded, or given up after `maxAttempts`). */
  idle(): Promise<void> {
    if (this.jobs.size === 0 && !this.running) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Stops retrying; what is still queued stays local (the daemon's start and `offsite sync` pick it up). */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.jobs.clear();
    this.settle();
  }

  private settle(): void {
    if (this.jobs.size > 0 && !this.closed) return;
    for (const w of this.waiters.splice(0)) w();
  }

  private kick(): void {
    if (this.running || this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.running = true;
    void this.work().finally(() => {
      this.running = false;
      this.settle();
    });
  }

  private async work(): Promise<void> {
    while (!this.closed) {
      const now = Date.now();
      const ready = [...this.jobs.values()].filter((j) => j.notBefore <= now).sort((a, b) => a.createdAt - b.createdAt)[0];
      if (!ready) {
        const next = Math.min(...[...this.jobs.values()].map((j) => j.notBefore));
        if (Number.isFinite(next)) {
          this.timer = setTimeout(() => this.kick(), Math.max(0, next - now));
          // A CLI waiting in idle() keeps the process alive through the timer; a daemon's queue must not hold it open.
          if (this.maxAttempts === Infinity) this.timer.unref();
        }
        return;
      }
      await this.attempt(ready);
    }
  }

  private async attempt(job: Job): Promise<void> {
    // A backup pruned (or removed) before its upload has nothing left to copy.
    const here = await fsp.stat(path.join(this.backupDir, manifestName(job.fileName))).then(() => true, () => false);
    if (!here) {
      this.jobs.delete(job.fileName);
      return;
    }
    const started = Date.now();
    try {
      await this.target.upload(this.backupDir, job.fileName);
      this.jobs.delete(job.fileName);
      this.uploaded++;
      this.log('info', `uploaded ${job.fileName} to ${this.display} (${Date.now() - started} ms${job.attempts > 0 ? `, after ${job.attempts} failed attempt${job.attempts === 1 ? '' : 's'}` : ''})`);
    } catch (err) {
      this.failures++;
      job.attempts++;
      job.lastError = errorOf(err);
      if (job.attempts >= this.maxAttempts) {
        this.jobs.delete(job.fileName);
        this.gaveUp.push({ fileName: job.fileName, error: job.lastError });
        this.log('warn', `could not upload ${job.fileName} to ${this.display} (${job.lastError.code}: ${job.lastError.message}); the local backup is fine; \`chatmem offsite sync\` uploads it later`);
        return;
      }
      const delay = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (job.attempts - 1));
      job.notBefore = Date.now() + delay;
      this.log('warn', `upload of ${job.fileName} to ${this.display} failed (${job.lastError.code}: ${job.lastError.message}); retry ${job.attempts} in ${delay} ms`);
    }
  }

  async list(): Promise<BackupInfo[]> {
    const now = Date.now();
    return (await this.target.list()).map((r) => remoteInfo(r, this.display, now)).filter((b): b is BackupInfo => b !== null);
  }

  async fetch(id: string, backupDir: string): Promise<boolean> {
    const remote = (await this.target.list()).find((r) => r.fileName === id || parseBackupName(r.fileName)?.id === id);
    if (!remote) return false;
    this.log('info', `fetching ${remote.fileName} from ${this.display}`);
    // A new machine has no backup directory yet.
    await ensurePrivateDir(backupDir);
    await this.target.download(remote.fileName, backupDir);
    return true;
  }

  remove(fileName: string): Promise<void> {
    return this.target.remove(fileName);
  }

  /**
   * Queues every local verified backup that has no off-site copy (what a crash, a given-up CLI upload or a
   * daemon stopped mid-retry left), and says which backups are off-site only.
   */
  async syncMissing(local: BackupInfo[]): Promise<{ queued: string[]; offsiteOnly: string[] }> {
    const remote = await this.target.list();
    const there = new Set(remote.map((r) => r.fileName));
    const localNames = new Set(local.map((b) => path.basename(b.file)));
    const queued: string[] = [];
    for (const b of local) {
      const name = path.basename(b.file);
      if (b.state !== 'verified' || there.has(name)) continue;
      this.enqueue(name, b.createdAt ? Date.parse(b.createdAt) : Date.now());
      queued.push(name);
    }
    return { queued, offsiteOnly: remote.map((r) => r.fileName).filter((n) => !localNames.has(n)) };
  }
}

function remoteInfo(r: RemoteBackup, display: string, now: number): BackupInfo | null {
  const parsed = parseBackupName(r.fileName);
  if (!parsed) return null;
  const m = r.manifest;
  const created = m?.created_at ? new Date(m.created_at) : parsed.createdAt;
  return {
    id: parsed.id,
    file: `${display}${r.fileName}`,
    size: m?.bytes ?? r.size,
    users: m ? m.users : null,
    reason: m ? m.reason : 'legacy',
    scope: m ? m.scope : null,
    createdAt: created ? created.toISOString() : null,
    ageSeconds: created ? Math.max(0, Math.round((now - created.getTime()) / 1000)) : null,
    gzip: parsed.gzip,
    // The manifest is uploaded last, after the copy was checked: listed means verified when written.
    state: 'verified',
    kind: parsed.kind,
    location: 'offsite',
  };
}
