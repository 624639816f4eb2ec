import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseBackupName, resolveBackupId } from '../../src/backup/format.js';

// The promises of backup names (src/backup/format.ts) beyond test/backup/format.test.ts: only whole
// names are backups, a name's digits must be a real time, and an operator's id is refused with the
// reason it is refused for.

describe('backup names, whole and real', () => {
  it('recognises only the whole name', () => {
    for (const name of ['xmemory_backup_20250101_000000.json', 'old.memory_backup_20250101_000000.json', 'xmemory_backup_u1_20250101_000000.json', 'memory_backup_20250101_000000.json.bak', 'memory_backup_u1_20250101_000000.json.gz']) {
      expect(parseBackupName(name), name).toBeNull();
    }
    expect(parseBackupName('memory_backup_20250101_000000_3.json.gz')).toEqual({ id: 'memory_backup_20250101_000000_3', createdAt: new Date('2025-01-01T00:00:00Z'), gzip: true, kind: 'full' });
  });

  it('a time field out of range gives no date, in either kind of name', () => {
    for (const stamp of ['20251301_000000', '20250230_000000', '20250132_000000', '20250101_240000', '20250101_006000', '20250101_000060', '20251231_235960']) {
      expect(parseBackupName(`memory_backup_${stamp}.json`)?.createdAt, stamp).toBeNull();
      expect(parseBackupName(`memory_backup_u1_${stamp}.json`)?.createdAt, `user ${stamp}`).toBeNull();
    }
    expect(parseBackupName('memory_backup_20241231_235959.json')?.createdAt?.toISOString()).toBe('2024-12-31T23:59:59.000Z');
    expect(parseBackupName('memory_backup_20240229_120000.json')?.createdAt?.toISOString()).toBe('2024-02-29T12:00:00.000Z');
  });
});

describe('resolveBackupId refusals', () => {
  const dir = '/srv/backups';
  const refused = (id: string, why: string) => {
    let err: unknown;
    try {
      resolveBackupId(dir, id);
    } catch (e) {
      err = e;
    }
    expect(err, JSON.stringify(id)).toMatchObject({ code: 'E_BACKUP_ID', message: `invalid backup id ${JSON.stringify(id)}: ${why}`, details: { id } });
  };

  it('says why an id is refused', () => {
    refused('', 'empty');
    refused('memory_backup_20250101_000000\0', 'contains NUL');
    refused('a/memory_backup_20250101_000000', 'must be a name, not a path');
    refused('a\\memory_backup_20250101_000000', 'must be a name, not a path');
    refused('/memory_backup_20250101_000000', 'must be a name, not a path');
    refused('memory_backup_..20250101_000000', "contains '..'");
    refused('memory_backup_2025', 'not a backup name (expected memory_backup_YYYYMMDD_HHMMSS[_N])');
    refused('memory_backup_20250101_000000.meta.json', 'not a backup name (expected memory_backup_YYYYMMDD_HHMMSS[_N])');
  });

  it('resolves inside the directory', () => {
    expect(resolveBackupId(dir, 'memory_backup_20250101_000000')).toEqual({ id: 'memory_backup_20250101_000000', fileName: 'memory_backup_20250101_000000.json', file: path.join(dir, 'memory_backup_20250101_000000.json'), gzip: false });
    expect(resolveBackupId(dir, 'memory_backup_20250101_000000.json.gz')).toMatchObject({ fileName: 'memory_backup_20250101_000000.json.gz', gzip: true });
  });
});
