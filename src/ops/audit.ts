/**
 * Append-only audit log: who did what to whose memory, and whether it finished.
 *
 * One JSON object per line. Every append is a single `write()` on an `O_APPEND` descriptor followed by
 * `fsync`, so the intent of a destructive operation is on disk before the operation starts, and lines from
 * concurrent processes never interleave mid-line.
 */
import { promises as fsp, constants as fsc } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { OpsError, errnoCode, isChatmemError } from '../errors.js';
import { FILE_MODE, ensurePrivateDir, fsyncDir, tempNameFor } from '../fs-util.js';
import { io } from '../fsio.js';

/** Who performed an action: an OS user (CLI), or an API token *name* plus the caller's address. Never a token. */
export interface Actor {
  kind: 'os' | 'api';
  name: string;
  remote?: string;
  /** Through the daemon: the OS user the CLI says it runs as (X-Chatmem-Os-User), as claimed, not verified. */
  osUser?: string;
}

/** Lifecycle of an audited operation; `refused` is for requests turned down before anything happened. */
export type AuditOutcome = 'started' | 'done' | 'failed' | 'refused' | 'interrupted';

/** One line of the audit log. */
export interface AuditEntry {
  /** Unique entry id. */
  id: string;
  /** Operation id, shared by the `started` entry and its `done`/`failed`/`interrupted` entry (equals the `started` entry's id). */
  op: string;
  /** ISO 8601 with milliseconds, UTC. */
  time: string;
  actor: Actor;
  /** 'delete-users' | 'clear-all' | 'restore' | 'backup' | 'prune' | 'import' | 'auth-failed' | ... */
  action: string;
  /** Users affected. */
  userIds?: string[];
  /** Backup id. */
  backup?: string;
  outcome: AuditOutcome;
  durationMs?: number;
  error?: { code: string; message: string };
  details?: Record<string, unknown>;
  /**
   * Never stored; set only in answers to a `user` query (see `Operations.readAudit`): the operation lists no
   * users (a clear-all, a full restore, a large import) and the user was found in this backup of it.
   */
  foundInBackup?: string;
}

/** What {@link AuditLog.append} takes: `id` is generated, `time` defaults to now, `op` defaults to the new entry's id. */
export type AuditEntryInput = Omit<AuditEntry, 'id' | 'time' | 'op'> & { time?: string; op?: string };

/** Filters for {@link AuditLog.read}; all given filters must match. */
export interface AuditFilter {
  /** Entries with `time >= since`. */
  since?: Date;
  /** Entries whose `userIds` include this id (or whose operation is in `userOps`). */
  user?: string;
  /**
   * Operations that touched `user` without listing it (found in their backups by `Operations.readAudit`):
   * their entries match `user` too.
   */
  userOps?: ReadonlySet<string>;
  action?: string;
  op?: string;
  /** Keep only the newest N (last N in file order) after filtering. */
  limit?: number;
}

/** Handle of an operation opened by {@link AuditLog.begin}; end it exactly once with `finish` or `fail`. */
export interface AuditOperation {
  readonly op: string;
  readonly started: AuditEntry;
  /** Appends the `done` entry. `userIds` defaults to those given to `begin` (pass the set actually affected if it differs). */
  finish(fields?: { backup?: string; userIds?: string[]; details?: Record<string, unknown> }): Promise<AuditEntry>;
  /** Appends the `failed` entry with the error's code and message. */
  fail(err: unknown, fields?: { backup?: string; details?: Record<string, unknown> }): Promise<AuditEntry>;
  /** Remembers the backup taken for this operation; written into the `done`/`failed` entry. */
  setBackup(id: string): void;
}

/**
 * The actions the log records, under the names the CLI uses for them (`chatmem delete` writes
 * `delete-users`). Both the short and the stored name are accepted by {@link resolveAuditAction}.
 */
export const AUDIT_ACTIONS: readonly { name: string; stored: string }[] = [
  { name: 'delete', stored: 'delete-users' },
  { name: 'clear', stored: 'clear-all' },
  { name: 'restore', stored: 'restore' },
  { name: 'import', stored: 'import' },
  { name: 'backup', stored: 'backup' },
  { name: 'prune', stored: 'prune' },
  { name: 'auth-failed', stored: 'auth-failed' },
  { name: 'truncate', stored: 'truncate-history' },
  { name: 'reset', stored: 'reset-user' },
  { name: 'forget', stored: 'forget' },
  { name: 'expire', stored: 'expire' },
  { name: 'merge', stored: 'merge' },
];

/**
 * The stored action name for `name` (an alias such as `delete`, or a stored name such as `delete-users`,
 * any case).
 * @throws OpsError `E_OPS_ARG` listing the valid names: a misspelt filter must not look like "nothing happened".
 */
export function resolveAuditAction(name: string): string {
  const wanted = name.trim().toLowerCase();
  const hit = AUDIT_ACTIONS.find((a) => a.name === wanted || a.stored === wanted);
  if (hit) return hit.stored;
  const valid = AUDIT_ACTIONS.map((a) => (a.name === a.stored ? a.name : `${a.name} (${a.stored})`));
  throw new OpsError('E_OPS_ARG', `unknown audit action ${JSON.stringify(name)}; valid actions: ${valid.join(', ')}`, {
    details: { action: name, valid: AUDIT_ACTIONS.map((a) => a.name) },
  });
}

/** Whether backup `backupId` holds `user`; false when the backup no longer exists. */
export type BackupHoldsUser = (backupId: string, user: string) => Promise<boolean>;

// Actions whose entries may list no users although they removed or overwrote some.
const UNLISTED_USER_ACTIONS = ['clear-all', 'restore', 'import'];

/**
 * Reads `log` like {@link AuditLog.read}, with two additions for operators. `action` may be a CLI name
 * (see {@link resolveAuditAction}). `user` also matches the operations that list no users (a clear-all,
 * a full restore, an import of over 100 users) when their backup holds the user, asked of `holds` (a
 * binary search of the line-format backup), so the log never has to carry every id. A clear or a replace
 * restore touched the users of the backup it took first; a restore also touched the users of the backup
 * it restored from; a merge restore only those. Such entries carry `foundInBackup`.
 * @throws OpsError `E_OPS_ARG` for an unknown action.
 */
export async function queryAudit(log: AuditLog, filter: AuditFilter, holds: BackupHoldsUser): Promise<AuditEntry[]> {
  const action = filter.action === undefined ? undefined : resolveAuditAction(filter.action);
  const base: AuditFilter = { ...filter, ...(action !== undefined ? { action } : {}), userOps: undefined };
  const user = filter.user;
  if (user === undefined) return log.read(base);

  const found = new Map<string, string>();
  const cache = new Map<string, Promise<boolean>>();
  const inBackup = (id: string): Promise<boolean> => {
    let p = cache.get(id);
    if (!p) cache.set(id, (p = holds(id, user)));
    return p;
  };
  for (const candidate of UNLISTED_USER_ACTIONS) {
    if (action !== undefined && action !== candidate) continue;
    const entries = await log.read({ action: candidate, ...(base.since ? { since: base.since } : {}), ...(base.op ? { op: base.op } : {}) });
    for (const e of entries) {
      if (e.userIds !== undefined || e.backup === undefined || found.has(e.op)) continue;
      const from = typeof e.details?.from === 'string' ? e.details.from : undefined;
      // A merge restore leaves users absent from its source alone; a replace removes or overwrites everyone.
      const ownBackupCounts = !(e.action === 'restore' && e.details?.mode === 'merge');
      if (ownBackupCounts && (await inBackup(e.backup))) found.set(e.op, e.backup);
      else if (e.action === 'restore' && from !== undefined && (await inBackup(from))) found.set(e.op, from);
    }
  }
  const entries = await log.read({ ...base, userOps: new Set(found.keys()) });
  return entries.map((e) => {
    const backup = found.get(e.op);
    return backup !== undefined && !(e.userIds ?? []).includes(user) ? { ...e, foundInBackup: backup } : e;
  });
}

const OUTCOMES: ReadonlySet<string> = new Set<AuditOutcome>(['started', 'done', 'failed', 'refused', 'interrupted']);
const CLOSING_OUTCOMES: ReadonlySet<string> = new Set<AuditOutcome>(['done', 'failed', 'interrupted']);
const NEWLINE = 0x0a;
/** Every line this module writes starts with this, so an entry glued onto a torn fragment can be found again. */
const ENTRY_START = '{"id":"';

/**
 * Tail of the append queue per resolved file, shared by all AuditLog instances in the process, so entries land in
 * call order (a `started` before its `done`) and a burst of appends does not open a descriptor each at once.
 */
const appendQueues = new Map<string, Promise<unknown>>();

/** The OS user running this process; `os.userInfo()` throws when the uid has no passwd entry (common in containers). */
export function currentOsActor(): Actor {
  let name: string | undefined;
  try {
    name = os.userInfo().username;
  } catch {
    name = undefined;
  }
  if (!name) name = process.env.USER;
  return { kind: 'os', name: name || 'unknown' };
}

/** The append-only audit log stored at `file` (JSON lines, mode 0600, directory created 0700 when missing). */
export class AuditLog {
  readonly file: string;
  /** A newly created file's directory entry must be synced too; once per instance is enough. */
  private dirSynced = false;

  constructor(file: string) {
    this.file = file;
  }

  /**
   * Appends one entry and fsyncs before resolving (the intent must be durable before a destructive step).
   * Appends are serialised within the process; each entry is one `write()` of one line in `O_APPEND` mode, so
   * concurrent processes never interleave partial lines. Returns the full entry as written.
   * Credentials inside URLs and values under secret-looking keys in `details` / `error.message` are masked.
   * @throws OpsError `E_AUDIT_WRITE` (fs error as `cause`) when the entry cannot be made durable or serialised.
   */
  append(entry: AuditEntryInput): Promise<AuditEntry> {
    const id = randomUUID();
    let time: string;
    try {
      time = normaliseTime(entry.time);
    } catch (err) {
      return Promise.reject(err);
    }
    const { time: _time, op, ...rest } = entry;
    return this.write({ ...rest, id, op: op ?? id, time });
  }

  /**
   * Starts an operation: appends a `started` entry and returns a handle whose `finish()` appends `done` (with
   * `durationMs` measured from the start) or `fail(err)` appends `failed` with the error's code
   * (`ChatmemError.code`, else errno code, else `E_UNKNOWN`) and message.
   */
  async begin(
    action: string,
    actor: Actor,
    fields?: { userIds?: string[]; details?: Record<string, unknown> },
  ): Promise<AuditOperation> {
    const op = randomUUID();
    const t0 = performance.now();
    const started = await this.write({
      id: op,
      op,
      time: new Date().toISOString(),
      actor,
      action,
      ...(fields?.userIds !== undefined ? { userIds: fields.userIds } : {}),
      outcome: 'started',
      ...(fields?.details !== undefined ? { details: fields.details } : {}),
    });
    return new Operation((e) => this.write(e), started, t0);
  }

  /**
   * Streams the file line by line (never loads it whole) and returns the matching entries in file order.
   * A torn last line (crash, or another process's write in flight) is skipped. When a later append landed right
   * after a torn fragment, the fragment is dropped and the appended entry is kept. A missing file yields `[]`.
   * @throws OpsError `E_AUDIT_PARSE` naming file and line number for any other malformed line;
   *   `E_AUDIT_READ` when the file cannot be read.
   */
  async read(filter: AuditFilter = {}): Promise<AuditEntry[]> {
    const { since, user, userOps, action, op, limit } = filter;
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 0)) {
      throw new RangeError(`audit read limit must be a non-negative integer, got ${String(limit)}`);
    }
    if (limit === 0) return [];
    const sinceMs = since?.getTime();
    if (sinceMs !== undefined && Number.isNaN(sinceMs)) throw new RangeError('audit read "since" is an invalid Date');
    let out: AuditEntry[] = [];
    await this.scan((e) => {
      if (sinceMs !== undefined && !(Date.parse(e.time) >= sinceMs)) return;
      if (user !== undefined && !(e.userIds ?? []).includes(user) && !userOps?.has(e.op)) return;
      if (action !== undefined && e.action !== action) return;
      if (op !== undefined && e.op !== op) return;
      out.push(e);
      // Bounded memory when only the newest few are wanted, trimming in batches to keep it linear.
      if (limit !== undefined && out.length >= 2 * limit + 64) out = out.slice(-limit);
    });
    return limit !== undefined && out.length > limit ? out.slice(-limit) : out;
  }

  /** `started` entries with no matching `done`/`failed`/`interrupted` entry (crash mid-operation), in file order. */
  async unfinished(): Promise<AuditEntry[]> {
    const open = new Map<string, AuditEntry>();
    const closed = new Set<string>();
    await this.scan((e) => {
      if (e.outcome === 'started') {
        // A closing entry from another process may precede its start in the file.
        if (!closed.has(e.op)) open.set(e.op, e);
      } else if (CLOSING_OUTCOMES.has(e.outcome)) {
        if (!open.delete(e.op)) closed.add(e.op);
      }
    });
    return [...open.values()];
  }

  private write(entry: AuditEntry): Promise<AuditEntry> {
    const clean = canonicalEntry(sanitiseEntry(entry));
    let line: string;
    try {
      line = JSON.stringify(clean) + '\n';
    } catch (err) {
      return Promise.reject(this.writeError(err, 'entry is not serialisable'));
    }
    const key = path.resolve(this.file);
    const run = (appendQueues.get(key) ?? Promise.resolve()).then(() => this.appendLine(line));
    const tail = run.catch(() => undefined);
    appendQueues.set(key, tail);
    // Drop the entry once idle so the map does not grow with every file ever audited.
    void tail.then(() => {
      if (appendQueues.get(key) === tail) appendQueues.delete(key);
    });
    return run.then(() => clean);
  }

  private async appendLine(line: string): Promise<void> {
    const dir = path.dirname(this.file);
    let fh: FileHandle;
    let createdDir = false;
    try {
      fh = await this.open();
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw this.writeError(err, 'cannot open');
      try {
        await ensurePrivateDir(dir);
        createdDir = true;
        fh = await this.open();
      } catch (err2) {
        throw this.writeError(err2, 'cannot create');
      }
    }
    try {
      // Checking the tail for a torn line here would race with other processes' writes in flight (the size grows
      // page by page), so torn fragments are dealt with by the reader instead.
      const st = await fh.stat();
      if ((st.mode & 0o077) !== 0) await tightenMode(fh);
      await writeOnce(fh, this.file, line);
      await io.sync(fh, this.file);
    } catch (err) {
      throw this.writeError(err, 'cannot append');
    } finally {
      await fh.close().catch(() => undefined);
    }
    if (!this.dirSynced || createdDir) {
      try {
        await fsyncDir(dir);
        if (createdDir) await fsyncDir(path.dirname(dir));
        this.dirSynced = true;
      } catch (err) {
        throw this.writeError(err, 'cannot sync directory of');
      }
    }
  }

  /**
   * Rewrites every line through `edit` (a forget replaces a user id by its keyed hash). Runs in the append
   * queue, so no entry of this process is lost; lines other processes append meanwhile are carried over
   * (the old file is read to its end again right before the rename). Atomic: temp, fsync, rename, fsync
   * the directory. Returns how many lines changed.
   * @throws OpsError `E_AUDIT_WRITE` when the new log cannot be written.
   */
  rewrite(edit: (line: string) => string): Promise<number> {
    const key = path.resolve(this.file);
    const run = (appendQueues.get(key) ?? Promise.resolve()).then(() => this.rewriteNow(edit));
    const tail = run.catch(() => undefined);
    appendQueues.set(key, tail);
    void tail.then(() => {
      if (appendQueues.get(key) === tail) appendQueues.delete(key);
    });
    return run;
  }

  private async rewriteNow(edit: (line: string) => string): Promise<number> {
    let old: FileHandle;
    try {
      old = await fsp.open(this.file, 'r');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return 0;
      throw this.readError(err);
    }
    const tmp = tempNameFor(this.file);
    let changed = 0;
    try {
      const out = await fsp.open(tmp, 'wx', FILE_MODE);
      try {
        let pos = 0;
        let rest = '';
        for (;;) {
          const size = (await old.stat()).size;
          if (size <= pos) break;
          const buf = Buffer.alloc(size - pos);
          const { bytesRead } = await old.read(buf, 0, buf.length, pos);
          pos += bytesRead;
          const lines = (rest + buf.subarray(0, bytesRead).toString('utf8')).split('\n');
          rest = lines.pop() ?? '';
          let text = '';
          for (const line of lines) {
            const next = edit(line);
            if (next !== line) changed++;
            text += next + '\n';
          }
          await writeOnce(out, tmp, text);
        }
        if (rest !== '') {
          const next = edit(rest);
          if (next !== rest) changed++;
          await writeOnce(out, tmp, next);
        }
        await out.sync();
      } finally {
        await out.close();
      }
      await fsp.rename(tmp, this.file);
      await fsyncDir(path.dirname(this.file));
    } catch (err) {
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      throw this.writeError(err, 'cannot rewrite');
    } finally {
      await old.close().catch(() => undefined);
    }
    return changed;
  }

  private open(): Promise<FileHandle> {
    return io.open(this.file, fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT, FILE_MODE);
  }

  private writeError(err: unknown, what: string): OpsError {
    if (err instanceof OpsError) return err;
    const msg = err instanceof Error ? err.message : safeString(err);
    return new OpsError('E_AUDIT_WRITE', `${what} audit log ${this.file}: ${msg}`, {
      cause: err,
      details: { file: this.file },
    });
  }

  /** Calls `visit` for each valid entry, in file order, applying the torn-line rules of {@link read}. */
  private async scan(visit: (e: AuditEntry) => void): Promise<void> {
    let fh: FileHandle;
    try {
      fh = await fsp.open(this.file, 'r');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw this.readError(err);
    }
    const stream = fh.createReadStream({ autoClose: false });
    const rl = createInterface({ input: stream, crlfDelay: Infinity });
    let streamError: unknown;
    let lastByte: number | undefined;
    stream.on('data', (chunk: Buffer | string) => {
      if (typeof chunk !== 'string' && chunk.length > 0) lastByte = chunk[chunk.length - 1];
    });
    // readline does not reliably forward input errors to its async iterator; end the iteration and rethrow.
    stream.on('error', (err) => {
      streamError = err;
      rl.close();
    });
    let lineNo = 0;
    let pending: { line: number; reason: string } | undefined;
    try {
      for await (const text of rl) {
        lineNo++;
        if (text.trim() === '') continue;
        if (pending) throw this.parseError(pending.line, pending.reason);
        const parsed = parseEntry(text);
        if (typeof parsed !== 'string') {
          visit(parsed);
          continue;
        }
        const salvaged = splitTornLine(text);
        if (salvaged) {
          salvaged.forEach(visit);
          continue;
        }
        // Whether this is a torn tail or corruption depends on whether anything follows it.
        pending = { line: lineNo, reason: parsed };
      }
      if (streamError !== undefined) throw this.readError(streamError);
      // Only an unterminated final line can be a write still in flight or cut short by a crash.
      if (pending && lastByte === NEWLINE) throw this.parseError(pending.line, pending.reason);
    } catch (err) {
      // Node 20's readline rejects its iterator with the input's own error (EISDIR for a directory).
      throw err instanceof OpsError ? err : this.readError(err);
    } finally {
      rl.close();
      stream.destroy();
      await fh.close().catch(() => undefined);
    }
  }

  private parseError(line: number, reason: string): OpsError {
    return new OpsError('E_AUDIT_PARSE', `malformed audit log entry at ${this.file}:${line}: ${reason}`, {
      details: { file: this.file, line },
    });
  }

  private readError(err: unknown): OpsError {
    const msg = err instanceof Error ? err.message : safeString(err);
    return new OpsError('E_AUDIT_READ', `cannot read audit log ${this.file}: ${msg}`, {
      cause: err,
      details: { file: this.file },
    });
  }
}

class Operation implements AuditOperation {
  readonly op: string;
  readonly started: AuditEntry;
  private backup: string | undefined;
  /** Set while an end entry is being written or once it is durable; cleared if writing fails so the caller can retry. */
  private ending = false;

  constructor(
    private readonly write: (entry: AuditEntry) => Promise<AuditEntry>,
    started: AuditEntry,
    private readonly t0: number,
  ) {
    this.op = started.op;
    this.started = started;
  }

  setBackup(id: string): void {
    this.backup = id;
  }

  finish(fields?: { backup?: string; userIds?: string[]; details?: Record<string, unknown> }): Promise<AuditEntry> {
    return this.end('done', fields?.userIds ?? this.started.userIds, fields?.backup, fields?.details, undefined);
  }

  fail(err: unknown, fields?: { backup?: string; details?: Record<string, unknown> }): Promise<AuditEntry> {
    return this.end('failed', this.started.userIds, fields?.backup, fields?.details, describeError(err));
  }

  private async end(
    outcome: 'done' | 'failed',
    userIds: string[] | undefined,
    backup: string | undefined,
    details: Record<string, unknown> | undefined,
    error: { code: string; message: string } | undefined,
  ): Promise<AuditEntry> {
    if (this.ending) {
      throw new OpsError('E_AUDIT_WRITE', `audit operation ${this.op} (${this.started.action}) has already ended`, {
        details: { op: this.op },
      });
    }
    this.ending = true;
    const b = backup ?? this.backup;
    const entry: AuditEntry = {
      id: randomUUID(),
      op: this.op,
      time: new Date().toISOString(),
      actor: this.started.actor,
      action: this.started.action,
      ...(userIds !== undefined ? { userIds } : {}),
      ...(b !== undefined ? { backup: b } : {}),
      outcome,
      durationMs: Math.round(performance.now() - this.t0),
      ...(error !== undefined ? { error } : {}),
      ...(details !== undefined ? { details } : {}),
    };
    try {
      return await this.write(entry);
    } catch (err) {
      this.ending = false;
      throw err;
    }
  }
}

function describeError(err: unknown): { code: string; message: string } {
  const code = isChatmemError(err) ? err.code : (errnoCode(err) ?? 'E_UNKNOWN');
  const message = err instanceof Error ? err.message : safeString(err);
  return { code, message };
}

function safeString(value: unknown): string {
  try {
    return String(value);
  } catch {
    return '[unprintable]';
  }
}

function normaliseTime(time: string | undefined): string {
  if (time === undefined) return new Date().toISOString();
  const ms = Date.parse(time);
  if (Number.isNaN(ms)) {
    throw new OpsError('E_AUDIT_WRITE', `invalid audit entry time: ${JSON.stringify(time)}`, { details: { time } });
  }
  return new Date(ms).toISOString();
}

async function writeOnce(fh: FileHandle, file: string, text: string): Promise<void> {
  const buf = Buffer.from(text, 'utf8');
  const { bytesWritten } = await io.writeSome(fh, file, buf);
  // Writing the rest separately could interleave with another process; leave the torn tail to the reader's rules.
  if (bytesWritten !== buf.length) {
    throw new Error(`short write (${bytesWritten} of ${buf.length} bytes)`);
  }
}

async function tightenMode(fh: FileHandle): Promise<void> {
  try {
    await fh.chmod(FILE_MODE);
  } catch (err) {
    // A log owned by another account (e.g. created by root) must still be appendable.
    if (errnoCode(err) !== 'EPERM') throw err;
  }
}

/* ---------- secrets ---------- */

const SECRET_KEY = /^(?:token|secret|password|passwd|passphrase|authorization|cookie|api[-_]?key|private[-_]?key)$/i;
const URL_PASSWORD = /\b([a-z][a-z0-9+.-]*:\/\/[^\s:/@]*):[^\s@/]+@/gi;
const REDACTED = '[redacted]';
const MAX_DEPTH = 32;

/** Defence in depth: callers pass token names, but store URLs and error messages can still carry passwords. */
function sanitiseEntry(entry: AuditEntry): AuditEntry {
  const out: AuditEntry = { ...entry };
  if (entry.details !== undefined) out.details = sanitiseValue(entry.details, 0) as Record<string, unknown>;
  if (entry.error !== undefined) out.error = { code: entry.error.code, message: maskUrlPassword(entry.error.message) };
  return out;
}

function sanitiseValue(value: unknown, depth: number): unknown {
  if (typeof value === 'string') return maskUrlPassword(value);
  if (depth >= MAX_DEPTH || typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) return value.map((v) => sanitiseValue(v, depth + 1));
  const proto: unknown = Object.getPrototypeOf(value);
  // Dates, URLs and the like serialise through toJSON; only plain records can hide secret-named keys.
  if (proto !== Object.prototype && proto !== null) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = SECRET_KEY.test(k) && v !== undefined && v !== null ? REDACTED : sanitiseValue(v, depth + 1);
  }
  return out;
}

function maskUrlPassword(text: string): string {
  return text.replace(URL_PASSWORD, '$1:***@');
}

/* ---------- parsing ---------- */

/** Fixed key order: `id` first (see {@link ENTRY_START}), then the fields an operator scans for. */
function canonicalEntry(e: AuditEntry): AuditEntry {
  return {
    id: e.id,
    op: e.op,
    time: e.time,
    actor: e.actor,
    action: e.action,
    ...(e.userIds !== undefined ? { userIds: e.userIds } : {}),
    ...(e.backup !== undefined ? { backup: e.backup } : {}),
    outcome: e.outcome,
    ...(e.durationMs !== undefined ? { durationMs: e.durationMs } : {}),
    ...(e.error !== undefined ? { error: e.error } : {}),
    ...(e.details !== undefined ? { details: e.details } : {}),
  };
}

/**
 * A writer that crashed mid-line leaves a fragment without a newline, and the next append lands right after it.
 * The appended entry is the first suffix starting with {@link ENTRY_START} that parses on its own: inside JSON
 * strings the quotes are escaped, and a suffix starting at a nested object keeps unbalanced closing braces.
 * The fragment is kept too in the one case where it is whole (the crash lost only its newline).
 */
function splitTornLine(text: string): AuditEntry[] | undefined {
  for (let at = text.indexOf(ENTRY_START, 1); at > 0; at = text.indexOf(ENTRY_START, at + 1)) {
    const entry = parseEntry(text.slice(at));
    if (typeof entry === 'string') continue;
    const before = parseEntry(text.slice(0, at));
    return typeof before === 'string' ? [entry] : [before, entry];
  }
  return undefined;
}

/** Returns the entry, or a reason why the line is not one. */
function parseEntry(text: string): AuditEntry | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return err instanceof Error ? err.message : 'invalid JSON';
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object';
  const v = value as Record<string, unknown>;
  for (const key of ['id', 'op', 'time', 'action'] as const) {
    if (typeof v[key] !== 'string') return `missing or non-string "${key}"`;
  }
  if (Number.isNaN(Date.parse(v.time as string))) return 'invalid "time"';
  if (typeof v.outcome !== 'string' || !OUTCOMES.has(v.outcome)) return 'missing or unknown "outcome"';
  const actor = v.actor;
  if (
    typeof actor !== 'object' ||
    actor === null ||
    ((actor as Record<string, unknown>).kind !== 'os' && (actor as Record<string, unknown>).kind !== 'api') ||
    typeof (actor as Record<string, unknown>).name !== 'string'
  ) {
    return 'missing or invalid "actor"';
  }
  if (v.userIds !== undefined && (!Array.isArray(v.userIds) || !v.userIds.every((u) => typeof u === 'string'))) {
    return 'invalid "userIds"';
  }
  return value as AuditEntry;
}
