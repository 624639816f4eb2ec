import { promises as fsp, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { backupInfo, inspectBackup, listBackupDir, newestBackupDate, newestFirst, verifyEntries } from '../../src/backup/catalog.js';
import { writeBackup } from '../../src/backup/create.js';
import { clearVerifyCache } from '../../src/backup/integrity.js';
import { openBackup } from '../../src/backup/source.js';
import { serializeSeed } from '../../src/format/seed.js';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { tempDir } from '../helpers/tmp.js';

// The promises of the backup catalogue (src/backup/catalog.ts): listing shows every backup newest first
// with its true state (verified, pending, legacy, damaged, refused) and never hides the others for one
// it cannot open; the newest date is the one listing would show; inspection shows no content of a
// backup that fails verification.

const rec = (id: string, messages = 0): MemoryRecord => ({
  ...newRecord(id, '2026-01-01T00:00:00Z'),
  name: `n-${id}`,
  history: Array.from({ length: messages }, (_, i) => ({ role: 'user' as const, text: `m${i}`, ts: '2026-01-01T00:00:00Z' })),
});
const at = (iso: string) => () => new Date(iso);
const opts = { reason: 'manual' as const, scope: 'full' as const, source: 's' };

describe('the backup catalogue', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
    clearVerifyCache();
  });
  afterEach(async () => {
    await cleanup();
  });

  it('lists every kind of entry newest first, each with its state, and skips what is no backup', async () => {
    const v = await writeBackup(dir, [rec('a'), rec('b')], { ...opts, reason: 'delete-user', scope: ['a', 'b'], now: at('2026-01-03T00:00:00Z') });
    const p = await writeBackup(dir, [rec('c')], { ...opts, now: at('2026-01-02T00:00:00Z') });
    const pm = path.join(dir, `${p.id}.meta.json`);
    writeFileSync(pm, JSON.stringify({ ...(JSON.parse(readFileSync(pm, 'utf8')) as object), verifiedAt: null }));
    const d = await writeBackup(dir, [rec('d')], { ...opts, now: at('2026-01-04T00:00:00Z') });
    writeFileSync(path.join(dir, `${d.id}.meta.json`), '{broken');
    writeFileSync(path.join(dir, 'memory_backup_20251231_000000.json'), serializeSeed([['x', rec('x')]]));
    writeFileSync(path.join(dir, 'memory_backup_u9_20251230_000000.json'), JSON.stringify({ user_id: 'u9', backup_timestamp: 'x', record: rec('u9') }));
    mkdirSync(path.join(dir, 'memory_backup_20260105_000000.json'));
    symlinkSync('/nonexistent', path.join(dir, 'memory_backup_20260106_000000.json.gz'));
    writeFileSync(path.join(dir, 'memory_backup_20261399_000000.json'), serializeSeed([]));
    writeFileSync(path.join(dir, 'notes.txt'), 'x');
    // Looks like a per-user name, but an id with '..' is never opened: damaged, not refused.
    writeFileSync(path.join(dir, 'memory_backup_a..b_20251229_000000.json'), '{}');

    const before = Date.now();
    const list = await listBackupDir(dir);
    const infos = list.map((e) => e.info);
    expect(infos.map((i) => [i.id, i.state])).toEqual([
      [v.id, 'verified'],
      [p.id, 'pending'],
      ['memory_backup_20251231_000000', 'legacy'],
      ['memory_backup_u9_20251230_000000', 'legacy'],
      // Without a date: last, by id descending.
      ['memory_backup_a..b_20251229_000000', 'damaged'],
      ['memory_backup_20261399_000000', 'legacy'],
      ['memory_backup_20260106_000000', 'refused'],
      ['memory_backup_20260105_000000', 'refused'],
      // Damaged: its manifest's time is not trusted, nor the name's.
      [d.id, 'damaged'],
    ]);
    const byId = Object.fromEntries(infos.map((i) => [i.id, i]));
    const age = Math.round((before - Date.parse('2026-01-03T00:00:00Z')) / 1000);
    const vInfo = byId[v.id];
    expect(vInfo).toEqual({
      id: v.id,
      file: v.file,
      size: v.manifest.bytes,
      users: 2,
      reason: 'delete-user',
      scope: ['a', 'b'],
      createdAt: '2026-01-03T00:00:00.000Z',
      ageSeconds: vInfo?.ageSeconds,
      gzip: false,
      state: 'verified',
      kind: 'full',
    });
    expect(Math.abs((vInfo?.ageSeconds ?? 0) - age)).toBeLessThanOrEqual(5);
    expect(byId[d.id]).toMatchObject({ state: 'damaged', users: null, reason: 'legacy', scope: null, createdAt: null, ageSeconds: null, size: d.manifest.bytes, problem: { code: 'E_BACKUP_MANIFEST' } });
    expect(byId.memory_backup_20251231_000000).toMatchObject({ users: null, reason: 'legacy', scope: 'full', kind: 'full', createdAt: '2025-12-31T00:00:00.000Z' });
    expect(byId.memory_backup_u9_20251230_000000).toMatchObject({ scope: null, kind: 'user' });
    expect(byId.memory_backup_20261399_000000).toMatchObject({ createdAt: null, ageSeconds: null });
    expect(byId.memory_backup_20260106_000000).toMatchObject({
      file: path.join(dir, 'memory_backup_20260106_000000.json.gz'),
      gzip: true,
      size: 0,
      problem: { code: 'E_BACKUP_NOT_REGULAR', message: 'refusing memory_backup_20260106_000000.json.gz: it is a symlink, not a regular backup file (never followed)' },
    });
    expect(list.find((e) => e.info.state === 'refused')?.source).toBeNull();
    expect(list.find((e) => e.info.id === v.id)?.source?.manifest?.sha256).toBe(v.manifest.sha256);

    // Verifying every entry: the refused ones fail with their reason, the others are checked.
    const results = await verifyEntries(list);
    expect(results.map((r) => [r.id, r.ok])).toEqual(infos.map((i) => [i.id, i.state !== 'refused' && i.state !== 'damaged']));
    expect(results.find((r) => r.id === 'memory_backup_20260105_000000')).toEqual({ id: 'memory_backup_20260105_000000', ok: false, legacy: false, users: null, error: { code: 'E_BACKUP_NOT_REGULAR', message: expect.stringContaining('it is a directory') } });
    expect(results.find((r) => r.id === v.id)).toMatchObject({ ok: true, users: 2, sha256: v.manifest.sha256 });
    expect(await verifyEntries([{ info: { ...(vInfo as NonNullable<typeof vInfo>), problem: undefined }, source: null }])).toEqual([
      { id: v.id, ok: false, legacy: false, users: null, error: { code: 'E_BACKUP_READ', message: `cannot open ${v.file}` } },
    ]);
  });

  it('a backup removed between the directory listing and its open (a prune on another daemon) is skipped, not listed as refused', async () => {
    const kept = await writeBackup(dir, [rec('a')], { ...opts, now: at('2026-01-02T00:00:00Z') });
    const gone = await writeBackup(dir, [rec('b')], { ...opts, now: at('2026-01-03T00:00:00Z') });
    const readdir = fsp.readdir.bind(fsp);
    // The real listing, then the files removed before the catalogue opens them: the race, made to happen.
    const spy = vi.spyOn(fsp, 'readdir').mockImplementationOnce((async (d: string) => {
      const names = await readdir(d);
      rmSync(path.join(dir, `${gone.id}.json`));
      rmSync(path.join(dir, `${gone.id}.meta.json`));
      return names;
    }) as typeof fsp.readdir);
    try {
      const listed = await listBackupDir(dir);
      expect(spy).toHaveBeenCalledTimes(1);
      expect(listed.map((e) => [e.info.id, e.info.state])).toEqual([[kept.id, 'verified']]);
    } finally {
      spy.mockRestore();
    }
  });

  it('a missing directory lists nothing; one that cannot be listed is E_BACKUP_READ', async () => {
    expect(await listBackupDir(path.join(dir, 'none'))).toEqual([]);
    expect(await newestBackupDate(path.join(dir, 'none'))).toBeNull();
    const file = path.join(dir, 'f');
    writeFileSync(file, '');
    await expect(listBackupDir(file)).rejects.toMatchObject({ code: 'E_BACKUP_READ', message: expect.stringMatching(new RegExp(`^cannot list ${file}: `)), cause: expect.objectContaining({ code: 'ENOTDIR' }) });
  });

  it('ages are never negative, and count from the time given', async () => {
    const b = await writeBackup(dir, [rec('a')], { ...opts, now: at('2026-01-01T00:00:00Z') });
    const src = await openBackup(dir, b.id);
    expect(backupInfo(src, Date.parse('2026-01-01T00:01:40.400Z')).ageSeconds).toBe(100);
    expect(backupInfo(src, Date.parse('2026-01-01T00:01:40.600Z')).ageSeconds).toBe(101);
    expect(backupInfo(src, Date.parse('2025-12-31T00:00:00Z')).ageSeconds).toBe(0);
  });

  it('newestFirst: by date, undated last, ties by id descending', () => {
    const list = [
      { id: 'b', createdAt: '2026-01-01T00:00:00.000Z' },
      { id: 'x', createdAt: null },
      { id: 'a', createdAt: '2026-01-01T00:00:00.000Z' },
      { id: 'c', createdAt: '2026-01-02T00:00:00.000Z' },
      { id: 'y', createdAt: null },
      { id: '10', createdAt: '2025-01-01T00:00:00.000Z' },
      { id: '9', createdAt: '2025-01-01T00:00:00.000Z' },
    ];
    expect(newestFirst(list).map((e) => e.id)).toEqual(['c', 'b', 'a', '9', '10', 'y', 'x']);
  });

  it('the newest date is the one listing shows: damaged and unopenable entries do not count, a legacy name is read in its zone', async () => {
    expect(await newestBackupDate(dir)).toBeNull();
    await writeBackup(dir, [rec('a')], { ...opts, now: at('2026-01-01T00:00:00.250Z') });
    // Same second, later: the manifest's time to the millisecond decides.
    await writeBackup(dir, [rec('b')], { ...opts, now: at('2026-01-01T00:00:00.750Z') });
    // A third in the same second, not the newest: the newest of the three counts, whatever their order.
    await writeBackup(dir, [rec('b2')], { ...opts, now: at('2026-01-01T00:00:00.500Z') });
    expect((await newestBackupDate(dir))?.toISOString()).toBe('2026-01-01T00:00:00.750Z');
    const d = await writeBackup(dir, [rec('c')], { ...opts, now: at('2026-01-02T00:00:00Z') });
    writeFileSync(path.join(dir, `${d.id}.meta.json`), '{broken');
    mkdirSync(path.join(dir, 'memory_backup_20260103_000000.json'));
    expect((await newestBackupDate(dir))?.toISOString()).toBe('2026-01-01T00:00:00.750Z');
    // A seed file named 2026-01-01 06:00 Jakarta time is 2025-12-31 23:00 UTC: older.
    writeFileSync(path.join(dir, 'memory_backup_20260101_060000.json'), serializeSeed([]));
    expect((await newestBackupDate(dir, 'Asia/Jakarta'))?.toISOString()).toBe('2026-01-01T00:00:00.750Z');
    expect((await newestBackupDate(dir))?.toISOString()).toBe('2026-01-01T06:00:00.000Z');
    const listed = (await listBackupDir(dir, 'Asia/Jakarta')).find((e) => e.info.createdAt !== null && e.info.state !== 'damaged');
    expect(listed?.info.createdAt).toBe('2026-01-01T00:00:00.750Z');
  });

  it('inspects a backup: a sample, one user, and nothing of a backup that fails verification', async () => {
    const b = await writeBackup(dir, [rec('a', 2), rec('b', 0), rec('c', 1)], { ...opts, now: at('2026-01-01T00:00:00Z') });
    const src = await openBackup(dir, b.id);
    const all = await inspectBackup(src);
    expect(all).toMatchObject({ users: 3, manifest: b.manifest, verification: { id: b.id, ok: true, users: 3 } });
    expect(all.sample).toEqual([
      { user_id: 'a', name: 'n-a', messages: 2 },
      { user_id: 'b', name: 'n-b', messages: 0 },
      { user_id: 'c', name: 'n-c', messages: 1 },
    ]);
    expect(all.record).toBeUndefined();
    const two = await inspectBackup(src, { sample: 2 });
    expect([two.users, two.sample.map((s) => s.user_id)]).toEqual([3, ['a', 'b']]);
    const one = await inspectBackup(src, { user: 'b' });
    expect(one).toMatchObject({ users: 3, sample: [], record: { user_id: 'b', name: 'n-b' } });
    expect((await inspectBackup(src, { user: 'zz' })).record).toBeNull();
    await expect(inspectBackup(src, { user: '' })).rejects.toMatchObject({ code: 'E_USER_ID' });
    writeFileSync(path.join(dir, 'memory_backup_20250101_000000.json'), serializeSeed([['x', rec('x')]]));
    const legacy = await inspectBackup(await openBackup(dir, 'memory_backup_20250101_000000'), { user: 'x' });
    expect(legacy).toMatchObject({ users: -1, manifest: null, record: { user_id: 'x' } });

    writeFileSync(b.file, readFileSync(b.file, 'utf8').replace('"n-b"', '"n-X"'));
    clearVerifyCache();
    const bad = await inspectBackup(await openBackup(dir, b.id), { user: 'b' });
    expect(bad).toEqual({ backup: bad.backup, manifest: b.manifest, users: -1, sample: [], verification: bad.verification });
    expect(bad.verification).toMatchObject({ ok: false, error: { code: 'E_BACKUP_VERIFY' } });
  });
});
