import * as path from 'node:path';
import { BackupError } from '../errors.js';

// Only the names of backup files live here; their content is written and read by src/format/.

export const BACKUP_PREFIX = 'memory_backup_';

const FULL_NAME_RE = /^memory_backup_(\d{8})_(\d{6})(?:_([1-9]\d*))?\.json(\.gz)?$/;
const USER_NAME_RE = /^memory_backup_(.+)_(\d{8})_(\d{6})\.json$/;

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

/** 'memory_backup_YYYYMMDD_HHMMSS' (UTC), plus `_${seq}` when seq > 0. */
export function backupBaseName(date: Date, seq: number): string {
  const stamp =
    pad(date.getUTCFullYear(), 4) +
    pad(date.getUTCMonth() + 1, 2) +
    pad(date.getUTCDate(), 2) +
    '_' +
    pad(date.getUTCHours(), 2) +
    pad(date.getUTCMinutes(), 2) +
    pad(date.getUTCSeconds(), 2);
  return `${BACKUP_PREFIX}${stamp}${seq > 0 ? `_${seq}` : ''}`;
}

function stampToDate(ymd: string, hms: string): Date | null {
  const y = Number(ymd.slice(0, 4));
  const mo = Number(ymd.slice(4, 6));
  const d = Number(ymd.slice(6, 8));
  const h = Number(hms.slice(0, 2));
  const mi = Number(hms.slice(2, 4));
  const s = Number(hms.slice(4, 6));
  const date = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  // Date.UTC rolls 20251332 over into the next year; a name like that carries no real time.
  const ok =
    date.getUTCFullYear() === y &&
    date.getUTCMonth() === mo - 1 &&
    date.getUTCDate() === d &&
    date.getUTCHours() === h &&
    date.getUTCMinutes() === mi &&
    date.getUTCSeconds() === s;
  return ok ? date : null;
}

/** What a backup file name says about the backup. */
export interface BackupName {
  /** The file name without `.json` / `.json.gz`. */
  id: string;
  /** The UTC time in the name, or null when its digits are not a real date. */
  createdAt: Date | null;
  gzip: boolean;
  /** 'full': a whole-store backup; 'user': the seed system's one-user reset file. */
  kind: 'full' | 'user';
}

/**
 * Recognises `memory_backup_YYYYMMDD_HHMMSS[_N].json[.gz]` (kind 'full') and the seed's per-user
 * `memory_backup_<uid>_YYYYMMDD_HHMMSS.json` (kind 'user'). Returns null for manifests
 * (`*.meta.json`), temp files and anything else.
 */
export function parseBackupName(name: string): BackupName | null {
  if (name.endsWith('.meta.json') || /[/\\\0]/.test(name)) return null;
  const full = FULL_NAME_RE.exec(name);
  if (full) {
    const gzip = full[4] !== undefined;
    return {
      id: name.slice(0, name.length - (gzip ? '.json.gz'.length : '.json'.length)),
      createdAt: stampToDate(full[1]!, full[2]!),
      gzip,
      kind: 'full',
    };
  }
  const user = USER_NAME_RE.exec(name);
  if (user) {
    return { id: name.slice(0, -'.json'.length), createdAt: stampToDate(user[2]!, user[3]!), gzip: false, kind: 'user' };
  }
  return null;
}

/** The manifest beside a backup: 'memory_backup_..._N.meta.json' for '..._N.json' or '..._N.json.gz'. */
export function manifestName(backupFileName: string): string {
  return `${backupFileName.replace(/\.json(\.gz)?$/, '')}.meta.json`;
}

/**
 * Resolve an operator-supplied backup id (with or without .json/.json.gz, or a bare file name) to a
 * file INSIDE dir. Rejects path separators, '..', NUL, absolute paths, anything parseBackupName
 * rejects, with BackupError code 'E_BACKUP_ID'. An id without extension means the `.json` file.
 * Returns { id, fileName, file (absolute path), gzip }. Does not check existence.
 */
export function resolveBackupId(dir: string, id: string): { id: string; fileName: string; file: string; gzip: boolean } {
  const reject = (why: string): never => {
    throw new BackupError('E_BACKUP_ID', `invalid backup id ${JSON.stringify(id)}: ${why}`, { details: { id } });
  };
  if (id.length === 0) reject('empty');
  if (id.includes('\0')) reject('contains NUL');
  if (id.includes('/') || id.includes('\\') || path.isAbsolute(id)) reject('must be a name, not a path');
  if (id.includes('..')) reject("contains '..'");
  const fileName = /\.json(\.gz)?$/.test(id) ? id : `${id}.json`;
  const parsed = parseBackupName(fileName);
  if (parsed === null) return reject(`not a backup name (expected ${BACKUP_PREFIX}YYYYMMDD_HHMMSS[_N])`);
  const root = path.resolve(dir);
  const file = path.join(root, fileName);
  if (path.dirname(file) !== root) reject('resolves outside the backup directory');
  return { id: parsed.id, fileName, file, gzip: parsed.gzip };
}
