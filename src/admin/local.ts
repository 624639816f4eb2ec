import type { MemoryRecord } from '../record.js';
import type { Page, StoreStats, UserSummary } from '../store/types.js';
import type { BackupReason } from '../backup/manifest.js';
import type { RetentionPolicy } from '../backup/retention.js';
import { currentOsActor, type Actor, type AuditFilter } from '../ops/audit.js';
import type { ExpirePolicy } from '../ops/expire.js';
import type { Operations } from '../ops/operations.js';
import type { BACKUP_REASON_VALUES } from './api.js';
import type { Admin, ProgressFn, RestoreRequest, WhoAmI } from './types.js';

// The page's checker cannot read src/backup (Node imports), so the table keeps its own list of reasons: they must agree.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _reasonsAgree: Same<(typeof BACKUP_REASON_VALUES)[number], BackupReason> = true;

export interface LocalAdminOptions {
  onProgress?: ProgressFn;
  /** Who the audit log records; default: the operations' own (the OS user). The daemon passes the request's caller. */
  actor?: Actor;
}

/** {@link Admin} over an in-process {@link Operations}: the CLI without a daemon, and the daemon's admin routes. */
export class LocalAdmin implements Admin {
  readonly where = 'local';
  readonly storeUrl: string;
  private readonly onProgress?: ProgressFn;
  private readonly actor?: Actor;

  constructor(
    private readonly ops: Operations,
    options: ProgressFn | LocalAdminOptions = {},
  ) {
    this.storeUrl = ops.store.url;
    const o = typeof options === 'function' ? { onProgress: options } : options;
    this.onProgress = o.onProgress;
    this.actor = o.actor;
  }

  stats(): Promise<StoreStats> {
    return this.ops.store.stats();
  }
  listUsers(options: { cursor?: string | null; limit?: number } = {}): Promise<Page<UserSummary>> {
    return this.ops.store.list(options);
  }
  searchUsers(query: string, options: { limit?: number } = {}): Promise<UserSummary[]> {
    return this.ops.store.search(query, options);
  }
  getUser(id: string): Promise<MemoryRecord | null> {
    return this.ops.store.get(id);
  }
  async whoami(): Promise<WhoAmI> {
    const a = this.actor ?? currentOsActor();
    return { name: a.name, osUser: a.osUser ?? null, remote: a.remote ?? null };
  }
  deleteUsers(ids: string[], options: { fullBackup?: boolean } = {}) {
    return this.ops.deleteUsers(ids, { ...options, onProgress: this.onProgress, actor: this.actor });
  }
  clearAll() {
    return this.ops.clearAll({ onProgress: this.onProgress, actor: this.actor });
  }
  forgetUsers(ids: string[]) {
    return this.ops.forget(ids, { actor: this.actor });
  }
  expireUsers(policy: ExpirePolicy, options: { dryRun?: boolean } = {}) {
    return this.ops.expire(policy, { ...options, actor: this.actor });
  }
  mergeUsers(from: string, into: string) {
    return this.ops.merge(from, into, { actor: this.actor });
  }
  createBackup(options: { gzip?: boolean; reason?: BackupReason } = {}) {
    return this.ops.createBackup({ ...options, onProgress: this.onProgress, actor: this.actor });
  }
  listBackups() {
    return this.ops.listBackups({ offsite: true });
  }
  inspectBackup(id: string, options: { user?: string; sample?: number } = {}) {
    return this.ops.inspectBackup(id, options);
  }
  verifyBackups(id?: string) {
    return this.ops.verifyBackups(id);
  }
  diff(a: string, b = 'current', options: { users?: string[] } = {}) {
    return this.ops.diff(a, b, { ...options, onProgress: this.onProgress, actor: this.actor });
  }
  restore(id: string, options: RestoreRequest = {}) {
    return this.ops.restore(id, { ...options, onProgress: this.onProgress, actor: this.actor });
  }
  prune(policy: RetentionPolicy, options: { dryRun?: boolean; only?: string[] } = {}) {
    return this.ops.prune(policy, { ...options, actor: this.actor });
  }
  importFile(file: string) {
    return this.ops.importFile(file, { onProgress: this.onProgress, actor: this.actor });
  }
  readAudit(filter: AuditFilter = {}) {
    return this.ops.readAudit(filter);
  }
}
