import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { writeFileAtomic } from '../../src/fs-util.js';
import { io } from '../../src/fsio.js';
import { writeBackup } from '../../src/backup/create.js';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { loadFixture } from '../store/conformance.js';
import { tempDir } from '../helpers/tmp.js';

// A SIGKILL test cannot tell a missing fsync from a present one (the page cache survives a killed
// process), so these tests watch the durable-write calls through the fs-util seam instead.

type Event = { call: 'syncFile' | 'rename' | 'syncDir'; path: string; content?: string; targetExists?: boolean };

function watch(target?: string): Event[] {
  const events: Event[] = [];
  const { sync: syncFile, rename, fsyncDir: syncDir } = io;
  vi.spyOn(io, 'sync').mockImplementation(async (fh, file) => {
    // What the disk gets at fsync time: the temp file must already hold all the data.
    events.push({ call: 'syncFile', path: file, content: readFileSync(file, 'utf8'), targetExists: target ? existsSync(target) : undefined });
    return syncFile(fh, file);
  });
  vi.spyOn(io, 'rename').mockImplementation(async (from, to) => {
    events.push({ call: 'rename', path: `${from} -> ${to}` });
    return rename(from, to);
  });
  vi.spyOn(io, 'fsyncDir').mockImplementation(async (dir) => {
    events.push({ call: 'syncDir', path: dir, targetExists: target ? existsSync(target) : undefined });
    return syncDir(dir);
  });
  return events;
}

describe('writeFileAtomic durability order', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ dir, cleanup } = await tempDir()));
  afterEach(async () => {
    vi.restoreAllMocks();
    await cleanup();
  });

  it('fsyncs the full temp file, then renames it over the target, then fsyncs the directory', async () => {
    const target = path.join(dir, 'memory.json');
    writeFileSync(target, 'old');
    const events = watch(target);
    await writeFileAtomic(target, 'new content');

    expect(events.map((e) => e.call)).toEqual(['syncFile', 'rename', 'syncDir']);
    const [synced, renamed, dirSynced] = events as [Event, Event, Event];
    expect(synced.content).toBe('new content');
    expect(path.dirname(synced.path)).toBe(dir);
    expect(synced.path).not.toBe(target);
    expect(renamed.path).toBe(`${synced.path} -> ${target}`);
    expect(dirSynced.path).toBe(dir);
    expect(readFileSync(target, 'utf8')).toBe('new content');
    expect(readdirSync(dir)).toEqual(['memory.json']);
  });

  it('a failed fsync leaves the old content and no temp file, and is reported', async () => {
    const target = path.join(dir, 'memory.json');
    writeFileSync(target, 'old');
    vi.spyOn(io, 'sync').mockRejectedValue(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' }));
    await expect(writeFileAtomic(target, 'new')).rejects.toMatchObject({ code: 'EIO' });
    expect(readFileSync(target, 'utf8')).toBe('old');
    expect(readdirSync(dir)).toEqual(['memory.json']);
  });
});

describe('writeBackup durability and re-read check', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => ({ dir, cleanup } = await tempDir()));
  afterEach(async () => {
    vi.restoreAllMocks();
    await cleanup();
  });

  // Backups are written in user_id order, as the store scans them.
  const records = () =>
    Object.values(loadFixture())
      .slice(0, 5)
      .sort((a, b) => (a.user_id < b.user_id ? -1 : 1));

  it('fsyncs the whole backup before it gets its final name, and the directory after', async () => {
    const backupDir = path.join(dir, 'backups');
    const events = watch();
    const result = await writeBackup(backupDir, records(), { reason: 'manual', scope: 'full', source: 'test' });
    const firstSync = events.findIndex((e) => e.call === 'syncFile');
    expect(firstSync).toBeGreaterThanOrEqual(0);
    const synced = events[firstSync]!;
    // The fsynced temp file already holds the exact bytes that end up under the final name.
    expect(synced.content).toBe(readFileSync(result.file, 'utf8'));
    expect(synced.path).not.toBe(result.file);
    const dirSync = events.findIndex((e, i) => i > firstSync && e.call === 'syncDir' && e.path === backupDir);
    expect(dirSync).toBeGreaterThan(firstSync);
  });

  it('a backup changed on disk between write and re-read fails with E_BACKUP_VERIFY and leaves nothing behind', async () => {
    const backupDir = path.join(dir, 'backups');
    corruptAfterLink(backupDir);
    await expect(writeBackup(backupDir, records(), { reason: 'manual', scope: 'full', source: 'test' })).rejects.toMatchObject({
      code: 'E_BACKUP_VERIFY',
    });
    expect(readdirSync(backupDir)).toEqual([]);
  });
});

/** Flips one byte of each backup file the first time the backup directory is fsynced after the link. */
function corruptAfterLink(backupDir: string): { corrupted: string[] } {
  const state = { corrupted: [] as string[] };
  const { fsyncDir: syncDir } = io;
  vi.spyOn(io, 'fsyncDir').mockImplementation(async (d) => {
    if (d === backupDir && state.corrupted.length === 0) {
      for (const name of readdirSync(backupDir).filter((n) => /^memory_backup_.*\.json$/.test(n) && !n.endsWith('.meta.json'))) {
        const file = path.join(backupDir, name);
        const text = readFileSync(file, 'utf8');
        // Same length, still valid JSON in order, different bytes: only the checksum can notice.
        const i = text.lastIndexOf('": "') + 4;
        writeFileSync(file, text.slice(0, i) + (text[i] === 'x' ? 'y' : 'x') + text.slice(i + 1));
        state.corrupted.push(name);
      }
    }
    return syncDir(d);
  });
  return state;
}

describe('a destructive operation whose backup does not verify', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: Store;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
    store = createStore(await SqliteDriver.open(path.join(dir, 'memory.db')));
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    await store.close();
    await cleanup();
  });

  it('fails with E_BACKUP_VERIFY and leaves the store untouched', async () => {
    const fixture = loadFixture();
    const ids = Object.keys(fixture).slice(0, 4);
    for (const id of ids) await store.put(id, fixture[id]!);
    const before = await Promise.all(ids.map((id) => store.get(id)));
    const backupDir = path.join(dir, 'backups');
    const ops = new Operations({ store, backupDir, audit: new AuditLog(path.join(dir, 'audit.log')), actor: { kind: 'os', name: 'tester' } });

    const state = corruptAfterLink(backupDir);
    await expect(ops.deleteUsers([ids[0]!, ids[1]!])).rejects.toMatchObject({ code: 'E_BACKUP_VERIFY' });
    expect(state.corrupted).toHaveLength(1);
    expect(await store.count()).toBe(4);
    expect(await Promise.all(ids.map((id) => store.get(id)))).toEqual(before);
    expect(readdirSync(backupDir).filter((n) => n.startsWith('memory_backup_'))).toEqual([]);
  });
});
