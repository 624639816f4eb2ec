import { promises as fsp, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { BackupError, errnoCode, isChatmemError } from '../errors.js';
import { isTempName } from '../fs-util.js';
import { manifestName, parseBackupName } from './format.js';
import { digestBackupFile } from '../format/line-reader.js';
import { readManifest, writeManifest, type BackupManifest } from './manifest.js';
import { backupRecords, type BackupSource } from './source.js';
import { finishRewrites } from './rewrite.js';
import { finishParts, type PartsReport } from './two-phase.js';
import { writeBackup } from './create.js';

/** The outcome of checking one backup's content against its manifest (or parsing a legacy file). */
export interface Verification {
  ok: boolean;
  legacy: boolean;
  users: number | null;
  sha256?: string;
  error?: { code: string; message: string };
}

// Verified results, keyed by what identifies the file's content without reading it. ctime cannot be
// set back by utimes, so an edit in place (even one restoring mtime) misses the cache. Bounded: a
// daemon that sees many backups over months must not grow without limit.
const cache = new Map<string, Verification>();
const CACHE_MAX = 1000;

function cacheKey(st: { dev: number; ino: number; size: number; mtimeMs: number; ctimeMs: number }, src: BackupSource): string {
  const m = src.manifest;
  return [src.file, st.dev, st.ino, st.size, st.mtimeMs, st.ctimeMs, m ? `${m.sha256}/${m.users}/${String(m.gzip)}` : 'legacy'].join('|');
}

/** Forgets every cached verification (tests; nothing else needs it: the key changes with the file). */
export function clearVerifyCache(): void {
  cache.clear();
}

/**
 * Checks a backup before anything trusts its content: SHA-256 and user count against the manifest
 * (chatmem backups), or a full parse (legacy files: there is nothing to compare with). Successful
 * results are cached per process by (file, device, inode, size, mtime, ctime): a selective restore
 * of one user from a huge backup pays one hash pass, not one per call.
 */
export async function verifySource(src: BackupSource): Promise<Verification> {
  const legacy = !src.manifest && !src.damage;
  if (src.damage) return { ok: false, legacy: false, users: null, error: src.damage };
  let st;
  try {
    st = await fsp.lstat(src.file);
  } catch (err) {
    return { ok: false, legacy, users: null, error: { code: 'E_BACKUP_READ', message: `cannot read ${src.file}: ${(err as Error).message}` } };
  }
  if (!st.isFile()) return { ok: false, legacy, users: null, error: { code: 'E_BACKUP_NOT_REGULAR', message: `refusing ${src.fileName}: not a regular file` } };
  const key = cacheKey(st, src);
  const hit = cache.get(key);
  if (hit) return hit;
  let result: Verification;
  try {
    if (src.manifest) {
      const d = await digestBackupFile(src.file, { gzip: src.gzip, lineFormat: true });
      if (d.sha256 !== src.manifest.sha256 || d.users !== src.manifest.users) {
        throw new BackupError(
          'E_BACKUP_VERIFY',
          `${src.fileName}: expected ${src.manifest.users} users with sha256 ${src.manifest.sha256}, found ${d.users} users with sha256 ${d.sha256}`,
        );
      }
      result = { ok: true, legacy: false, users: d.users, sha256: d.sha256 };
    } else {
      let users = 0;
      for await (const _ of backupRecords(src)) users++;
      result = { ok: true, legacy: true, users };
    }
  } catch (err) {
    // Failures are not cached: a transient EIO must not condemn a good file for the process's life.
    return { ok: false, legacy, users: null, error: { code: isChatmemError(err) ? err.code : 'E_BACKUP_READ', message: (err as Error).message } };
  }
  if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value as string);
  cache.set(key, result);
  return result;
}

/** The error a failed verification means, for paths that refuse to use the backup. */
export function verificationError(src: BackupSource, v: Verification): BackupError {
  const code = v.error?.code ?? 'E_BACKUP_VERIFY';
  // Checksum mismatches and parse failures are reported as failed verification; the cause keeps the detail.
  const outer = code === 'E_BACKUP_NOT_REGULAR' || code === 'E_BACKUP_MANIFEST' ? code : 'E_BACKUP_VERIFY';
  return new BackupError(outer, `backup ${src.id} failed verification: ${v.error?.message ?? 'unknown'}`, { details: { id: src.id, reason: code } });
}

/**
 * True unless the process surely is gone. A pid that exists but runs something other than node (pid
 * reuse) counts as gone, where /proc tells; a process on another host cannot be checked: alive.
 */
export function writerAlive(pid: number, host: string = hostname()): boolean {
  if (host !== hostname()) return true;
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (errnoCode(err) === 'ESRCH') return false;
  }
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return /node|chatmem/.test(cmdline);
  } catch {
    return true;
  }
}

function tempPid(name: string): number {
  const m = /\.(\d+)\.[0-9a-f]{8}\.tmp$/.exec(name);
  return m ? Number(m[1]) : 0;
}

/** Removes the temp files a killed writer of a file store (`memory.json`, …) left beside it. */
export async function finishStoreTemps(storeFile: string): Promise<string[]> {
  return (await finishLeftovers(path.dirname(storeFile), { tempPrefix: `.${path.basename(storeFile)}.`, tempOnly: true })).removedTemp;
}

export interface LeftoverReport {
  /** Temp files of processes that are gone. */
  removedTemp: string[];
  /** Manifests whose backup file is gone (a prune killed between the two removals, or a write killed before the link). */
  removedOrphans: string[];
  /** Backups a killed writer linked but did not mark verified, which verified now: manifest completed. */
  completed: string[];
  /** Such backups that did not verify: removed (no operation went past an unverified backup). */
  removedIncomplete: string[];
  /** Backups a killed forget had already replaced by their rewrite: manifest completed (see `finishRewrites`). */
  completedRewrites?: string[];
  /** Two-phase backups (clear, full restore) a killed writer left in parts: finished or removed (see two-phase.ts). */
  parts?: PartsReport;
}

/** Whether a verified backup of audit operation `op` is in `dir`. */
async function publishedFor(dir: string, op: string): Promise<boolean> {
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    if (!name.endsWith('.meta.json')) continue;
    const m = await readManifest(dir, `${name.slice(0, -'.meta.json'.length)}.json`).catch(() => null);
    if (m?.auditOp === op && m.verifiedAt !== null) return true;
  }
  return false;
}

/**
 * Finishes what a killed chatmem left in `dir`: removes its temp files and orphan manifests, and
 * verifies and completes, or removes, backups whose writer died before marking them verified. Files
 * of a writer that is still running are left alone. `tempPrefix` limits temp removal to names that
 * start with it (a store's directory holds other programs' files).
 */
export async function finishLeftovers(dir: string, options: { tempPrefix?: string; tempOnly?: boolean } = {}): Promise<LeftoverReport> {
  const report: LeftoverReport = { removedTemp: [], removedOrphans: [], completed: [], removedIncomplete: [] };
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return report;
    throw new BackupError('E_BACKUP_READ', `cannot list ${dir}: ${(err as Error).message}`, { cause: err });
  }
  const present = new Set(names);
  for (const name of names) {
    if (isTempName(name) && (!options.tempPrefix || name.startsWith(options.tempPrefix))) {
      if (writerAlive(tempPid(name))) continue;
      await fsp.rm(path.join(dir, name), { force: true });
      report.removedTemp.push(name);
    }
  }
  if (options.tempOnly) return report;
  report.completedRewrites = await finishRewrites(dir, writerAlive);
  for (const name of names) {
    if (!name.endsWith('.meta.json')) continue;
    const base = name.slice(0, -'.meta.json'.length);
    if (!parseBackupName(`${base}.json`)) continue;
    let dataName = present.has(`${base}.json`) ? `${base}.json` : present.has(`${base}.json.gz`) ? `${base}.json.gz` : null;
    let manifest: BackupManifest | null = null;
    try {
      manifest = await readManifest(dir, `${base}.json`);
    } catch {
      // Damaged: removed below only when its backup is gone; beside a backup it stays as evidence.
    }
    const live = manifest?.verifiedAt === null && manifest.writer !== undefined && writerAlive(manifest.writer.pid, manifest.writer.host);
    if (live) continue;
    // Looked at again: the listing is a snapshot, and a writer may have linked the backup since.
    for (const n of dataName === null ? [`${base}.json`, `${base}.json.gz`] : []) {
      if (await fsp.lstat(path.join(dir, n)).then(() => true, () => false)) dataName = n;
    }
    if (dataName === null) {
      await fsp.rm(path.join(dir, name), { force: true });
      report.removedOrphans.push(name);
      continue;
    }
    if (!manifest || manifest.verifiedAt !== null) continue;
    const file = path.join(dir, dataName);
    const st = await fsp.lstat(file).catch(() => null);
    if (!st) continue;
    let ok = false;
    if (st.isFile() && manifest.file === dataName) {
      const d = await digestBackupFile(file, { gzip: manifest.gzip, lineFormat: true }).catch(() => null);
      ok = d !== null && d.sha256 === manifest.sha256 && d.users === manifest.users && d.bytes === manifest.bytes;
    }
    if (ok) {
      const { writer: _writer, ...rest } = manifest;
      await writeManifest(dir, { ...rest, verifiedAt: new Date().toISOString() });
      report.completed.push(dataName);
    } else if (st.isFile()) {
      await fsp.rm(file, { force: true });
      await fsp.rm(path.join(dir, manifestName(dataName)), { force: true });
      report.removedIncomplete.push(dataName);
    }
  }
  // After the pending backups above: a final backup a killed writer had linked is completed first, and
  // its parts then only need removing.
  report.parts = await finishParts(dir, writerAlive, (op) => publishedFor(dir, op), async (parts) => {
    const m = parts.manifest;
    return (await writeBackup(dir, { json: parts.entries() }, { reason: m.reason, scope: 'full', source: m.source, auditOp: m.op })).id;
  }, names);
  return report;
}
