import type { MemoryRecord } from '../record.js';
import type { Page, StoreStats, UserSummary } from '../store/types.js';
import type { BackupManifest, BackupReason } from '../backup/manifest.js';
import type { DiffResult } from '../backup/diff.js';
import type { RetentionPolicy } from '../backup/retention.js';
import type { AuditEntry, AuditFilter } from '../ops/audit.js';
import type { ForgetResult } from '../ops/forget.js';
import type { ExpirePolicy, ExpireResult } from '../ops/expire.js';
import type { BackupInfo, DeleteResult, OpWarning, PruneResult, RestoreResult, VerifyResult } from '../ops/operations.js';
import { call, orNull, queryString, seg, type FetchFn, type QueryValue, type Transport } from '../http-call.js';
import { ADMIN_API, type AdminAction, type AdminRequest } from './api.js';
import type { Admin, InspectResult, RestoreRequest, WhoAmI } from './types.js';

export interface RemoteAdminOptions {
  /** The daemon, e.g. `http://127.0.0.1:8737`. */
  baseUrl: string;
  /** The admin token. */
  token: string;
  /** The store the daemon serves (as shown to the operator). */
  storeUrl: string;
  fetch?: FetchFn;
  /** Per-request timeout in ms (default 0: none, since a clear or restore of a big store takes a while). */
  timeoutMs?: number;
  /** The OS user running this client, recorded in the daemon's audit log beside the token's name. */
  osUser?: string;
}

/** Where a relative path points from this process: the daemon has another working directory. */
function absolutePath(file: string): string {
  if (file.startsWith('/')) return file;
  const cwd = typeof process !== 'undefined' ? process.cwd() : '/';
  return `${cwd.replace(/\/+$/, '')}/${file}`;
}

/** One admin action: its row's method and path, the params put into the path, the query and the body as JSON. */
function send<T, A extends AdminAction>(t: Transport, action: A, request: AdminRequest<A>): Promise<T> {
  const row = ADMIN_API[action];
  const r = request as { params?: Record<string, string>; query?: Record<string, QueryValue>; body?: unknown };
  const path = row.path.replace(/:([A-Za-z_]+)/g, (_m, name: string) => seg(r.params?.[name] ?? ''));
  return call<T>(t, row.method, path + (r.query ? queryString(r.query) : ''), r.body);
}

/** {@link Admin} over a running daemon's admin API: each method sends one row of {@link ADMIN_API}. */
export class RemoteAdmin implements Admin {
  readonly where: string;
  readonly storeUrl: string;
  private readonly t: Transport;

  constructor(options: RemoteAdminOptions) {
    this.where = options.baseUrl;
    this.storeUrl = options.storeUrl;
    this.t = {
      baseUrl: options.baseUrl,
      token: options.token,
      fetch: options.fetch ?? globalThis.fetch,
      timeoutMs: options.timeoutMs ?? 0,
      // Header values are ByteStrings: a non-Latin-1 user name is sent percent-encoded rather than failing the request.
      headers: options.osUser ? { 'x-chatmem-os-user': /^[\x20-\x7e]*$/.test(options.osUser) ? options.osUser : encodeURIComponent(options.osUser) } : undefined,
    };
  }

  stats(): Promise<StoreStats> {
    return send(this.t, 'stats', {});
  }
  listUsers(options: { cursor?: string | null; limit?: number } = {}): Promise<Page<UserSummary>> {
    return send(this.t, 'listUsers', { query: { cursor: options.cursor ?? undefined, limit: options.limit } });
  }
  async searchUsers(query: string, options: { limit?: number } = {}): Promise<UserSummary[]> {
    return (await send<{ items: UserSummary[] }, 'searchUsers'>(this.t, 'searchUsers', { query: { q: query, limit: options.limit } })).items;
  }
  getUser(id: string): Promise<MemoryRecord | null> {
    return orNull(send<MemoryRecord, 'getUser'>(this.t, 'getUser', { params: { id } }));
  }
  /** The name of the token this client uses (`admin` for the built-in one), and how the daemon sees the caller. */
  whoami(): Promise<WhoAmI> {
    return send(this.t, 'whoami', {});
  }
  deleteUsers(ids: string[], options: { fullBackup?: boolean } = {}): Promise<DeleteResult & { auditOp: string }> {
    return send(this.t, 'deleteUsers', { body: { users: ids, fullBackup: options.fullBackup } });
  }
  clearAll(): Promise<DeleteResult & { auditOp: string }> {
    return send(this.t, 'clearAll', { body: { confirm: 'YES' } });
  }
  /** Forgets users everywhere: store, every backup, the daemon's log; their ids in the audit log become keyed hashes. */
  forgetUsers(ids: string[]): Promise<ForgetResult> {
    return send(this.t, 'forgetUsers', { body: { users: ids } });
  }
  /** Removes the users inactive for `policy.inactiveAfter` (delete: backup first; or forget); `dryRun` lists them. */
  expireUsers(policy: ExpirePolicy, options: { dryRun?: boolean } = {}): Promise<ExpireResult> {
    return send(this.t, 'expireUsers', { body: { inactiveAfter: policy.inactiveAfter, mode: policy.mode, dryRun: options.dryRun } });
  }
  /** Merges user FROM into INTO: a backup of both first, then one transaction; FROM is removed. */
  mergeUsers(from: string, into: string): Promise<{ record: MemoryRecord; backup: string; backupFile: string; auditOp: string }> {
    return send(this.t, 'mergeUsers', { body: { from, into } });
  }
  createBackup(options: { gzip?: boolean; reason?: BackupReason } = {}): Promise<{ id: string; file: string; manifest: BackupManifest; auditOp: string }> {
    return send(this.t, 'createBackup', { body: { gzip: options.gzip, reason: options.reason } });
  }
  async listBackups(): Promise<BackupInfo[]> {
    return (await send<{ backups: BackupInfo[] }, 'listBackups'>(this.t, 'listBackups', {})).backups;
  }
  inspectBackup(id: string, options: { user?: string; sample?: number } = {}): Promise<InspectResult> {
    return send(this.t, 'inspectBackup', { params: { id }, query: { user: options.user, sample: options.sample } });
  }
  async verifyBackups(id?: string): Promise<VerifyResult[]> {
    const answer =
      id === undefined
        ? await send<{ ok: boolean; results: VerifyResult[] }, 'verifyAll'>(this.t, 'verifyAll', {})
        : await send<{ ok: boolean; results: VerifyResult[] }, 'verifyBackup'>(this.t, 'verifyBackup', { params: { id } });
    return answer.results;
  }
  diff(a: string, b = 'current', options: { users?: string[] } = {}): Promise<DiffResult> {
    return send(this.t, 'diff', { query: { a, b, users: options.users } });
  }
  restore(id: string, options: RestoreRequest = {}): Promise<RestoreResult & { auditOp?: string }> {
    return send(this.t, 'restore', { body: { backup: id, ...options } });
  }
  prune(policy: RetentionPolicy, options: { dryRun?: boolean; only?: string[] } = {}): Promise<PruneResult> {
    return send(this.t, 'prune', { body: { policy: policy as Record<string, unknown>, dryRun: options.dryRun, only: options.only } });
  }
  importFile(file: string): Promise<{ imported: number; overwritten: number; backup: string | null; warnings?: OpWarning[] }> {
    return send(this.t, 'importFile', { body: { file: absolutePath(file) } });
  }
  async readAudit(filter: AuditFilter = {}): Promise<AuditEntry[]> {
    const query = { since: filter.since?.toISOString(), user: filter.user, action: filter.action, op: filter.op, limit: filter.limit };
    return (await send<{ entries: AuditEntry[] }, 'readAudit'>(this.t, 'readAudit', { query })).entries;
  }
}
