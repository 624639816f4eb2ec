/**
 * Expiring inactive users: those with no update for `users.inactiveAfter` are removed through the guarded
 * delete (a verified backup of them first), or forgotten everywhere with `users.expireMode: "forget"`.
 */
import { writeBackup, type BackupResult } from '../backup/create.js';
import { compareIds, type MemoryRecord } from '../record.js';
import { parseDuration, subtractDuration } from '../duration.js';
import type { Store } from '../store/types.js';
import type { Actor, AuditLog } from './audit.js';
import type { ForgetResult } from './forget.js';

export type ExpireMode = 'delete' | 'forget';

export interface ExpirePolicy {
  /** A duration such as `180d` (src/duration.ts). */
  inactiveAfter: string;
  mode?: ExpireMode;
}

export interface ExpireResult {
  dryRun: boolean;
  mode: ExpireMode;
  /** Users whose last update is before this instant are inactive. */
  cutoff: string;
  /** The inactive users found (a dry run: who would go). */
  users: { user_id: string; updated_at: string }[];
  /** How many were removed (users active again by the time of the delete are kept). */
  expired: number;
  /** Delete mode: the verified backup of the expired users. */
  backup: string | null;
  /** Forget mode: what the forget did. */
  forget?: ForgetResult;
  auditOp?: string;
}

export interface ExpireContext {
  store: Store;
  backupDir: string;
  audit: AuditLog;
  actor: Actor;
  forget: (ids: string[], actor: Actor) => Promise<ForgetResult>;
  /** Writes and verifies the backup (Operations passes its own, which also queues the off-site copy). */
  writeBackup?: (records: MemoryRecord[], options: Parameters<typeof writeBackup>[2]) => Promise<BackupResult>;
}

/** The instant before which a last update makes a user inactive. */
export function expiryCutoff(inactiveAfter: string, now: Date): Date {
  return new Date(subtractDuration(now, parseDuration(inactiveAfter, { what: 'users.inactiveAfter', code: 'E_OPS_ARG' })));
}

const inactive = (updatedAt: string, cutoff: Date): boolean => Date.parse(updatedAt) < cutoff.getTime();

/** Users whose `updated_at` is before `cutoff`, from the light listing (no record is parsed). */
export async function findInactive(store: Store, cutoff: Date): Promise<{ user_id: string; updated_at: string }[]> {
  const out: { user_id: string; updated_at: string }[] = [];
  let cursor: string | null = null;
  do {
    const page = await store.list({ cursor, limit: 1000 });
    for (const u of page.items) if (inactive(u.updated_at, cutoff)) out.push({ user_id: u.user_id, updated_at: u.updated_at });
    cursor = page.next;
  } while (cursor !== null);
  return out;
}

/**
 * Expires the inactive users. Delete mode: one guarded operation (audit intent, exclusive section, the
 * users re-read inside it so one who wrote meanwhile is kept, verified backup, one delete transaction,
 * audit outcome). Forget mode: a forget of those still inactive. `now` is injectable for tests.
 */
export async function expireUsers(ctx: ExpireContext, policy: ExpirePolicy, options: { now?: Date; dryRun?: boolean; actor?: Actor } = {}): Promise<ExpireResult> {
  const mode = policy.mode ?? 'delete';
  const cutoff = expiryCutoff(policy.inactiveAfter, options.now ?? new Date());
  const users = await findInactive(ctx.store, cutoff);
  const base = { mode, cutoff: cutoff.toISOString(), users };
  if (options.dryRun || users.length === 0) return { ...base, dryRun: !!options.dryRun, expired: 0, backup: null };
  const ids = users.map((u) => u.user_id);
  const actor = options.actor ?? ctx.actor;
  if (mode === 'forget') {
    const still = (await Promise.all(ids.map((id) => ctx.store.get(id)))).filter((r) => r !== null && inactive(r.updated_at, cutoff)).map((r) => r!.user_id);
    if (still.length === 0) return { ...base, dryRun: false, expired: 0, backup: null };
    const forget = await ctx.forget(still, actor);
    return { ...base, dryRun: false, expired: forget.deleted, backup: null, forget, auditOp: forget.auditOp };
  }
  const op = await ctx.audit.begin('expire', actor, { userIds: ids, details: { inactiveAfter: policy.inactiveAfter, cutoff: base.cutoff } });
  try {
    const result = await ctx.store.exclusive({ ids }, async (x) => {
      const records = (await x.getMany(ids)).filter((r) => inactive(r.updated_at, cutoff)).sort((a, b) => compareIds(a.user_id, b.user_id));
      if (records.length === 0) return { expired: 0, backup: null };
      const gone = records.map((r) => r.user_id);
      const options = { reason: 'delete-user' as const, scope: gone, source: ctx.store.url, auditOp: op.op };
      const backup = ctx.writeBackup ? await ctx.writeBackup(records, options) : await writeBackup(ctx.backupDir, records, options);
      op.setBackup(backup.id);
      return { expired: await x.delete(gone), backup: backup.id };
    });
    await op.finish({ backup: result.backup ?? undefined, details: { deleted: result.expired } });
    return { ...base, dryRun: false, ...result, auditOp: op.op };
  } catch (err) {
    await op.fail(err).catch(() => undefined);
    throw err;
  }
}
