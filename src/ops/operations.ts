import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { BackupError, errnoCode, isChatmemError, OpsError, StoreError, type ChatmemError } from '../errors.js';
import { FILE_MODE, fsyncDir } from '../fs-util.js';
import { applyPatch, compareIds, nowIso, parseRecord, validateUserId, type MemoryRecord, type RecordInput, type RecordPatch } from '../record.js';
import { applyPut } from '../store/store.js';
import type { ExclusiveContext, Store, WriteTracker } from '../store/types.js';
import { writeBackup, type BackupResult } from '../backup/create.js';
import { PartsWriter } from '../backup/two-phase.js';
import { stringifyJson } from '../json-safe.js';
import { diffRecords, type DiffResult } from '../backup/diff.js';
import { manifestName, parseBackupName } from '../backup/format.js';
import { readJsonEntries } from '../format/json-entries.js';
import { finishLeftovers, verificationError, verifySource, type LeftoverReport } from '../backup/integrity.js';
import { inspectBackup, listBackupDir, newestBackupDate, newestFirst, verifyBackup, verifyEntries, type BackupInfo, type BackupInspection, type CatalogEntry, type VerifyResult } from '../backup/catalog.js';
import { type BackupReason } from '../backup/manifest.js';
import { isEmptyPolicy, planRetention, type RetentionGroup, type RetentionPlan, type RetentionPolicy } from '../backup/retention.js';
import { backupRecords, findBackupUser, openBackup, sortedBackupRecords, type BackupSource } from '../backup/source.js';
import { forgetUsers, type ForgetResult } from './forget.js';
import { expireUsers, type ExpirePolicy, type ExpireResult } from './expire.js';
import { mergeRecords } from './merge.js';
import { AuditLog, queryAudit, type Actor, type AuditEntry, type AuditFilter, type AuditOperation } from './audit.js';

export interface OpsOptions {
  store: Store;
  backupDir: string;
  audit: AuditLog;
  /** Who acts when a call does not say. */
  actor: Actor;
  /** IANA time zone of the dates in the names of legacy (seed) backups; default UTC. */
  legacyTimezone?: string;
  /** Where the forget key and the daemon's log live (default: the audit log's directory). */
  dataDir?: string;
  /** The store file could not be parsed: `store` throws that error; only a whole-store restore works (see {@link Operations.restore}). */
  brokenStore?: BrokenStore;
  /** Test hooks: awaited at each named step of delete, clear, restore and import, so a test can hold an operation there. */
  hooks?: OpsHooks;
  /** Off-site copies (src/offsite/): told of every verified backup, asked for backups not on this machine. */
  offsite?: OffsiteHooks;
}

/**
 * Steps of a guarded operation, in order: the audit intent is durable; (clear and full restore: the
 * snapshot and rounds of changed users are copied into verified parts); the exclusive section is held;
 * the backup is written and verified (clear and full restore: the parts are sealed, so the pre-image is on
 * disk and checked); the store is changed; (clear and full restore: after the section, the final backup
 * is published); the audit outcome is durable.
 */
export type OpsPoint = 'intent-written' | 'snapshot-copied' | 'section-entered' | 'backup-verified' | 'changed' | 'backup-published' | 'outcome-written';

/** Rounds of changed users copied after the snapshot, while writes go on, before the exclusive section. */
const DELTA_ROUNDS = 6;
/** At most this many changed users are left for the exclusive section to read (measured: well under 100 ms). */
const SECTION_USERS = 200;

export interface OpsHooks {
  at(point: OpsPoint, action: string): Promise<void>;
}

/** What the operations need of off-site storage; see src/offsite/service.ts. */
export interface OffsiteHooks {
  /** A backup was written and verified: queue its upload. Must return at once and never throw. */
  backupVerified(fileName: string, createdAt: string): void;
  /** Backups held off-site (location 'offsite'; `file` is their off-site address). */
  list(): Promise<BackupInfo[]>;
  /** Brings an off-site backup into the backup directory, verified; false when off-site has no such id. */
  fetch(id: string, backupDir: string): Promise<boolean>;
  remove(fileName: string): Promise<void>;
  /** Tells the operator something went wrong off-site (listing, removal) without failing the operation. */
  warn(message: string): void;
}

/** A file store that exists but cannot be read, and how to open a fresh one in its place. */
export interface BrokenStore {
  file: string;
  error: ChatmemError;
  reopen: () => Promise<Store>;
}

export interface CallOptions {
  actor?: Actor;
  /** Users written so far, for progress bars. */
  onProgress?: (done: number, total: number | null) => void;
}

export interface RestoreOptions extends CallOptions {
  /** Restore a legacy backup (no manifest, so no checksum to check) anyway; without it: `E_BACKUP_UNVERIFIED`. */
  allowUnverified?: boolean;
  /** Restore only these users; the others are left alone. */
  users?: string[];
  /** 'replace' (default): the store (or each listed user) becomes exactly the backup's. 'merge': users absent from the backup are kept. */
  mode?: 'replace' | 'merge';
  dryRun?: boolean;
  /** Restore a backup of only some users over the whole store anyway (replace: everyone else is removed). */
  wholeStore?: boolean;
}

/**
 * Something an operation that committed could not finish: the change stands (answer is success), and
 * what is missing is said here. `E_AUDIT_WRITE`: the outcome entry could not be written; the next
 * start writes it.
 */
export interface OpWarning {
  code: string;
  message: string;
}

export interface RestoreResult {
  dryRun: boolean;
  diff: DiffResult;
  /** Backup of what the restore overwrote: absent on dry runs, null when it overwrote nothing. */
  backup?: string | null;
  written: number;
  removed: number;
  /** The unreadable store file, kept aside under this name before the restore wrote a new store. */
  brokenStoreKeptAt?: string;
  /** Set on a dry run over an unreadable store: the error it gives. */
  brokenStore?: { file: string; code: string; message: string };
  warnings?: OpWarning[];
}

export type DiffSide = 'current' | string;

export type { BackupInfo, VerifyResult } from '../backup/catalog.js';

/** The result of a destructive operation names its backup. */
export interface DeleteResult {
  deleted: number;
  userIds: string[];
  backup: string;
  backupFile: string;
  auditOp: string;
  warnings?: OpWarning[];
}

export interface PruneResult extends RetentionPlan {
  dryRun: boolean;
  removed: string[];
  /** Backups that failed verification (or are refused entries): never removed, not counted by any rule; also listed in `keep`. */
  damaged: { id: string; code: string; message: string }[];
}

async function* fromArray(records: MemoryRecord[]): AsyncGenerator<MemoryRecord> {
  yield* [...records].sort((a, b) => compareIds(a.user_id, b.user_id));
}

/**
 * The guarded operations: the only code that deletes. Each destructive call writes an audit intent,
 * takes the store's exclusive section, writes and verifies a backup, then changes the store in one
 * transaction, and audits the outcome. Nothing can skip the backup.
 */
export class Operations {
  // Not readonly: a restore over an unreadable store replaces it with the fresh one it wrote.
  store: Store;
  readonly backupDir: string;
  readonly audit: AuditLog;
  private readonly actor: Actor;
  private readonly legacyTimezone: string;
  private brokenStore: BrokenStore | null;
  private readonly hooks: OpsHooks | undefined;
  readonly offsite: OffsiteHooks | null;
  private readonly dataDir: string;

  constructor(options: OpsOptions) {
    this.dataDir = path.resolve(options.dataDir ?? path.dirname(options.audit.file));
    this.legacyTimezone = options.legacyTimezone ?? 'UTC';
    this.store = options.store;
    this.brokenStore = options.brokenStore ?? null;
    this.backupDir = path.resolve(options.backupDir);
    this.audit = options.audit;
    this.actor = options.actor;
    this.hooks = options.hooks;
    this.offsite = options.offsite ?? null;
  }

  private async at(point: OpsPoint, action: string): Promise<void> {
    if (this.hooks) await this.hooks.at(point, action);
  }

  /** The one place a backup becomes verified: off-site copying is queued from here. */
  private async writeVerified(records: Parameters<typeof writeBackup>[1], options: Parameters<typeof writeBackup>[2]): Promise<BackupResult> {
    const result = await writeBackup(this.backupDir, records, options);
    this.offsite?.backupVerified(path.basename(result.file), result.manifest.created_at);
    return result;
  }

  /** Opens a backup; one that is only off-site is fetched first (downloaded, verified, then used as local). */
  private async openOrFetch(id: string): Promise<BackupSource> {
    try {
      return await openBackup(this.backupDir, id, this.legacyTimezone);
    } catch (err) {
      if (!this.offsite || !isChatmemError(err) || err.code !== 'E_BACKUP_NOT_FOUND') throw err;
      if (!(await this.offsite.fetch(id, this.backupDir))) throw err;
      return openBackup(this.backupDir, id, this.legacyTimezone);
    }
  }

  private async guarded<T extends object>(
    action: string,
    opts: CallOptions,
    userIds: string[] | undefined,
    run: (op: AuditOperation) => Promise<T>,
    details?: Record<string, unknown>,
  ): Promise<T & { auditOp: string; warnings?: OpWarning[] }> {
    const op = await this.audit.begin(action, opts.actor ?? this.actor, { userIds, details });
    let result: T;
    try {
      await this.at('intent-written', action);
      result = await run(op);
    } catch (err) {
      // A change that committed without its backup finished is not a failure: its intent stays open, and
      // the next start finishes the backup from its parts and the entry (recover()).
      if (!(isChatmemError(err) && err.details?.committed === true)) await op.fail(err).catch(() => undefined);
      throw err;
    }
    // The change has committed: a failure from here on must not turn it into a reported failure
    // (an operator would retry a delete that happened). Recovery at the next start writes the entry.
    try {
      const backup = (result as { backup?: unknown }).backup;
      await op.finish({ backup: typeof backup === 'string' ? backup : undefined, details: { ...details, ...summaryOf(result) } });
      await this.at('outcome-written', action);
      return { ...result, auditOp: op.op };
    } catch (err) {
      const message = `${action} completed, but its audit entry could not be written (${(err as Error).message}); it is completed at the next start`;
      return { ...result, auditOp: op.op, warnings: [{ code: isChatmemError(err) ? err.code : 'E_AUDIT_WRITE', message }] };
    }
  }

  private backupOptions(reason: BackupReason, scope: 'full' | string[], op: AuditOperation | null, opts: CallOptions, gzip = false) {
    return {
      reason,
      scope,
      gzip,
      source: this.store.url,
      auditOp: op?.op ?? null,
      onProgress: opts.onProgress ? (n: number) => opts.onProgress?.(n, null) : undefined,
    };
  }

  /**
   * Backs up the users (or the whole store with `fullBackup`), verifies the backup, then deletes them
   * in one transaction. An unknown id fails before anything is written.
   */
  async deleteUsers(ids: string[], options: CallOptions & { fullBackup?: boolean } = {}): Promise<DeleteResult> {
    if (ids.length === 0) throw new OpsError('E_OPS_ARG', 'no user ids given');
    const userIds = [...new Set(ids.map((id) => validateUserId(id)))];
    await this.requireUsers(userIds);
    return this.guarded('delete-users', options, userIds, (op) =>
      this.store.exclusive(options.fullBackup ? 'all' : { ids: userIds }, async (ctx) => {
        await this.at('section-entered', 'delete-users');
        const records = await ctx.getMany(userIds);
        // Re-checked inside the section: a concurrent delete may have won the race.
        if (records.length !== userIds.length) await this.requireUsers(userIds);
        const backup = await this.writeVerified(
          options.fullBackup ? { json: ctx.scanJson() } : fromArray(records),
          this.backupOptions('delete-user', options.fullBackup ? 'full' : userIds, op, options),
        );
        op.setBackup(backup.id);
        await this.at('backup-verified', 'delete-users');
        const deleted = await ctx.delete(userIds);
        await this.at('changed', 'delete-users');
        return { deleted, userIds, backup: backup.id, backupFile: backup.file };
      }),
    );
  }

  private async requireUsers(ids: string[]): Promise<void> {
    const found = new Set((await Promise.all(ids.map((id) => this.store.get(id)))).filter((r) => r !== null).map((r) => r.user_id));
    const missing = ids.filter((id) => !found.has(id));
    if (missing.length > 0) {
      throw new OpsError('E_UNKNOWN_USER', `unknown user${missing.length > 1 ? 's' : ''}: ${missing.map((m) => JSON.stringify(m)).join(', ')}`, {
        details: { missing },
      });
    }
  }

  /**
   * Full backup, verified, then clear, atomically against concurrent writers. The backup is taken in two
   * phases so that chat does not wait for the whole copy (see {@link twoPhase}).
   */
  async clearAll(options: CallOptions = {}): Promise<DeleteResult> {
    return this.guarded('clear-all', options, undefined, async (op) => {
      // PostgreSQL: an empty twin of the users table is made before the section, which only swaps it
      // in; the users cleared are then the backup's (a count in the section would read every row).
      // SQLite swaps in fresh tables inside its section already, at no cost in rows.
      const staged = this.store.kind === 'postgres' ? await this.store.stage(fromArray([])) : null;
      try {
        const r = await this.twoPhase(op, 'clear-all', options, async () => true, async (ctx) =>
          staged && ctx.replaceStaged ? { deleted: null, swapped: await ctx.replaceStaged(staged) } : { deleted: await ctx.clear() },
        );
        // A clear always has its backup (an empty store gives an empty one, as it always did).
        return { deleted: r.deleted ?? r.backup?.manifest.users ?? 0, userIds: [], backup: r.backup?.id ?? '', backupFile: r.backup?.file ?? '' };
      } finally {
        await staged?.release().catch(() => undefined);
      }
    });
  }

  /**
   * A verified backup of the whole store as it is at the moment of `change`, then `change`, in one
   * whole-store exclusive section that holds writes back only briefly. Where the store tracks its
   * writes (SQLite, JSON file: one process), the backup is built in parts (backup/two-phase.ts): a
   * snapshot and rounds of changed users are copied and fsynced while writes go on; the section reads
   * only the users changed since, seals them with a checksum (fsync file + dir), and commits `change`;
   * the final backup is merged, written, verified and published after the section. The pre-image is
   * on disk and checked before the change commits, and a kill after the seal is finished at the next
   * start (`finishLeftovers`). On PostgreSQL the tracker reads every daemon's changes from the database
   * (`refresh`). Otherwise (no tracker, or one that gave up) the section writes the whole backup
   * itself. `needsBackup` false (read in the section): no backup.
   */
  private async twoPhase<T>(
    op: AuditOperation,
    action: 'clear-all' | 'restore',
    opts: CallOptions,
    needsBackup: (ctx: ExclusiveContext) => Promise<boolean>,
    change: (ctx: ExclusiveContext) => Promise<T>,
  ): Promise<T & { backup: BackupResult | null }> {
    const reason: BackupReason = action;
    // Started before the snapshot, so that every write the snapshot may miss is in it.
    let tracker = this.store.trackWrites();
    const parts = tracker ? new PartsWriter(this.backupDir, op.op, { reason, source: this.store.url }) : null;
    let sealed = false;
    let keepParts = false;
    const inSection = async (ctx: ExclusiveContext): Promise<T & { backup: BackupResult | null }> => {
      let backup: BackupResult | null = null;
      if (await needsBackup(ctx)) {
        backup = await this.writeVerified({ json: ctx.scanJson() }, this.backupOptions(reason, 'full', op, opts));
        op.setBackup(backup.id);
      }
      await this.at('backup-verified', action);
      const result = await change(ctx);
      await this.at('changed', action);
      return { ...result, backup };
    };
    try {
      if (!tracker || !parts) return await this.store.exclusive('all', async (ctx) => {
        await this.at('section-entered', action);
        return inSection(ctx);
      });
      // A shared store's tracker takes its start mark in the database: the snapshot must begin after it.
      await tracker.refresh?.();
      await parts.snapshot(this.store.scanJson());
      // Rounds of "changed since", while writes go on, until what is left is small enough for the section.
      for (let round = 0; round < DELTA_ROUNDS; round++) {
        await tracker.refresh?.();
        if (tracker.overflow || tracker.ids.size <= SECTION_USERS) break;
        const next = this.store.trackWrites() as WriteTracker;
        // The next mark first, then this round's ids up to now: a write between the two is in both.
        await next.refresh?.();
        await tracker.refresh?.();
        const ids = [...tracker.ids];
        tracker.stop();
        tracker = next;
        await parts.delta(await this.currentJson(ids));
      }
      await this.at('snapshot-copied', action);
      const t = tracker;
      const result = await this.store.exclusive('all', async (ctx) => {
        await this.at('section-entered', action);
        // Every write has committed or waits for this section: the tracker is complete now.
        await t.refresh?.();
        // Another whole-store change ran since the snapshot, or too many users changed: copy it all here.
        if (t.overflow) return { ...(await inSection(ctx)), inSection: true };
        const ids = [...t.ids];
        t.stop();
        if (!(await needsBackup(ctx))) {
          await this.at('backup-verified', action);
          const r = await change(ctx);
          await this.at('changed', action);
          return { ...r, backup: null, inSection: true };
        }
        const changes = new Map<string, string | null>(ids.map((id) => [id, null]));
        for (const r of await ctx.getMany(ids)) changes.set(r.user_id, stringifyJson(r));
        await parts.seal(changes);
        sealed = true;
        await this.at('backup-verified', action);
        let r: T;
        try {
          r = await change(ctx);
        } catch (err) {
          // Not committed; the sealed backup is still a true backup of this moment: published after the section.
          keepParts = true;
          throw err;
        }
        keepParts = true;
        await this.at('changed', action);
        return { ...r, backup: null, inSection: false };
      }).catch(async (err: unknown) => {
        if (keepParts) await this.publishParts(parts, op).catch(() => undefined);
        throw err;
      });
      const { inSection: done, ...rest } = result;
      if (done) return rest as T & { backup: BackupResult | null };
      const backup = await this.publishParts(parts, op);
      return { ...(rest as T), backup };
    } finally {
      tracker?.stop();
      // Sealed parts whose change committed stay until their final backup is published (publishParts
      // removes them); anything else never had a change depend on it.
      if (parts && !(sealed && keepParts)) await parts.remove().catch(() => undefined);
    }
  }

  /** The current JSON of `ids` (null: gone), read outside any section in batches, so writes go on between. */
  private async currentJson(ids: string[]): Promise<Map<string, string | null>> {
    const out = new Map<string, string | null>();
    // A turn of ~10 ms, then the event loop's: 500 users at a time held appends 100–170 ms at 100k users.
    let turn = performance.now();
    for (let i = 0; i < ids.length; i += 50) {
      const batch = ids.slice(i, i + 50);
      const records = await Promise.all(batch.map((id) => this.store.get(id)));
      batch.forEach((id, k) => {
        const r = records[k];
        out.set(id, r ? stringifyJson(r) : null);
      });
      if (performance.now() - turn >= 10) {
        await new Promise((resolve) => setImmediate(resolve));
        turn = performance.now();
      }
    }
    return out;
  }

  /**
   * Writes the final backup from sealed parts, verified, and removes the parts. The change has
   * committed by now: a failure keeps the parts (the next start finishes them) and says so.
   */
  private async publishParts(parts: PartsWriter, op: AuditOperation): Promise<BackupResult> {
    const sealed = parts.sealed();
    let lastErr: unknown;
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const backup = await this.writeVerified({ json: sealed.entries() }, this.backupOptions(sealed.manifest.reason, 'full', op, {}));
        op.setBackup(backup.id);
        await this.at('backup-published', sealed.manifest.reason);
        await parts.remove().catch(() => undefined);
        return backup;
      } catch (err) {
        lastErr = err;
      }
    }
    throw new BackupError(
      isChatmemError(lastErr) ? lastErr.code : 'E_BACKUP_WRITE',
      `the change committed, but its backup could not be finished (${(lastErr as Error).message}); its verified parts are kept in ${this.backupDir} and the backup is finished at the next start`,
      { cause: lastErr, details: { committed: true, auditOp: op.op } },
    );
  }

  /**
   * Keeps the newest `keepLast` history entries of one user (the seed's `truncate_history`). What it drops
   * is first written to a verified per-user backup (reason `reset`); nothing dropped, no backup.
   */
  async truncateHistory(id: string, keepLast: number, options: CallOptions = {}): Promise<{ record: MemoryRecord; dropped: number; backup: string | null; backupFile: string | null }> {
    const userId = validateUserId(id);
    if (!Number.isInteger(keepLast) || keepLast < 0) throw new OpsError('E_OPS_ARG', `keepLast must be an integer >= 0, got ${String(keepLast)}`);
    return this.guarded('truncate-history', options, [userId], (op) =>
      this.store.exclusive({ ids: [userId] }, async (ctx) => {
        const [current] = await ctx.getMany([userId]);
        if (!current) throw new OpsError('E_UNKNOWN_USER', `unknown user: ${JSON.stringify(userId)}`);
        const kept = keepLast === 0 ? [] : current.history.slice(-keepLast);
        const dropped = current.history.length - kept.length;
        if (dropped === 0) return { record: current, dropped, backup: null, backupFile: null };
        const backup = await this.writeVerified(fromArray([current]), this.backupOptions('reset', [userId], op, options));
        op.setBackup(backup.id);
        const record: MemoryRecord = { ...current, history: kept, updated_at: nowIso() };
        await ctx.putMany([record]);
        return { record, dropped, backup: backup.id, backupFile: backup.file };
      }),
    { keepLast });
  }

  /**
   * Forgets users everywhere: store (no trace left in its files), every backup, the daemon's log, and
   * their ids in the audit log replaced by a keyed hash (see ops/forget.ts). The one operation that
   * destroys without a backup, by design.
   */
  async forget(ids: string[], options: CallOptions = {}): Promise<ForgetResult> {
    const ctx = { store: this.store, backupDir: this.backupDir, audit: this.audit, dataDir: this.dataDir, legacyTimezone: this.legacyTimezone, actor: this.actor };
    const result = await forgetUsers(ctx, ids, { actor: options.actor });
    if (this.offsite) {
      // Off-site copies hold the users too: the old copy goes, and the rewritten local backup is uploaded
      // in its place (an upload never replaces an off-site copy with a different checksum).
      for (const name of await fsp.readdir(this.backupDir).catch(() => [] as string[])) {
        const id = name.replace(/\.json(\.gz)?$/, '');
        const rewritten = result.backupsRewritten.includes(id);
        const deleted = result.filesDeleted.includes(name) || result.filesDeleted.includes(id);
        if (!rewritten || name.endsWith('.meta.json')) continue;
        await this.offsite.remove(name).catch((err: unknown) => this.offsite?.warn(`forget: cannot remove the off-site copy of ${name}: ${(err as Error).message}`));
        if (!deleted) this.offsite.backupVerified(name, new Date().toISOString());
      }
      for (const file of result.filesDeleted) {
        const name = path.basename(file);
        if (name.endsWith('.meta.json')) continue;
        await this.offsite.remove(name).catch((err: unknown) => this.offsite?.warn(`forget: cannot remove the off-site copy of ${name}: ${(err as Error).message}`));
      }
    }
    return result;
  }

  /**
   * Removes the users with no update for `policy.inactiveAfter` (before `now`): a guarded delete (backup
   * first), or a forget in mode `forget`. `dryRun` lists who would go (see ops/expire.ts).
   */
  expire(policy: ExpirePolicy, options: CallOptions & { now?: Date; dryRun?: boolean } = {}): Promise<ExpireResult> {
    const ctx = {
      store: this.store,
      backupDir: this.backupDir,
      audit: this.audit,
      actor: this.actor,
      forget: (ids: string[], actor: Actor) => this.forget(ids, { actor }),
      writeBackup: (records: MemoryRecord[], opts: Parameters<typeof writeBackup>[2]) => this.writeVerified(records, opts),
    };
    return expireUsers(ctx, policy, { now: options.now, dryRun: options.dryRun, actor: options.actor });
  }

  /**
   * Merges FROM into INTO (two ids of one person): one per-user backup holding both first (reason
   * `merge`), then, in one exclusive section and one transaction, INTO becomes the merge (see
   * {@link mergeRecords}) and FROM is deleted. Audited as `merge`.
   */
  async merge(fromId: string, intoId: string, options: CallOptions = {}): Promise<{ record: MemoryRecord; backup: string; backupFile: string; auditOp: string }> {
    const from = validateUserId(fromId);
    const into = validateUserId(intoId);
    if (from === into) throw new OpsError('E_OPS_ARG', `cannot merge ${JSON.stringify(from)} into itself`);
    await this.requireUsers([from, into]);
    return this.guarded('merge', options, [from, into], (op) =>
      this.store.exclusive({ ids: [from, into] }, async (ctx) => {
        const [a, b] = await Promise.all([ctx.getMany([from]), ctx.getMany([into])]);
        const fromRec = a[0];
        const intoRec = b[0];
        if (!fromRec || !intoRec) {
          await this.requireUsers([from, into]);
          throw new OpsError('E_UNKNOWN_USER', `unknown user: ${JSON.stringify(fromRec ? into : from)}`);
        }
        const backup = await this.writeVerified(fromArray([fromRec, intoRec]), this.backupOptions('merge', [from, into].sort(compareIds), op, options));
        op.setBackup(backup.id);
        const record = mergeRecords(fromRec, intoRec, this.store.historyCap, nowIso());
        if (ctx.putAndDelete) await ctx.putAndDelete([record], [from]);
        else {
          await ctx.putMany([record]);
          await ctx.delete([from]);
        }
        return { record, backup: backup.id, backupFile: backup.file };
      }),
    { from, into });
  }

  /** A backup of the whole store from a consistent snapshot; writes continue meanwhile. */
  async createBackup(options: CallOptions & { reason?: BackupReason; gzip?: boolean } = {}): Promise<BackupResult & { auditOp: string }> {
    const reason = options.reason ?? 'manual';
    return this.guarded('backup', options, undefined, async (op) => {
      const result = await this.writeVerified({ json: this.store.scanJson() }, this.backupOptions(reason, 'full', op, options, options.gzip));
      return { ...result, backup: result.id };
    }, { reason });
  }

  /**
   * Backups in the backup directory, newest first. Includes the seed's legacy files. With `offsite` (and
   * off-site storage configured) the off-site copies too, each backup marked local, offsite or both; an
   * off-site listing that fails is a warning, and the local list is returned unmarked.
   */
  async listBackups(options: { offsite?: boolean } = {}): Promise<BackupInfo[]> {
    return (await this.listEntries(options)).map((e) => e.info);
  }

  // The listing with each local backup's source, opened once: verifying, pruning and recovering use it as is.
  private async listEntries(options: { offsite?: boolean } = {}): Promise<CatalogEntry[]> {
    const local = await listBackupDir(this.backupDir, this.legacyTimezone);
    if (!options.offsite || !this.offsite) return local;
    let remote: BackupInfo[];
    try {
      remote = await this.offsite.list();
    } catch (err) {
      this.offsite.warn(`cannot list the off-site backups: ${isChatmemError(err) ? `${err.code}: ` : ''}${(err as Error).message}`);
      return local;
    }
    const remoteIds = new Set(remote.map((r) => r.id));
    const localIds = new Set(local.map((e) => e.info.id));
    const merged: CatalogEntry[] = [
      ...local.map((e) => ({ ...e, info: { ...e.info, location: remoteIds.has(e.info.id) ? ('both' as const) : ('local' as const) } })),
      ...remote.filter((r) => !localIds.has(r.id)).map((r) => ({ info: { ...r, location: 'offsite' as const }, source: null })),
    ];
    const order = new Map(newestFirst(merged.map((e) => e.info)).map((info, i) => [info, i]));
    return merged.sort((a, b) => (order.get(a.info) ?? 0) - (order.get(b.info) ?? 0));
  }

  /** When the newest backup was made (what `listBackups` would say first), opening only the newest few. */
  newestBackupAt(): Promise<Date | null> {
    return newestBackupDate(this.backupDir, this.legacyTimezone);
  }

  /** A backup's facts, and one user's record from it when asked (found without reading the whole file). */
  async inspectBackup(id: string, options: { user?: string; sample?: number } = {}): Promise<BackupInspection> {
    return inspectBackup(await this.openOrFetch(id), options);
  }

  /** Checks checksum and count (chatmem backups) or that the file parses (legacy backups). */
  async verifyBackups(id?: string): Promise<VerifyResult[]> {
    if (id === undefined) return verifyEntries(await this.listEntries());
    let src: BackupSource;
    try {
      src = await this.openOrFetch(id);
    } catch (err) {
      // A refused entry is a failed check; a named missing one throws.
      if (isChatmemError(err) && err.code === 'E_BACKUP_NOT_REGULAR') {
        return [{ id: parseBackupName(id)?.id ?? id, ok: false, legacy: false, users: null, error: { code: err.code, message: err.message } }];
      }
      throw err;
    }
    return [await verifyBackup(src)];
  }

  private async sideRecords(side: DiffSide, users?: Set<string>): Promise<AsyncIterable<MemoryRecord>> {
    const filter = async function* (records: AsyncIterable<MemoryRecord>) {
      for await (const r of records) if (!users || users.has(r.user_id)) yield r;
    };
    if (side === 'current') {
      if (users) {
        const records = (await Promise.all([...users].map((u) => this.store.get(u)))).filter((r): r is MemoryRecord => r !== null);
        return fromArray(records);
      }
      return this.store.scan();
    }
    const src = await this.openOrFetch(side);
    if (users && src.manifest && !src.gzip) {
      const records = (await Promise.all([...users].map((u) => findBackupUser(src, u)))).filter((r): r is MemoryRecord => r !== null);
      return fromArray(records);
    }
    return filter(sortedBackupRecords(src));
  }

  /** Users added, removed and changed from `a` to `b`; each side is a backup id or 'current'. */
  async diff(a: DiffSide, b: DiffSide = 'current', options: CallOptions & { users?: string[] } = {}): Promise<DiffResult> {
    const users = options.users ? new Set(options.users.map((u) => validateUserId(u))) : undefined;
    // Verify a backup before trusting its content; a diff writes nothing, so a legacy file is fine.
    for (const side of [a, b]) if (side !== 'current') await this.requireVerified(side, true);
    return diffRecords(await this.sideRecords(a, users), await this.sideRecords(b, users), options.onProgress ? (n) => options.onProgress?.(n, null) : undefined);
  }

  /**
   * Opens a backup and checks it (checksum and count, or a full parse for a legacy file) before
   * anything uses its content. A legacy file needs `allowUnverified`: nothing proves it is whole.
   */
  private async requireVerified(id: string, allowUnverified = false): Promise<BackupSource> {
    const src = await this.openOrFetch(id);
    if (!src.manifest && !src.damage && !allowUnverified) {
      throw new BackupError(
        'E_BACKUP_UNVERIFIED',
        `${src.id} is an unverified legacy backup (no manifest, so no checksum): confirm to use it anyway (CLI: answer y or --yes; API: "allowUnverified": true)`,
        { details: { id: src.id } },
      );
    }
    const v = await verifySource(src);
    if (!v.ok) throw verificationError(src, v);
    return src;
  }

  /**
   * Restores a backup. It first backs up what it will overwrite (reason `restore`). A full restore
   * makes the store equal to the backup; `users` restores only those users. `dryRun` only reports.
   */
  async restore(backupId: string, options: RestoreOptions = {}): Promise<RestoreResult & { auditOp?: string }> {
    const mode = options.mode ?? 'replace';
    if (mode !== 'replace' && mode !== 'merge') throw new OpsError('E_OPS_ARG', `restore mode must be replace or merge, got ${String(mode)}`);
    let users = options.users?.length ? [...new Set(options.users.map((u) => validateUserId(u)))] : undefined;
    // Every restore, selective ones too, checks the whole file first: a flipped byte in another user's
    // line proves the file is not what was written. The result is cached per file identity.
    // A dry run writes nothing, so it may show what a legacy file holds before the operator confirms.
    const src = await this.requireVerified(backupId, options.allowUnverified === true || options.dryRun === true);
    if (!users && !options.wholeStore) {
      // A backup of some users (taken before a delete, or the seed's per-user file) restores those users:
      // a whole-store replace from it would wipe everyone else.
      if (Array.isArray(src.manifest?.scope)) users = src.manifest.scope;
      else if (src.kind === 'user') for await (const r of backupRecords(src)) users = [r.user_id];
    }
    if (this.brokenStore) return this.restoreOverBroken(src, this.brokenStore, { ...options, mode, users });

    if (users) {
      const fromBackup = await Promise.all(users.map((u) => findBackupUser(src, u)));
      const missing = users.filter((_, i) => !fromBackup[i]);
      if (missing.length > 0) {
        throw new OpsError('E_UNKNOWN_USER', `not in backup ${src.id}: ${missing.map((m) => JSON.stringify(m)).join(', ')}`, { details: { missing } });
      }
      const records = fromBackup.filter((r): r is MemoryRecord => r !== null);
      const diff = await diffRecords(await this.sideRecords('current', new Set(users)), fromArray(records));
      if (options.dryRun) return { dryRun: true, diff, written: 0, removed: 0 };
      return this.guarded('restore', options, users, (op) =>
        this.store.exclusive({ ids: users }, async (ctx) => {
          await this.at('section-entered', 'restore');
          const current = await ctx.getMany(users);
          // Users that are all gone (a delete being undone) leave nothing to back up: an empty file
          // would only pose as the latest backup.
          let backup: string | null = null;
          if (current.length > 0) {
            const scope = current.map((r) => r.user_id);
            backup = (await this.writeVerified(fromArray(current), this.backupOptions('restore', scope, op, options))).id;
            op.setBackup(backup);
          }
          await this.at('backup-verified', 'restore');
          await ctx.putMany(records);
          await this.at('changed', 'restore');
          return { dryRun: false, diff, backup, written: records.length, removed: 0 };
        }),
        { from: src.id, mode },
      );
    }

    const fullDiff = await diffRecords(this.store.scan(), sortedBackupRecords(src));
    const diff = mode === 'merge' ? { ...fullDiff, removed: [] } : fullDiff;
    if (options.dryRun) return { dryRun: true, diff, written: 0, removed: 0 };
    return this.guarded('restore', options, undefined, async (op) => {
      // A replace copies the backup's rows into the store's scratch space first, while writes go on
      // (SQLite); the section then only swaps them in.
      const staged = mode === 'replace' ? await this.store.stage(sortedBackupRecords(src)) : null;
      try {
        // An empty store leaves nothing to back up: an empty file would only pose as the latest backup.
        // Both modes are one transaction (one file write for JSON): a kill never leaves half a restore.
        const r = await this.twoPhase(op, 'restore', options, async (ctx) => (ctx.isEmpty ? !(await ctx.isEmpty()) : (await ctx.count()) > 0), async (ctx) => ({
          written:
            mode === 'merge'
              ? await ctx.putAll(sortedBackupRecords(src))
              : staged && ctx.replaceStaged
                ? await ctx.replaceStaged(staged)
                : await ctx.replaceAll(sortedBackupRecords(src)),
        }));
        return { dryRun: false, diff, backup: r.backup?.id ?? null, written: r.written, removed: mode === 'replace' ? diff.removed.length : 0 };
      } finally {
        await staged?.release().catch(() => undefined);
      }
    }, { from: src.id, mode });
  }

  /**
   * A whole-store restore over a store file that cannot be parsed: the broken file is kept aside under
   * a new name (never overwritten, mode 0600), then a fresh store is written from the verified backup.
   * Restoring some users or merging needs the current store, so those are refused.
   */
  private async restoreOverBroken(src: BackupSource, broken: BrokenStore, options: RestoreOptions): Promise<RestoreResult & { auditOp?: string }> {
    if (options.users || options.mode === 'merge') {
      throw new StoreError(
        broken.error.code,
        `${broken.error.message} Only a whole-store restore can replace it (a restore of some users or a merge needs the current store; use --replace for a backup of some users).`,
        { cause: broken.error, details: broken.error.details },
      );
    }
    const added: string[] = [];
    for await (const r of sortedBackupRecords(src)) added.push(r.user_id);
    const diff: DiffResult = { added, removed: [], changed: [], unchanged: 0 };
    const brokenInfo = { file: broken.file, code: broken.error.code, message: broken.error.message };
    if (options.dryRun) return { dryRun: true, diff, written: 0, removed: 0, brokenStore: brokenInfo };
    return this.guarded('restore', options, undefined, async () => {
      const keptAt = await keepAside(broken.file);
      const fresh = await broken.reopen();
      let written: number;
      try {
        written = await fresh.exclusive('all', (ctx) => ctx.replaceAll(sortedBackupRecords(src)));
      } catch (err) {
        await fresh.close().catch(() => undefined);
        throw err;
      }
      const old = this.store;
      this.store = fresh;
      this.brokenStore = null;
      await old.close().catch(() => undefined);
      return { dryRun: false, diff, written, removed: 0, brokenStoreKeptAt: keptAt };
    }, { from: src.id, mode: 'replace', brokenStore: broken.file });
  }

  /**
   * Imports a seed memory.json or any backup kind. Every record is validated before anything is
   * written; users it overwrites are backed up first (reason `import`).
   */
  async importFile(file: string, options: CallOptions = {}): Promise<{ imported: number; overwritten: number; backup: string | null; warnings?: OpWarning[] }> {
    const abs = path.resolve(file);
    const gzip = abs.endsWith('.gz');
    if (parseBackupName(path.basename(abs))) {
      // A chatmem backup is imported only while it matches its manifest; a symlink named like one is refused.
      let src: BackupSource | null = null;
      try {
        src = await openBackup(path.dirname(abs), path.basename(abs), this.legacyTimezone);
      } catch (err) {
        if (!(isChatmemError(err) && err.code === 'E_BACKUP_NOT_FOUND')) throw err;
      }
      if (src && (src.manifest || src.damage)) {
        const v = await verifySource(src);
        if (!v.ok) throw verificationError(src, v);
      }
    }
    // Two streaming passes keep memory at the ids, not the records: the first validates everything
    // (so nothing is written from a bad file), the second writes.
    const head: { key: string; value: unknown }[] = [];
    const ids: string[] = [];
    let count = 0;
    const validate = (key: string, value: unknown): MemoryRecord => {
      try {
        return parseRecord(key, value);
      } catch (err) {
        throw new OpsError('E_IMPORT', `${abs}: user ${JSON.stringify(key)}: ${(err as Error).message}`, { cause: err });
      }
    };
    try {
      for await (const e of readJsonEntries(abs, { gzip })) {
        // The seed's per-user file is {user_id, backup_timestamp, record}: decided once all of it is seen.
        if (count++ < 3) head.push(e);
        else {
          for (const h of head.splice(0)) ids.push(validate(h.key, h.value).user_id);
          ids.push(validate(e.key, e.value).user_id);
        }
      }
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || (isChatmemError(err) && err.cause && errnoCode(err.cause) === 'ENOENT')) {
        throw new OpsError('E_NOT_FOUND', `no such file: ${abs}`, { cause: err });
      }
      throw err;
    }
    const headKeys = head.map((h) => h.key).sort().join(',');
    let single: MemoryRecord | null = null;
    if (count === 3 && headKeys === 'backup_timestamp,record,user_id') {
      const uid = head.find((e) => e.key === 'user_id')?.value;
      if (typeof uid !== 'string') throw new OpsError('E_IMPORT', `${abs}: per-user backup has no string user_id`);
      single = validate(uid, head.find((e) => e.key === 'record')?.value);
      ids.push(uid);
    } else {
      for (const h of head) ids.push(validate(h.key, h.value).user_id);
    }
    const unique = [...new Set(ids)].sort(compareIds);
    const records = async function* (): AsyncGenerator<MemoryRecord> {
      if (single) yield single;
      else for await (const e of readJsonEntries(abs, { gzip })) yield parseRecord(e.key, e.value);
    };
    return this.guarded('import', options, unique.length <= 100 ? unique : undefined, (op) =>
      this.store.exclusive({ ids: unique }, async (ctx) => {
        await this.at('section-entered', 'import');
        const existing = async function* (): AsyncGenerator<MemoryRecord> {
          for (let i = 0; i < unique.length; i += 1000) yield* fromArray(await ctx.getMany(unique.slice(i, i + 1000)));
        };
        const scope: string[] = [];
        for await (const r of existing()) scope.push(r.user_id);
        const overwritten = scope.length;
        let backup: BackupResult | null = null;
        if (overwritten > 0) {
          backup = await this.writeVerified(existing(), this.backupOptions('import', scope, op, options));
          op.setBackup(backup.id);
        }
        await this.at('backup-verified', 'import');
        let staged = 0;
        const counted = async function* (): AsyncGenerator<MemoryRecord> {
          for await (const r of records()) {
            yield r;
            if (++staged % 1000 === 0) options.onProgress?.(staged, count);
          }
        };
        // All or nothing, streamed: SQLite stages on disk and commits once, PostgreSQL uses one
        // transaction, JSON one atomic file write.
        const imported = await ctx.putAll(counted());
        await this.at('changed', 'import');
        return { imported, overwritten, backup: backup?.id ?? null };
      }),
      { file: abs, users: unique.length },
    ).then((r) => ({ imported: r.imported, overwritten: r.overwritten, backup: r.backup, ...(r.warnings ? { warnings: r.warnings } : {}) }));
  }

  /**
   * The data plane's PUT: replaces the record. When that drops any history entry, flag or slot of the
   * existing record, the previous record is first saved as a verified per-user backup (reason
   * `reset`), inside an exclusive section on that user so no write to it slips between the two.
   */
  async putRecord(id: string, record: RecordInput, options: CallOptions = {}): Promise<MemoryRecord> {
    validateUserId(id);
    parseRecord(id, record);
    return this.guardedWrite(id, (current) => applyPut(current, id, record), options);
  }

  /**
   * The data plane's PATCH. A patch touching `history`, `flags` or `slots` may wipe them: it is
   * guarded as {@link putRecord} is. Other patches cannot drop memory and take the plain path.
   */
  async patchRecord(id: string, patch: RecordPatch, options: CallOptions = {}): Promise<MemoryRecord> {
    applyPatch(null, validateUserId(id), patch);
    if (!('history' in patch) && !('flags' in patch) && !('slots' in patch)) return this.store.patch(id, patch);
    return this.guardedWrite(id, (current) => applyPatch(current, id, patch), options);
  }

  private guardedWrite(id: string, change: (current: MemoryRecord | null) => MemoryRecord, options: CallOptions): Promise<MemoryRecord> {
    return this.store.exclusive({ ids: [id] }, async (ctx) => {
      const [current] = await ctx.getMany([id]);
      const next = change(current ?? null);
      if (!current || !dropsMemory(current, next)) {
        await ctx.putMany([next]);
        return next;
      }
      const op = await this.audit.begin('reset-user', options.actor ?? this.actor, { userIds: [id] });
      let backup: string;
      try {
        backup = (await this.writeVerified([current], this.backupOptions('reset', [id], op, options))).id;
        op.setBackup(backup);
        await ctx.putMany([next]);
      } catch (err) {
        await op.fail(err).catch(() => undefined);
        throw err;
      }
      // Committed: a lost outcome entry is recovered at the next start, never reported as a failure.
      await op.finish({ backup }).catch(() => undefined);
      return next;
    });
  }

  /**
   * Applies a retention policy per group (full, per-user). Never removes the newest full backup; removes
   * each backup with its manifest. Every backup is verified first (cached per file): one that fails, and
   * refused entries, are never removed and not counted by any rule (a corrupt file must not stand in for
   * a good one); they are listed in `damaged` and in `keep` with the reason.
   */
  async prune(policy: RetentionPolicy, options: CallOptions & { dryRun?: boolean; only?: string[] } = {}): Promise<PruneResult> {
    // Off-site copies take part: one pruned here goes there too, and an off-site-only one is planned like any.
    const entries = await this.listEntries({ offsite: true });
    const listed = entries.map((e) => e.info);
    const damaged: PruneResult['damaged'] = [];
    const all: BackupInfo[] = [];
    for (const { info: b, source } of entries) {
      // An off-site-only backup was verified before its manifest (the commit marker) was uploaded; one whose
      // manifest cannot be read (encrypted, no identity) is not counted and never removed.
      const v =
        b.location === 'offsite'
          ? b.users !== null
            ? { ok: true }
            : { ok: false, error: { code: 'E_OFFSITE_KEY', message: 'its off-site manifest cannot be read (encrypted: configure offsiteIdentity)' } }
          : b.problem || !source ? { ok: false, error: b.problem } : await verifyBackup(source).catch(() => null);
      if (v?.ok) all.push(b);
      else damaged.push({ id: b.id, code: v?.error?.code ?? 'E_BACKUP_VERIFY', message: v?.error?.message ?? 'failed verification' });
    }
    // Grouped by scope, so small per-user backups never count against full ones; planRetention keeps
    // dateless legacy files and the newest full backup whatever the policy.
    const plan = planRetention(
      all.map((b) => ({ id: b.id, createdAt: b.createdAt === null ? null : new Date(b.createdAt), group: b.scope === 'full' ? ('full' as const) : ('user' as const) })),
      policy,
    );
    // `only`: the ids an operator confirmed; a backup made since the plan was shown must not widen it.
    const confirmed = options.only ? new Set(options.only) : null;
    const remove = isEmptyPolicy(policy) ? [] : plan.remove.filter((r) => !confirmed || confirmed.has(r.id));
    const keep = [...plan.keep, ...damaged.map((d) => ({ id: d.id, group: (listed.find((b) => b.id === d.id)?.scope === 'full' ? 'full' : 'user') as RetentionGroup, reasons: [`damaged (${d.code}): not counted, never removed by prune`] }))];
    if (options.dryRun || remove.length === 0) return { keep, remove, dryRun: !!options.dryRun, removed: [], damaged };
    return this.guarded('prune', options, undefined, async () => {
      const removed: string[] = [];
      for (const r of remove) {
        const info = all.find((b) => b.id === r.id);
        if (!info) continue;
        // The backup first, then its manifest: a kill in between leaves an orphan manifest (removed at the
        // next start), never a chatmem backup without its manifest.
        const fileName = path.basename(info.file);
        if (info.location !== 'offsite') {
          await fsp.rm(info.file, { force: true });
          await fsp.rm(path.join(this.backupDir, manifestName(fileName)), { force: true });
        }
        if (this.offsite && info.location !== 'local') {
          try {
            await this.offsite.remove(fileName);
          } catch (err) {
            // Locally pruned is pruned: the off-site copy goes at the next prune (it is then off-site only).
            this.offsite.warn(`could not remove the off-site copy of ${r.id}: ${isChatmemError(err) ? `${err.code}: ` : ''}${(err as Error).message}`);
          }
        }
        removed.push(r.id);
      }
      return { keep, remove, dryRun: false, removed, damaged };
    }, { policy, remove: remove.map((r) => r.id) });
  }

  /**
   * The audit log, filtered (see {@link queryAudit}): `action` takes the CLI's names too, and `user` also
   * finds the clears, full restores and large imports whose backup holds the user.
   * @throws OpsError `E_OPS_ARG` for an unknown action.
   */
  readAudit(filter: AuditFilter = {}): Promise<AuditEntry[]> {
    return queryAudit(this.audit, filter, async (id, user) => {
      try {
        return (await findBackupUser(await openBackup(this.backupDir, id), user)) !== null;
      } catch (err) {
        // A pruned backup can no longer say whom its operation touched.
        if (isChatmemError(err) && (err.code === 'E_BACKUP_NOT_FOUND' || err.code === 'E_BACKUP_ID')) return false;
        throw err;
      }
    });
  }

  /**
   * Start-up recovery: finishes what a killed chatmem left in the backup directory (temp files, orphan
   * manifests, backups not yet marked verified) and reports every operation whose intent has no
   * outcome, saying whether its backup exists and whether its change happened. Damaged backups and
   * refused entries are skipped, never fatal. `leftovers`: the report of a {@link finishLeftovers} this
   * process just ran, so the directory is not gone over twice.
   */
  async recover(options: { leftovers?: LeftoverReport } = {}): Promise<{
    removedTemp: string[];
    leftovers: LeftoverReport;
    interrupted: { entry: AuditEntry; backup: string | null; applied: boolean | null }[];
  }> {
    const leftovers = options.leftovers ?? (await finishLeftovers(this.backupDir));
    // A two-phase backup finished from its parts is verified like any other: off-site copying is queued.
    for (const id of leftovers.parts?.finished ?? []) this.offsite?.backupVerified(`${id}.json`, new Date().toISOString());
    const interrupted = [];
    const unfinished = await this.audit.unfinished();
    // Which backup belongs to which operation: read each manifest once, not once per interrupted entry.
    const backupOfOp = new Map<string, BackupSource>();
    if (unfinished.length > 0) {
      for (const { info, source } of await this.listEntries()) {
        if (info.state !== 'verified' && info.state !== 'pending') continue;
        if (source?.manifest?.auditOp) backupOfOp.set(source.manifest.auditOp, source);
      }
    }
    for (const entry of unfinished) {
      const src = backupOfOp.get(entry.op) ?? null;
      const backup = src?.id ?? null;
      let applied: boolean | null = null;
      if (entry.action === 'delete-users' && entry.userIds?.length) {
        applied = await this.deleteApplied(entry.userIds, src).catch(() => null);
      } else if (entry.action === 'clear-all') {
        applied = src === null ? false : await this.clearApplied(src).catch(() => null);
      }
      // A delete or clear whose verified backup exists and whose users are gone did complete (its
      // outcome entry was lost to a crash or a full disk): say `done`, as the answer did.
      const proven = applied === true && backup !== null;
      await this.audit.append({
        op: entry.op,
        actor: entry.actor,
        action: entry.action,
        userIds: entry.userIds,
        backup: backup ?? undefined,
        outcome: proven ? 'done' : 'interrupted',
        details: { backupExists: backup !== null, applied, recovered: true },
      });
      interrupted.push({ entry, backup, applied });
    }
    return { removedTemp: leftovers.removedTemp, leftovers, interrupted };
  }

  /**
   * Whether an interrupted delete happened. A user present now is not proof that it did not: the user
   * may have written again after the delete, which creates a new record. The record's identity is its
   * created_at (set when the record is created, kept by every update): the same as in the delete's
   * backup means the delete did not happen; another means the record was created anew after it.
   */
  private async deleteApplied(userIds: string[], src: BackupSource | null): Promise<boolean | null> {
    const current = await Promise.all(userIds.map((u) => this.store.get(u)));
    // The delete runs only after its backup is written and verified: no backup, no delete.
    if (src === null) return current.every((r) => r === null) ? null : false;
    let deleted = 0;
    for (const [i, u] of userIds.entries()) {
      const now = current[i];
      if (!now) {
        deleted++;
        continue;
      }
      const before = await findBackupUser(src, u);
      if (!before) return null;
      if (now.created_at !== before.created_at) deleted++;
    }
    // One transaction deletes all or none: a mix means something else changed these users.
    return deleted === userIds.length ? true : deleted === 0 ? false : null;
  }

  /** Whether an interrupted clear happened: no record of its backup is in the store with the same identity. */
  private async clearApplied(src: BackupSource): Promise<boolean | null> {
    const d = await diffRecords(sortedBackupRecords(src), this.store.scan());
    return d.unchanged === 0 && d.changed.every((c) => c.fields.includes('created_at'));
  }

  /** Finishes what a killed chatmem left in the backup directory (see `finishLeftovers`); recover() does it too. */
  finishLeftovers(): Promise<LeftoverReport> {
    return finishLeftovers(this.backupDir);
  }
}

/** Moves an unreadable store file to `<file>.broken-<UTC time>[-N]` (never over an existing file), mode 0600. */
async function keepAside(file: string): Promise<string> {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  for (let n = 0; n < 1000; n++) {
    const target = `${file}.broken-${stamp}${n > 0 ? `-${n}` : ''}`;
    try {
      await fsp.link(file, target);
    } catch (err) {
      if (errnoCode(err) === 'EEXIST') continue;
      throw new StoreError('E_STORE_WRITE', `cannot keep ${file} aside as ${target}: ${(err as Error).message}`, { cause: err });
    }
    await fsp.chmod(target, FILE_MODE);
    await fsp.unlink(file);
    await fsyncDir(path.dirname(file));
    return target;
  }
  throw new StoreError('E_STORE_WRITE', `no free name to keep ${file} aside`);
}

/**
 * Whether `next` loses part of `current`'s memory: a history entry, a flag or a slot that is no
 * longer there. Appends that hit the history cap do not come here (they are not PUT/PATCH).
 */
export function dropsMemory(current: MemoryRecord, next: MemoryRecord): boolean {
  for (const field of ['flags', 'slots'] as const) {
    const after = next[field];
    for (const key of Object.keys(current[field])) if (!Object.prototype.hasOwnProperty.call(after, key)) return true;
  }
  if (current.history.length === 0) return false;
  const kept = new Set(next.history.map((e) => JSON.stringify(e)));
  return current.history.some((e) => !kept.has(JSON.stringify(e)));
}

function summaryOf(result: object): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of ['deleted', 'written', 'removed', 'imported', 'overwritten'] as const) {
    const v = (result as Record<string, unknown>)[k];
    if (typeof v === 'number' || Array.isArray(v)) out[k] = Array.isArray(v) ? v.length : v;
  }
  return out;
}
