import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { ExpireScheduler } from '../../src/server/scheduler.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import type { MemoryRecord } from '../../src/record.js';
import { tempDir } from '../helpers/tmp.js';
import { loadFixture } from '../store/conformance.js';

const ACTOR = { kind: 'os' as const, name: 'tester' };
const NOW = new Date('2026-11-30T12:00:00Z');
const silent = { info: () => undefined, warn: () => undefined, error: () => undefined };

describe('expiring inactive users', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: Store;
  let ops: Operations;
  let backupDir: string;

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
    store = createStore(await SqliteDriver.open(path.join(dir, 'memory.db')));
    backupDir = path.join(dir, 'backups');
    ops = new Operations({ store, backupDir, audit: new AuditLog(path.join(dir, 'audit.log')), actor: ACTOR, dataDir: dir });
    const base = loadFixture()['628161973069']!;
    const at = (id: string, updated: string): MemoryRecord => ({ ...base, user_id: id, name: id, created_at: '2025-01-01T00:00:00Z', updated_at: updated });
    // 180 days before NOW is 2026-06-03T12:00:00Z: one user either side of it, by a second.
    await store.exclusive('all', (ctx) =>
      ctx.putMany([at('old-1', '2026-01-10T00:00:00Z'), at('old-2', '2026-06-03T11:59:59Z'), at('edge', '2026-06-03T12:00:00Z'), at('recent', '2026-11-29T00:00:00Z')]),
    );
  });

  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  it('a dry run lists who would go and changes nothing', async () => {
    const r = await ops.expire({ inactiveAfter: '180d' }, { now: NOW, dryRun: true });
    expect(r.cutoff).toBe('2026-06-03T12:00:00.000Z');
    expect(r.users.map((u) => u.user_id)).toEqual(['old-1', 'old-2']);
    expect(r.expired).toBe(0);
    expect(await store.count()).toBe(4);
    expect(await ops.listBackups()).toEqual([]);
  });

  it('deletes the inactive users through a verified backup of them, audited', async () => {
    const r = await ops.expire({ inactiveAfter: '180d' }, { now: NOW });
    expect(r.expired).toBe(2);
    expect(await store.get('old-1')).toBeNull();
    expect(await store.get('edge')).not.toBeNull();
    expect(await store.get('recent')).not.toBeNull();
    const [b] = await ops.listBackups();
    expect(b).toMatchObject({ id: r.backup, scope: ['old-1', 'old-2'], users: 2, state: 'verified' });
    expect(Object.keys(JSON.parse(readFileSync(b!.file, 'utf8')) as object)).toEqual(['old-1', 'old-2']);
    const audit = await ops.readAudit({ action: 'expire' });
    expect(audit.map((e) => e.outcome)).toEqual(['started', 'done']);
    expect(audit[1]).toMatchObject({ backup: r.backup, userIds: ['old-1', 'old-2'] });
    // A later clock makes the next user inactive.
    const later = await ops.expire({ inactiveAfter: '180d' }, { now: new Date('2026-11-30T12:00:01Z') });
    expect(later.users.map((u) => u.user_id)).toEqual(['edge']);
  });

  it('in forget mode leaves no backup of them', async () => {
    await ops.createBackup();
    const r = await ops.expire({ inactiveAfter: '180d', mode: 'forget' }, { now: NOW });
    expect(r.expired).toBe(2);
    expect(r.forget?.backupsRewritten).toHaveLength(1);
    const backups = await ops.listBackups();
    expect(backups).toHaveLength(1);
    const text = readFileSync(backups[0]!.file, 'utf8');
    expect(text).not.toContain('old-1');
    expect(text).toContain('recent');
  });

  it('runs from the daemon scheduler only when this daemon leads', async () => {
    let leader = false;
    const s = new ExpireScheduler({ ops, policy: { inactiveAfter: '180d' }, log: silent, tryLeader: async () => leader, now: () => NOW.getTime() });
    expect(await s.runOnce()).toEqual({ skipped: 'not-leader' });
    expect(await store.count()).toBe(4);
    leader = true;
    const run = await s.runOnce();
    expect(run.expired).toBe(2);
    expect(await store.count()).toBe(2);
    await s.stop();
  });

  it('refuses an invalid duration', async () => {
    await expect(ops.expire({ inactiveAfter: '180 days' }, { now: NOW })).rejects.toMatchObject({ code: 'E_OPS_ARG' });
    expect(() => new ExpireScheduler({ ops, policy: { inactiveAfter: '6 months' }, log: silent })).toThrow();
  });
});
