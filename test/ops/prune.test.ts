import { copyFileSync, existsSync, mkdirSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { FIXTURES, tempDir } from '../helpers/tmp.js';
import { loadFixture } from '../store/conformance.js';

const ACTOR = { kind: 'os' as const, name: 'tester' };

describe('prune plans full and per-user backups apart', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: Store;
  let ops: Operations;
  let backupDir: string;

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
    store = createStore(await SqliteDriver.open(path.join(dir, 'memory.db')));
    backupDir = path.join(dir, 'backups');
    ops = new Operations({ store, backupDir, audit: new AuditLog(path.join(dir, 'audit.log')), actor: ACTOR });
    const fixture = loadFixture();
    for (const [id, r] of Object.entries(fixture)) await store.put(id, r);
  });
  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  it('after a clear, a restore of one user and two deletes, keep-last 2 keeps the clear\'s full backup', async () => {
    // The seed's legacy files: two full memory.json copies and one per-user file, all of 2025-11-25.
    mkdirSync(backupDir, { recursive: true, mode: 0o700 });
    for (const f of readdirSync(path.join(FIXTURES, 'backups'))) copyFileSync(path.join(FIXTURES, 'backups', f), path.join(backupDir, f));
    const users = await store.count();
    const older = await ops.createBackup();
    const clear = await ops.clearAll();
    const [u1, u2] = Object.keys(loadFixture()) as [string, string];
    const restored = await ops.restore(clear.backup, { users: [u1, u2] });
    // The users it brings back were all gone: nothing to back up, so no empty backup poses as the latest.
    expect(restored.backup).toBeNull();
    const del1 = await ops.deleteUsers([u1]);
    const del2 = await ops.deleteUsers([u2]);

    const before = await ops.listBackups();
    expect(before.find((b) => b.id === clear.backup)?.users).toBe(users);
    const plan = await ops.prune({ last: 2 }, { dryRun: true });
    expect(plan.keep.map((k) => [k.id, k.group, ...k.reasons])).toEqual([
      [del2.backup, 'user', 'last backup'],
      [del1.backup, 'user', 'last backup'],
      [clear.backup, 'full', 'last backup'],
      [older.id, 'full', 'last backup'],
    ]);
    expect(plan.remove).toEqual([
      { id: 'memory_backup_20251125_145714', group: 'full' },
      { id: 'memory_backup_628161973069_20251125_140002', group: 'user' },
      { id: 'memory_backup_20251125_132811', group: 'full' },
    ]);

    const daily = await ops.prune({ daily: 7 }, { dryRun: true });
    const kept = new Map(daily.keep.map((k) => [k.id, k]));
    expect(kept.get(clear.backup)).toEqual({ id: clear.backup, group: 'full', reasons: ['daily backup'] });
    expect(kept.get(del2.backup)?.reasons).toEqual(['daily backup']);
    // 2025-11-25 is a day of its own in both groups.
    expect(kept.get('memory_backup_20251125_145714')?.reasons).toEqual(['daily backup']);
    expect(kept.get('memory_backup_628161973069_20251125_140002')).toEqual({ id: 'memory_backup_628161973069_20251125_140002', group: 'user', reasons: ['daily backup'] });

    const r = await ops.prune({ last: 2 });
    expect(r.removed.sort()).toEqual(plan.remove.map((x) => x.id).sort());
    expect(existsSync(path.join(backupDir, `${clear.backup}.json`))).toBe(true);
    expect(existsSync(path.join(backupDir, `${clear.backup}.meta.json`))).toBe(true);
    expect(existsSync(path.join(backupDir, `${restored.backup}.meta.json`))).toBe(false);
    // Planning again under the same policy removes nothing.
    expect((await ops.prune({ last: 2 }, { dryRun: true })).remove).toEqual([]);
  });
});
