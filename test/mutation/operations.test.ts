import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeBackup } from '../../src/backup/create.js';
import type { BackupInfo } from '../../src/backup/catalog.js';
import { StoreError } from '../../src/errors.js';
import { setFsIo, resetFsIo } from '../../src/fsio.js';
import { AuditLog, type Actor } from '../../src/ops/audit.js';
import { dropsMemory, Operations, type OffsiteHooks, type OpsPoint } from '../../src/ops/operations.js';
import { newRecord, parseRecord, type MemoryRecord } from '../../src/record.js';
import { JsonFileDriver } from '../../src/store/json-file.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { FIXTURES, tempDir } from '../helpers/tmp.js';

// The promises of src/ops/operations.ts, on a real SQLite store (a JSON file store where the broken-store
// restore needs one), real backups and a real audit log; fast enough to run against each mutant. The
// suites in test/ops/ run the same operations on every backend; this file checks what they leave open:
// each refusal and its message, each audit entry, the hooks' order, what each backup holds and its
// manifest says, off-site hand-offs, and start-up recovery's verdicts.

const ACTOR: Actor = { kind: 'os', name: 'ops-mutation' };
const OTHER: Actor = { kind: 'api', name: 'someone-else' };

const rec = (id: string, extra: Record<string, unknown> = {}): MemoryRecord =>
  parseRecord(id, { name: `N ${id}`, history: [{ role: 'user', text: `hi from ${id}`, ts: '2025-11-20T01:02:07Z' }], flags: { seen: true }, ...extra });

let dir: string;
let cleanup: () => Promise<void>;
let store: Store;
let backupDir: string;
let auditFile: string;
let ops: Operations;
let points: string[];
let verified: [string, string][];

/** An in-memory off-site copy: a real directory standing in for the bucket. */
interface FakeOffsite extends OffsiteHooks {
  warnings: string[];
  removed: string[];
  remote: BackupInfo[];
  failList: boolean;
  failRemove: boolean;
  fetched: string[];
}

function fakeOffsite(remoteDir: string): FakeOffsite {
  const o: FakeOffsite = {
    warnings: [],
    removed: [],
    remote: [],
    failList: false,
    failRemove: false,
    fetched: [],
    backupVerified: (name, createdAt) => void verified.push([name, createdAt]),
    list: async () => {
      if (o.failList) throw new Error('bucket unreachable');
      return o.remote;
    },
    fetch: async (id, into) => {
      o.fetched.push(id);
      const names = existsSync(remoteDir) ? readdirSync(remoteDir).filter((n) => n.startsWith(`${id}.`)) : [];
      for (const n of names) copyFileSync(path.join(remoteDir, n), path.join(into, n));
      return names.length > 0;
    },
    remove: async (name) => {
      if (o.failRemove) throw new StoreError('E_STORE_WRITE', 'bucket says no');
      o.removed.push(name);
    },
    warn: (m) => void o.warnings.push(m),
  };
  return o;
}

function makeOps(extra: Partial<ConstructorParameters<typeof Operations>[0]> = {}): Operations {
  return new Operations({
    store,
    backupDir,
    audit: new AuditLog(auditFile),
    actor: ACTOR,
    hooks: { at: async (point: OpsPoint, action: string) => void points.push(`${action}:${point}`) },
    ...extra,
  });
}

const readJson = (file: string): Record<string, unknown> => JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
const manifestOf = (file: string) => readJson(file.replace(/\.json(\.gz)?$/, '.meta.json'));
const auditLines = () => (existsSync(auditFile) ? readFileSync(auditFile, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) : []);
const backupFiles = () => (existsSync(backupDir) ? readdirSync(backupDir).filter((n) => /^memory_backup_.*\.json(\.gz)?$/.test(n) && !n.endsWith('.meta.json')).sort() : []);

async function seed(ids: string[]): Promise<void> {
  await store.exclusive('all', (ctx) => ctx.putMany(ids.map((id) => rec(id))));
}

async function getMany(ids: string[]): Promise<MemoryRecord[]> {
  return (await Promise.all(ids.map((id) => store.get(id)))).filter((r): r is MemoryRecord => r !== null);
}

async function dump(s: Store = store): Promise<Record<string, MemoryRecord>> {
  const out: Record<string, MemoryRecord> = {};
  for await (const r of s.scan()) out[r.user_id] = r;
  return out;
}

beforeEach(async () => {
  ({ dir, cleanup } = await tempDir('chatmem-ops-mut-'));
  store = createStore(await SqliteDriver.open(path.join(dir, 'memory.db')));
  backupDir = path.join(dir, 'backups');
  auditFile = path.join(dir, 'audit.log');
  points = [];
  verified = [];
  ops = makeOps();
});
afterEach(async () => {
  resetFsIo();
  await store.close();
  await cleanup();
});

describe('deleteUsers', () => {
  it('refuses no ids and unknown ids, naming each, before writing anything', async () => {
    await seed(['a', 'b']);
    await expect(ops.deleteUsers([])).rejects.toMatchObject({ code: 'E_OPS_ARG', message: 'no user ids given' });
    await expect(ops.deleteUsers(['a', 'x'])).rejects.toMatchObject({ code: 'E_UNKNOWN_USER', message: 'unknown user: "x"', details: { missing: ['x'] } });
    await expect(ops.deleteUsers(['y', 'a', 'x'])).rejects.toMatchObject({ code: 'E_UNKNOWN_USER', message: 'unknown users: "y", "x"', details: { missing: ['y', 'x'] } });
    expect(existsSync(backupDir)).toBe(false);
    expect(existsSync(auditFile)).toBe(false);
    expect(Object.keys(await dump())).toEqual(['a', 'b']);
  });

  it('backs up exactly the users (each once), in order, deletes them, and audits each step', async () => {
    await seed(['a', 'b', 'c']);
    const progress: [number, number | null][] = [];
    const r = await ops.deleteUsers(['c', 'a', 'c'], { actor: OTHER, onProgress: (d, t) => void progress.push([d, t]) });
    expect(r).toMatchObject({ deleted: 2, userIds: ['c', 'a'], backup: path.basename(r.backupFile, '.json') });
    expect(Object.keys(readJson(r.backupFile))).toEqual(['a', 'c']);
    expect(manifestOf(r.backupFile)).toMatchObject({ reason: 'delete-user', scope: ['c', 'a'], users: 2, auditOp: r.auditOp, gzip: false, source: store.url });
    expect(Object.keys(await dump())).toEqual(['b']);
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.every(([, t]) => t === null)).toBe(true);
    expect(progress.at(-1)?.[0]).toBe(2);
    expect(points).toEqual(['delete-users:intent-written', 'delete-users:section-entered', 'delete-users:backup-verified', 'delete-users:changed', 'delete-users:outcome-written']);
    const lines = auditLines();
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ action: 'delete-users', outcome: 'started', actor: OTHER, userIds: ['c', 'a'] });
    expect(lines[1]).toMatchObject({ op: r.auditOp, outcome: 'done', backup: r.backup, details: { deleted: 2 } });
  });

  it('takes the default actor and, with fullBackup, backs up the whole store', async () => {
    await seed(['a', 'b', 'c']);
    const r = await ops.deleteUsers(['b'], { fullBackup: true });
    expect(Object.keys(readJson(r.backupFile))).toEqual(['a', 'b', 'c']);
    expect(manifestOf(r.backupFile)).toMatchObject({ scope: 'full', users: 3, reason: 'delete-user' });
    expect(auditLines()[0]).toMatchObject({ actor: ACTOR });
  });

  it('re-checks inside the section: a user deleted meanwhile fails the delete, audited as failed', async () => {
    await seed(['a', 'b']);
    const racing = makeOps({
      hooks: {
        at: async (point) => {
          if (point === 'intent-written') await store.exclusive({ ids: ['b'] }, (ctx) => ctx.delete(['b']));
        },
      },
    });
    await expect(racing.deleteUsers(['a', 'b'])).rejects.toMatchObject({ code: 'E_UNKNOWN_USER', message: 'unknown user: "b"' });
    expect(await store.get('a')).not.toBeNull();
    expect(backupFiles()).toEqual([]);
    expect(auditLines().map((l) => l.outcome)).toEqual(['started', 'failed']);
    expect(auditLines()[1]).toMatchObject({ error: { code: 'E_UNKNOWN_USER' } });
  });

  it('hands each verified backup to off-site with its file name and manifest time', async () => {
    await seed(['a', 'b']);
    const o = makeOps({ offsite: fakeOffsite(path.join(dir, 'remote')) });
    const r = await o.deleteUsers(['a']);
    expect(verified).toEqual([[path.basename(r.backupFile), manifestOf(r.backupFile).created_at]]);
  });

  it('a backup that cannot be written deletes nobody and is audited as failed with its code', async () => {
    await seed(['a']);
    setFsIo({ rename: async () => Promise.reject(Object.assign(new Error('EIO: injected'), { code: 'EIO' })), link: async () => Promise.reject(Object.assign(new Error('EIO: injected'), { code: 'EIO' })) });
    await expect(ops.deleteUsers(['a'])).rejects.toMatchObject({ code: expect.stringMatching(/^E_/) });
    resetFsIo();
    expect(await store.get('a')).not.toBeNull();
    const lines = auditLines();
    expect(lines.map((l) => l.outcome)).toEqual(['started', 'failed']);
    expect(points).not.toContain('delete-users:changed');
  });

  it('a change that committed but whose audit outcome cannot be written answers success with a warning', async () => {
    await seed(['a', 'b']);
    const o = makeOps({
      hooks: {
        at: async (point) => {
          if (point === 'changed') setFsIo({ open: async (file) => Promise.reject(Object.assign(new Error(`EIO: injected on ${file}`), { code: 'EIO' })) });
        },
      },
    });
    const r = await o.deleteUsers(['a']);
    resetFsIo();
    expect(r.deleted).toBe(1);
    expect(r.auditOp).toMatch(/[0-9a-f-]{36}/);
    expect(r.warnings).toEqual([{ code: 'E_AUDIT_WRITE', message: expect.stringMatching(/^delete-users completed, but its audit entry could not be written \(.+\); it is completed at the next start$/) }]);
    expect(await store.get('a')).toBeNull();
    // Recovery at the next start closes it as done: its backup exists and the user is gone.
    const rec2 = await makeOps().recover();
    expect(rec2.interrupted).toHaveLength(1);
    expect(rec2.interrupted[0]).toMatchObject({ backup: r.backup, applied: true });
    expect(auditLines().at(-1)).toMatchObject({ outcome: 'done', backup: r.backup, details: { backupExists: true, applied: true, recovered: true } });
  });
});

describe('clearAll (two-phase on SQLite)', () => {
  it('backs up everything written up to the section, including writes after the snapshot, then clears', async () => {
    await seed(['a', 'b', 'c']);
    const o = makeOps({
      hooks: {
        at: async (point, action) => {
          points.push(`${action}:${point}`);
          if (point === 'snapshot-copied') {
            await store.appendHistory('b', { role: 'user', text: 'after the snapshot' });
            await store.put('d', { name: 'D' });
            await store.exclusive({ ids: ['c'] }, (ctx) => ctx.delete(['c']));
          }
        },
      },
    });
    const r = await o.clearAll({ actor: OTHER });
    expect(r).toMatchObject({ deleted: 3, userIds: [] });
    expect(r.backupFile).toBe(path.join(backupDir, `${r.backup}.json`));
    const b = readJson(r.backupFile) as Record<string, MemoryRecord>;
    expect(Object.keys(b)).toEqual(['a', 'b', 'd']);
    expect(b.b?.history.map((h) => h.text)).toEqual(['hi from b', 'after the snapshot']);
    expect(manifestOf(r.backupFile)).toMatchObject({ reason: 'clear-all', scope: 'full', users: 3, auditOp: r.auditOp });
    expect(await store.count()).toBe(0);
    expect(points).toEqual(['clear-all:intent-written', 'clear-all:snapshot-copied', 'clear-all:section-entered', 'clear-all:backup-verified', 'clear-all:changed', 'clear-all:backup-published', 'clear-all:outcome-written']);
    // Only the final backup is left: the parts are gone.
    expect(readdirSync(backupDir).sort()).toEqual([`${r.backup}.json`, `${r.backup}.meta.json`]);
    expect(auditLines().at(-1)).toMatchObject({ action: 'clear-all', outcome: 'done', backup: r.backup, details: { deleted: 3 } });
    expect(auditLines()[0]).toMatchObject({ actor: OTHER });
    expect(verified.length).toBe(0);
  });

  it('an empty store still gets its (empty) backup', async () => {
    const r = await ops.clearAll();
    expect(r.deleted).toBe(0);
    expect(r.backup).not.toBe('');
    expect(readJson(r.backupFile)).toEqual({});
  });

  it('many users changed after the snapshot are copied in rounds and all reach the backup', async () => {
    await seed(['a']);
    const ids = Array.from({ length: 700 }, (_, i) => `u${String(i).padStart(4, '0')}`);
    let writes: Promise<unknown> = Promise.resolve();
    const o = makeOps({
      hooks: {
        at: async (point) => {
          // Started with the operation: they land while the snapshot and the rounds are copied.
          if (point === 'intent-written') writes = Promise.all(ids.map((id) => store.put(id, { name: id })));
        },
      },
    });
    const r = await o.clearAll();
    await writes;
    const b = readJson(r.backupFile);
    const inStore = Object.keys(await dump());
    // Every acknowledged write is in the backup or still in the store after the clear.
    for (const id of ids) expect(id in b || inStore.includes(id), id).toBe(true);
    expect(r.deleted).toBe(Object.keys(b).length);
  });

  it('a final backup that cannot be published leaves the change committed, its parts kept, and the intent open', async () => {
    await seed(['a', 'b']);
    let links = 0;
    const o = makeOps({
      hooks: {
        at: async (point) => {
          if (point === 'changed') {
            setFsIo({
              link: async (from, to) => {
                if (path.basename(to).startsWith('memory_backup_')) {
                  links++;
                  throw Object.assign(new Error('EIO: injected'), { code: 'EIO' });
                }
                const { promises } = await import('node:fs');
                return promises.link(from, to);
              },
            });
          }
        },
      },
    });
    const err = await o.clearAll().then(() => null, (e: unknown) => e as { code: string; message: string; details: Record<string, unknown> });
    resetFsIo();
    expect(links).toBe(2);
    expect(err?.code).toBe('E_BACKUP_WRITE');
    expect(err?.message).toMatch(/^the change committed, but its backup could not be finished \(.*\); its verified parts are kept in .+ and the backup is finished at the next start$/);
    expect(err?.details).toMatchObject({ committed: true, auditOp: expect.any(String) });
    expect(await store.count()).toBe(0);
    expect(auditLines().map((l) => l.outcome)).toEqual(['started']);
    // The parts stay for the next start to finish (test/reliability/two-phase-kill.test.ts does that in another process).
    const op = String(err?.details.auditOp);
    expect(readdirSync(backupDir).filter((n) => n.includes(op)).length).toBeGreaterThan(1);
    expect(backupFiles()).toEqual([]);
  });
});

describe('restore', () => {
  it('refuses a bad mode, a legacy file unconfirmed, and users not in the backup', async () => {
    await seed(['a']);
    const b = await ops.createBackup();
    await expect(ops.restore(b.id, { mode: 'swap' as 'merge' })).rejects.toMatchObject({ code: 'E_OPS_ARG', message: 'restore mode must be replace or merge, got swap' });
    await expect(ops.restore(b.id, { users: ['a', 'zz', 'yy'] })).rejects.toMatchObject({ code: 'E_UNKNOWN_USER', message: `not in backup ${b.id}: "zz", "yy"`, details: { missing: ['zz', 'yy'] } });
    mkdirSync(backupDir, { recursive: true });
    copyFileSync(path.join(FIXTURES, 'backups', 'memory_backup_20251125_145714.json'), path.join(backupDir, 'memory_backup_20251125_145714.json'));
    await expect(ops.restore('memory_backup_20251125_145714')).rejects.toMatchObject({
      code: 'E_BACKUP_UNVERIFIED',
      details: { id: 'memory_backup_20251125_145714' },
      message: expect.stringContaining('memory_backup_20251125_145714 is an unverified legacy backup'),
    });
    // A dry run writes nothing, so it may show what the legacy file holds.
    const dry = await ops.restore('memory_backup_20251125_145714', { dryRun: true });
    expect(dry).toMatchObject({ dryRun: true, written: 0, removed: 0 });
    expect(dry.diff.added).toHaveLength(5);
    expect(auditLines().filter((l) => l.action === 'restore')).toEqual([]);
  });

  it('a selective restore backs up what it overwrites (only the users present) and leaves the others', async () => {
    await seed(['a', 'b', 'c']);
    const b = await ops.createBackup();
    await store.put('a', { name: 'changed' });
    await store.exclusive({ ids: ['b'] }, (ctx) => ctx.delete(['b']));
    await store.put('c', { name: 'other change' });
    points = [];
    const dry = await ops.restore(b.id, { users: ['b', 'a'], dryRun: true });
    expect(dry).toEqual({ dryRun: true, diff: expect.objectContaining({ added: ['b'], removed: [] }), written: 0, removed: 0 });
    expect(dry.diff.changed.map((c) => c.user_id)).toEqual(['a']);
    const r = await ops.restore(b.id, { users: ['b', 'a', 'b'] });
    expect(r).toMatchObject({ dryRun: false, written: 2, removed: 0 });
    expect(points).toEqual(['restore:intent-written', 'restore:section-entered', 'restore:backup-verified', 'restore:changed', 'restore:outcome-written']);
    const after = await dump();
    expect(after.a?.name).toBe('N a');
    expect(after.b?.name).toBe('N b');
    expect(after.c?.name).toBe('other change');
    expect(r.backup).toBeTruthy();
    const pre = path.join(backupDir, `${r.backup}.json`);
    expect(readJson(pre)).toEqual({ a: expect.objectContaining({ name: 'changed' }) });
    expect(manifestOf(pre)).toMatchObject({ reason: 'restore', scope: ['a'], auditOp: r.auditOp });
    expect(auditLines().at(-1)).toMatchObject({ action: 'restore', outcome: 'done', userIds: ['b', 'a'], backup: r.backup, details: { from: b.id, mode: 'replace', written: 2, removed: 0 } });
  });

  it('users who are all gone leave nothing to back up: backup null, no file', async () => {
    await seed(['a', 'b']);
    const d = await ops.deleteUsers(['a']);
    const before = backupFiles();
    const r = await ops.restore(d.backup);
    expect(r).toMatchObject({ backup: null, written: 1 });
    expect(backupFiles()).toEqual(before);
    expect(Object.keys(await dump())).toEqual(['a', 'b']);
  });

  it('a backup of some users restores those users unless wholeStore is asked', async () => {
    await seed(['a', 'b', 'c']);
    const d = await ops.deleteUsers(['b']);
    await store.put('c', { name: 'kept' });
    await ops.restore(d.backup);
    expect(Object.keys(await dump())).toEqual(['a', 'b', 'c']);
    const whole = await ops.restore(d.backup, { wholeStore: true });
    expect(Object.keys(await dump())).toEqual(['b']);
    expect(whole.removed).toBe(2);
  });

  it('the seed per-user file restores its one user', async () => {
    await seed(['628161973069', 'other']);
    await store.put('628161973069', { name: 'changed' });
    mkdirSync(backupDir, { recursive: true });
    const name = 'memory_backup_628161973069_20251125_140002.json';
    copyFileSync(path.join(FIXTURES, 'backups', name), path.join(backupDir, name));
    const r = await ops.restore(name.replace(/\.json$/, ''), { allowUnverified: true });
    expect(r.written).toBe(1);
    expect((await store.get('628161973069'))?.name).not.toBe('changed');
    expect(await store.get('other')).not.toBeNull();
  });

  it('full replace makes the store the backup (removed counted), merge keeps the rest; an empty store gets no backup', async () => {
    await seed(['a', 'b']);
    const b = await ops.createBackup();
    await store.put('a', { name: 'changed' });
    await store.put('z', { name: 'Z' });
    const dry = await ops.restore(b.id, { dryRun: true, mode: 'merge' });
    expect(dry.diff.removed).toEqual([]);
    expect(dry.diff.changed.map((c) => c.user_id)).toEqual(['a']);
    const merged = await ops.restore(b.id, { mode: 'merge' });
    expect(merged).toMatchObject({ written: 2, removed: 0 });
    expect(Object.keys(await dump())).toEqual(['a', 'b', 'z']);
    expect((await store.get('a'))?.name).toBe('N a');
    expect(readJson(path.join(backupDir, `${merged.backup}.json`))).toMatchObject({ a: { name: 'changed' }, z: { name: 'Z' } });
    expect(manifestOf(path.join(backupDir, `${merged.backup}.json`))).toMatchObject({ reason: 'restore', scope: 'full' });
    points = [];
    const replaced = await ops.restore(b.id);
    expect(replaced).toMatchObject({ dryRun: false, written: 2, removed: 1 });
    expect(points[0]).toBe('restore:intent-written');
    expect(points).toContain('restore:backup-published');
    expect(Object.keys(await dump())).toEqual(['a', 'b']);
    expect(auditLines().at(-1)).toMatchObject({ outcome: 'done', details: { from: b.id, mode: 'replace', written: 2, removed: 1 } });
    await ops.clearAll();
    const before = backupFiles();
    const intoEmpty = await ops.restore(b.id);
    expect(intoEmpty).toMatchObject({ backup: null, written: 2, removed: 0 });
    expect(backupFiles()).toEqual(before);
    expect(Object.keys(await dump())).toEqual(['a', 'b']);
  });

  it('fetches a backup that is only off-site, and refuses one off-site does not have', async () => {
    await seed(['a']);
    const remoteDir = path.join(dir, 'remote');
    const made = await writeBackup(remoteDir, store.scan(), { reason: 'manual', scope: 'full', source: store.url });
    const offsite = fakeOffsite(remoteDir);
    const o = makeOps({ offsite });
    await store.put('a', { name: 'changed' });
    mkdirSync(backupDir, { recursive: true });
    await o.restore(made.id);
    expect(offsite.fetched).toEqual([made.id]);
    expect((await store.get('a'))?.name).toBe('N a');
    await expect(o.inspectBackup('memory_backup_20200101_000000')).rejects.toMatchObject({ code: 'E_BACKUP_NOT_FOUND' });
    expect(offsite.fetched).toEqual([made.id, 'memory_backup_20200101_000000']);
    // Not a missing backup: never asked of off-site.
    await expect(o.inspectBackup('../etc')).rejects.toMatchObject({ code: 'E_BACKUP_ID' });
    expect(offsite.fetched).toHaveLength(2);
    await expect(ops.inspectBackup('memory_backup_20200101_000001')).rejects.toMatchObject({ code: 'E_BACKUP_NOT_FOUND' });
  });
});

describe('restore over an unreadable store', () => {
  let jsonFile: string;
  let brokenOps: Operations;
  let fresh: Store | null;

  beforeEach(async () => {
    await seed(['a', 'b']);
    await ops.createBackup();
    jsonFile = path.join(dir, 'memory.json');
    writeFileSync(jsonFile, '{"x": [', { mode: 0o644 });
    fresh = null;
    const error = new StoreError('E_STORE_CORRUPT', `${jsonFile} is not valid JSON.`, { details: { file: jsonFile } });
    brokenOps = makeOps({
      brokenStore: {
        file: jsonFile,
        error,
        reopen: async () => {
          rmIfExists(jsonFile);
          fresh = createStore(await JsonFileDriver.open(jsonFile));
          return fresh;
        },
      },
    });
  });
  afterEach(async () => {
    await fresh?.close();
  });

  function rmIfExists(f: string): void {
    if (existsSync(f)) throw new Error(`${f} should have been kept aside`);
  }

  it('refuses a selective or merge restore with the store\'s own error, and a dry run says what it would write', async () => {
    const id = backupFiles()[0]!.replace(/\.json$/, '');
    await expect(brokenOps.restore(id, { users: ['a'] })).rejects.toMatchObject({
      code: 'E_STORE_CORRUPT',
      details: { file: jsonFile },
      message: expect.stringMatching(/is not valid JSON\. Only a whole-store restore can replace it/),
    });
    await expect(brokenOps.restore(id, { mode: 'merge' })).rejects.toMatchObject({ code: 'E_STORE_CORRUPT' });
    const dry = await brokenOps.restore(id, { dryRun: true });
    expect(dry).toEqual({
      dryRun: true,
      diff: { added: ['a', 'b'], removed: [], changed: [], unchanged: 0 },
      written: 0,
      removed: 0,
      brokenStore: { file: jsonFile, code: 'E_STORE_CORRUPT', message: `${jsonFile} is not valid JSON.` },
    });
    expect(readFileSync(jsonFile, 'utf8')).toBe('{"x": [');
  });

  it('keeps the broken file aside (0600, a new name each time) and writes a fresh store from the backup', async () => {
    const id = backupFiles()[0]!.replace(/\.json$/, '');
    const r = await brokenOps.restore(id);
    expect(r).toMatchObject({ dryRun: false, written: 2, removed: 0 });
    expect(r.brokenStoreKeptAt).toMatch(new RegExp(`^${jsonFile.replace(/[.]/g, '\\.')}\\.broken-\\d{8}T\\d{6}Z$`));
    expect(readFileSync(r.brokenStoreKeptAt!, 'utf8')).toBe('{"x": [');
    expect(statSync(r.brokenStoreKeptAt!).mode & 0o777).toBe(0o600);
    expect(brokenOps.store).toBe(fresh);
    expect(Object.keys(await dump(brokenOps.store))).toEqual(['a', 'b']);
    expect(auditLines().at(-1)).toMatchObject({ action: 'restore', outcome: 'done', details: { from: id, mode: 'replace', brokenStore: jsonFile, written: 2 } });
    // The broken store is replaced: the next operation works on the fresh one.
    expect((await brokenOps.deleteUsers(['a'])).deleted).toBe(1);
    // A second broken file in the same second gets the next free name.
    await fresh?.close();
    fresh = null;
    writeFileSync(jsonFile, 'broken again');
    const again = makeOps({
      brokenStore: { file: jsonFile, error: new StoreError('E_STORE_CORRUPT', 'bad'), reopen: async () => (fresh = createStore(await JsonFileDriver.open(jsonFile))) },
    });
    const stamp = path.basename(r.brokenStoreKeptAt!).replace(/^memory\.json\.broken-/, '');
    // The names of this second and the next 30 are taken: the restore may start in a later second than
    // this line runs in (a loaded machine), and whichever second it stamps must already be taken.
    for (let s = 0; s <= 30; s++) {
      writeFileSync(`${jsonFile}.broken-${new Date(Date.now() + s * 1000).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`, 'taken');
    }
    const r2 = await again.restore(id);
    expect(r2.brokenStoreKeptAt).toMatch(/\.broken-\d{8}T\d{6}Z-1$/);
    expect(readFileSync(r2.brokenStoreKeptAt!, 'utf8')).toBe('broken again');
    expect(stamp).toMatch(/^\d{8}T\d{6}Z$/);
  });
});

describe('importFile', () => {
  const write = (name: string, data: unknown): string => {
    const f = path.join(dir, name);
    writeFileSync(f, typeof data === 'string' ? data : JSON.stringify(data));
    return f;
  };

  it('a missing file and a bad record are refused before anything is written', async () => {
    await seed(['a']);
    const missing = path.join(dir, 'nope.json');
    await expect(ops.importFile(missing)).rejects.toMatchObject({ code: 'E_NOT_FOUND', message: `no such file: ${missing}` });
    const bad = write('bad.json', { b: { name: 'B' }, c: { name: 'C' }, d: { name: 'D' }, e: { history: 'not a list' } });
    await expect(ops.importFile(bad)).rejects.toMatchObject({ code: 'E_IMPORT', message: expect.stringMatching(new RegExp(`^${bad.replace(/[.]/g, '\\.')}: user "e": `)) });
    const badHead = write('bad-head.json', { b: { history: 3 } });
    await expect(ops.importFile(badHead)).rejects.toMatchObject({ code: 'E_IMPORT', message: expect.stringContaining('user "b"') });
    const badThird = write('bad-third.json', { b: {}, c: {}, d: { flags: [] }, e: {} });
    await expect(ops.importFile(badThird)).rejects.toMatchObject({ code: 'E_IMPORT', message: expect.stringContaining('user "d"') });
    expect(Object.keys(await dump())).toEqual(['a']);
    expect(existsSync(auditFile)).toBe(false);
  });

  it('imports one, three and five users; backs up only those it overwrites', async () => {
    await seed(['a', 'b']);
    const one = await ops.importFile(write('one.json', { n1: { name: 'one' } }));
    expect(one).toEqual({ imported: 1, overwritten: 0, backup: null });
    expect(backupFiles()).toEqual([]);
    const three = await ops.importFile(write('three.json', { t1: {}, t2: {}, b: { name: 'new b' } }));
    expect(three).toMatchObject({ imported: 3, overwritten: 1 });
    const pre = path.join(backupDir, `${three.backup}.json`);
    expect(readJson(pre)).toEqual({ b: expect.objectContaining({ name: 'N b' }) });
    expect(manifestOf(pre)).toMatchObject({ reason: 'import', scope: ['b'] });
    const five = await ops.importFile(write('five.json', { f1: {}, f2: {}, a: { name: 'new a' }, f4: {}, f5: {} }));
    expect(five).toMatchObject({ imported: 5, overwritten: 1 });
    expect(Object.keys(await dump())).toEqual(['a', 'b', 'f1', 'f2', 'f4', 'f5', 'n1', 't1', 't2']);
    expect((await store.get('a'))?.name).toBe('new a');
    expect(auditLines().filter((l) => l.outcome === 'started').at(-1)).toMatchObject({ action: 'import', userIds: ['a', 'f1', 'f2', 'f4', 'f5'], details: { users: 5 } });
    expect(auditLines().at(-1)).toMatchObject({ outcome: 'done', details: { imported: 5, overwritten: 1, users: 5 } });
    expect(points.filter((p) => p.startsWith('import:')).slice(0, 5)).toEqual(['import:intent-written', 'import:section-entered', 'import:backup-verified', 'import:changed', 'import:outcome-written']);
  });

  it('the seed per-user file ({user_id, backup_timestamp, record}) imports its one user', async () => {
    const f = write('memory_user.json', { user_id: 'solo', backup_timestamp: '2025-11-25T14:00:02', record: { name: 'Solo' } });
    expect(await ops.importFile(f)).toMatchObject({ imported: 1, overwritten: 0 });
    expect(Object.keys(await dump())).toEqual(['solo']);
    expect((await store.get('solo'))?.name).toBe('Solo');
    const bad = write('memory_user_bad.json', { user_id: 7, backup_timestamp: 'x', record: {} });
    await expect(ops.importFile(bad)).rejects.toMatchObject({ code: 'E_IMPORT', message: `${bad}: per-user backup has no string user_id` });
    // Three users whose ids are not those three keys are three users.
    const three = write('three-users.json', { user_id: {}, backup_timestamp: {}, other: {} });
    expect(await ops.importFile(three)).toMatchObject({ imported: 3 });
  });

  it('a large import names no users in its intent, reports progress per thousand, and holds them all', async () => {
    const data: Record<string, unknown> = {};
    for (let i = 0; i < 2100; i++) data[`u${String(i).padStart(5, '0')}`] = {};
    const f = write('big.json', data);
    await seed(['u00003', 'u01500']);
    const progress: [number, number | null][] = [];
    const r = await ops.importFile(f, { onProgress: (d, t) => void progress.push([d, t]) });
    expect(r).toMatchObject({ imported: 2100, overwritten: 2 });
    expect(progress.filter(([, t]) => t === 2100).map(([d]) => d)).toEqual([1000, 2000]);
    expect(Object.keys(readJson(path.join(backupDir, `${r.backup}.json`)))).toEqual(['u00003', 'u01500']);
    expect(await store.count()).toBe(2100);
    const started = auditLines().find((l) => l.outcome === 'started');
    expect(started).not.toHaveProperty('userIds');
    expect(started).toMatchObject({ details: { users: 2100, file: f } });
  });

  it('a chatmem backup is imported only while it matches its manifest', async () => {
    await seed(['a', 'b']);
    const b = await ops.createBackup();
    writeFileSync(b.file, readFileSync(b.file, 'utf8').replace('N a', 'N x'));
    await expect(ops.importFile(b.file)).rejects.toMatchObject({ code: 'E_BACKUP_VERIFY' });
    const other = path.join(dir, 'elsewhere');
    mkdirSync(other);
    const good = await writeBackup(other, store.scan(), { reason: 'manual', scope: 'full', source: store.url });
    expect(await ops.importFile(good.file)).toMatchObject({ imported: 2, overwritten: 2 });
    // A file named like a backup with no manifest is imported as it stands.
    const plain = path.join(dir, 'memory_backup_20250101_000000.json');
    writeFileSync(plain, JSON.stringify({ q: {} }));
    expect(await ops.importFile(plain)).toMatchObject({ imported: 1 });
  });
});

describe('putRecord and patchRecord', () => {
  it('a PUT that drops memory saves the previous record first; one that keeps it, or a new user, does not', async () => {
    await seed(['a']);
    await ops.putRecord('new', { name: 'New' });
    await ops.putRecord('a', { ...rec('a'), name: 'renamed', flags: { seen: true, more: 1 } });
    expect(backupFiles()).toEqual([]);
    const next = await ops.putRecord('a', { name: 'wiped' }, { actor: OTHER });
    expect(next.name).toBe('wiped');
    const [file] = backupFiles();
    const saved = readJson(path.join(backupDir, file!)) as Record<string, MemoryRecord>;
    expect(saved.a).toMatchObject({ name: 'renamed', flags: { seen: true, more: 1 } });
    expect(manifestOf(path.join(backupDir, file!))).toMatchObject({ reason: 'reset', scope: ['a'] });
    expect(auditLines().map((l) => [l.action, l.outcome, l.actor])).toEqual([['reset-user', 'started', OTHER], ['reset-user', 'done', OTHER]]);
    expect(auditLines()[1]).toMatchObject({ backup: file!.replace(/\.json$/, ''), userIds: ['a'] });
    await expect(ops.putRecord('', {})).rejects.toMatchObject({ code: 'E_USER_ID' });
    await expect(ops.putRecord('a', { history: 'x' } as never)).rejects.toMatchObject({ code: expect.stringMatching(/^E_/) });
    expect((await store.get('a'))?.name).toBe('wiped');
  });

  it('a PATCH of history, flags or slots is guarded; any other PATCH is not', async () => {
    await seed(['a']);
    await ops.patchRecord('a', { name: 'x' });
    await ops.patchRecord('a', { flags: { seen: true, added: 2 } });
    expect(backupFiles()).toEqual([]);
    await ops.patchRecord('a', { slots: {} });
    await ops.patchRecord('a', { flags: { added: null } });
    expect(backupFiles()).toHaveLength(1);
    expect((await store.get('a'))?.flags).toEqual({ seen: true });
    await ops.patchRecord('a', { history: [] });
    expect(backupFiles()).toHaveLength(2);
    expect((await store.get('a'))?.history).toEqual([]);
    await expect(ops.patchRecord('a', { history: 'x' } as never)).rejects.toMatchObject({ code: expect.stringMatching(/^E_/) });
    await expect(ops.patchRecord('', { name: 'y' })).rejects.toMatchObject({ code: 'E_USER_ID' });
  });

  it('a reset backup that cannot be written leaves the record and is audited as failed', async () => {
    await seed(['a']);
    setFsIo({ link: async () => Promise.reject(Object.assign(new Error('EIO: injected'), { code: 'EIO' })), rename: async () => Promise.reject(Object.assign(new Error('EIO: injected'), { code: 'EIO' })) });
    await expect(ops.putRecord('a', {})).rejects.toMatchObject({ code: expect.stringMatching(/^E_/) });
    resetFsIo();
    expect((await store.get('a'))?.name).toBe('N a');
    expect(auditLines().map((l) => l.outcome)).toEqual(['started', 'failed']);
  });

  it('dropsMemory: a lost flag, slot or history entry, not additions or an unchanged record', () => {
    const base = rec('a', { slots: { s: 1 }, history: [{ role: 'user', text: 'one', ts: '2025-01-01T00:00:00Z' }, { role: 'user', text: 'two', ts: '2025-01-01T00:00:01Z' }] });
    expect(dropsMemory(base, base)).toBe(false);
    expect(dropsMemory(base, { ...base, flags: { ...base.flags, more: 1 }, slots: { s: 1, t: 2 } })).toBe(false);
    expect(dropsMemory(base, { ...base, flags: {} })).toBe(true);
    expect(dropsMemory(base, { ...base, slots: {} })).toBe(true);
    expect(dropsMemory(base, { ...base, history: base.history.slice(1) })).toBe(true);
    expect(dropsMemory(base, { ...base, history: [{ ...base.history[0]!, text: 'edited' }, base.history[1]!] })).toBe(true);
    const empty = { ...base, history: [] };
    expect(dropsMemory(empty, { ...empty, history: [] })).toBe(false);
    expect(dropsMemory(base, { ...base, slots: { s: undefined } as never })).toBe(false);
  });
});

describe('truncateHistory', () => {
  const withHistory = (n: number) => rec('a', { history: Array.from({ length: n }, (_, i) => ({ role: 'user', text: `m${i}`, ts: '2025-11-20T01:02:07Z' })) });

  it('refuses a bad count and an unknown user', async () => {
    await expect(ops.truncateHistory('a', -1)).rejects.toMatchObject({ code: 'E_OPS_ARG', message: 'keepLast must be an integer >= 0, got -1' });
    await expect(ops.truncateHistory('a', 1.5)).rejects.toMatchObject({ code: 'E_OPS_ARG' });
    await expect(ops.truncateHistory('a', 1)).rejects.toMatchObject({ code: 'E_UNKNOWN_USER', message: 'unknown user: "a"' });
    expect(auditLines().map((l) => l.outcome)).toEqual(['started', 'failed']);
  });

  it('keeps the newest entries after a verified backup of the whole record; nothing dropped, no backup', async () => {
    await store.exclusive('all', (ctx) => ctx.putMany([withHistory(5)]));
    const none = await ops.truncateHistory('a', 5);
    expect(none).toMatchObject({ dropped: 0, backup: null, backupFile: null });
    expect(backupFiles()).toEqual([]);
    const before = await store.get('a');
    const r = await ops.truncateHistory('a', 2, { actor: OTHER });
    expect(r.dropped).toBe(3);
    expect(r.record.history.map((h) => h.text)).toEqual(['m3', 'm4']);
    expect(before?.history).toHaveLength(5);
    expect((await store.get('a'))?.history.map((h) => h.text)).toEqual(['m3', 'm4']);
    expect((readJson(r.backupFile!) as Record<string, MemoryRecord>).a?.history).toHaveLength(5);
    expect(manifestOf(r.backupFile!)).toMatchObject({ reason: 'reset', scope: ['a'] });
    expect(auditLines().at(-1)).toMatchObject({ action: 'truncate-history', outcome: 'done', backup: r.backup, details: { keepLast: 2 } });
    const zero = await ops.truncateHistory('a', 0);
    expect(zero.record.history).toEqual([]);
    expect(zero.dropped).toBe(2);
  });
});

describe('merge and createBackup', () => {
  it('merge refuses itself and unknown users, backs up both (scope sorted), and removes FROM', async () => {
    await seed(['b-from', 'a-into']);
    await expect(ops.merge('a-into', 'a-into')).rejects.toMatchObject({ code: 'E_OPS_ARG', message: 'cannot merge "a-into" into itself' });
    await expect(ops.merge('b-from', 'zz')).rejects.toMatchObject({ code: 'E_UNKNOWN_USER', message: 'unknown user: "zz"' });
    const r = await ops.merge('b-from', 'a-into', { actor: OTHER });
    expect(Object.keys(readJson(r.backupFile))).toEqual(['a-into', 'b-from']);
    expect(manifestOf(r.backupFile)).toMatchObject({ reason: 'merge', scope: ['a-into', 'b-from'] });
    expect(Object.keys(await dump())).toEqual(['a-into']);
    expect(r.record.history.map((h) => h.text).sort()).toEqual(['hi from a-into', 'hi from b-from']);
    expect(auditLines().at(-1)).toMatchObject({ action: 'merge', outcome: 'done', userIds: ['b-from', 'a-into'], details: { from: 'b-from', into: 'a-into' } });
  });

  it('merge re-checks inside the section', async () => {
    await seed(['f', 'i']);
    const racing = makeOps({ hooks: { at: async (p) => void (p === 'intent-written' && (await store.exclusive({ ids: ['i'] }, (c) => c.delete(['i'])))) } });
    await expect(racing.merge('f', 'i')).rejects.toMatchObject({ code: 'E_UNKNOWN_USER', message: 'unknown user: "i"' });
    expect(await store.get('f')).not.toBeNull();
  });

  it('createBackup: reason manual unless given, gzip when asked, audited with its reason', async () => {
    await seed(['a']);
    const b = await ops.createBackup();
    expect(auditLines().at(-1)).toMatchObject({ action: 'backup', outcome: 'done', backup: b.id });
    expect(manifestOf(b.file)).toMatchObject({ reason: 'manual', gzip: false, auditOp: b.auditOp });
    const s = await ops.createBackup({ reason: 'scheduled', gzip: true });
    expect(s.file).toMatch(/\.json\.gz$/);
    expect(manifestOf(s.file)).toMatchObject({ reason: 'scheduled', gzip: true });
    expect(auditLines().filter((l) => l.outcome === 'done').map((l) => l.details)).toEqual([{ reason: 'manual' }, { reason: 'scheduled' }]);
  });
});

describe('listing, verifying and diffing', () => {
  it('marks each backup local, offsite or both, newest first; a failing listing warns and lists local only', async () => {
    await seed(['a']);
    const remoteDir = path.join(dir, 'remote');
    const t = (s: string) => () => new Date(s);
    const local1 = await writeBackup(backupDir, store.scan(), { reason: 'manual', scope: 'full', source: store.url, now: t('2026-01-01T00:00:00Z') });
    const local3 = await writeBackup(backupDir, store.scan(), { reason: 'manual', scope: 'full', source: store.url, now: t('2026-01-03T00:00:00Z') });
    const offsite = fakeOffsite(remoteDir);
    const info = (id: string, at: string): BackupInfo => ({ id, file: `s3://bucket/${id}.json`, size: 1, users: 1, reason: 'manual', scope: 'full', createdAt: at, ageSeconds: 0, gzip: false, state: 'verified', kind: 'full' });
    offsite.remote = [info('memory_backup_20260102_000000', '2026-01-02T00:00:00.000Z'), info(local3.id, '2026-01-03T00:00:00.000Z'), info('memory_backup_20260104_000000', '2026-01-04T00:00:00.000Z')];
    const o = makeOps({ offsite });
    expect((await o.listBackups({ offsite: true })).map((b) => [b.id, b.location])).toEqual([
      ['memory_backup_20260104_000000', 'offsite'],
      [local3.id, 'both'],
      ['memory_backup_20260102_000000', 'offsite'],
      [local1.id, 'local'],
    ]);
    expect((await o.listBackups()).map((b) => [b.id, b.location])).toEqual([[local3.id, undefined], [local1.id, undefined]]);
    expect((await ops.listBackups({ offsite: true })).map((b) => b.location)).toEqual([undefined, undefined]);
    offsite.failList = true;
    expect((await o.listBackups({ offsite: true })).map((b) => [b.id, b.location])).toEqual([[local3.id, undefined], [local1.id, undefined]]);
    expect(offsite.warnings).toEqual(['cannot list the off-site backups: bucket unreachable']);
    expect((await o.newestBackupAt())?.toISOString()).toBe('2026-01-03T00:00:00.000Z');
  });

  it('verifyBackups: all, one by id, a refused entry as a failed check, a missing id throws', async () => {
    await seed(['a']);
    const b = await ops.createBackup();
    expect(await ops.verifyBackups(b.id)).toEqual([expect.objectContaining({ id: b.id, ok: true, users: 1 })]);
    symlinkSync(b.file, path.join(backupDir, 'memory_backup_20200101_000000.json'));
    const refused = await ops.verifyBackups('memory_backup_20200101_000000');
    expect(refused).toEqual([{ id: 'memory_backup_20200101_000000', ok: false, legacy: false, users: null, error: { code: 'E_BACKUP_NOT_REGULAR', message: expect.any(String) } }]);
    expect((await ops.verifyBackups()).map((v) => [v.id, v.ok])).toEqual([[b.id, true], ['memory_backup_20200101_000000', false]]);
    await expect(ops.verifyBackups('memory_backup_20190101_000000')).rejects.toMatchObject({ code: 'E_BACKUP_NOT_FOUND' });
  });

  it('diff of some users, between backups and the store, plain and gzip; a damaged backup is refused', async () => {
    await seed(['a', 'b', 'c']);
    const plain = await ops.createBackup();
    const gz = await ops.createBackup({ gzip: true });
    await store.put('a', { name: 'changed' });
    await store.exclusive({ ids: ['b'] }, (ctx) => ctx.delete(['b']));
    await store.put('d', {});
    const all = await ops.diff(plain.id);
    expect(all).toMatchObject({ added: ['d'], removed: ['b'], unchanged: 1 });
    for (const id of [plain.id, gz.id]) {
      const some = await ops.diff(id, 'current', { users: ['a', 'b', 'd'] });
      expect(some).toMatchObject({ added: ['d'], removed: ['b'], unchanged: 0 });
      expect(some.changed.map((c) => c.user_id)).toEqual(['a']);
      const back = await ops.diff('current', id, { users: ['b'] });
      expect(back).toMatchObject({ added: ['b'], removed: [], changed: [], unchanged: 0 });
    }
    expect(await ops.diff(plain.id, gz.id)).toMatchObject({ added: [], removed: [], changed: [], unchanged: 3 });
    const progress: [number, number | null][] = [];
    await ops.diff(plain.id, 'current', { onProgress: (n, t) => void progress.push([n, t]) });
    expect(progress.every(([, t]) => t === null)).toBe(true);
    await expect(ops.diff(plain.id, 'current', { users: [''] })).rejects.toMatchObject({ code: 'E_USER_ID' });
    writeFileSync(plain.file, readFileSync(plain.file, 'utf8').replace('N c', 'N q'));
    await expect(ops.diff('current', plain.id)).rejects.toMatchObject({ code: 'E_BACKUP_VERIFY' });
  });
});

describe('prune', () => {
  const at = (s: string) => () => new Date(s);

  it('keeps damaged backups out of every rule, removes only confirmed ids, and audits policy and removals', async () => {
    await seed(['a']);
    const ids: string[] = [];
    for (const day of ['01', '02', '03', '04']) ids.push((await writeBackup(backupDir, store.scan(), { reason: 'scheduled', scope: 'full', source: store.url, now: at(`2026-01-${day}T10:00:00Z`) })).id);
    const user = await writeBackup(backupDir, [rec('a')], { reason: 'delete-user', scope: ['a'], source: store.url, now: at('2026-01-05T10:00:00Z') });
    // The newest full backup damaged: never removed, not counted, listed with its reason.
    const newest = path.join(backupDir, `${ids[3]}.json`);
    writeFileSync(newest, readFileSync(newest, 'utf8').replace('N a', 'N z'));
    const dry = await ops.prune({ last: 1 }, { dryRun: true });
    expect(dry.dryRun).toBe(true);
    expect(dry.damaged).toEqual([{ id: ids[3], code: 'E_BACKUP_VERIFY', message: expect.any(String) }]);
    expect(dry.remove.map((r) => r.id)).toEqual([ids[1], ids[0]]);
    expect(dry.keep).toContainEqual({ id: ids[3], group: 'full', reasons: ['damaged (E_BACKUP_VERIFY): not counted, never removed by prune'] });
    expect(dry.keep.map((k) => k.id)).toEqual(expect.arrayContaining([ids[2], user.id]));
    expect(backupFiles()).toHaveLength(5);
    expect(existsSync(auditFile)).toBe(false);
    // Only what the operator confirmed, even if the plan now says more.
    const r = await ops.prune({ last: 1 }, { only: [ids[0]!] });
    expect(r).toMatchObject({ dryRun: false, removed: [ids[0]] });
    expect(existsSync(path.join(backupDir, `${ids[0]}.meta.json`))).toBe(false);
    expect(existsSync(path.join(backupDir, `${ids[1]}.json`))).toBe(true);
    expect(auditLines().at(-1)).toMatchObject({ action: 'prune', outcome: 'done', details: { policy: { last: 1 }, remove: [ids[0]], removed: 1 } });
    const nothing = await ops.prune({ last: 1 }, { only: [] });
    expect(nothing).toMatchObject({ removed: [], dryRun: false });
    expect(auditLines().filter((l) => l.action === 'prune')).toHaveLength(2);
    expect((await ops.prune({})).remove).toEqual([]);
    const damagedUser = path.join(backupDir, `${user.id}.json`);
    writeFileSync(damagedUser, readFileSync(damagedUser, 'utf8').replace('N a', 'N y'));
    expect((await ops.prune({ last: 1 }, { dryRun: true })).keep).toContainEqual({ id: user.id, group: 'user', reasons: [expect.stringMatching(/^damaged \(E_BACKUP_VERIFY\)/)] });
  });

  it('a refused entry is damaged with its own code; off-site copies are pruned too, an unreadable one never', async () => {
    await seed(['a']);
    const ids: string[] = [];
    for (const day of ['01', '02', '03']) ids.push((await writeBackup(backupDir, store.scan(), { reason: 'scheduled', scope: 'full', source: store.url, now: at(`2026-02-${day}T10:00:00Z`) })).id);
    symlinkSync(path.join(backupDir, `${ids[0]}.json`), path.join(backupDir, 'memory_backup_20260201_000000.json'));
    const offsite = fakeOffsite(path.join(dir, 'remote'));
    const info = (id: string, day: string, users: number | null): BackupInfo => ({ id, file: `s3://b/${id}.json`, size: 1, users, reason: 'scheduled', scope: 'full', createdAt: `2026-01-${day}T10:00:00.000Z`, ageSeconds: 0, gzip: false, state: 'verified', kind: 'full' });
    offsite.remote = [info(ids[1]!, '02', 1), info('memory_backup_20260110_100000', '10', 1), info('memory_backup_20260111_100000', '11', null)];
    const o = makeOps({ offsite });
    const dry = await o.prune({ last: 1 }, { dryRun: true });
    expect(dry.damaged).toEqual(
      expect.arrayContaining([
        { id: 'memory_backup_20260201_000000', code: 'E_BACKUP_NOT_REGULAR', message: expect.any(String) },
        { id: 'memory_backup_20260111_100000', code: 'E_OFFSITE_KEY', message: 'its off-site manifest cannot be read (encrypted: configure offsiteIdentity)' },
      ]),
    );
    expect(dry.damaged).toHaveLength(2);
    expect(dry.remove.map((r) => r.id).sort()).toEqual([ids[0], ids[1], 'memory_backup_20260110_100000'].sort());
    offsite.failRemove = true;
    const r = await o.prune({ last: 1 });
    expect(r.removed.sort()).toEqual([ids[0], ids[1], 'memory_backup_20260110_100000'].sort());
    expect(offsite.warnings.sort()).toEqual(
      [`could not remove the off-site copy of ${ids[1]}: E_STORE_WRITE: bucket says no`, 'could not remove the off-site copy of memory_backup_20260110_100000: E_STORE_WRITE: bucket says no'].sort(),
    );
    expect(backupFiles()).toEqual(['memory_backup_20260201_000000.json', `${ids[2]}.json`]);
    offsite.failRemove = false;
    offsite.remote = [info('memory_backup_20260110_100000', '10', 1)];
    await o.prune({ last: 1 });
    expect(offsite.removed).toEqual(['memory_backup_20260110_100000.json']);
  });
});

describe('readAudit and recover', () => {
  it('a user query finds the clear whose backup holds the user, and a pruned backup no longer does', async () => {
    await seed(['a', 'b']);
    const c = await ops.clearAll();
    const found = await ops.readAudit({ user: 'a' });
    expect(found.map((e) => [e.action, e.outcome, e.foundInBackup])).toEqual([['clear-all', 'started', c.backup], ['clear-all', 'done', c.backup]]);
    expect(await ops.readAudit({ user: 'nobody' })).toEqual([]);
    await import('node:fs').then(({ rmSync }) => rmSync(c.backupFile));
    expect(await ops.readAudit({ user: 'a' })).toEqual([]);
    await expect(ops.readAudit({ action: 'no-such' as never })).rejects.toMatchObject({ code: 'E_OPS_ARG' });
  });

  it('says whether an interrupted delete happened: by its backup and each record\'s identity', async () => {
    await seed(['a', 'b', 'c', 'd']);
    const audit = new AuditLog(auditFile);
    const interrupt = async (ids: string[], deleteThem: boolean, backup = true) => {
      const op = await audit.begin('delete-users', ACTOR, { userIds: ids });
      if (backup) await writeBackup(backupDir, await getMany(ids), { reason: 'delete-user', scope: ids, source: store.url, auditOp: op.op });
      if (deleteThem) await store.exclusive({ ids }, (ctx) => ctx.delete(ids));
      return op.op;
    };
    const done = await interrupt(['a'], true);
    const notDone = await interrupt(['b'], false);
    const noBackup = await interrupt(['c'], false, false);
    // Deleted, then written again: a new record (new created_at) is not the one backed up.
    const recreated = await interrupt(['d'], true);
    await store.put('d', { name: 'new d', created_at: '2020-01-01T00:00:00Z' });
    expect((await store.get('d'))?.created_at).toBe('2020-01-01T00:00:00Z');
    // Clears, each with a backup of its own users: one whose users are gone (a user written since is
    // not one of its records), one whose user is still there as backed up, one with no backup.
    await store.put('x', {});
    const cleared = await audit.begin('clear-all', ACTOR);
    await writeBackup(backupDir, await getMany(['x']), { reason: 'clear-all', scope: 'full', source: store.url, auditOp: cleared.op });
    await store.exclusive({ ids: ['x'] }, (ctx) => ctx.delete(['x']));
    await store.put('e', {});
    const notCleared = await audit.begin('clear-all', ACTOR);
    await writeBackup(backupDir, await getMany(['b', 'x']), { reason: 'clear-all', scope: 'full', source: store.url, auditOp: notCleared.op });
    const failedCleared = await audit.begin('clear-all', ACTOR);
    const other = await audit.begin('restore', ACTOR);
    const r = await makeOps({ offsite: fakeOffsite(path.join(dir, 'remote')) }).recover();
    const by = new Map(r.interrupted.map((i) => [i.entry.op, i]));
    expect(r.interrupted).toHaveLength(8);
    expect(by.get(notCleared.op)).toMatchObject({ applied: false, backup: expect.any(String) });
    expect(by.get(done)).toMatchObject({ applied: true, backup: expect.any(String) });
    expect(by.get(notDone)).toMatchObject({ applied: false, backup: expect.any(String) });
    expect(by.get(noBackup)).toMatchObject({ applied: false, backup: null });
    expect(by.get(recreated)).toMatchObject({ applied: true });
    expect(by.get(cleared.op)).toMatchObject({ applied: true, backup: expect.any(String) });
    expect(by.get(failedCleared.op)).toMatchObject({ applied: false, backup: null });
    expect(by.get(other.op)).toMatchObject({ applied: null, backup: null });
    expect(verified).toEqual([]);
    const outcomes = new Map(auditLines().filter((l) => (l.details as { recovered?: boolean } | undefined)?.recovered).map((l) => [l.op, l.outcome]));
    expect([...outcomes.entries()].sort()).toEqual(
      [
        [done, 'done'],
        [notDone, 'interrupted'],
        [noBackup, 'interrupted'],
        [recreated, 'done'],
        [cleared.op, 'done'],
        [failedCleared.op, 'interrupted'],
        [notCleared.op, 'interrupted'],
        [other.op, 'interrupted'],
      ].sort(),
    );
    expect(auditLines().find((l) => l.op === done && (l.details as { recovered?: boolean } | undefined)?.recovered)).toMatchObject({
      actor: ACTOR,
      action: 'delete-users',
      userIds: ['a'],
      backup: by.get(done)?.backup,
      details: { backupExists: true, applied: true, recovered: true },
    });
    expect(auditLines().find((l) => l.op === noBackup && l.outcome === 'interrupted')).not.toHaveProperty('backup');
    expect((await makeOps().recover()).interrupted).toEqual([]);
  });

  it('a delete whose users are all gone and no backup is unknown; a partial one is unknown', async () => {
    await seed(['a', 'b', 'c']);
    const audit = new AuditLog(auditFile);
    const gone = await audit.begin('delete-users', ACTOR, { userIds: ['x'] });
    const mixed = await audit.begin('delete-users', ACTOR, { userIds: ['a', 'b'] });
    await writeBackup(backupDir, await getMany(['a', 'b']), { reason: 'delete-user', scope: ['a', 'b'], source: store.url, auditOp: mixed.op });
    await store.exclusive({ ids: ['a'] }, (ctx) => ctx.delete(['a']));
    const notInBackup = await audit.begin('delete-users', ACTOR, { userIds: ['c'] });
    await writeBackup(backupDir, await getMany(['b']), { reason: 'delete-user', scope: ['b'], source: store.url, auditOp: notInBackup.op });
    const empty = await audit.begin('delete-users', ACTOR, { userIds: [] });
    const r = await ops.recover();
    const by = new Map(r.interrupted.map((i) => [i.entry.op, i.applied]));
    expect(by.get(gone.op)).toBeNull();
    expect(by.get(mixed.op)).toBeNull();
    expect(by.get(notInBackup.op)).toBeNull();
    expect(by.get(empty.op)).toBeNull();
  });
});

describe('forget and expire through off-site', () => {
  it('forget removes the off-site copies of rewritten and deleted backups and queues the rewritten ones', async () => {
    await seed(['a', 'b']);
    const offsite = fakeOffsite(path.join(dir, 'remote'));
    const o = makeOps({ offsite, dataDir: dir });
    const both = await o.createBackup();
    const onlyA = await o.deleteUsers(['a']);
    verified = [];
    const r = await o.forget(['a']);
    expect(r.backupsRewritten.sort()).toEqual([both.id, onlyA.backup].sort().filter((id) => r.backupsRewritten.includes(id)));
    expect(offsite.removed.sort()).toEqual([...new Set([...r.backupsRewritten.map((id) => `${id}.json`), ...r.filesDeleted.map((f) => path.basename(f)).filter((n) => !n.endsWith('.meta.json'))])].sort());
    const kept = r.backupsRewritten.filter((id) => !r.filesDeleted.some((f) => f === id || path.basename(f) === `${id}.json`));
    expect(verified.map(([n]) => n).sort()).toEqual(kept.map((id) => `${id}.json`).sort());
    expect(offsite.removed.length).toBeGreaterThan(0);
    expect(offsite.removed.some((n) => n.endsWith('.meta.json'))).toBe(false);
  });

  it('expire in delete mode writes its backup through the verified path', async () => {
    await store.exclusive('all', (ctx) => ctx.putMany([{ ...newRecord('old', '2025-01-01T00:00:00.000Z'), updated_at: '2025-01-01T00:00:00.000Z' }, rec('new')]));
    const o = makeOps({ offsite: fakeOffsite(path.join(dir, 'remote')) });
    const dry = await o.expire({ inactiveAfter: '30d' } , { now: new Date(), dryRun: true });
    expect(await store.get('old')).not.toBeNull();
    expect(dry).toMatchObject({ dryRun: true });
    const r = await o.expire({ inactiveAfter: '30d' } , { now: new Date(), actor: OTHER });
    expect(await store.get('old')).toBeNull();
    expect(await store.get('new')).not.toBeNull();
    expect(verified).toHaveLength(1);
    expect(JSON.stringify(r)).toContain(verified[0]![0].replace(/\.json$/, ''));
    expect(auditLines().find((l) => l.outcome === 'started')).toMatchObject({ actor: OTHER });
  });
});

describe('what the first mutation run left open', () => {
  it('writes landing after the snapshot was read are copied in rounds (more than the section takes) and reach the backup', async () => {
    const ids = Array.from({ length: 300 }, (_, i) => `w${String(i).padStart(4, '0')}`);
    await seed(ids);
    let syncs = 0;
    setFsIo({
      sync: async (fh, file) => {
        // The snapshot has been read and written; these writes land before the rounds look at what changed.
        if (file.endsWith('.snapshot') && syncs++ === 0) await Promise.all(ids.map((id) => store.put(id, { name: `after ${id}` })));
        await fh.sync();
      },
    });
    const r = await ops.clearAll();
    resetFsIo();
    expect(syncs).toBe(1);
    const b = readJson(r.backupFile) as Record<string, MemoryRecord>;
    expect(Object.keys(b)).toHaveLength(300);
    for (const id of ids) expect(b[id]?.name, id).toBe(`after ${id}`);
  });

  it('a whole-store change after the snapshot makes the section copy the whole store itself', async () => {
    await seed(['a', 'b', 'c']);
    const o = makeOps({
      hooks: {
        at: async (point) => {
          if (point === 'snapshot-copied') {
            await store.exclusive('all', (ctx) => ctx.clear());
            await store.put('z', { name: 'Z' });
          }
        },
      },
    });
    const r = await o.clearAll();
    expect(Object.keys(readJson(r.backupFile))).toEqual(['z']);
    expect(r.deleted).toBe(1);
  });

  it('a restore into an empty store: no backup, the hooks in order, no parts left behind', async () => {
    await seed(['a']);
    const b = await ops.createBackup();
    await store.exclusive('all', (ctx) => ctx.clear());
    points = [];
    const r = await ops.restore(b.id);
    expect(r).toMatchObject({ dryRun: false, backup: null, written: 1 });
    expect(points).toEqual(['restore:intent-written', 'restore:snapshot-copied', 'restore:section-entered', 'restore:backup-verified', 'restore:changed', 'restore:outcome-written']);
    expect(readdirSync(backupDir).sort()).toEqual([`${b.id}.json`, `${b.id}.meta.json`]);
    // No backup: the audit entry names none.
    expect(auditLines().at(-1)).not.toHaveProperty('backup');
  });

  it('works without hooks, and reads legacy names in the configured time zone', async () => {
    mkdirSync(backupDir, { recursive: true });
    copyFileSync(path.join(FIXTURES, 'backups', 'memory_backup_20251125_145714.json'), path.join(backupDir, 'memory_backup_20251125_145714.json'));
    const plain = new Operations({ store, backupDir, audit: new AuditLog(auditFile), actor: ACTOR });
    expect((await plain.listBackups())[0]?.createdAt).toBe('2025-11-25T14:57:14.000Z');
    const jakarta = new Operations({ store, backupDir, audit: new AuditLog(auditFile), actor: ACTOR, legacyTimezone: 'Asia/Jakarta' });
    expect((await jakarta.listBackups())[0]?.createdAt).toBe('2025-11-25T07:57:14.000Z');
    await seed(['a']);
    expect((await plain.deleteUsers(['a'])).deleted).toBe(1);
    // A diff writes nothing: a legacy file needs no confirmation.
    const d = await plain.diff('memory_backup_20251125_145714', 'current');
    expect(d.removed).toHaveLength(5);
  });

  it('truncate-history and merge audit their users; a refused merge writes no audit entry; INTO is stored as merged', async () => {
    await store.exclusive('all', (ctx) => ctx.putMany([rec('a'), rec('b'), rec('c')]));
    await ops.truncateHistory('c', 0);
    expect(auditLines()[0]).toMatchObject({ action: 'truncate-history', userIds: ['c'] });
    const before = auditLines().length;
    await expect(ops.merge('a', 'nobody')).rejects.toMatchObject({ code: 'E_UNKNOWN_USER' });
    expect(auditLines()).toHaveLength(before);
    const m = await ops.merge('a', 'b');
    expect(m.record.history.map((h) => h.text).sort()).toEqual(['hi from a', 'hi from b']);
    expect(await store.get('b')).toEqual(m.record);
    expect(await store.get('a')).toBeNull();
  });

  it('import: gzip, a missing file named like a backup, causes kept, a malformed file not called missing, 4 keys, 100 users listed', async () => {
    await seed(['a', 'b']);
    const gz = path.join(dir, 'all.json.gz');
    const { exportStore } = await import('../../src/ops/export.js');
    await exportStore(store, gz, { gzip: true });
    expect(await ops.importFile(gz)).toMatchObject({ imported: 2, overwritten: 2 });
    const missing = path.join(dir, 'memory_backup_20250101_000000.json');
    await expect(ops.importFile(missing)).rejects.toMatchObject({ code: 'E_NOT_FOUND', cause: expect.objectContaining({ code: 'ENOENT' }) });
    const bad = path.join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ q: { history: 5 } }));
    await expect(ops.importFile(bad)).rejects.toMatchObject({ code: 'E_IMPORT', cause: expect.objectContaining({ code: expect.stringMatching(/^E_/) }) });
    const malformed = path.join(dir, 'malformed.json');
    writeFileSync(malformed, '{"a": {}, "b": ');
    await expect(ops.importFile(malformed)).rejects.toMatchObject({ code: expect.not.stringMatching(/^E_NOT_FOUND$/) });
    const four = path.join(dir, 'four.json');
    writeFileSync(four, JSON.stringify({ user_id: {}, backup_timestamp: {}, record: {}, other: {} }));
    expect(await ops.importFile(four)).toMatchObject({ imported: 4 });
    const hundred = path.join(dir, 'hundred.json');
    writeFileSync(hundred, JSON.stringify(Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`h${String(i).padStart(3, '0')}`, {}]))));
    await ops.importFile(hundred);
    expect((auditLines().filter((l) => l.outcome === 'started').at(-1)?.userIds as string[] | undefined)?.length).toBe(100);
    // A thousand records without a progress callback.
    const big = path.join(dir, 'big.json');
    writeFileSync(big, JSON.stringify(Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`k${String(i).padStart(4, '0')}`, {}]))));
    expect(await ops.importFile(big)).toMatchObject({ imported: 1000 });
  });

  it('forget: the actor, off-site removals and re-uploads named, a failed removal warned, no backup directory, no off-site', async () => {
    await seed(['a', 'b']);
    const offsite = fakeOffsite(path.join(dir, 'remote'));
    const o = makeOps({ offsite, dataDir: dir });
    const both = await o.createBackup();
    const onlyA = await o.deleteUsers(['a'], { fullBackup: false });
    verified = [];
    const r = await o.forget(['a'], { actor: OTHER });
    expect(r.backupsRewritten).toEqual([both.id]);
    expect(r.filesDeleted.map((f) => path.basename(f))).toEqual([`${onlyA.backup}.json`]);
    expect(offsite.removed.sort()).toEqual([`${both.id}.json`, `${onlyA.backup}.json`].sort());
    expect(verified.map(([n]) => n)).toEqual([`${both.id}.json`]);
    expect(auditLines().filter((l) => l.action === 'forget')[0]).toMatchObject({ actor: OTHER });
    offsite.failRemove = true;
    await o.createBackup();
    await o.forget(['b']);
    expect(offsite.warnings.length).toBeGreaterThan(0);
    expect(offsite.warnings.every((w) => /^forget: cannot remove the off-site copy of memory_backup_\S+\.json: bucket says no$/.test(w))).toBe(true);
    await store.put('c', {});
    await expect(makeOps({ offsite, backupDir: path.join(dir, 'no-backups'), dataDir: dir }).forget(['c'])).resolves.toMatchObject({ deleted: 1 });
    await store.put('d', {});
    await expect(makeOps({ dataDir: dir }).forget(['d'])).resolves.toMatchObject({ deleted: 1 });
  });

  it('expire in forget mode forgets through the operations', async () => {
    await store.exclusive('all', (ctx) => ctx.putMany([{ ...newRecord('old', '2025-01-01T00:00:00.000Z'), updated_at: '2025-01-01T00:00:00.000Z' }, rec('new')]));
    const r = await makeOps({ dataDir: dir }).expire({ inactiveAfter: '30d', mode: 'forget' }, { now: new Date() });
    expect(r).toMatchObject({ mode: 'forget' });
    expect(await store.get('old')).toBeNull();
    expect(auditLines().some((l) => l.action === 'forget' && l.outcome === 'done')).toBe(true);
  });

  it('prune: a dateless legacy file is never removed, a legacy file goes without a manifest, groups are named', async () => {
    await seed(['a']);
    mkdirSync(backupDir, { recursive: true });
    const at = (s: string) => () => new Date(s);
    const f1 = await writeBackup(backupDir, store.scan(), { reason: 'manual', scope: 'full', source: store.url, now: at('2026-01-01T00:00:00Z') });
    const f2 = await writeBackup(backupDir, store.scan(), { reason: 'manual', scope: 'full', source: store.url, now: at('2026-01-02T00:00:00Z') });
    const u1 = await writeBackup(backupDir, [rec('a')], { reason: 'delete-user', scope: ['a'], source: store.url, now: at('2026-01-03T00:00:00Z') });
    writeFileSync(path.join(backupDir, 'memory_backup_20251399_000000.json'), JSON.stringify({ a: rec('a') }));
    writeFileSync(path.join(backupDir, 'memory_backup_20251201_000000.json'), JSON.stringify({ a: rec('a') }));
    const dry = await ops.prune({ last: 1 }, { dryRun: true });
    expect(dry.remove.map((x) => x.id).sort()).toEqual([f1.id, 'memory_backup_20251201_000000'].sort());
    const groups = new Map(dry.keep.map((k) => [k.id, k.group]));
    expect(groups.get(f2.id)).toBe('full');
    expect(groups.get(u1.id)).toBe('user');
    expect(groups.get('memory_backup_20251399_000000')).toBeDefined();
    const r = await ops.prune({ last: 1 });
    expect(r.removed.sort()).toEqual([f1.id, 'memory_backup_20251201_000000'].sort());
    expect(existsSync(path.join(backupDir, 'memory_backup_20251399_000000.json'))).toBe(true);
  });

  it('readAudit: a backup that cannot be read (not merely pruned) is an error, not a silent miss', async () => {
    await seed(['a']);
    const c = await ops.clearAll();
    const { rmSync } = await import('node:fs');
    rmSync(c.backupFile);
    mkdirSync(c.backupFile);
    await expect(ops.readAudit({ user: 'a' })).rejects.toMatchObject({ code: expect.stringMatching(/^E_BACKUP_/) });
  });

  it('recover: finished parts are handed to off-site; verdicts for restores with users, partial deletes without a backup, recreated users after a clear', async () => {
    await seed(['a', 'b']);
    const audit = new AuditLog(auditFile);
    const restoreOp = await audit.begin('restore', ACTOR, { userIds: ['a'] });
    await writeBackup(backupDir, await getMany(['a']), { reason: 'restore', scope: ['a'], source: store.url, auditOp: restoreOp.op });
    const partial = await audit.begin('delete-users', ACTOR, { userIds: ['a', 'x'] });
    const cleared = await audit.begin('clear-all', ACTOR);
    await writeBackup(backupDir, await getMany(['b']), { reason: 'clear-all', scope: 'full', source: store.url, auditOp: cleared.op });
    await store.exclusive({ ids: ['b'] }, (ctx) => ctx.delete(['b']));
    await store.put('b', { created_at: '2020-01-01T00:00:00Z' });
    const o = makeOps({ offsite: fakeOffsite(path.join(dir, 'remote')) });
    const report = await o.finishLeftovers();
    const r = await o.recover({ leftovers: { ...report, parts: { removedUnsealed: [], removedPublished: [], finished: ['memory_backup_20260101_000000'], kept: [] } } });
    expect(verified.map(([n]) => n)).toEqual(['memory_backup_20260101_000000.json']);
    const by = new Map(r.interrupted.map((i) => [i.entry.op, i]));
    expect(by.get(restoreOp.op)).toMatchObject({ applied: null, backup: expect.any(String) });
    expect(by.get(partial.op)).toMatchObject({ applied: false, backup: null });
    expect(by.get(cleared.op)).toMatchObject({ applied: true });
    expect(auditLines().find((l) => l.op === partial.op && l.outcome === 'interrupted')).toMatchObject({ details: { backupExists: false, applied: false } });
  });

  it('a broken store file that cannot be kept aside refuses the restore, naming the file', async () => {
    await seed(['a']);
    const b = await ops.createBackup();
    const gone = path.join(dir, 'gone.json');
    const o = makeOps({ brokenStore: { file: gone, error: new StoreError('E_STORE_CORRUPT', 'bad'), reopen: async () => store } });
    await expect(o.restore(b.id)).rejects.toMatchObject({ code: 'E_STORE_WRITE', message: expect.stringMatching(/^cannot keep .*gone\.json aside as .*gone\.json\.broken-\d{8}T\d{6}Z: /), cause: expect.objectContaining({ code: 'ENOENT' }) });
  });
});

describe('import of a file named like a backup', () => {
  it('a symlink named like a backup is refused, not followed', async () => {
    await seed(['a']);
    const target = path.join(dir, 'target.json');
    writeFileSync(target, JSON.stringify({ sneaky: {} }));
    const link = path.join(dir, 'memory_backup_20250101_000000.json');
    symlinkSync(target, link);
    await expect(ops.importFile(link)).rejects.toMatchObject({ code: 'E_BACKUP_NOT_REGULAR' });
    expect(await store.get('sneaky')).toBeNull();
  });
});
