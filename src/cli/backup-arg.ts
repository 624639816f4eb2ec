import { realpathSync } from 'node:fs';
import * as path from 'node:path';
import { BackupError } from '../errors.js';

function real(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/**
 * A backup as the operator typed it: an id (`memory_backup_20251125_132811`, with or without
 * `.json`) is passed on as is; a path, as shell completion produces it
 * (`data/storage/backups/memory_backup_20251125_132811.json`, relative to `cwd` or absolute), becomes
 * its file name when the file lies directly in `backupDir` (symlinks resolved). The id itself is
 * checked later, by the backup engine.
 *
 * @throws BackupError `E_BACKUP_ID` for a path outside the backup directory.
 */
export function backupIdFromArg(raw: string, backupDir: string, cwd: string): string {
  if (!raw.includes('/') && !raw.includes('\\') && !path.isAbsolute(raw)) return raw;
  const abs = path.resolve(cwd, raw);
  const dir = path.resolve(backupDir);
  const name = path.basename(abs);
  const inside = path.dirname(abs) === dir || real(path.dirname(abs)) === real(dir);
  if (!inside || name === '' || name === '.' || name === '..') {
    throw new BackupError(
      'E_BACKUP_ID',
      `invalid backup id ${JSON.stringify(raw)}: ${abs} is not in the backup directory ${dir}; name a backup by its id (see \`chatmem backups\`) or by its path inside that directory`,
      { details: { id: raw, backupDir: dir } },
    );
  }
  return name;
}
