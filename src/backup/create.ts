import { createWriteStream, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import { BackupError, errnoCode, isChatmemError } from '../errors.js';
import { durableIo, ensurePrivateDir, FILE_MODE, fsyncDir, tempNameFor } from '../fs-util.js';
import type { MemoryRecord } from '../record.js';
import { VERSION } from '../version.js';
import { backupBaseName, digestBackupFile, RawJson, writeBackupStream } from './format.js';
import { writeManifest, type BackupManifest, type BackupReason } from './manifest.js';

export interface WriteBackupOptions {
  reason: BackupReason;
  scope: 'full' | string[];
  /** Store URL recorded in the manifest. */
  source: string;
  gzip?: boolean;
  auditOp?: string | null;
  /** Called with the number of users written so far. */
  onProgress?: (users: number) => void;
  /** Clock, for tests of same-second names. */
  now?: () => Date;
}

export interface BackupResult {
  id: string;
  file: string;
  manifest: BackupManifest;
}

/** Records, or `[user_id, JSON text]` pairs from `scanJson` (written without re-serialising). */
export type BackupInput = AsyncIterable<MemoryRecord> | Iterable<MemoryRecord> | { json: AsyncIterable<[string, string]> };

async function* entriesOf(input: BackupInput): AsyncGenerator<[string, unknown]> {
  if ('json' in input) {
    for await (const [id, text] of input.json) yield [id, new RawJson(text)];
    return;
  }
  for await (const r of input) yield [r.user_id, r];
}

/**
 * Claims the first free name for this second: `link()` fails on an existing name, so two backups
 * in the same second get `_1`, `_2`… and nothing is ever overwritten (the seed's `cp` did overwrite).
 */
async function claimName(dir: string, tmp: string, date: Date, ext: string): Promise<string> {
  for (let seq = 0; seq < 10_000; seq++) {
    const name = backupBaseName(date, seq) + ext;
    // An id names one backup whatever its extension: skip ids taken by the other variant.
    const other = path.join(dir, backupBaseName(date, seq) + (ext === '.json' ? '.json.gz' : '.json'));
    if (await fsp.stat(other).then(() => true, () => false)) continue;
    try {
      await fsp.link(tmp, path.join(dir, name));
      return name;
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
  }
  throw new BackupError('E_BACKUP_WRITE', `no free backup name for ${date.toISOString()} in ${dir}`);
}

/**
 * Writes a verified backup: temp file, fsync, link to a unique final name, fsync the directory,
 * re-read and check SHA-256 and user count, then the manifest (atomically). Any failure removes
 * the partial file and throws; the caller must not delete anything then.
 */
export async function writeBackup(
  dir: string,
  records: BackupInput,
  options: WriteBackupOptions,
): Promise<BackupResult> {
  const gzip = options.gzip ?? false;
  const ext = gzip ? '.json.gz' : '.json';
  const date = (options.now ?? (() => new Date()))();
  const tmp = tempNameFor(path.join(dir, backupBaseName(date, 0) + ext));
  let finalName: string | null = null;
  try {
    await ensurePrivateDir(dir);
    const out = createWriteStream(tmp, { flags: 'wx', mode: FILE_MODE });
    // A late ENOSPC/EIO can surface after the writer's own listener is gone: keep one for the whole life.
    out.on('error', () => undefined);
    await once(out, 'open');
    let written;
    try {
      written = await writeBackupStream(entriesOf(records), out, { gzip, onProgress: options.onProgress });
      out.end();
      await finished(out);
    } catch (err) {
      out.destroy();
      throw err;
    }
    const fh = await fsp.open(tmp, 'r+');
    try {
      await durableIo.syncFile(fh, tmp);
    } finally {
      await fh.close();
    }
    finalName = await claimName(dir, tmp, date, ext);
    await fsp.rm(tmp, { force: true });
    await fsyncDir(dir);

    const finalFile = path.join(dir, finalName);
    const check = await digestBackupFile(finalFile, { gzip, lineFormat: true });
    if (check.sha256 !== written.sha256 || check.users !== written.users || check.bytes !== written.bytes) {
      throw new BackupError(
        'E_BACKUP_VERIFY',
        `backup ${finalName} did not verify: wrote ${written.users} users (sha256 ${written.sha256}), read back ${check.users} users (sha256 ${check.sha256})`,
      );
    }
    const manifest: BackupManifest = {
      format: 'chatmem-backup',
      formatVersion: 1,
      file: finalName,
      created_at: date.toISOString(),
      reason: options.reason,
      scope: options.scope,
      users: written.users,
      bytes: written.bytes,
      sha256: written.sha256,
      gzip,
      source: options.source,
      chatmemVersion: VERSION,
      auditOp: options.auditOp ?? null,
      verifiedAt: new Date().toISOString(),
    };
    await writeManifest(dir, manifest);
    return { id: finalName.replace(/\.json(\.gz)?$/, ''), file: finalFile, manifest };
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    if (finalName) await fsp.rm(path.join(dir, finalName), { force: true }).catch(() => undefined);
    if (isChatmemError(err)) throw err;
    throw new BackupError('E_BACKUP_WRITE', `cannot write backup in ${dir}: ${(err as Error).message}`, { cause: err });
  }
}
