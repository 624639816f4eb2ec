import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeBackup } from '../../src/backup/create.js';
import { AuditLog, type Actor } from '../../src/ops/audit.js';
import { expireUsers, expiryCutoff, findInactive, type ExpireContext } from '../../src/ops/expire.js';
import type { ForgetResult } from '../../src/ops/forget.js';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { tempDir } from '../helpers/tmp.js';

// The promises of src/ops/expire.ts beyond test/ops/expire.test.ts, on a real SQLite store, real
// backups and a real audit log: only users idle since before the cutoff go (strictly before), all of
// them however many pages the listing takes, a dry run or an empty set changes nothing and writes no
// audit entry, and a failed backup deletes nobody and is audited as failed.

const ACTOR: Actor = { kind: 'os', name: 'tester' };
const NOW = new Date('2026-11-30T12:00:00.000Z');
const CUTOFF = '2026-06-03T12:00:00.000Z'; // 180 days before NOW

let dir: string;
let cleanup: () => Promise<void>;
let store: Store;
let audit: AuditLog;
let backupDir: string;
let forgotten: string[][];

const at = (id: string, updated: string): MemoryRecord => ({ ...newRecord(id, '2025-01-01T00:00:00.000Z'), updated_at: updated });

function context(extra: Partial<ExpireContext> = {}): ExpireContext {
  return {
    store,
    backupDir,
    audit,
    actor: ACTOR,
    // The forget the daemon passes removes the users everywhere; the store part is what this file checks.
    forget: async (ids: string[], actor: Actor): Promise<ForgetResult> => {
      forgotten.push(ids);
      const deleted = await store.exclusive({ ids }, (x) => x.delete(ids));
      const op = await audit.append({ actor, action: 'forget', outcome: 'done', details: { count: ids.length } });
      return { deleted, hashes: {}, backupsRewritten: [], filesDeleted: [], logsRedacted: [], auditEntriesRedacted: 0, auditOp: op.op };
    },
    ...extra,
  };
}

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir());
  store = createStore(await SqliteDriver.open(path.join(dir, 'memory.db')));
  audit = new AuditLog(path.join(dir, 'audit.log'));
  backupDir = path.join(dir, 'backups');
  forgotten = [];
  await store.exclusive('all', (x) =>
    x.putMany([at('b-old', '2026-01-10T00:00:00.000Z'), at('a-old', '2026-06-03T11:59:59.999Z'), at('edge', CUTOFF), at('recent', '2026-11-29T00:00:00.000Z')]),
  );
});
afterEach(async () => {
  await store.close();
  await cleanup();
});

const backupFiles = async () => (await fsp.readdir(backupDir).catch(() => [] as string[])).filter((f) => f.endsWith('.json'));

describe('expireUsers', () => {
  it('the cutoff is the duration before now; a user updated at the cutoff stays', async () => {
    expect(expiryCutoff('180d', NOW).toISOString()).toBe(CUTOFF);
    expect((await findInactive(store, new Date(CUTOFF))).map((u) => u.user_id).sort()).toEqual(['a-old', 'b-old']);
    expect(await findInactive(store, new Date(CUTOFF))).toContainEqual({ user_id: 'a-old', updated_at: '2026-06-03T11:59:59.999Z' });
  });

  it('an invalid duration is refused naming the setting, before anything is read', async () => {
    await expect(expireUsers(context(), { inactiveAfter: '6 months' }, { now: NOW })).rejects.toMatchObject({
      code: 'E_OPS_ARG',
      message: expect.stringContaining('users.inactiveAfter'),
    });
    expect(await audit.read()).toEqual([]);
    expect(await store.count()).toBe(4);
  });

  it('finds the inactive users on every page of the listing', async () => {
    const many = Array.from({ length: 2100 }, (_, i) => at(`p${String(i).padStart(5, '0')}`, i % 3 === 0 ? '2026-01-01T00:00:00.000Z' : '2026-11-01T00:00:00.000Z'));
    await store.exclusive('all', (x) => x.putMany(many));
    const found = await findInactive(store, new Date(CUTOFF));
    expect(found).toHaveLength(700 + 2);
    expect(found.filter((u) => u.user_id === 'p02097')).toHaveLength(1);
  });

  it('a dry run changes nothing, writes no audit entry and says it was a dry run', async () => {
    const r = await expireUsers(context(), { inactiveAfter: '180d' }, { now: NOW, dryRun: true });
    expect(r).toStrictEqual({
      mode: 'delete', cutoff: CUTOFF, dryRun: true, expired: 0, backup: null,
      users: [{ user_id: 'a-old', updated_at: '2026-06-03T11:59:59.999Z' }, { user_id: 'b-old', updated_at: '2026-01-10T00:00:00.000Z' }],
    });
    expect(await store.count()).toBe(4);
    expect(await audit.read()).toEqual([]);
    expect(await backupFiles()).toEqual([]);
  });

  it('nobody inactive: no backup, no audit entry, not a dry run', async () => {
    const r = await expireUsers(context(), { inactiveAfter: '800d' }, { now: NOW });
    expect(r).toStrictEqual({ mode: 'delete', cutoff: '2024-09-21T12:00:00.000Z', users: [], dryRun: false, expired: 0, backup: null });
    expect(await audit.read()).toEqual([]);
    expect(await backupFiles()).toEqual([]);
  });

  it('delete mode: a backup of the users in id order, audited with the caller\'s actor, the others kept', async () => {
    const admin: Actor = { kind: 'api', name: 'ops-token' };
    const r = await expireUsers(context(), { inactiveAfter: '180d' }, { now: NOW, actor: admin });
    expect(r.expired).toBe(2);
    expect(r.dryRun).toBe(false);
    expect(r.mode).toBe('delete');
    expect(await store.get('a-old')).toBeNull();
    expect(await store.get('b-old')).toBeNull();
    expect((await store.list({ cursor: null, limit: 10 })).items.map((u) => u.user_id)).toEqual(['edge', 'recent']);
    expect(await backupFiles()).toContain(`${r.backup}.json`);
    expect(Object.keys(JSON.parse(await fsp.readFile(path.join(backupDir, `${r.backup}.json`), 'utf8')) as object)).toEqual(['a-old', 'b-old']);
    const entries = await audit.read();
    expect(entries.map((e) => [e.action, e.outcome, e.actor.name, e.op])).toEqual([
      ['expire', 'started', 'ops-token', r.auditOp],
      ['expire', 'done', 'ops-token', r.auditOp],
    ]);
    expect(entries[0]?.details).toEqual({ inactiveAfter: '180d', cutoff: CUTOFF });
    expect(entries[1]).toMatchObject({ backup: r.backup, userIds: ['a-old', 'b-old'], details: { deleted: 2 } });
  });

  it('uses the backup writer it is given, with the delete reason, scope, source and audit op', async () => {
    const seen: unknown[] = [];
    const r = await expireUsers(
      context({
        writeBackup: async (records, options) => {
          seen.push({ ids: records.map((x) => x.user_id), options });
          return writeBackup(backupDir, records, options);
        },
      }),
      { inactiveAfter: '180d', mode: 'delete' },
      { now: NOW },
    );
    expect(seen).toEqual([{ ids: ['a-old', 'b-old'], options: { reason: 'delete-user', scope: ['a-old', 'b-old'], source: store.url, auditOp: r.auditOp } }]);
    expect(r.expired).toBe(2);
  });

  it('a failed backup deletes nobody, is audited as failed, and the error comes out', async () => {
    const boom = new Error('disk full');
    await expect(
      expireUsers(context({ writeBackup: async () => { throw boom; } }), { inactiveAfter: '180d' }, { now: NOW }),
    ).rejects.toBe(boom);
    expect(await store.count()).toBe(4);
    const entries = await audit.read();
    expect(entries.map((e) => e.outcome)).toEqual(['started', 'failed']);
    expect(entries[1]?.error?.message).toBe('disk full');
  });

  it('forget mode forgets those still inactive, with the caller\'s actor, and takes no backup', async () => {
    const admin: Actor = { kind: 'api', name: 'ops-token' };
    const r = await expireUsers(context(), { inactiveAfter: '180d', mode: 'forget' }, { now: NOW, actor: admin });
    expect(forgotten).toEqual([['a-old', 'b-old']]);
    expect(r).toMatchObject({ mode: 'forget', dryRun: false, expired: 2, backup: null });
    expect(r.auditOp).toBe(r.forget?.auditOp);
    expect(r.auditOp).toEqual(expect.any(String));
    expect((await audit.read()).map((e) => [e.action, e.actor.name])).toEqual([['forget', 'ops-token']]);
    expect(await backupFiles()).toEqual([]);
    expect(await store.count()).toBe(2);
  });

  // A write racing the expiry: started right after the call, it lands after the listing and before the
  // re-read. Each test checks that the listing did see the user inactive (the race happened), or fails.
  it('delete mode: a user who wrote after the listing is kept; the others go', async () => {
    const run = expireUsers(context(), { inactiveAfter: '180d' }, { now: NOW });
    const wrote = store.patch('a-old', { name: 'back again' });
    const [r] = await Promise.all([run, wrote]);
    expect(r.users.map((u) => u.user_id)).toEqual(['a-old', 'b-old']);
    expect(r.expired).toBe(1);
    expect((await store.get('a-old'))?.name).toBe('back again');
    expect(await store.get('b-old')).toBeNull();
    expect(Object.keys(JSON.parse(await fsp.readFile(path.join(backupDir, `${r.backup}.json`), 'utf8')) as object)).toEqual(['b-old']);
  });

  it('delete mode: everyone active again by the section: nothing deleted, no backup, audited done', async () => {
    const run = expireUsers(context(), { inactiveAfter: '180d' }, { now: NOW });
    const wrote = Promise.all([store.patch('a-old', { name: 'a' }), store.patch('b-old', { name: 'b' })]);
    const [r] = await Promise.all([run, wrote]);
    expect(r.users.map((u) => u.user_id)).toEqual(['a-old', 'b-old']);
    expect(r).toMatchObject({ expired: 0, backup: null, dryRun: false });
    expect(await store.count()).toBe(4);
    expect(await backupFiles()).toEqual([]);
    const entries = await audit.read();
    expect(entries.map((e) => e.outcome)).toEqual(['started', 'done']);
    expect(entries[1]).not.toHaveProperty('backup');
    expect(entries[1]?.details).toEqual({ deleted: 0 });
  });
});
