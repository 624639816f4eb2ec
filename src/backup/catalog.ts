import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { BackupError, errnoCode, isChatmemError, type ChatmemError } from '../errors.js';
import { compareIds, validateUserId, type MemoryRecord } from '../record.js';
import { manifestName, parseBackupName } from './format.js';
import type { BackupManifest, BackupReason } from './manifest.js';
import { backupRecords, findBackupUser, openBackup, type BackupSource } from './source.js';
import { verifySource } from './integrity.js';
import { wallClockToInstant } from './timezone.js';

// What the backup directory holds, as the operator sees it: listing, inspecting and verifying. Each takes
// a BackupSource opened once by its caller, so one command never opens the same backup twice.

/** One backup as listed. */
export interface BackupInfo {
  id: string;
  file: string;
  size: number;
  users: number | null;
  reason: BackupReason | 'legacy';
  scope: 'full' | string[] | null;
  createdAt: string | null;
  ageSeconds: number | null;
  gzip: boolean;
  /**
   * 'verified' (checksum checked when written), 'pending' (its writer has not marked it verified
   * yet), 'legacy' (the seed's files: no manifest, not verified), 'damaged' (its manifest is
   * unreadable or does not match the file) or 'refused' (a symlink, directory or other non-regular
   * entry named like a backup: never followed). Content is checked by `verify`, not by listing.
   */
  state: 'verified' | 'pending' | 'legacy' | 'damaged' | 'refused';
  kind: 'full' | 'user';
  /** For 'damaged' and 'refused': why. */
  problem?: { code: string; message: string };
  /** Set when off-site storage is configured and could be listed: where copies of this backup are. */
  location?: 'local' | 'offsite' | 'both';
}

export interface VerifyResult {
  id: string;
  ok: boolean;
  legacy: boolean;
  users: number | null;
  sha256?: string;
  error?: { code: string; message: string };
}

/** A backup's facts, its verification, and a sample of its users or one user's record. */
export interface BackupInspection {
  backup: BackupInfo;
  manifest: BackupManifest | null;
  users: number;
  sample: { user_id: string; name: string | null; messages: number }[];
  record?: MemoryRecord | null;
  /** The backup's content checked against its manifest (or parsed, for a legacy file) just now. */
  verification: VerifyResult;
}

/** One entry of the backup directory: what listing shows, and the source it was read from (null when it could not be opened). */
export interface CatalogEntry {
  info: BackupInfo;
  source: BackupSource | null;
}

function refusedInfo(dir: string, name: string, err: ChatmemError): BackupInfo {
  const parsed = parseBackupName(name);
  return {
    id: parsed?.id ?? name,
    file: path.join(dir, name),
    size: 0,
    users: null,
    reason: 'legacy',
    scope: null,
    createdAt: null,
    ageSeconds: null,
    gzip: parsed?.gzip ?? false,
    state: err.code === 'E_BACKUP_NOT_REGULAR' ? 'refused' : 'damaged',
    kind: parsed?.kind ?? 'full',
    problem: { code: err.code, message: err.message },
  };
}

/** What listing shows of an opened backup. */
export function backupInfo(src: BackupSource, now: number = Date.now()): BackupInfo {
  const m = src.manifest;
  if (src.damage) {
    return { ...refusedInfo(path.dirname(src.file), src.fileName, new BackupError(src.damage.code, src.damage.message)), size: src.size, state: 'damaged' };
  }
  const createdAt = src.createdAt ? src.createdAt.toISOString() : null;
  return {
    id: src.id,
    file: src.file,
    size: src.size,
    users: m ? m.users : null,
    reason: m ? m.reason : 'legacy',
    scope: m ? m.scope : src.kind === 'full' ? 'full' : null,
    createdAt,
    ageSeconds: src.createdAt ? Math.max(0, Math.round((now - src.createdAt.getTime()) / 1000)) : null,
    gzip: src.gzip,
    state: m ? (m.verifiedAt === null ? 'pending' : 'verified') : 'legacy',
    kind: src.kind,
  };
}

/** Newest first; backups without a date last; ties by id, descending. */
export function newestFirst<T extends { createdAt: string | null; id: string }>(list: T[]): T[] {
  return list.sort((a, b) => (b.createdAt ?? '').localeCompare(a.createdAt ?? '') || compareIds(b.id, a.id));
}

async function readBackupDir(dir: string): Promise<string[]> {
  try {
    return await fsp.readdir(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw new BackupError('E_BACKUP_READ', `cannot list ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Every backup in `dir` (the seed's legacy files included), newest first, each opened once: its
 * listing and its source. An entry that cannot be opened is listed as refused or damaged, never hiding
 * the others.
 */
export async function listBackupDir(dir: string, legacyTimezone = 'UTC'): Promise<CatalogEntry[]> {
  const now = Date.now();
  const entries: CatalogEntry[] = [];
  for (const name of await readBackupDir(dir)) {
    if (!parseBackupName(name)) continue;
    try {
      const source = await openBackup(dir, name, legacyTimezone);
      entries.push({ info: backupInfo(source, now), source });
    } catch (err) {
      if (!isChatmemError(err) || err.code === 'E_BACKUP_NOT_FOUND') continue;
      entries.push({ info: refusedInfo(dir, name, err), source: null });
    }
  }
  const order = new Map(newestFirst(entries.map((e) => e.info)).map((info, i) => [info, i]));
  return entries.sort((a, b) => (order.get(a.info) ?? 0) - (order.get(b.info) ?? 0));
}

/**
 * When the newest backup in `dir` that lists with a date was made, as {@link listBackupDir} would
 * say, without opening every backup: candidates are ranked by the date in their names (a chatmem
 * name holds its manifest's time to the second), and only those of the newest second are opened.
 */
export async function newestBackupDate(dir: string, legacyTimezone = 'UTC'): Promise<Date | null> {
  const names = await readBackupDir(dir);
  const present = new Set(names);
  const byDate = new Map<number, string[]>();
  for (const name of names) {
    const parsed = parseBackupName(name);
    if (!parsed?.createdAt) continue;
    // Without a manifest it is a legacy file, named in the seed's local time.
    const legacy = !present.has(manifestName(name));
    const at = (legacy ? wallClockToInstant(parsed.createdAt, legacyTimezone) : parsed.createdAt).getTime();
    byDate.set(at, [...(byDate.get(at) ?? []), name]);
  }
  for (const at of [...byDate.keys()].sort((a, b) => b - a)) {
    let newest: Date | null = null;
    for (const name of byDate.get(at) ?? []) {
      const src = await openBackup(dir, name, legacyTimezone).catch(() => null);
      if (src && !src.damage && src.createdAt && (!newest || src.createdAt > newest)) newest = src.createdAt;
    }
    if (newest) return newest;
  }
  return null;
}

/** Checks one backup's content: checksum and count (chatmem backups) or that the file parses (legacy ones). */
export async function verifyBackup(src: BackupSource): Promise<VerifyResult> {
  return { id: src.id, ...(await verifySource(src)) };
}

/** Verifies every listed entry; one that could not be opened is a failed check, not the end of the run. */
export async function verifyEntries(entries: CatalogEntry[]): Promise<VerifyResult[]> {
  const results: VerifyResult[] = [];
  for (const { info, source } of entries) {
    results.push(source ? await verifyBackup(source) : { id: info.id, ok: false, legacy: false, users: null, error: info.problem ?? { code: 'E_BACKUP_READ', message: `cannot open ${info.file}` } });
  }
  return results;
}

/** A backup's facts and verification, and one user's record from it when asked (found without reading the whole file). */
export async function inspectBackup(src: BackupSource, options: { user?: string; sample?: number } = {}): Promise<BackupInspection> {
  const backup = backupInfo(src);
  const verification = await verifyBackup(src);
  // The content of a backup that failed verification is not shown as if it were the backup's.
  if (!verification.ok) return { backup, manifest: src.manifest, users: -1, sample: [], verification };
  if (options.user !== undefined) {
    const record = await findBackupUser(src, validateUserId(options.user));
    return { backup, manifest: src.manifest, users: src.manifest?.users ?? -1, sample: [], record, verification };
  }
  const limit = options.sample ?? 20;
  const sample: BackupInspection['sample'] = [];
  let users = 0;
  for await (const r of backupRecords(src)) {
    if (sample.length < limit) sample.push({ user_id: r.user_id, name: r.name, messages: r.history.length });
    users++;
  }
  return { backup, manifest: src.manifest, users, sample, verification };
}
