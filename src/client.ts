/**
 * `chatmem/client`: a small typed client for the chatmem daemon's HTTP API. It uses the global
 * `fetch` and imports no server code, so a bot pays for nothing it does not call.
 */
import { ChatmemError } from './errors.js';
import type { HistoryInput, MemoryRecord, RecordInput, RecordPatch } from './record.js';
import type { Page, StoreStats, UserSummary } from './store/types.js';
import type { Admin, InspectResult } from './ops/admin.js';
import type { AuditEntry, AuditFilter } from './ops/audit.js';
import type { ForgetResult } from './ops/forget.js';
import type { ExpirePolicy, ExpireResult } from './ops/expire.js';
import type { BackupInfo, DeleteResult, OpWarning, PruneResult, RestoreResult, VerifyResult } from './ops/operations.js';
import type { BackupManifest, BackupReason } from './backup/manifest.js';
import type { DiffResult } from './backup/diff.js';
import type { RetentionPolicy } from './backup/retention.js';

export type { HistoryInput, MemoryRecord, RecordInput, RecordPatch, Page, StoreStats, UserSummary };

/**
 * An error answered by the daemon (its `code`, e.g. `E_RECORD`, and HTTP `status`), or a transport
 * failure: `E_UNREACHABLE` / `E_TIMEOUT` with status 0.
 */
export class RemoteError extends ChatmemError {
  readonly status: number;

  constructor(code: string, message: string, status: number, options?: { cause?: unknown }) {
    super(code, message, options);
    this.status = status;
  }
}

type FetchFn = typeof fetch;

interface Transport {
  baseUrl: string;
  token: string | null;
  fetch: FetchFn;
  timeoutMs: number;
  /** Sent with every request (X-Chatmem-Os-User). */
  headers?: Record<string, string>;
}

type QueryValue = string | number | boolean | string[] | null | undefined;

function queryString(query: Record<string, QueryValue>): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null) continue;
    if (Array.isArray(v)) for (const x of v) params.append(k, x);
    else params.append(k, String(v));
  }
  const s = params.toString();
  return s ? `?${s}` : '';
}

const seg = (s: string): string => encodeURIComponent(s);

async function call<T>(t: Transport, method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json', ...t.headers };
  if (t.token) headers.authorization = `Bearer ${t.token}`;
  // Only send a content type with a body: the daemon refuses an empty JSON body.
  if (body !== undefined) headers['content-type'] = 'application/json';
  const url = t.baseUrl.replace(/\/+$/, '') + path;
  let res: Response;
  try {
    res = await t.fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: t.timeoutMs > 0 ? AbortSignal.timeout(t.timeoutMs) : undefined,
    });
  } catch (err) {
    const name = err instanceof Error ? err.name : '';
    if (name === 'TimeoutError' || name === 'AbortError') {
      throw new RemoteError('E_TIMEOUT', `${method} ${url}: no answer within ${t.timeoutMs} ms`, 0, { cause: err });
    }
    const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
    throw new RemoteError('E_UNREACHABLE', `${method} ${url}: cannot reach the chatmem daemon${cause}`, 0, { cause: err });
  }
  const text = await res.text();
  let parsed: unknown = undefined;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
  }
  if (!res.ok) {
    const e = (parsed as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
    const code = typeof e?.code === 'string' ? e.code : `E_HTTP_${res.status}`;
    const message = typeof e?.message === 'string' ? e.message : `${method} ${path}: HTTP ${res.status} ${res.statusText}`;
    throw new RemoteError(code, message, res.status);
  }
  if (parsed === undefined && text) throw new RemoteError('E_BAD_RESPONSE', `${method} ${path}: the answer is not JSON`, res.status);
  return parsed as T;
}

/** Resolves to null instead of throwing when the user does not exist. */
async function orNull<T>(p: Promise<T>): Promise<T | null> {
  try {
    return await p;
  } catch (err) {
    if (err instanceof RemoteError && err.code === 'E_UNKNOWN_USER') return null;
    throw err;
  }
}

export interface ChatmemClientOptions {
  /** The daemon, e.g. `http://127.0.0.1:8737`. */
  baseUrl: string;
  /** `CHATMEM_API_TOKEN` of the daemon, when it requires one. */
  apiToken?: string;
  /** A fetch implementation (default: the global one). */
  fetch?: FetchFn;
  /** Per-request timeout in ms (default 10 000; 0 disables). */
  timeoutMs?: number;
}

/** The data API, for chatbots. Every method throws {@link RemoteError} on failure. */
export class ChatmemClient {
  private readonly t: Transport;

  constructor(options: ChatmemClientOptions) {
    this.t = {
      baseUrl: options.baseUrl,
      token: options.apiToken ?? null,
      fetch: options.fetch ?? globalThis.fetch,
      timeoutMs: options.timeoutMs ?? 10_000,
    };
  }

  /** The user's record, or null when the user does not exist. */
  getUser(id: string): Promise<MemoryRecord | null> {
    return orNull(call<MemoryRecord>(this.t, 'GET', `/v1/users/${seg(id)}`));
  }

  /** Replaces the record (creating the user). Unknown fields are kept. */
  putUser(id: string, record: RecordInput): Promise<MemoryRecord> {
    return call(this.t, 'PUT', `/v1/users/${seg(id)}`, record);
  }

  /** Top-level merge; `flags` and `slots` merge key by key (null removes a key). Creates the user. */
  patchUser(id: string, patch: RecordPatch): Promise<MemoryRecord> {
    return call(this.t, 'PATCH', `/v1/users/${seg(id)}`, patch);
  }

  /** Appends a chat turn (`ts` defaults to now); a `user` turn also becomes `last_answer`. Creates the user. */
  appendHistory(id: string, entry: HistoryInput): Promise<MemoryRecord> {
    return call(this.t, 'POST', `/v1/users/${seg(id)}/history`, entry);
  }

  /**
   * Appends turns in order, in one write. Give each entry an `id` (e.g. the WhatsApp message id): an entry
   * whose id the user's history already holds is skipped, so a retry or a re-sent list never duplicates.
   */
  appendHistoryMany(id: string, entries: HistoryInput[]): Promise<MemoryRecord> {
    return call(this.t, 'POST', `/v1/users/${seg(id)}/history`, entries);
  }

  /** The user's record, created (with a session token, as the seed's store did) when unknown. */
  ensureUser(id: string): Promise<MemoryRecord> {
    return call(this.t, 'GET', `/v1/users/${seg(id)}?ensure=true`);
  }

  /** One flag without downloading the record: `found` is false when the flag is not set. */
  getFlag(id: string, key: string): Promise<{ key: string; found: boolean; value: unknown }> {
    return call(this.t, 'GET', `/v1/users/${seg(id)}/flags/${seg(key)}`);
  }

  /** One slot without downloading the record. */
  getSlot(id: string, key: string): Promise<{ key: string; found: boolean; value: unknown }> {
    return call(this.t, 'GET', `/v1/users/${seg(id)}/slots/${seg(key)}`);
  }

  /** A new session token for the user (created when unknown). */
  async refreshSessionToken(id: string): Promise<string> {
    const r = await call<MemoryRecord>(this.t, 'POST', `/v1/users/${seg(id)}/session-token`);
    return r.session_token ?? '';
  }

  /** A distinct `summary_context` entry (newest `maxItems`, default 15, kept) and recognised product/serials, atomically. */
  addContext(id: string, input: { text?: string; maxItems?: number; product?: string; serials?: string[] }): Promise<MemoryRecord> {
    return call(this.t, 'POST', `/v1/users/${seg(id)}/context`, input);
  }

  /** Keeps the newest `keepLast` turns; the dropped ones are first written to a per-user backup. */
  truncateHistory(id: string, keepLast: number): Promise<{ record: MemoryRecord; dropped: number; backup: string | null }> {
    return call(this.t, 'POST', `/v1/users/${seg(id)}/history/truncate`, { keepLast });
  }

  setFlag(id: string, key: string, value: unknown): Promise<MemoryRecord> {
    return call(this.t, 'PUT', `/v1/users/${seg(id)}/flags/${seg(key)}`, { value });
  }

  /** Removes a flag; a missing flag is not an error, a missing user is (`E_UNKNOWN_USER`). */
  clearFlag(id: string, key: string): Promise<MemoryRecord> {
    return call(this.t, 'DELETE', `/v1/users/${seg(id)}/flags/${seg(key)}`);
  }

  setSlot(id: string, key: string, value: unknown): Promise<MemoryRecord> {
    return call(this.t, 'PUT', `/v1/users/${seg(id)}/slots/${seg(key)}`, { value });
  }

  /** Removes a slot; a missing slot is not an error, a missing user is (`E_UNKNOWN_USER`). */
  clearSlot(id: string, key: string): Promise<MemoryRecord> {
    return call(this.t, 'DELETE', `/v1/users/${seg(id)}/slots/${seg(key)}`);
  }

  /** Sets several slots verbatim (a null value is stored as null). */
  fillSlots(id: string, values: Record<string, unknown>): Promise<MemoryRecord> {
    return call(this.t, 'POST', `/v1/users/${seg(id)}/slots`, { values });
  }

  /** One page of users in id order; pass `next` back as `cursor` for the following page. */
  listUsers(options: { cursor?: string | null; limit?: number } = {}): Promise<Page<UserSummary>> {
    return call(this.t, 'GET', `/v1/users${queryString({ cursor: options.cursor, limit: options.limit })}`);
  }

  /** Case-insensitive keyword search over product, summary and chat text. */
  async search(query: string, options: { limit?: number } = {}): Promise<UserSummary[]> {
    const r = await call<{ items: UserSummary[] }>(this.t, 'GET', `/v1/search${queryString({ q: query, limit: options.limit })}`);
    return r.items;
  }

  stats(): Promise<StoreStats> {
    return call(this.t, 'GET', '/v1/stats');
  }
}

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

/** {@link Admin} over a running daemon's admin API. */
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
    return call(this.t, 'GET', '/v1/admin/stats');
  }
  listUsers(options: { cursor?: string | null; limit?: number } = {}): Promise<Page<UserSummary>> {
    return call(this.t, 'GET', `/v1/admin/users${queryString({ cursor: options.cursor, limit: options.limit })}`);
  }
  async searchUsers(query: string, options: { limit?: number } = {}): Promise<UserSummary[]> {
    return (await call<{ items: UserSummary[] }>(this.t, 'GET', `/v1/admin/search${queryString({ q: query, limit: options.limit })}`)).items;
  }
  getUser(id: string): Promise<MemoryRecord | null> {
    return orNull(call<MemoryRecord>(this.t, 'GET', `/v1/admin/users/${seg(id)}`));
  }
  deleteUsers(ids: string[], options: { fullBackup?: boolean } = {}): Promise<DeleteResult & { auditOp: string }> {
    return call(this.t, 'POST', '/v1/admin/delete', { users: ids, fullBackup: options.fullBackup });
  }
  clearAll(): Promise<DeleteResult & { auditOp: string }> {
    return call(this.t, 'POST', '/v1/admin/clear', { confirm: 'YES' });
  }
  /** Forgets users everywhere: store, every backup, the daemon's log; their ids in the audit log become keyed hashes. */
  forgetUsers(ids: string[]): Promise<ForgetResult> {
    return call(this.t, 'POST', '/v1/admin/forget', { users: ids });
  }
  /** Removes the users inactive for `policy.inactiveAfter` (delete: backup first; or forget); `dryRun` lists them. */
  expireUsers(policy: ExpirePolicy, options: { dryRun?: boolean } = {}): Promise<ExpireResult> {
    return call(this.t, 'POST', '/v1/admin/expire', { inactiveAfter: policy.inactiveAfter, mode: policy.mode, dryRun: options.dryRun });
  }
  /** Merges user FROM into INTO: a backup of both first, then one transaction; FROM is removed. */
  mergeUsers(from: string, into: string): Promise<{ record: MemoryRecord; backup: string; backupFile: string; auditOp: string }> {
    return call(this.t, 'POST', '/v1/admin/merge', { from, into });
  }
  createBackup(options: { gzip?: boolean; reason?: BackupReason } = {}): Promise<{ id: string; file: string; manifest: BackupManifest; auditOp: string }> {
    return call(this.t, 'POST', '/v1/admin/backups', { gzip: options.gzip, reason: options.reason });
  }
  async listBackups(): Promise<BackupInfo[]> {
    return (await call<{ backups: BackupInfo[] }>(this.t, 'GET', '/v1/admin/backups')).backups;
  }
  inspectBackup(id: string, options: { user?: string; sample?: number } = {}): Promise<InspectResult> {
    return call(this.t, 'GET', `/v1/admin/backups/${seg(id)}${queryString({ user: options.user, sample: options.sample })}`);
  }
  async verifyBackups(id?: string): Promise<VerifyResult[]> {
    const path = id === undefined ? '/v1/admin/verify' : `/v1/admin/backups/${seg(id)}/verify`;
    return (await call<{ ok: boolean; results: VerifyResult[] }>(this.t, 'POST', path)).results;
  }
  diff(a: string, b = 'current', options: { users?: string[] } = {}): Promise<DiffResult> {
    return call(this.t, 'GET', `/v1/admin/diff${queryString({ a, b, users: options.users })}`);
  }
  restore(id: string, options: { users?: string[]; mode?: 'replace' | 'merge'; dryRun?: boolean; wholeStore?: boolean; allowUnverified?: boolean } = {}): Promise<RestoreResult & { auditOp?: string }> {
    return call(this.t, 'POST', '/v1/admin/restore', { backup: id, ...options });
  }
  prune(policy: RetentionPolicy, options: { dryRun?: boolean; only?: string[] } = {}): Promise<PruneResult> {
    return call(this.t, 'POST', '/v1/admin/prune', { policy, dryRun: options.dryRun, only: options.only });
  }
  importFile(file: string): Promise<{ imported: number; overwritten: number; backup: string | null; warnings?: OpWarning[] }> {
    return call(this.t, 'POST', '/v1/admin/import', { file: absolutePath(file) });
  }
  async readAudit(filter: AuditFilter = {}): Promise<AuditEntry[]> {
    const q = queryString({ since: filter.since?.toISOString(), user: filter.user, action: filter.action, op: filter.op, limit: filter.limit });
    return (await call<{ entries: AuditEntry[] }>(this.t, 'GET', `/v1/admin/audit${q}`)).entries;
  }
  /** The name of the token this client uses (`admin` for the built-in one), and how the daemon sees the caller. */
  whoami(): Promise<{ name: string; osUser: string | null; remote: string | null }> {
    return call(this.t, 'GET', '/v1/admin/whoami');
  }
}
