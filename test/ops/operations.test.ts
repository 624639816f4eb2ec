import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { writeBackup } from '../../src/backup/create.js';
import { JsonFileDriver } from '../../src/store/json-file.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import type { MemoryRecord } from '../../src/record.js';
import { FIXTURES, tempDir } from '../helpers/tmp.js';
import { testStores } from '../helpers/stores.js';
import { loadFixture } from '../store/conformance.js';

const DRIVERS = testStores();

const ACTOR = { kind: 'os' as const, name: 'tester' };

function readBackup(file: string): Record<string, MemoryRecord> {
  return JSON.parse(readFileSync(file, 'utf8')) as Record<string, MemoryRecord>;
}

async function seed(store: Store, n = 200): Promise<Record<string, MemoryRecord>> {
  const fixture = loadFixture();
  const ids = Object.keys(fixture).slice(0, n);
  for (const id of ids) await store.put(id, fixture[id]!);
  return Object.fromEntries(ids.map((id) => [id, fixture[id]!]));
}

for (const [name, open, describeFor] of DRIVERS) {
  describeFor(`guarded operations on ${name}`, () => {
    let dir: string;
    let cleanup: () => Promise<void>;
    let store: Store;
    let ops: Operations;
    let backupDir: string;

    beforeEach(async () => {
      ({ dir, cleanup } = await tempDir());
      store = await open(path.join(dir, 'storage'));
      backupDir = path.join(dir, 'storage', 'backups');
      ops = new Operations({ store, backupDir, audit: new AuditLog(path.join(dir, 'storage', 'audit.log')), actor: ACTOR });
    });
    afterEach(async () => {
      await store.close();
      await cleanup();
    });

    it('deleteUsers backs up exactly those users, verifies, deletes, and audits who did it', async () => {
      const data = await seed(store, 20);
      const [a, b] = Object.keys(data) as [string, string];
      const result = await ops.deleteUsers([a, b]);
      expect(result.deleted).toBe(2);
      expect(await store.get(a)).toBeNull();
      expect(await store.count()).toBe(18);
      expect(statSync(backupDir).mode & 0o777).toBe(0o700);
      expect(statSync(result.backupFile).mode & 0o777).toBe(0o600);
      expect(path.basename(result.backupFile)).toMatch(/^memory_backup_\d{8}_\d{6}(_\d+)?\.json$/);
      expect(readBackup(result.backupFile)).toEqual({ [a]: data[a], [b]: data[b] });
      const manifest = JSON.parse(readFileSync(result.backupFile.replace(/\.json$/, '.meta.json'), 'utf8'));
      expect(manifest).toMatchObject({ reason: 'delete-user', scope: [a, b].sort(), users: 2, auditOp: result.auditOp, gzip: false });
      const audit = await ops.readAudit({ user: a });
      expect(audit.map((e) => e.outcome)).toEqual(['started', 'done']);
      expect(audit[1]).toMatchObject({ action: 'delete-users', actor: ACTOR, backup: result.backup, durationMs: expect.any(Number) });
      expect((await ops.verifyBackups(result.backup))[0]).toMatchObject({ ok: true, users: 2 });
    });

    it('the seed restore snippet (json.load, current[uid] = backup[uid]) brings a deleted user back', async () => {
      const data = await seed(store, 5);
      const uid = Object.keys(data)[2]!;
      const { backupFile } = await ops.deleteUsers([uid]);
      const current = path.join(dir, 'memory-seed.json');
      writeFileSync(current, '{}');
      execFileSync('python3', ['-c', `import json,sys
backup = json.load(open(sys.argv[1]))
current = json.load(open(sys.argv[2]))
current[sys.argv[3]] = backup[sys.argv[3]]
json.dump(current, open(sys.argv[2], 'w'), indent=2)`, backupFile, current, uid]);
      expect(JSON.parse(readFileSync(current, 'utf8'))).toEqual({ [uid]: data[uid] });
    });

    it('an unknown id is a clear error and nothing is written', async () => {
      await seed(store, 3);
      await expect(ops.deleteUsers(['nobody-here'])).rejects.toMatchObject({ code: 'E_UNKNOWN_USER', message: expect.stringContaining('nobody-here') });
      expect(existsSync(backupDir)).toBe(false);
      expect(await ops.readAudit()).toEqual([]);
      expect(await store.count()).toBe(3);
    });

    it('fullBackup copies the whole store before deleting one user', async () => {
      const data = await seed(store, 30);
      const uid = Object.keys(data)[0]!;
      const r = await ops.deleteUsers([uid], { fullBackup: true });
      expect(readBackup(r.backupFile)).toEqual(data);
      expect(await store.count()).toBe(29);
    });

    it('a write racing a delete is either in the backup or applied after the delete, and both orders happen', async () => {
      const data = await seed(store, 10);
      const uid = Object.keys(data)[4]!;
      // Without hooks the write landed before the section every time: the hooks make both orders happen.
      const events: string[] = [];
      let held: Promise<unknown> = Promise.resolve();
      const write = (text: string) => store.appendHistory(uid, { role: 'user', text }).then(() => void events.push(`ack ${text}`));
      const racing = new Operations({
        store,
        backupDir,
        audit: new AuditLog(path.join(dir, 'storage', 'audit.log')),
        actor: ACTOR,
        hooks: {
          at: async (point) => {
            events.push(point);
            if (point === 'intent-written') await write('before the section');
            if (point === 'section-entered') {
              held = write('held by the section');
              // A section that does not hold the writer lets it land now, before the delete.
              await new Promise((resolve) => setTimeout(resolve, 50));
            }
          },
        },
      });
      const r = await racing.deleteUsers([uid]);
      await held;
      expect(events.indexOf('ack before the section')).toBeLessThan(events.indexOf('section-entered'));
      expect(events.indexOf('ack held by the section'), events.join(', ')).toBeGreaterThan(events.indexOf('changed'));
      const inBackup = readBackup(r.backupFile)[uid]?.history.map((h) => h.text) ?? [];
      const inStore = (await store.get(uid))?.history.map((h) => h.text) ?? [];
      expect(inBackup).toContain('before the section');
      expect(inBackup).not.toContain('held by the section');
      expect(inStore).toEqual(['held by the section']);
    });

    it('clearAll writes a verified full backup, then clears', async () => {
      const data = await seed(store);
      const r = await ops.clearAll();
      expect(r.deleted).toBe(200);
      expect(await store.count()).toBe(0);
      expect(readBackup(r.backupFile)).toEqual(data);
      expect((await ops.verifyBackups(r.backup))[0]).toMatchObject({ ok: true, users: 200, legacy: false });
      const list = await ops.listBackups();
      expect(list[0]).toMatchObject({ id: r.backup, users: 200, reason: 'clear-all', state: 'verified', scope: 'full' });
    });

    it('a full backup copied with cp over a seed memory.json works as that memory.json', async () => {
      const data = await seed(store, 50);
      const b = await ops.createBackup();
      const seedFile = path.join(dir, 'seed', 'memory.json');
      execFileSync('sh', ['-c', `mkdir -p "${path.dirname(seedFile)}" && cp "${b.file}" "${seedFile}"`]);
      const reopened = createStore(await JsonFileDriver.open(seedFile));
      const back: Record<string, MemoryRecord> = {};
      for await (const rec of reopened.scan()) back[rec.user_id] = rec;
      await reopened.close();
      expect(back).toEqual(data);
    });

    it('a backup from the stored JSON text is byte-identical to one serialised from the records', async () => {
      await seed(store, 50);
      await store.put('unknown-fields', { favourite: { nested: [1, 'two', null] }, '10': 'integer-like key', name: 'X' });
      const fast = await ops.createBackup();
      const slow = await writeBackup(path.join(dir, 'slow'), store.scan(), { reason: 'manual', scope: 'full', source: store.url });
      expect(fast.manifest.sha256).toBe(slow.manifest.sha256);
      expect(readFileSync(fast.file).equals(readFileSync(slow.file))).toBe(true);
    });

    it('two backups in the same second never overwrite each other', async () => {
      await seed(store, 3);
      const now = () => new Date('2026-01-02T03:04:05.000Z');
      const opts = { reason: 'manual' as const, scope: 'full' as const, source: store.url, now };
      const first = await writeBackup(backupDir, store.scan(), opts);
      await store.put('extra', {});
      const second = await writeBackup(backupDir, store.scan(), opts);
      const third = await writeBackup(backupDir, store.scan(), opts);
      expect([first.id, second.id, third.id]).toEqual(['memory_backup_20260102_030405', 'memory_backup_20260102_030405_1', 'memory_backup_20260102_030405_2']);
      expect(Object.keys(readBackup(first.file))).toHaveLength(3);
      expect(Object.keys(readBackup(second.file))).toHaveLength(4);
    });

    it('gzip backups verify, list, and restore', async () => {
      const data = await seed(store, 20);
      const b = await ops.createBackup({ gzip: true });
      expect(b.file).toMatch(/\.json\.gz$/);
      expect((await ops.verifyBackups(b.id))[0]).toMatchObject({ ok: true, users: 20 });
      await ops.clearAll();
      await ops.restore(b.id);
      const back: Record<string, MemoryRecord> = {};
      for await (const rec of store.scan()) back[rec.user_id] = rec;
      expect(back).toEqual(data);
    });

    it('full restore makes the store equal to the backup, after backing up what it overwrites', async () => {
      const data = await seed(store, 20);
      const b = await ops.createBackup();
      const ids = Object.keys(data);
      await store.appendHistory(ids[0]!, { role: 'user', text: 'after backup' });
      await store.put('new-user', { name: 'New' });
      await ops.deleteUsers([ids[1]!]);
      const dry = await ops.restore(b.id, { dryRun: true });
      expect(dry.dryRun).toBe(true);
      expect(dry.diff.removed).toEqual(['new-user']);
      expect(dry.diff.added).toEqual([ids[1]]);
      expect(dry.diff.changed.map((c) => c.user_id)).toEqual([ids[0]]);
      expect(await store.get('new-user')).not.toBeNull();
      const r = await ops.restore(b.id);
      expect(r.backup).toBeDefined();
      const back: Record<string, MemoryRecord> = {};
      for await (const rec of store.scan()) back[rec.user_id] = rec;
      expect(back).toEqual(data);
      const pre = readBackup(path.join(backupDir, `${r.backup}.json`));
      expect(pre['new-user']?.name).toBe('New');
      expect((await ops.diff(b.id, 'current'))).toEqual({ added: [], removed: [], changed: [], unchanged: 20 });
    });

    it('selective restore puts back only the given users; merge keeps users absent from the backup', async () => {
      const data = await seed(store, 10);
      const ids = Object.keys(data);
      const b = await ops.createBackup();
      await store.setFlag(ids[0]!, 'active_intent', 'changed');
      await store.setFlag(ids[1]!, 'active_intent', 'changed too');
      await store.put('later', {});
      const r = await ops.restore(b.id, { users: [ids[0]!] });
      expect(r.written).toBe(1);
      expect(await store.get(ids[0]!)).toEqual(data[ids[0]!]);
      expect((await store.get(ids[1]!))?.flags.active_intent).toBe('changed too');
      expect(readBackup(path.join(backupDir, `${r.backup}.json`))[ids[0]!]?.flags.active_intent).toBe('changed');
      await expect(ops.restore(b.id, { users: ['not-in-backup'] })).rejects.toMatchObject({ code: 'E_UNKNOWN_USER' });
      await ops.restore(b.id, { mode: 'merge' });
      expect(await store.get(ids[1]!)).toEqual(data[ids[1]!]);
      expect(await store.get('later')).not.toBeNull();
    });

    it('restoring a backup of some users restores those users and leaves everyone else', async () => {
      const data = await seed(store, 10);
      const [gone, stays] = Object.keys(data) as [string, string];
      const { backup } = await ops.deleteUsers([gone]);
      await store.setFlag(stays, 'active_intent', 'kept');
      const r = await ops.restore(backup);
      expect(r.written).toBe(1);
      expect(await store.count()).toBe(10);
      expect(await store.get(gone)).toEqual(data[gone]);
      expect((await store.get(stays))?.flags.active_intent).toBe('kept');
    });

    it('diff reports added, removed and changed users with field details', async () => {
      const data = await seed(store, 5);
      const ids = Object.keys(data).sort();
      const b = await ops.createBackup();
      await store.appendHistory(ids[0]!, { role: 'user', text: 'x' });
      await store.patch(ids[1]!, { flags: { active_intent: null, brand_new: 1 }, name: 'Renamed' });
      await ops.deleteUsers([ids[2]!]);
      await store.put('zz-new', {});
      const d = await ops.diff(b.id);
      expect(d.added).toEqual(['zz-new']);
      expect(d.removed).toEqual([ids[2]]);
      const c0 = d.changed.find((c) => c.user_id === ids[0]);
      expect(c0?.history).toEqual({ from: data[ids[0]!]!.history.length, to: Math.min(50, data[ids[0]!]!.history.length + 1) });
      const c1 = d.changed.find((c) => c.user_id === ids[1]);
      expect(c1?.fields).toEqual(expect.arrayContaining(['flags', 'name', 'updated_at']));
      expect(c1?.flags).toEqual({ added: ['brand_new'], removed: ['active_intent'], changed: [] });
    });

    it('a corrupted backup fails verification and is refused for a full restore', async () => {
      await seed(store, 5);
      const b = await ops.createBackup();
      const text = readFileSync(b.file, 'utf8');
      writeFileSync(b.file, text.replace('Jl.', 'Jx.'));
      const [v] = await ops.verifyBackups(b.id);
      expect(v).toMatchObject({ ok: false, error: { code: 'E_BACKUP_VERIFY' } });
      await expect(ops.restore(b.id)).rejects.toMatchObject({ code: 'E_BACKUP_VERIFY' });
      expect(await store.count()).toBe(5);
    });

    it('backup ids resolve only inside the backup directory', async () => {
      for (const bad of ['../memory', '../../etc/passwd', '/etc/passwd', 'memory_backup_20250101_000000/../../x', 'not-a-backup']) {
        await expect(ops.inspectBackup(bad)).rejects.toMatchObject({ code: 'E_BACKUP_ID' });
        await expect(ops.restore(bad)).rejects.toMatchObject({ code: 'E_BACKUP_ID' });
      }
      await expect(ops.inspectBackup('memory_backup_20200101_000000')).rejects.toMatchObject({ code: 'E_BACKUP_NOT_FOUND' });
    });

    it('the three legacy backup kinds are listed, verified, inspected, diffed and restored', async () => {
      const { mkdirSync } = await import('node:fs');
      mkdirSync(backupDir, { recursive: true });
      for (const f of readdirSync(path.join(FIXTURES, 'backups'))) copyFileSync(path.join(FIXTURES, 'backups', f), path.join(backupDir, f));
      const list = await ops.listBackups();
      expect(list.map((b) => [b.id, b.state, b.kind])).toEqual([
        ['memory_backup_20251125_145714', 'legacy', 'full'],
        ['memory_backup_628161973069_20251125_140002', 'legacy', 'user'],
        ['memory_backup_20251125_132811', 'legacy', 'full'],
      ]);
      const verified = await ops.verifyBackups();
      expect(verified.map((v) => [v.ok, v.legacy, v.users])).toEqual([[true, true, 5], [true, true, 1], [true, true, 200]]);
      const one = await ops.inspectBackup('memory_backup_20251125_132811', { user: '628161973069' });
      expect(one.record).toEqual(loadFixture()['628161973069']);
      const d = await ops.diff('memory_backup_20251125_145714', 'memory_backup_20251125_132811');
      expect(d.added).toHaveLength(195);
      expect(d.removed).toEqual([]);
      // No manifest, no checksum: restored only when the caller accepts an unverified backup.
      await expect(ops.restore('memory_backup_20251125_132811')).rejects.toMatchObject({ code: 'E_BACKUP_UNVERIFIED' });
      await ops.restore('memory_backup_20251125_132811', { allowUnverified: true });
      expect(await store.count()).toBe(200);
      await store.setFlag('628161973069', 'active_intent', 'changed');
      await ops.restore('memory_backup_628161973069_20251125_140002', { users: ['628161973069'], allowUnverified: true });
      expect((await store.get('628161973069'))?.flags.active_intent).toBe(loadFixture()['628161973069']!.flags.active_intent);
    });

    it('prune keeps by policy, never removes the newest, removes manifests too, and audits', async () => {
      await seed(store, 2);
      const made: string[] = [];
      for (const day of ['2026-01-01', '2026-01-02', '2026-01-03', '2026-01-04']) {
        const b = await writeBackup(backupDir, store.scan(), { reason: 'scheduled', scope: 'full', source: store.url, now: () => new Date(`${day}T10:00:00Z`) });
        made.push(b.id);
      }
      const dry = await ops.prune({ last: 2 }, { dryRun: true });
      expect(dry.remove.map((r) => r.id)).toEqual([made[1], made[0]]);
      expect(readdirSync(backupDir)).toHaveLength(8);
      const r = await ops.prune({ last: 2 });
      expect(r.removed).toEqual([made[1], made[0]]);
      expect(readdirSync(backupDir).sort()).toEqual([`${made[2]}.json`, `${made[2]}.meta.json`, `${made[3]}.json`, `${made[3]}.meta.json`]);
      expect((await ops.readAudit({ action: 'prune' })).at(-1)).toMatchObject({ outcome: 'done' });
      const empty = await ops.prune({});
      expect(empty.remove).toEqual([]);
    });

    it('recover removes temp files and reports an interrupted operation', async () => {
      await seed(store, 2);
      const { mkdirSync } = await import('node:fs');
      mkdirSync(backupDir, { recursive: true });
      writeFileSync(path.join(backupDir, '.memory_backup_20260101_000000.json.123.abcdef01.tmp'), '{');
      await ops.audit.begin('delete-users', ACTOR, { userIds: ['628161973069'] });
      const r = await ops.recover();
      expect(r.removedTemp).toHaveLength(1);
      expect(r.interrupted).toHaveLength(1);
      expect(r.interrupted[0]).toMatchObject({ backup: null, applied: false });
      expect((await ops.recover()).interrupted).toHaveLength(0);
    });
  });
}

describe('a backup write failure aborts with nothing deleted', () => {
  it('ENOSPC on a small tmpfs: E_BACKUP_WRITE, store untouched, no partial file', async (ctx) => {
    const { dir, cleanup } = await tempDir();
    const mnt = path.join(dir, 'tiny');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(mnt);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt], { stdio: 'ignore' });
    } catch {
      if (process.env.CI === 'true') throw new Error('cannot mount a tmpfs for the ENOSPC test (CI=true: not skipping)');
      ctx.skip();
    }
    const store = createStore(await SqliteDriver.open(path.join(dir, 'memory.db')));
    try {
      await seed(store, 200);
      const ops = new Operations({ store, backupDir: path.join(mnt, 'backups'), audit: new AuditLog(path.join(dir, 'audit.log')), actor: ACTOR });
      await expect(ops.clearAll()).rejects.toMatchObject({ code: 'E_BACKUP_WRITE' });
      expect(await store.count()).toBe(200);
      expect(readdirSync(path.join(mnt, 'backups'))).toEqual([]);
      const audit = await ops.readAudit();
      expect(audit.at(-1)).toMatchObject({ action: 'clear-all', outcome: 'failed', error: { code: 'E_BACKUP_WRITE' } });
      await expect(ops.deleteUsers(['628161973069'], { fullBackup: true })).rejects.toMatchObject({ code: 'E_BACKUP_WRITE' });
      expect(await store.get('628161973069')).not.toBeNull();
    } finally {
      await store.close();
      execFileSync('umount', [mnt]);
      await cleanup();
    }
  });
});
