/**
 * Rewriting a backup without some users (forget): the only change ever made to an existing backup.
 *
 * A chatmem backup is rewritten as a new verified file beside it (temp, fsync, re-read and compare
 * SHA-256 and count), then an intent file records the new digest, the new file is renamed over the old
 * one (fsync dir), the manifest is replaced and the intent removed. A crash leaves the old backup with
 * its old manifest, or the new one with an intent that {@link finishRewrites} turns into its manifest:
 * never neither, never a backup whose manifest does not match it once the start-up recovery has run.
 */
import { promises as fsp } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { createHash } from 'node:crypto';
import { BackupError, errnoCode } from '../errors.js';
import { FILE_MODE, fsyncDir, tempNameFor, writeFileAtomic } from '../fs-util.js';
import { serializeSeed } from '../format/seed.js';
import { manifestName } from './format.js';
import { io } from '../fsio.js';
import { writeBackupStream } from '../format/line-writer.js';
import { digestBackupFile } from '../format/line-reader.js';
import { readJsonEntries } from '../format/json-entries.js';
import { readManifest, writeManifest, type BackupManifest } from './manifest.js';
import type { BackupSource } from './source.js';

/** What a rewrite did to one backup file. */
export type RewriteOutcome = 'untouched' | 'rewritten' | 'deleted';

/** `<base>.rewrite.json`: the digest of the content that is replacing a chatmem backup. Holds no user id. */
interface RewriteIntent {
  format: 'chatmem-rewrite';
  file: string;
  next: { sha256: string; users: number; bytes: number; scope: 'full' | string[] };
  writer: { pid: number; host: string };
}

export function intentName(backupFileName: string): string {
  return `${backupFileName.replace(/\.json(\.gz)?$/, '')}.rewrite.json`;
}

async function fsyncFile(file: string): Promise<void> {
  const fh = await io.open(file, 'r+');
  try {
    await io.sync(fh, file);
  } finally {
    await io.close(fh, file);
  }
}

async function removeBackupFiles(src: BackupSource): Promise<void> {
  // The backup first, then its manifest, as prune does: a kill in between leaves an orphan manifest,
  // which the next start removes.
  await fsp.rm(src.file, { force: true });
  await fsp.rm(path.join(path.dirname(src.file), manifestName(src.fileName)), { force: true });
  await fsyncDir(path.dirname(src.file));
}

/** Whether the backup holds one of `drop`, read key by key (values are not kept). */
export async function backupHoldsAny(src: BackupSource, drop: ReadonlySet<string>): Promise<boolean> {
  if (src.kind === 'user') {
    for await (const e of readJsonEntries(src.file, { gzip: src.gzip })) {
      if (e.key === 'user_id' && typeof e.value === 'string') return drop.has(e.value);
    }
    return false;
  }
  for await (const e of readJsonEntries(src.file, { gzip: src.gzip })) if (drop.has(e.key)) return true;
  return false;
}

/**
 * Removes the users in `drop` from a verified chatmem backup (see the module comment). A backup of a
 * list of users that would hold nobody afterwards is deleted whole (with its manifest); a full backup
 * is kept even when empty. The caller has verified `src` against its manifest.
 */
export async function rewriteChatmemBackup(src: BackupSource, drop: ReadonlySet<string>, now: () => Date = () => new Date()): Promise<RewriteOutcome> {
  const manifest = src.manifest;
  if (!manifest) throw new BackupError('E_BACKUP_MANIFEST', `${src.fileName} has no manifest`);
  if (!(await backupHoldsAny(src, drop))) return 'untouched';
  const scope = manifest.scope === 'full' ? 'full' : manifest.scope.filter((u) => !drop.has(u));
  const dir = path.dirname(src.file);
  const tmp = tempNameFor(src.file);
  const intentFile = path.join(dir, intentName(src.fileName));
  let renamed = false;
  try {
    const out = io.createWriteStream(tmp, { flags: 'wx', mode: FILE_MODE });
    out.on('error', () => undefined);
    await once(out, 'open');
    let written;
    try {
      written = await writeBackupStream(keptEntries(src, drop), out, { gzip: src.gzip });
      out.end();
      await finished(out);
    } catch (err) {
      out.destroy();
      throw err;
    }
    if (written.users === 0 && scope !== 'full') {
      await fsp.rm(tmp, { force: true });
      await removeBackupFiles(src);
      return 'deleted';
    }
    await fsyncFile(tmp);
    const check = await digestBackupFile(tmp, { gzip: src.gzip, lineFormat: true });
    if (check.sha256 !== written.sha256 || check.users !== written.users || check.bytes !== written.bytes) {
      throw new BackupError('E_BACKUP_VERIFY', `the rewrite of ${src.fileName} did not verify: wrote ${written.users} users, read back ${check.users}`);
    }
    const intent: RewriteIntent = {
      format: 'chatmem-rewrite',
      file: src.fileName,
      next: { sha256: written.sha256, users: written.users, bytes: written.bytes, scope },
      writer: { pid: process.pid, host: hostname() },
    };
    await writeFileAtomic(intentFile, JSON.stringify(intent, null, 2) + '\n');
    await io.rename(tmp, src.file);
    renamed = true;
    const next = nextManifest(manifest, intent.next, now());
    try {
      await completeRewrite(dir, next, intentFile);
    } catch {
      // The old content is gone and the new one verified: the backup must not stay beside its old
      // manifest, which no longer verifies it (the start-up recovery would finish it, but this
      // process is alive and every verification until a restart would fail). Once more; a second
      // failure leaves the intent, which the next start turns into this manifest.
      await completeRewrite(dir, next, intentFile);
    }
    return 'rewritten';
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    // Before the rename (which either happens or not) the old backup stands, and an intent naming
    // content that never landed would wait for the next start (this process is alive) to be removed.
    if (!renamed) await fsp.rm(intentFile, { force: true }).catch(() => undefined);
    throw err instanceof BackupError ? err : new BackupError('E_BACKUP_WRITE', `cannot rewrite ${src.fileName}: ${(err as Error).message}`, { cause: err });
  }
}

/** After the rename: the rename made durable, the manifest of the new content, the intent gone. */
async function completeRewrite(dir: string, next: BackupManifest, intentFile: string): Promise<void> {
  await fsyncDir(dir);
  await writeManifest(dir, next);
  await fsp.rm(intentFile, { force: true });
  await fsyncDir(dir);
}

function nextManifest(m: BackupManifest, next: RewriteIntent['next'], at: Date): BackupManifest {
  const { writer: _writer, ...rest } = m;
  return { ...rest, scope: next.scope, users: next.users, bytes: next.bytes, sha256: next.sha256, verifiedAt: at.toISOString(), rewrittenAt: at.toISOString() };
}

async function* keptEntries(src: BackupSource, drop: ReadonlySet<string>): AsyncGenerator<[string, unknown]> {
  for await (const e of readJsonEntries(src.file, { gzip: src.gzip })) if (!drop.has(e.key)) yield [e.key, e.value];
}

/**
 * Removes the users in `drop` from one of the seed's backups (no manifest). A per-user file of a dropped
 * user is deleted whole; a full copy of memory.json is rewritten pretty-printed as the seed wrote it
 * (temp, fsync, re-read: same users, none dropped, same bytes; then rename over and fsync the directory).
 */
export async function rewriteLegacyBackup(src: BackupSource, drop: ReadonlySet<string>): Promise<RewriteOutcome> {
  if (!(await backupHoldsAny(src, drop))) return 'untouched';
  const tmp = tempNameFor(src.file);
  try {
    if (src.kind === 'user') {
      await fsp.rm(src.file, { force: true });
      await fsyncDir(path.dirname(src.file));
      return 'deleted';
    }
    const kept: [string, unknown][] = [];
    for await (const e of readJsonEntries(src.file, { gzip: src.gzip })) if (!drop.has(e.key)) kept.push([e.key, e.value]);
    const text = Buffer.from(serializeSeed(kept), 'utf8');
    const sha = createHash('sha256').update(text).digest('hex');
    const fh = await io.open(tmp, 'wx', FILE_MODE);
    try {
      if (src.gzip) {
        const gz = createGzip();
        const chunks: Buffer[] = [];
        gz.on('data', (c: Buffer) => chunks.push(c));
        gz.end(text);
        await once(gz, 'end');
        await io.writeAll(fh, tmp, Buffer.concat(chunks));
      } else {
        await io.writeAll(fh, tmp, text);
      }
      await io.sync(fh, tmp);
    } finally {
      await io.close(fh, tmp);
    }
    const check = await digestBackupFile(tmp, { gzip: src.gzip });
    const keys = new Set<string>();
    for await (const e of readJsonEntries(tmp, { gzip: src.gzip })) keys.add(e.key);
    if (check.sha256 !== sha || check.users !== kept.length || [...drop].some((u) => keys.has(u))) {
      throw new BackupError('E_BACKUP_VERIFY', `the rewrite of ${src.fileName} did not verify: wrote ${kept.length} users, read back ${check.users}`);
    }
    await io.rename(tmp, src.file);
    await fsyncDir(path.dirname(src.file));
    return 'rewritten';
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err instanceof BackupError ? err : new BackupError('E_BACKUP_WRITE', `cannot rewrite ${src.fileName}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Finishes the rewrites a killed forget left in `dir`: a backup whose content is already the new one
 * gets its new manifest; otherwise the old backup (and manifest) stand and the intent goes. Intents of
 * a live writer are left alone. Returns the backups whose manifest was completed.
 */
export async function finishRewrites(dir: string, alive: (pid: number, host: string) => boolean): Promise<string[]> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw err;
  }
  const completed: string[] = [];
  for (const name of names) {
    if (!name.endsWith('.rewrite.json') || !name.startsWith('memory_backup_')) continue;
    const intentFile = path.join(dir, name);
    let intent: RewriteIntent;
    try {
      intent = JSON.parse(await fsp.readFile(intentFile, 'utf8')) as RewriteIntent;
    } catch {
      // Written atomically: an unreadable intent is not ours to interpret; the manifest decides.
      continue;
    }
    if (intent.format !== 'chatmem-rewrite' || typeof intent.file !== 'string' || intentName(intent.file) !== name) continue;
    if (alive(intent.writer.pid, intent.writer.host)) continue;
    const manifest = await readManifest(dir, intent.file).catch(() => null);
    const file = path.join(dir, intent.file);
    const d = manifest ? await digestBackupFile(file, { gzip: manifest.gzip, lineFormat: true }).catch(() => null) : null;
    if (manifest && d && d.sha256 === intent.next.sha256 && d.users === intent.next.users && d.bytes === intent.next.bytes && manifest.sha256 !== d.sha256) {
      await writeManifest(dir, nextManifest(manifest, intent.next, new Date()));
      completed.push(intent.file);
    }
    await fsp.rm(intentFile, { force: true });
    await fsyncDir(dir);
  }
  return completed;
}
