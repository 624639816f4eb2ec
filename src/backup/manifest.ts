import { constants as fsc, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { BackupError, errnoCode } from '../errors.js';
import { writeFileAtomic } from '../fs-util.js';
import { manifestName } from './format.js';

/** `reset`: one user's record, saved before a data-plane write that drops part of its memory. */
export type BackupReason = 'manual' | 'delete-user' | 'clear-all' | 'restore' | 'scheduled' | 'import' | 'reset' | 'merge';
export const BACKUP_REASONS: readonly BackupReason[] = ['manual', 'delete-user', 'clear-all', 'restore', 'scheduled', 'import', 'reset', 'merge'];

/** The `….meta.json` written beside each chatmem backup. */
export interface BackupManifest {
  format: 'chatmem-backup';
  formatVersion: 1;
  /** Backup file name (inside the backup directory). */
  file: string;
  created_at: string;
  reason: BackupReason;
  scope: 'full' | string[];
  users: number;
  /** Uncompressed JSON bytes. */
  bytes: number;
  /** SHA-256 (hex) of the uncompressed JSON text. */
  sha256: string;
  gzip: boolean;
  /** Store URL it was taken from (password removed). */
  source: string;
  chatmemVersion: string;
  /** Audit operation id of the operation this backup belongs to. */
  auditOp: string | null;
  /**
   * When the file was re-read and matched its checksum and count, right after writing. null while
   * the backup is being written: the manifest is claimed before the backup file is linked, so a
   * crash never leaves a chatmem backup without its manifest (see `finishLeftovers`).
   */
  verifiedAt: string | null;
  /** The writing process, present only while `verifiedAt` is null: a live writer's files are left alone. */
  writer?: { pid: number; host: string };
  /** When a forget last rewrote this backup without some users (its digest, count and scope are the new content's). */
  rewrittenAt?: string;
}

export async function writeManifest(dir: string, manifest: BackupManifest): Promise<void> {
  await writeFileAtomic(path.join(dir, manifestName(manifest.file)), JSON.stringify(manifest, null, 2) + '\n');
}

// The fields a reader relies on; a manifest that lacks one is damaged, not trusted half-way.
function checkManifest(m: unknown): string | null {
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return 'not a JSON object';
  const o = m as Record<string, unknown>;
  if (o.format !== 'chatmem-backup') return 'not a chatmem manifest';
  if (typeof o.file !== 'string') return '"file" is missing';
  if (typeof o.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(o.sha256)) return '"sha256" is not a SHA-256 hex digest';
  if (!Number.isSafeInteger(o.users) || (o.users as number) < 0) return '"users" is not a count';
  if (!Number.isSafeInteger(o.bytes) || (o.bytes as number) < 0) return '"bytes" is not a count';
  if (typeof o.gzip !== 'boolean') return '"gzip" is not a boolean';
  if (typeof o.created_at !== 'string' || Number.isNaN(Date.parse(o.created_at))) return '"created_at" is not a date';
  if (o.scope !== 'full' && !(Array.isArray(o.scope) && o.scope.every((u) => typeof u === 'string'))) return '"scope" is neither "full" nor a list of user ids';
  if (o.verifiedAt !== null && typeof o.verifiedAt !== 'string') return '"verifiedAt" is not a date';
  return null;
}

/**
 * The manifest of a backup file, or null for a legacy backup without one. A manifest that is not a
 * regular file (a symlink is never followed), cannot be read or is incomplete throws `E_BACKUP_MANIFEST`.
 */
export async function readManifest(dir: string, fileName: string): Promise<BackupManifest | null> {
  const file = path.join(dir, manifestName(fileName));
  let text: string;
  try {
    const fh = await fsp.open(file, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
    try {
      if (!(await fh.stat()).isFile()) throw new Error('not a regular file');
      text = await fh.readFile('utf8');
    } finally {
      await fh.close();
    }
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    const why = errnoCode(err) === 'ELOOP' ? 'it is a symlink (never followed)' : (err as Error).message;
    throw new BackupError('E_BACKUP_MANIFEST', `cannot read manifest ${file}: ${why}`, { cause: err, details: { file } });
  }
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch (err) {
    throw new BackupError('E_BACKUP_MANIFEST', `invalid manifest ${file}: ${(err as Error).message}`, { cause: err, details: { file } });
  }
  const problem = checkManifest(m);
  if (problem) throw new BackupError('E_BACKUP_MANIFEST', `invalid manifest ${file}: ${problem}`, { details: { file } });
  return m as BackupManifest;
}
