/**
 * Forgetting a person: the one operation that destroys without a backup, by design. It removes the
 * users from the store (leaving no trace in its files), from every backup (rewritten as new verified
 * files, or deleted whole when they held only them), from the daemon's log, and replaces their ids in
 * the audit log by a keyed hash, so "was this person forgotten, when, by whom" stays answerable by
 * whoever holds the key and the id, and by no one else.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { BackupError, errnoCode, isChatmemError, OpsError } from '../errors.js';
import { ensurePrivateDir, FILE_MODE, fsyncDir, tempNameFor, writeFileAtomic } from '../fs-util.js';
import { io } from '../fsio.js';
import { validateUserId } from '../record.js';
import type { Store } from '../store/types.js';
import { parseBackupName } from '../backup/format.js';
import { verifySource } from '../backup/integrity.js';
import { backupHoldsAny, rewriteChatmemBackup, rewriteLegacyBackup } from '../backup/rewrite.js';
import { openBackup } from '../backup/source.js';
import type { Actor, AuditLog } from './audit.js';

/** File of the key of the audit hashes, in the data dir, 0600. */
export const FORGET_KEY_FILE = 'forget.key';

export interface ForgetContext {
  store: Store;
  backupDir: string;
  audit: AuditLog;
  /** Where the key file and the daemon's log (`chatmem.log*`) live. */
  dataDir: string;
  legacyTimezone: string;
  actor: Actor;
}

/** The answer of a forget. File names of deleted per-user backups name the user: they are in the answer, never in the audit log. */
export interface ForgetResult {
  /** Rows removed from the store (users already gone count 0). */
  deleted: number;
  /** Each user's keyed hash, as the audit log now names them. */
  hashes: Record<string, string>;
  /** Backups rewritten without the users (ids). */
  backupsRewritten: string[];
  /** Backup files deleted whole: they held only these users (with their manifests). */
  filesDeleted: string[];
  /** Log files whose lines naming a user were redacted. */
  logsRedacted: string[];
  /** Audit log lines in which an id was replaced by its hash. */
  auditEntriesRedacted: number;
  auditOp: string;
}

/**
 * The key of the audit hashes: created once (32 random bytes, 0600), then read. A key file that is not
 * 64 hex digits is refused: read as it is, it would give a short or empty HMAC key, whose hashes anyone
 * holding the id can compute.
 */
export async function forgetKey(dataDir: string): Promise<Buffer> {
  const file = path.join(dataDir, FORGET_KEY_FILE);
  const existing = await readForgetKey(file);
  if (existing) return existing;
  await ensurePrivateDir(dataDir);
  const key = randomBytes(32);
  const tmp = tempNameFor(file);
  try {
    // Written whole and synced under a temp name, then linked: the key file is never seen half written
    // (a kill between creating and writing it left an empty key before), and `link` fails on an
    // existing name, so two first forgets at once keep one key.
    const fh = await io.open(tmp, 'wx', FILE_MODE);
    try {
      await io.writeAll(fh, tmp, key.toString('hex') + '\n');
      await io.sync(fh, tmp);
    } finally {
      await io.close(fh, tmp);
    }
    try {
      await io.link(tmp, file);
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
      const theirs = await readForgetKey(file);
      // The name is taken by something that reads as missing (a dangling symlink): retrying would loop.
      if (!theirs) throw new Error('the name exists but is no readable file');
      return theirs;
    }
    await fsyncDir(dataDir);
    return key;
  } catch (err) {
    if (isChatmemError(err)) throw err;
    throw new OpsError('E_AUDIT_WRITE', `cannot create the forget key ${file}: ${(err as Error).message}`, { cause: err });
  } finally {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
  }
}

async function readForgetKey(file: string): Promise<Buffer | null> {
  let text: string;
  try {
    text = (await fsp.readFile(file, 'utf8')).trim();
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw new OpsError('E_AUDIT_WRITE', `cannot read the forget key ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (!/^[0-9a-fA-F]{64}$/.test(text)) {
    throw new OpsError('E_AUDIT_WRITE', `the forget key ${file} is damaged (${text.length} characters, not 64 hex digits); restore it from a copy, or remove it only if no forget ever used it`);
  }
  return Buffer.from(text, 'hex');
}

/** `forgotten:` + the first 128 bits of HMAC-SHA256(key, id), hex. */
export function forgottenId(key: Buffer, id: string): string {
  return `forgotten:${createHmac('sha256', key).update(id, 'utf8').digest('hex').slice(0, 32)}`;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Replaces `id` in free text where it stands alone (not inside a longer run of letters or digits), raw
 * and JSON-escaped: "1" is not replaced inside "2021", but is inside `memory_backup_1_2021…`.
 */
export function redactText(text: string, ids: readonly string[], tokens: ReadonlyMap<string, string>): string {
  let out = text;
  for (const id of ids) {
    const token = tokens.get(id) ?? 'forgotten';
    const forms = new Set([id, JSON.stringify(id).slice(1, -1), JSON.stringify(JSON.stringify(id).slice(1, -1)).slice(1, -1)]);
    for (const form of forms) {
      const re = new RegExp(`(?<![\\p{L}\\p{N}])${escapeRegExp(form)}(?![\\p{L}\\p{N}])`, 'gu');
      out = out.replace(re, token);
    }
  }
  return out;
}

// A value of an audit entry: strings equal to an id become its hash, others are redacted as free text.
function redactValue(value: unknown, ids: readonly string[], tokens: ReadonlyMap<string, string>): unknown {
  if (typeof value === 'string') return tokens.get(value) ?? redactText(value, ids, tokens);
  if (Array.isArray(value)) return value.map((v) => redactValue(v, ids, tokens));
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[redactText(k, ids, tokens)] = redactValue(v, ids, tokens);
    return out;
  }
  return value;
}

function redactAuditLine(line: string, ids: readonly string[], tokens: ReadonlyMap<string, string>): string {
  if (!ids.some((id) => line.includes(id) || line.includes(JSON.stringify(id).slice(1, -1)))) return line;
  try {
    return JSON.stringify(redactValue(JSON.parse(line) as unknown, ids, tokens));
  } catch {
    // A torn fragment: the reader skips it; it must not keep the id either.
    return redactText(line, ids, tokens);
  }
}

/** The daemon's log and its rotated copies (`chatmem.log`, `chatmem.log.1`, …). */
async function logFiles(dataDir: string): Promise<string[]> {
  const names = await fsp.readdir(dataDir).catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') return [] as string[];
    throw err;
  });
  return names.filter((n) => n === 'chatmem.log' || /^chatmem\.log\.\d+$/.test(n)).map((n) => path.join(dataDir, n));
}

/**
 * Drops the lines naming a user from a daemon log. The live log is the daemon's stdout (opened O_APPEND):
 * it is rewritten in place, synchronously, so the daemon's next line lands at the new end (as rotation
 * does); rotated copies are replaced atomically.
 */
async function redactLog(file: string, ids: readonly string[], tokens: ReadonlyMap<string, string>): Promise<boolean> {
  const live = path.basename(file) === 'chatmem.log';
  const text = live ? readFileSync(file, 'utf8') : await fsp.readFile(file, 'utf8');
  const next = text
    .split('\n')
    .filter((line) => redactText(line, ids, tokens) === line)
    .join('\n');
  if (next === text) return false;
  if (live) writeFileSync(file, next, { mode: FILE_MODE });
  else await writeFileAtomic(file, next);
  return true;
}

/**
 * Forgets the users everywhere (see the module comment). Users already gone from the store are still
 * removed from backups and logs: a person deleted last year may ask to be forgotten today. Every backup
 * that holds one of them must be readable: a damaged one is reported (E_BACKUP_VERIFY) before the store
 * is touched, never rewritten or silently skipped.
 */
export async function forgetUsers(ctx: ForgetContext, ids: string[], options: { actor?: Actor } = {}): Promise<ForgetResult> {
  if (ids.length === 0) throw new OpsError('E_OPS_ARG', 'no user ids given');
  const users = [...new Set(ids.map((id) => validateUserId(id)))];
  const drop = new Set(users);
  const key = await forgetKey(ctx.dataDir);
  const tokens = new Map(users.map((u) => [u, forgottenId(key, u)]));
  const hashes = Object.fromEntries(tokens);

  // Checked before anything changes: a backup that cannot be read might hold the user.
  const plan = await planBackups(ctx, drop);

  const op = await ctx.audit.begin('forget', options.actor ?? ctx.actor, { userIds: users.map((u) => tokens.get(u) ?? '') });
  try {
    const deleted = await ctx.store.exclusive({ ids: users }, (x) => (x.forget ? x.forget(users) : x.delete(users)));
    const backupsRewritten: string[] = [];
    const filesDeleted: string[] = [];
    const seen = new Set<string>();
    // Twice: a backup whose snapshot was taken before the delete may have landed during the first pass.
    for (let pass = 0; pass < 2; pass++) {
      const names = pass === 0 ? plan : await planBackups(ctx, drop, seen);
      for (const name of names) {
        seen.add(name);
        const src = await openBackup(ctx.backupDir, name, ctx.legacyTimezone).catch((err: unknown) => {
          if (isChatmemError(err) && err.code === 'E_BACKUP_NOT_FOUND') return null;
          throw err;
        });
        if (!src) continue;
        const outcome = src.manifest ? await rewriteChatmemBackup(src, drop) : await rewriteLegacyBackup(src, drop);
        if (outcome === 'rewritten') backupsRewritten.push(src.id);
        else if (outcome === 'deleted') filesDeleted.push(src.fileName);
      }
    }
    const logsRedacted: string[] = [];
    for (const file of await logFiles(ctx.dataDir)) if (await redactLog(file, users, tokens)) logsRedacted.push(file);
    const auditEntriesRedacted = await ctx.audit.rewrite((line) => redactAuditLine(line, users, tokens));
    // Only counts: the names of deleted per-user files carry the id.
    await op.finish({
      details: { deleted, backupsRewritten: backupsRewritten.length, filesDeleted: filesDeleted.length, logsRedacted: logsRedacted.length, auditEntriesRedacted },
    });
    return { deleted, hashes, backupsRewritten, filesDeleted, logsRedacted, auditEntriesRedacted, auditOp: op.op };
  } catch (err) {
    // The failure's message may name a user or a per-user file.
    const e = isChatmemError(err) ? err : null;
    await op
      .fail(new OpsError(e ? e.code : 'E_UNKNOWN', redactText(e ? e.message : String((err as Error).message), users, tokens)))
      .catch(() => undefined);
    throw err;
  }
}

/**
 * Backups (file names) that hold one of `drop`, each checked: a chatmem backup must verify against its
 * manifest before its content is trusted to be rewritten. Names in `skip` are not looked at.
 */
async function planBackups(ctx: ForgetContext, drop: ReadonlySet<string>, skip: ReadonlySet<string> = new Set()): Promise<string[]> {
  let names: string[];
  try {
    names = await fsp.readdir(ctx.backupDir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw new BackupError('E_BACKUP_READ', `cannot list ${ctx.backupDir}: ${(err as Error).message}`, { cause: err });
  }
  const out: string[] = [];
  for (const name of names.sort()) {
    if (skip.has(name) || !parseBackupName(name)) continue;
    let src = await openBackup(ctx.backupDir, name, ctx.legacyTimezone);
    // A backup still being written (a scheduled one) is waited for: it may hold the user.
    for (let i = 0; src.manifest?.verifiedAt === null; i++) {
      if (i >= 300) throw new BackupError('E_BACKUP_VERIFY', `backup ${src.id} is still being written; forget again once it is done`, { details: { id: src.id } });
      await new Promise((resolve) => setTimeout(resolve, 200));
      src = await openBackup(ctx.backupDir, name, ctx.legacyTimezone);
    }
    if (src.manifest || src.damage) {
      const v = await verifySource(src);
      if (!v.ok) {
        throw new BackupError('E_BACKUP_VERIFY', `backup ${src.id} failed verification (${v.error?.message ?? 'unknown'}); it may hold a user to forget, so nothing was changed. Restore or remove it, then forget again.`, {
          details: { id: src.id },
        });
      }
    }
    if (await backupHoldsAny(src, drop)) out.push(name);
  }
  return out;
}
