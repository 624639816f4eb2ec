import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { BackupError, errnoCode } from '../errors.js';
import { writeFileAtomic } from '../fs-util.js';
import { manifestName } from './format.js';

/** `reset`: one user's record, saved before a data-plane write that drops part of its memory. */
export type BackupReason = 'manual' | 'delete-user' | 'clear-all' | 'restore' | 'scheduled' | 'import' | 'reset';
export const BACKUP_REASONS: readonly BackupReason[] = ['manual', 'delete-user', 'clear-all', 'restore', 'scheduled', 'import', 'reset'];

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
  /** When the file was re-read and matched its checksum and count, right after writing. */
  verifiedAt: string;
}

export async function writeManifest(dir: string, manifest: BackupManifest): Promise<void> {
  await writeFileAtomic(path.join(dir, manifestName(manifest.file)), JSON.stringify(manifest, null, 2) + '\n');
}

/** The manifest of a backup file, or null for a legacy backup without one. */
export async function readManifest(dir: string, fileName: string): Promise<BackupManifest | null> {
  const file = path.join(dir, manifestName(fileName));
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return null;
    throw new BackupError('E_BACKUP_MANIFEST', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const m = JSON.parse(text) as BackupManifest;
    if (m.format !== 'chatmem-backup' || typeof m.sha256 !== 'string' || typeof m.users !== 'number') throw new Error('not a chatmem manifest');
    return m;
  } catch (err) {
    throw new BackupError('E_BACKUP_MANIFEST', `invalid manifest ${file}: ${(err as Error).message}`, { cause: err });
  }
}
