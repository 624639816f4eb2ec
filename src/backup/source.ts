import { promises as fsp } from 'node:fs';
import { BackupError, errnoCode, isChatmemError } from '../errors.js';
import { compareIds, parseRecord, type MemoryRecord } from '../record.js';
import { parseBackupName, resolveBackupId } from './format.js';
import { findInLineBackup, isLineFormat } from '../format/line-reader.js';
import { readJsonEntries } from '../format/json-entries.js';
import { readManifest, type BackupManifest } from './manifest.js';
import { wallClockToInstant } from './timezone.js';

/** A backup file opened for reading: a chatmem backup (with manifest) or one of the seed's legacy kinds. */
export interface BackupSource {
  id: string;
  fileName: string;
  file: string;
  gzip: boolean;
  /** 'user' is the seed's per-user reset file `{user_id, backup_timestamp, record}`. */
  kind: 'full' | 'user';
  manifest: BackupManifest | null;
  /**
   * Why the backup cannot be trusted, found without reading its content: an unreadable or
   * incomplete manifest, or one that does not describe this file. Such a backup is never restored.
   */
  damage: { code: string; message: string } | null;
  size: number;
  mtime: Date;
  createdAt: Date | null;
}

/**
 * Resolves an id inside `dir` (no path traversal) and checks that the file exists and is a regular
 * file: a symlink, directory or FIFO named like a backup is refused (`E_BACKUP_NOT_REGULAR`), never
 * followed. A damaged manifest does not throw: it is reported in `damage`. The date in the name of a
 * backup without manifest (the seed's) is read in `legacyTimezone` (default UTC): the seed named its
 * backups in the server's local time.
 */
export async function openBackup(dir: string, id: string, legacyTimezone = 'UTC'): Promise<BackupSource> {
  let r = resolveBackupId(dir, id);
  let st;
  try {
    st = await fsp.lstat(r.file).catch(async (err: unknown) => {
      // A bare id also names a gzip backup.
      if (errnoCode(err) !== 'ENOENT' || /\.json(\.gz)?$/.test(id)) throw err;
      r = resolveBackupId(dir, `${id}.json.gz`);
      return fsp.lstat(r.file);
    });
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') throw new BackupError('E_BACKUP_NOT_FOUND', `no backup ${JSON.stringify(id)} in ${dir}`);
    throw new BackupError('E_BACKUP_READ', `cannot read ${r.file}: ${(err as Error).message}`, { cause: err });
  }
  if (!st.isFile()) {
    const what = st.isSymbolicLink() ? 'a symlink' : st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO' : 'not a regular file';
    throw new BackupError('E_BACKUP_NOT_REGULAR', `refusing ${r.fileName}: it is ${what}, not a regular backup file (never followed)`, {
      details: { id: r.id, file: r.file },
    });
  }
  const parsed = parseBackupName(r.fileName);
  let manifest: BackupManifest | null = null;
  let damage: BackupSource['damage'] = null;
  try {
    manifest = await readManifest(dir, r.fileName);
  } catch (err) {
    damage = { code: isChatmemError(err) ? err.code : 'E_BACKUP_MANIFEST', message: (err as Error).message };
  }
  if (manifest) {
    // Cheap checks first: a manifest of another file, or an uncompressed file of the wrong size (truncated, grown).
    const why =
      manifest.file !== r.fileName ? `its manifest describes ${JSON.stringify(manifest.file)}` :
      manifest.gzip !== r.gzip ? `its manifest says gzip ${String(manifest.gzip)}` :
      !r.gzip && st.size !== manifest.bytes ? `${st.size} bytes on disk, ${manifest.bytes} in its manifest` : null;
    if (why) {
      damage = { code: manifest.file !== r.fileName || manifest.gzip !== r.gzip ? 'E_BACKUP_MANIFEST' : 'E_BACKUP_VERIFY', message: `${r.fileName}: ${why}` };
      manifest = null;
    }
  }
  return {
    id: r.id,
    fileName: r.fileName,
    file: r.file,
    gzip: r.gzip,
    kind: parsed?.kind ?? 'full',
    manifest,
    damage,
    size: st.size,
    mtime: st.mtime,
    createdAt: manifest ? new Date(manifest.created_at) : parsed?.createdAt ? wallClockToInstant(parsed.createdAt, legacyTimezone) : null,
  };
}

function toRecord(src: BackupSource, key: string, value: unknown): MemoryRecord {
  try {
    // A backup restores whatever was stored, including records from before the limits existed.
    return parseRecord(key, value, undefined, { limits: false });
  } catch (err) {
    throw new BackupError('E_BACKUP_PARSE', `${src.fileName}: user ${JSON.stringify(key)}: ${(err as Error).message}`, { cause: err });
  }
}

/** Every record of the backup, validated, in file order, streaming. */
export async function* backupRecords(src: BackupSource): AsyncGenerator<MemoryRecord> {
  if (src.kind === 'user') {
    const fields = new Map<string, unknown>();
    for await (const e of readJsonEntries(src.file, { gzip: src.gzip })) fields.set(e.key, e.value);
    const uid = fields.get('user_id');
    if (typeof uid !== 'string' || !fields.has('record')) {
      throw new BackupError('E_BACKUP_PARSE', `${src.fileName}: a per-user backup needs "user_id" and "record"`);
    }
    yield toRecord(src, uid, fields.get('record'));
    return;
  }
  for await (const e of readJsonEntries(src.file, { gzip: src.gzip })) yield toRecord(src, e.key, e.value);
}

/**
 * Records in user id order. chatmem backups are written sorted and stream straight through
 * (the order is checked as they pass); legacy files are small and are sorted in memory.
 */
export async function* sortedBackupRecords(src: BackupSource): AsyncGenerator<MemoryRecord> {
  if (src.manifest) {
    let prev: string | null = null;
    for await (const r of backupRecords(src)) {
      if (prev !== null && compareIds(prev, r.user_id) >= 0) {
        throw new BackupError('E_BACKUP_ORDER', `${src.fileName}: users out of order at ${JSON.stringify(r.user_id)}`);
      }
      prev = r.user_id;
      yield r;
    }
    return;
  }
  const all = new Map<string, MemoryRecord>();
  for await (const r of backupRecords(src)) all.set(r.user_id, r);
  yield* [...all.values()].sort((a, b) => compareIds(a.user_id, b.user_id));
}

/**
 * One user's record from a backup, or null. Uncompressed chatmem backups are binary-searched
 * (O(log n) small reads); other files are streamed.
 */
export async function findBackupUser(src: BackupSource, userId: string): Promise<MemoryRecord | null> {
  if (src.manifest && !src.gzip && (await isLineFormat(src.file))) {
    try {
      const value = await findInLineBackup(src.file, userId);
      return value === undefined ? null : toRecord(src, userId, value);
    } catch (err) {
      if (!(isChatmemError(err) && err.code === 'E_BACKUP_FORMAT')) throw err;
    }
  }
  let found: MemoryRecord | null = null;
  for await (const r of backupRecords(src)) if (r.user_id === userId) found = r;
  return found;
}
