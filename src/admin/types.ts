import type { MemoryRecord } from '../record.js';
import type { Page, StoreStats, UserSummary } from '../store/types.js';
import type { BackupResult } from '../backup/create.js';
import type { DiffResult } from '../backup/diff.js';
import type { BackupReason } from '../backup/manifest.js';
import type { BackupInspection } from '../backup/catalog.js';
import type { RetentionPolicy } from '../backup/retention.js';
import type { AuditEntry, AuditFilter } from '../ops/audit.js';
import type { ForgetResult } from '../ops/forget.js';
import type { ExpirePolicy, ExpireResult } from '../ops/expire.js';
import type { BackupInfo, DeleteResult, OpWarning, PruneResult, RestoreResult, VerifyResult } from '../ops/operations.js';

/** What inspecting a backup answers (see backup/catalog.ts). */
export type InspectResult = BackupInspection;

/** Options of a restore, wherever it runs. */
export interface RestoreRequest {
  users?: string[];
  mode?: 'replace' | 'merge';
  dryRun?: boolean;
  wholeStore?: boolean;
  allowUnverified?: boolean;
}

/** Who the admin acts as: the token's name (or the OS user, locally) and where the caller is. */
export interface WhoAmI {
  name: string;
  osUser: string | null;
  remote: string | null;
}

/**
 * Every operator action, whether it runs in this process ({@link LocalAdmin}) or inside a running daemon
 * ({@link RemoteAdmin}, over the routes of src/admin/api.ts, which the daemon serves with a LocalAdmin).
 * The CLI speaks only this interface.
 */
export interface Admin {
  /** Where the actions run: 'local' or the daemon's base URL. */
  readonly where: string;
  readonly storeUrl: string;
  stats(): Promise<StoreStats>;
  listUsers(options?: { cursor?: string | null; limit?: number }): Promise<Page<UserSummary>>;
  searchUsers(query: string, options?: { limit?: number }): Promise<UserSummary[]>;
  getUser(id: string): Promise<MemoryRecord | null>;
  /** Who the actions are recorded as in the audit log. */
  whoami(): Promise<WhoAmI>;
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
  restore(id: string, options?: RestoreRequest): Promise<RestoreResult & { auditOp?: string }>;
  prune(policy: RetentionPolicy, options?: { dryRun?: boolean; only?: string[] }): Promise<PruneResult>;
  importFile(file: string): Promise<{ imported: number; overwritten: number; backup: string | null; warnings?: OpWarning[] }>;
  readAudit(filter?: AuditFilter): Promise<AuditEntry[]>;
}

/** Progress for long operations run in this process. */
export type ProgressFn = (done: number, total: number | null) => void;
