import type { MemoryRecord } from '../record.js';
import type { Page, StoreStats, UserSummary } from '../store/types.js';
import type { BackupResult } from '../backup/create.js';
import type { DiffResult } from '../backup/diff.js';
import type { BackupReason } from '../backup/manifest.js';
import type { BackupInspection } from '../backup/catalog.js';
import type { RetentionPolicy } from '../backup/retention.js';
import type { AuditEntry, AuditFilter } from './audit.js';
import type { ForgetResult } from './forget.js';
import type { ExpirePolicy, ExpireResult } from './expire.js';
import type { BackupInfo, DeleteResult, Operations, OpWarning, PruneResult, RestoreResult, VerifyResult } from './operations.js';

/** What inspecting a backup answers (see backup/catalog.ts). */
export type InspectResult = BackupInspection;

/**
 * Every operator action, whether it runs in this process or inside a running daemon.
 * The CLI and the web page speak only this interface.
 */
export interface Admin {
  /** Where the actions run: 'local' or the daemon's base URL. */
  readonly where: string;
  readonly storeUrl: string;
  stats(): Promise<StoreStats>;
  listUsers(options?: { cursor?: string | null; limit?: number }): Promise<Page<UserSummary>>;
  searchUsers(query: string, options?: { limit?: number }): Promise<UserSummary[]>;
  getUser(id: string): Promise<MemoryRecord | null>;
  deleteUsers(ids: string[], options?: { fullBackup?: boolean }): Promise<DeleteResult & { auditOp: string }>;
  clearAll(): Promise<DeleteResult & { auditOp: string }>;
  /** Forgets users everywhere (store, backups, logs; audit ids hashed). No backup: by design. */
  forgetUsers(ids: string[]): Promise<ForgetResult>;
  /** Removes the users inactive for `policy.inactiveAfter` (delete: backup first; forget); `dryRun` lists them. */
  expireUsers(policy: ExpirePolicy, options?: { dryRun?: boolean }): Promise<ExpireResult>;
  /** Merges user FROM into INTO (backup of both first, one transaction, FROM removed). */
  mergeUsers(from: string, into: string): Promise<{ record: MemoryRecord; backup: string; backupFile: string; auditOp: string }>;
  createBackup(options?: { gzip?: boolean; reason?: BackupReason }): Promise<Omit<BackupResult, 'file'> & { file: string; auditOp: string }>;
  listBackups(): Promise<BackupInfo[]>;
  inspectBackup(id: string, options?: { user?: string; sample?: number }): Promise<InspectResult>;
  verifyBackups(id?: string): Promise<VerifyResult[]>;
  diff(a: string, b?: string, options?: { users?: string[] }): Promise<DiffResult>;
  restore(id: string, options?: { users?: string[]; mode?: 'replace' | 'merge'; dryRun?: boolean; wholeStore?: boolean; allowUnverified?: boolean }): Promise<RestoreResult & { auditOp?: string }>;
  prune(policy: RetentionPolicy, options?: { dryRun?: boolean; only?: string[] }): Promise<PruneResult>;
  importFile(file: string): Promise<{ imported: number; overwritten: number; backup: string | null; warnings?: OpWarning[] }>;
  readAudit(filter?: AuditFilter): Promise<AuditEntry[]>;
}

/** Progress for long operations run in this process. */
export type ProgressFn = (done: number, total: number | null) => void;

/** {@link Admin} over an in-process {@link Operations}. */
export class LocalAdmin implements Admin {
  readonly where = 'local';
  readonly storeUrl: string;

  constructor(
    private readonly ops: Operations,
    private readonly onProgress?: ProgressFn,
  ) {
    this.storeUrl = ops.store.url;
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
  deleteUsers(ids: string[], options: { fullBackup?: boolean } = {}) {
    return this.ops.deleteUsers(ids, { ...options, onProgress: this.onProgress });
  }
  clearAll() {
    return this.ops.clearAll({ onProgress: this.onProgress });
  }
  forgetUsers(ids: string[]) {
    return this.ops.forget(ids);
  }
  expireUsers(policy: ExpirePolicy, options: { dryRun?: boolean } = {}) {
    return this.ops.expire(policy, options);
  }
  mergeUsers(from: string, into: string) {
    return this.ops.merge(from, into);
  }
  createBackup(options: { gzip?: boolean; reason?: BackupReason } = {}) {
    return this.ops.createBackup({ ...options, onProgress: this.onProgress });
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
    return this.ops.diff(a, b, { ...options, onProgress: this.onProgress });
  }
  restore(id: string, options: { users?: string[]; mode?: 'replace' | 'merge'; dryRun?: boolean; wholeStore?: boolean; allowUnverified?: boolean } = {}) {
    return this.ops.restore(id, { ...options, onProgress: this.onProgress });
  }
  prune(policy: RetentionPolicy, options: { dryRun?: boolean; only?: string[] } = {}) {
    return this.ops.prune(policy, options);
  }
  importFile(file: string) {
    return this.ops.importFile(file, { onProgress: this.onProgress });
  }
  readAudit(filter: AuditFilter = {}) {
    return this.ops.readAudit(filter);
  }
}
