import { promises as fsp } from 'node:fs';
import { BackupError, errnoCode, isChatmemError } from '../errors.js';
import { parseRecord, type MemoryRecord } from '../record.js';
import { compareIds, findInLineBackup, isLineFormat, parseBackupName, resolveBackupId } from './format.js';
import { readJsonEntries } from './json-entries.js';
import { readManifest, type BackupManifest } from './manifest.js';

/** A backup file opened for reading: a chatmem backup (with manifest) or one of the seed's legacy kinds. */
export interface BackupSource {
  id: string;
  fileName: string;
  file: string;
  gzip: boolean;
  /** 'user' is the seed's per-user reset file `{user_id, backup_timestamp, record}`. */
  kind: 'full' | 'user';
  manifest: BackupManifest | null;
  size: number;
  mtime: Date;
  createdAt: Date | null;
}

/** Resolves an id inside `dir` (no path traversal) and checks that the file exists. */
export async function openBackup(dir: string, id: string): Promise<BackupSource> {
  let r = resolveBackupId(dir, id);
  let st;
  try {
    st = await fsp.stat(r.file).catch(async (err: unknown) => {
      // A bare id also names a gzip backup.
      if (errnoCode(err) !== 'ENOENT' || /\.json(\.gz)?$/.test(id)) throw err;
      r = resolveBackupId(dir, `${id}.json.gz`);
      return fsp.stat(r.file);
    });
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') throw new BackupError('E_BACKUP_NOT_FOUND', `no backup ${JSON.stringify(id)} in ${dir}`);
    throw new BackupError('E_BACKUP_READ', `cannot read ${r.file}: ${(err as Error).message}`, { cause: err });
  }
  const parsed = parseBackupName(r.fileName);
  const manifest = await readManifest(dir, r.fileName);
  return {
    id: r.id,
    fileName: r.fileName,
    file: r.file,
    gzip: r.gzip,
    kind: parsed?.kind ?? 'full',
    manifest,
    size: st.size,
    mtime: st.mtime,
    createdAt: manifest ? new Date(manifest.created_at) : (parsed?.createdAt ?? null),
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
