import { promises as fsp } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { BackupError, errnoCode, isChatmemError } from '../errors.js';
import { ensurePrivateDir, FILE_MODE, fsyncDir, tempNameFor } from '../fs-util.js';
import { io } from '../fsio.js';
import type { MemoryRecord } from '../record.js';
import { VERSION } from '../version.js';
import { backupBaseName, manifestName } from './format.js';
import { rawEntries, writeBackupBatches, writeBackupStream, writeStreamDurably } from '../format/line-writer.js';
import { hasJsonBatches } from '../store/types.js';
import { digestBackupFile } from '../format/line-reader.js';
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
    yield* rawEntries(input.json);
    return;
  }
  for await (const r of input) yield [r.user_id, r];
}

/**
 * Claims the first free name for this second: `link()` fails on an existing name, so two backups
 * in the same second get `_1`, `_2`… and nothing is ever overwritten (the seed's `cp` did overwrite).
 * The manifest is linked first and is the claim; the backup file follows. A crash in between
 * leaves a manifest without backup (removed at the next start) or a backup whose manifest says it
 * is not verified yet (verified and completed, or removed): never a chatmem backup that looks legacy.
 */
async function claimName(dir: string, tmp: string, date: Date, ext: string, manifestFor: (name: string) => BackupManifest): Promise<string> {
  for (let seq = 0; seq < 10_000; seq++) {
    const name = backupBaseName(date, seq) + ext;
    // An id names one backup whatever its extension: skip ids taken by the other variant.
    const other = path.join(dir, backupBaseName(date, seq) + (ext === '.json' ? '.json.gz' : '.json'));
    if (await fsp.lstat(other).then(() => true, () => false)) continue;
    if (await fsp.lstat(path.join(dir, name)).then(() => true, () => false)) continue;
    const manifestFile = path.join(dir, manifestName(name));
    const tmpManifest = tempNameFor(manifestFile);
    try {
      await io.writeFile(tmpManifest, JSON.stringify(manifestFor(name), null, 2) + '\n', { flag: 'wx', mode: FILE_MODE });
      const fh = await io.open(tmpManifest, 'r');
      try {
        await io.sync(fh, tmpManifest);
      } finally {
        await io.close(fh, tmpManifest);
      }
      try {
        await io.link(tmpManifest, manifestFile);
      } catch (err) {
        if (errnoCode(err) === 'EEXIST') continue;
        throw err;
      }
    } finally {
      await fsp.rm(tmpManifest, { force: true });
    }
    try {
      await io.link(tmp, path.join(dir, name));
      return name;
    } catch (err) {
      await fsp.rm(manifestFile, { force: true });
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
  }
  throw new BackupError('E_BACKUP_WRITE', `no free backup name for ${date.toISOString()} in ${dir}`);
}

/**
 * Writes a verified backup: temp file, fsync, claim a unique final name (pending manifest, then
 * link), fsync the directory, re-read and check SHA-256 and user count, then complete the manifest
 * (atomically). Any failure removes
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
    const writeOpts = { gzip, onProgress: options.onProgress };
    // A store that hands over its stored bytes is written batch by batch (BENCHMARKS.md, "Full backup at the disk's rate").
    const written = await writeStreamDurably(tmp, (out) =>
      'json' in records && hasJsonBatches(records.json)
        ? writeBackupBatches(records.json.jsonBatches(), out, writeOpts)
        : writeBackupStream(entriesOf(records), out, writeOpts),
    );
    const manifestFor = (file: string): BackupManifest => ({
      format: 'chatmem-backup',
      formatVersion: 1,
      file,
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
      verifiedAt: null,
      writer: { pid: process.pid, host: hostname() },
    });
    finalName = await claimName(dir, tmp, date, ext, manifestFor);
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
    const { writer: _writer, ...pending } = manifestFor(finalName);
    const manifest: BackupManifest = { ...pending, verifiedAt: new Date().toISOString() };
    await writeManifest(dir, manifest);
    return { id: finalName.replace(/\.json(\.gz)?$/, ''), file: finalFile, manifest };
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    if (finalName) {
      await fsp.rm(path.join(dir, finalName), { force: true }).catch(() => undefined);
      await fsp.rm(path.join(dir, manifestName(finalName)), { force: true }).catch(() => undefined);
    }
    if (isChatmemError(err)) throw err;
    throw new BackupError('E_BACKUP_WRITE', `cannot write backup in ${dir}: ${(err as Error).message}`, { cause: err });
  }
}
