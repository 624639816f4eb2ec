import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fsp, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { writeBackup } from '../../src/backup/create.js';
import { clearVerifyCache, finishLeftovers, finishStoreTemps, verificationError, verifySource, writerAlive } from '../../src/backup/integrity.js';
import type { BackupManifest } from '../../src/backup/manifest.js';
import { openBackup } from '../../src/backup/source.js';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { tempDir } from '../helpers/tmp.js';

// What a reader may trust about a backup, and what the next start does with a killed writer's files:
// a backup whose content does not match its manifest is never used; a live writer's files are never
// touched; a dead writer's verified-by-content backup is completed, an unverifiable one removed.

function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  if (r.pid === undefined) throw new Error('no pid');
  return r.pid;
}

const users = (n: number, tag = 'u'): MemoryRecord[] => Array.from({ length: n }, (_, i) => ({ ...newRecord(`${tag}${i}`, '2026-01-01T00:00:00Z'), name: `n${i}` }));

let live: ChildProcess;
let other: ChildProcess;
beforeAll(() => {
  live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 120000)'], { stdio: 'ignore' });
  // A live process that is not node: a reused pid, not a writer.
  other = spawn('sleep', ['120'], { stdio: 'ignore' });
});
afterAll(() => {
  live.kill('SIGKILL');
  other.kill('SIGKILL');
});

describe('writerAlive', () => {
  it('tells a live node writer from a dead pid, an invalid pid and a reused pid', () => {
    expect(writerAlive(process.pid)).toBe(true);
    expect(writerAlive(live.pid ?? -1)).toBe(true);
    expect(writerAlive(deadPid())).toBe(false);
    expect(writerAlive(0)).toBe(false);
    expect(writerAlive(-5)).toBe(false);
    expect(writerAlive(1.5)).toBe(false);
    expect(writerAlive(other.pid ?? -1)).toBe(false);
    // Another host's writer cannot be checked: assumed alive, whatever the pid.
    expect(writerAlive(deadPid(), `not-${hostname()}`)).toBe(true);
    expect(writerAlive(0, `not-${hostname()}`)).toBe(true);
    expect(writerAlive(live.pid ?? -1, hostname())).toBe(true);
  });
});

describe('verifySource and verificationError', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
    clearVerifyCache();
  });
  afterEach(async () => {
    await cleanup();
  });

  it('accepts an intact backup, and refuses one whose content changed (checksum or count)', async () => {
    const b = await writeBackup(dir, users(3), { reason: 'manual', scope: 'full', source: 'test' });
    const src = await openBackup(dir, b.id);
    expect(await verifySource(src)).toEqual({ ok: true, legacy: false, users: 3, sha256: b.manifest.sha256 });
    // Same length, one byte different: only the digest can tell.
    const text = readFileSync(b.file, 'utf8');
    writeFileSync(b.file, text.replace('"n1"', '"m1"'));
    const v = await verifySource(await openBackup(dir, b.id));
    expect(v.ok).toBe(false);
    expect(v.users).toBeNull();
    expect(v.error?.code).toBe('E_BACKUP_VERIFY');
    expect(v.error?.message).toBe(`${src.fileName}: expected 3 users with sha256 ${b.manifest.sha256}, found 3 users with sha256 ${v.error?.message.split(' ').at(-1)}`);
    expect(v.error?.message.split(' ').at(-1)).not.toBe(b.manifest.sha256);
    const err = verificationError(src, v);
    expect(err).toMatchObject({ code: 'E_BACKUP_VERIFY', details: { id: src.id, reason: 'E_BACKUP_VERIFY' } });
    expect(err.message).toBe(`backup ${src.id} failed verification: ${v.error?.message}`);
  });

  it('refuses a backup whose manifest claims another user count', async () => {
    const b = await writeBackup(dir, users(2), { reason: 'manual', scope: 'full', source: 'test' });
    const meta = b.file.replace(/\.json$/, '.meta.json');
    const m = JSON.parse(readFileSync(meta, 'utf8')) as BackupManifest;
    writeFileSync(meta, JSON.stringify({ ...m, users: 3 }));
    const v = await verifySource(await openBackup(dir, b.id));
    expect(v).toMatchObject({ ok: false, legacy: false, users: null, error: { code: 'E_BACKUP_VERIFY' } });
    expect(v.error?.message).toContain('expected 3 users');
    expect(v.error?.message).toContain('found 2 users');
  });

  it('reports damage, a vanished file and a file swapped for a directory without reading content', async () => {
    const b = await writeBackup(dir, users(1), { reason: 'manual', scope: 'full', source: 'test' });
    const src = await openBackup(dir, b.id);
    expect(await verifySource({ ...src, damage: { code: 'E_BACKUP_MANIFEST', message: 'broken' } })).toEqual({ ok: false, legacy: false, users: null, error: { code: 'E_BACKUP_MANIFEST', message: 'broken' } });
    await fsp.rm(b.file);
    const gone = await verifySource(src);
    expect(gone).toMatchObject({ ok: false, legacy: false, users: null, error: { code: 'E_BACKUP_READ' } });
    expect(gone.error?.message).toMatch(new RegExp(`^cannot read ${b.file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: ENOENT`));
    await fsp.mkdir(b.file);
    const notFile = await verifySource(src);
    expect(notFile).toEqual({ ok: false, legacy: false, users: null, error: { code: 'E_BACKUP_NOT_REGULAR', message: `refusing ${src.fileName}: not a regular file` } });
    expect(verificationError(src, notFile)).toMatchObject({ code: 'E_BACKUP_NOT_REGULAR', details: { reason: 'E_BACKUP_NOT_REGULAR' } });
    expect(verificationError(src, { ok: false, legacy: false, users: null, error: { code: 'E_BACKUP_MANIFEST', message: 'm' } }).code).toBe('E_BACKUP_MANIFEST');
    expect(verificationError(src, { ok: false, legacy: false, users: null, error: { code: 'E_BACKUP_PARSE', message: 'p' } })).toMatchObject({ code: 'E_BACKUP_VERIFY', details: { reason: 'E_BACKUP_PARSE' } });
    const unknown = verificationError(src, { ok: false, legacy: false, users: null });
    expect(unknown).toMatchObject({ code: 'E_BACKUP_VERIFY', message: `backup ${src.id} failed verification: unknown`, details: { reason: 'E_BACKUP_VERIFY' } });
  });

  it('a legacy backup is verified by parsing it whole, and a broken one fails', async () => {
    const legacy = path.join(dir, 'memory_backup_20250101_000000.json');
    writeFileSync(legacy, JSON.stringify({ a: { user_id: 'a' }, b: { user_id: 'b' } }));
    expect(await verifySource(await openBackup(dir, 'memory_backup_20250101_000000'))).toEqual({ ok: true, legacy: true, users: 2 });
    const broken = path.join(dir, 'memory_backup_20250102_000000.json');
    writeFileSync(broken, '{"a": {"user_id": "a"}, "b": ');
    const v = await verifySource(await openBackup(dir, 'memory_backup_20250102_000000'));
    expect(v).toMatchObject({ ok: false, legacy: true, users: null });
    expect(v.error?.code).toMatch(/^E_BACKUP_/);
  });

  it('verifies a gzip backup through its uncompressed text, and refuses a damaged one', async () => {
    const b = await writeBackup(dir, users(3), { reason: 'manual', scope: 'full', source: 'test', gzip: true });
    expect(await verifySource(await openBackup(dir, b.id))).toEqual({ ok: true, legacy: false, users: 3, sha256: b.manifest.sha256 });
    const bytes = readFileSync(b.file);
    bytes[bytes.length - 12] = bytes[bytes.length - 12]! ^ 0xff;
    writeFileSync(b.file, bytes);
    expect((await verifySource(await openBackup(dir, b.id))).ok).toBe(false);
  });

  it('a legacy backup swapped for a directory is refused as not a regular file', async () => {
    const legacy = path.join(dir, 'memory_backup_20250101_000000.json');
    writeFileSync(legacy, JSON.stringify({ a: { user_id: 'a' } }));
    const src = await openBackup(dir, 'memory_backup_20250101_000000');
    await fsp.rm(legacy);
    await fsp.mkdir(legacy);
    expect(await verifySource(src)).toEqual({ ok: false, legacy: true, users: null, error: { code: 'E_BACKUP_NOT_REGULAR', message: `refusing ${src.fileName}: not a regular file` } });
  });

  it('does not hold a descriptor open after a verification', async () => {
    const b = await writeBackup(dir, users(2), { reason: 'manual', scope: 'full', source: 'test' });
    const src = await openBackup(dir, b.id);
    // Descriptors of this process open on the backup, checked right after each verification (before any GC).
    const openOnBackup = async () => {
      let n = 0;
      for (const fd of await fsp.readdir('/proc/self/fd')) {
        if ((await fsp.readlink(`/proc/self/fd/${fd}`).catch(() => '')) === b.file) n++;
      }
      return n;
    };
    for (let i = 0; i < 5; i++) {
      clearVerifyCache();
      expect((await verifySource(src)).ok).toBe(true);
      expect(await openOnBackup()).toBe(0);
    }
  });

  it('caches a success per file identity (one hash pass for repeated checks), and never a failure', async () => {
    const b = await writeBackup(dir, users(2), { reason: 'manual', scope: 'full', source: 'test' });
    const src = await openBackup(dir, b.id);
    const first = await verifySource(src);
    expect(first.ok).toBe(true);
    // The cached result itself comes back: no second pass over the content.
    expect(await verifySource(src)).toBe(first);
    // An edit in place changes ctime (and here the size): a new verification, which fails.
    writeFileSync(b.file, readFileSync(b.file, 'utf8').replace('"n1"', '"n12"'));
    const edited = await verifySource(src);
    expect(edited.ok).toBe(false);
    expect(await verifySource(src)).not.toBe(edited);
    // Put back: the failure was not cached, so the file verifies again.
    writeFileSync(b.file, readFileSync(b.file, 'utf8').replace('"n12"', '"n1"'));
    const again = await verifySource(src);
    expect(again.ok).toBe(true);
    expect(again).not.toBe(first);
    // A different manifest for the same file is a different key.
    const claimsMore = { ...src, manifest: { ...(src.manifest as BackupManifest), users: 5 } };
    expect((await verifySource(claimsMore)).ok).toBe(false);
    const claimsGzip = { ...src, manifest: { ...(src.manifest as BackupManifest), gzip: true } };
    expect(await verifySource(claimsGzip)).not.toBe(again);
  });

  it('keeps at most 1000 results, dropping the oldest first', async () => {
    const b = await writeBackup(dir, users(1), { reason: 'manual', scope: 'full', source: 'test' });
    const src = await openBackup(dir, b.id);
    const oldest = await verifySource(src);
    // 999 more distinct files (copies of the same backup; a hard link would change the inode's ctime): the cache is full, the oldest still in it.
    const fill = async (from: number, to: number) => {
      for (let i = from; i < to; i++) {
        const name = `memory-2026-01-01T00-00-00Z-${i}.json`;
        const file = path.join(dir, name);
        await fsp.copyFile(b.file, file);
        expect((await verifySource({ ...src, file, fileName: name })).ok).toBe(true);
      }
    };
    await fill(0, 999);
    expect(await verifySource(src)).toBe(oldest);
    // One more: the oldest goes.
    await fill(999, 1000);
    const next = await verifySource(src);
    expect(next).toEqual(oldest);
    expect(next).not.toBe(oldest);
  });
});

describe('finishLeftovers and finishStoreTemps', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
  });
  afterEach(async () => {
    await cleanup();
  });

  const meta = (b: { file: string }) => b.file.replace(/\.json(\.gz)?$/, '.meta.json');
  const readMeta = (b: { file: string }) => JSON.parse(readFileSync(meta(b), 'utf8')) as BackupManifest;
  const pending = (b: { file: string }, pid: number, host = hostname(), extra: Partial<BackupManifest> = {}) => {
    writeFileSync(meta(b), JSON.stringify({ ...readMeta(b), verifiedAt: null, writer: { pid, host }, ...extra }));
  };

  it('reports nothing for a missing directory and refuses one it cannot list', async () => {
    expect(await finishLeftovers(path.join(dir, 'none'))).toEqual({ removedTemp: [], removedOrphans: [], completed: [], removedIncomplete: [] });
    const file = path.join(dir, 'plain');
    writeFileSync(file, 'x');
    await expect(finishLeftovers(file)).rejects.toMatchObject({
      code: 'E_BACKUP_READ',
      message: expect.stringMatching(/^cannot list .*plain: ENOTDIR/) as unknown,
      cause: expect.objectContaining({ code: 'ENOTDIR' }) as unknown,
    });
  });

  it("removes dead writers' temp files (only under the prefix), keeps live ones and other files", async () => {
    const dead = deadPid();
    const names = {
      dead: `.memory.json.${dead}.abcdef01.tmp`,
      live: `.memory.json.${live.pid}.abcdef02.tmp`,
      otherPrefix: `.other.json.${dead}.abcdef03.tmp`,
      notTemp: `.memory.json.${dead}.abcdef0.tmp`,
      store: 'memory.json',
    };
    for (const n of Object.values(names)) writeFileSync(path.join(dir, n), '{');
    expect(await finishStoreTemps(path.join(dir, 'memory.json'))).toEqual([names.dead]);
    const left = await fsp.readdir(dir);
    expect(left.sort()).toEqual([names.live, names.otherPrefix, names.notTemp, names.store].sort());
    // Without a prefix, every dead writer's temp file goes; the report lists each.
    const report = await finishLeftovers(dir);
    expect(report.removedTemp).toEqual([names.otherPrefix]);
    expect(existsSync(path.join(dir, names.live))).toBe(true);
    expect(existsSync(path.join(dir, names.notTemp))).toBe(true);
  });

  it("a store's temp cleanup touches nothing but the store's temp files", async () => {
    const b = await writeBackup(dir, users(1), { reason: 'manual', scope: 'full', source: 'test' });
    await fsp.rm(b.file);
    pending(b, deadPid());
    expect(await finishStoreTemps(path.join(dir, 'memory.json'))).toEqual([]);
    expect(existsSync(meta(b))).toBe(true);
  });

  it("never removes an operator's file that only looks like a backup's name", async () => {
    const b = await writeBackup(dir, users(1), { reason: 'manual', scope: 'full', source: 'test' });
    // An operator's copy of the backup whose suffix is as long as ".meta.json", then the backup goes.
    const copy = `${b.file}.copy`;
    await fsp.copyFile(b.file, copy);
    await fsp.rm(b.file);
    const report = await finishLeftovers(dir);
    expect(report.removedOrphans).toEqual([path.basename(meta(b))]);
    expect(existsSync(copy)).toBe(true);
  });

  it('completes a pending manifest that names no writer (written before writers were recorded)', async () => {
    const b = await writeBackup(dir, users(2), { reason: 'manual', scope: 'full', source: 'test' });
    const { writer: _w, ...m } = readMeta(b);
    writeFileSync(meta(b), JSON.stringify({ ...m, verifiedAt: null }));
    const report = await finishLeftovers(dir);
    expect(report.completed).toEqual([path.basename(b.file)]);
    expect(typeof readMeta(b).verifiedAt).toBe('string');
  });

  it("removes a dead writer's backup whose content differs at equal size and count, or does not decompress", async () => {
    const dead = deadPid();
    let t = 0;
    const now = () => new Date(Date.UTC(2026, 0, 3, 0, 0, t++));
    const same = await writeBackup(dir, users(3), { reason: 'manual', scope: 'full', source: 'test', now });
    writeFileSync(same.file, readFileSync(same.file, 'utf8').replace('"n1"', '"m1"'));
    pending(same, dead);
    // A manifest whose count disagrees with the content it hashes does not describe that file.
    const miscounted = await writeBackup(dir, users(2), { reason: 'manual', scope: 'full', source: 'test', now });
    pending(miscounted, dead, hostname(), { users: 3 });
    const gz = await writeBackup(dir, users(3), { reason: 'manual', scope: 'full', source: 'test', gzip: true, now });
    writeFileSync(gz.file, 'not gzip at all');
    pending(gz, dead);
    const report = await finishLeftovers(dir);
    expect(report.removedIncomplete.sort()).toEqual([path.basename(same.file), path.basename(miscounted.file), path.basename(gz.file)].sort());
    expect(report.completed).toEqual([]);
    for (const b of [same, miscounted, gz]) expect([existsSync(b.file), existsSync(meta(b))]).toEqual([false, false]);
  });

  it('with tempOnly, touches only temp files', async () => {
    const b = await writeBackup(dir, users(1), { reason: 'manual', scope: 'full', source: 'test' });
    await fsp.rm(b.file);
    const report = await finishLeftovers(dir, { tempOnly: true });
    expect(report).toEqual({ removedTemp: [], removedOrphans: [], completed: [], removedIncomplete: [] });
    expect(existsSync(meta(b))).toBe(true);
  });

  it('completes a dead writer\'s intact backup, removes a damaged one, leaves a live writer\'s and a verified one alone', async () => {
    const dead = deadPid();
    let t = 0;
    const now = () => new Date(Date.UTC(2026, 0, 1, 0, 0, t++));
    const intact = await writeBackup(dir, users(2, 'i'), { reason: 'manual', scope: 'full', source: 'test', now });
    const intactGz = await writeBackup(dir, users(2, 'g'), { reason: 'manual', scope: 'full', source: 'test', gzip: true, now });
    const damaged = await writeBackup(dir, users(2, 'd'), { reason: 'manual', scope: 'full', source: 'test', now });
    const wrongBytes = await writeBackup(dir, users(2, 'w'), { reason: 'manual', scope: 'full', source: 'test', now });
    const liveOne = await writeBackup(dir, users(2, 'l'), { reason: 'manual', scope: 'full', source: 'test', now });
    const remote = await writeBackup(dir, users(2, 'r'), { reason: 'manual', scope: 'full', source: 'test', now });
    const verified = await writeBackup(dir, users(2, 'v'), { reason: 'manual', scope: 'full', source: 'test', now });
    const otherFile = await writeBackup(dir, users(2, 'o'), { reason: 'manual', scope: 'full', source: 'test', now });
    pending(intact, dead);
    pending(intactGz, dead);
    pending(damaged, dead);
    const text = readFileSync(damaged.file);
    text[text.length - 10] = text[text.length - 10]! ^ 0x01;
    writeFileSync(damaged.file, text);
    pending(wrongBytes, dead, hostname(), { bytes: readMeta(wrongBytes).bytes + 1 });
    pending(liveOne, live.pid ?? 0);
    pending(remote, dead, `not-${hostname()}`);
    // A manifest that names another file than the one beside it is not completed from it.
    pending(otherFile, dead, hostname(), { file: path.basename(intact.file) });
    const verifiedBefore = readFileSync(meta(verified), 'utf8');

    const report = await finishLeftovers(dir);
    expect(report.completed.sort()).toEqual([path.basename(intact.file), path.basename(intactGz.file)].sort());
    expect(report.removedIncomplete.sort()).toEqual([path.basename(damaged.file), path.basename(wrongBytes.file), path.basename(otherFile.file)].sort());
    expect(report.removedOrphans).toEqual([]);
    expect(report.completedRewrites).toEqual([]);
    for (const b of [intact, intactGz]) {
      const m = readMeta(b);
      expect(typeof m.verifiedAt).toBe('string');
      expect(Date.now() - Date.parse(m.verifiedAt ?? '')).toBeLessThan(60_000);
      expect(m.writer).toBeUndefined();
      expect(m.sha256).toBe(b.manifest.sha256);
    }
    for (const b of [damaged, wrongBytes, otherFile]) {
      expect(existsSync(b.file)).toBe(false);
      expect(existsSync(meta(b))).toBe(false);
    }
    expect(readMeta(liveOne)).toMatchObject({ verifiedAt: null, writer: { pid: live.pid } });
    expect(readMeta(remote)).toMatchObject({ verifiedAt: null });
    expect(existsSync(remote.file)).toBe(true);
    expect(readFileSync(meta(verified), 'utf8')).toBe(verifiedBefore);
  });

  it('removes a manifest whose backup is gone (also a damaged one), but not a live claim', async () => {
    const dead = deadPid();
    let t = 0;
    const now = () => new Date(Date.UTC(2026, 0, 2, 0, 0, t++));
    const orphan = await writeBackup(dir, users(1), { reason: 'manual', scope: 'full', source: 'test', now });
    const orphanGz = await writeBackup(dir, users(1), { reason: 'manual', scope: 'full', source: 'test', gzip: true, now });
    const damagedOrphan = await writeBackup(dir, users(1), { reason: 'manual', scope: 'full', source: 'test', now });
    const liveClaim = await writeBackup(dir, users(1), { reason: 'manual', scope: 'full', source: 'test', now });
    const damagedBeside = await writeBackup(dir, users(1), { reason: 'manual', scope: 'full', source: 'test', now });
    await fsp.rm(orphan.file);
    await fsp.rm(orphanGz.file);
    await fsp.rm(damagedOrphan.file);
    writeFileSync(meta(damagedOrphan), '{not json');
    pending(liveClaim, live.pid ?? 0);
    await fsp.rm(liveClaim.file);
    writeFileSync(meta(damagedBeside), '{not json');
    // Not a backup's manifest at all: left alone.
    writeFileSync(path.join(dir, 'notes.meta.json'), '{}');
    pending(orphan, dead);
    const report = await finishLeftovers(dir);
    expect(report.removedOrphans.sort()).toEqual([meta(orphan), meta(orphanGz), meta(damagedOrphan)].map((f) => path.basename(f)).sort());
    expect(existsSync(meta(liveClaim))).toBe(true);
    expect(existsSync(meta(damagedBeside))).toBe(true);
    expect(existsSync(damagedBeside.file)).toBe(true);
    expect(existsSync(path.join(dir, 'notes.meta.json'))).toBe(true);
    expect(report.completed).toEqual([]);
    expect(report.removedIncomplete).toEqual([]);
  });

  it('a pending manifest beside a directory of the backup\'s name removes nothing', async () => {
    const b = await writeBackup(dir, users(1), { reason: 'manual', scope: 'full', source: 'test' });
    pending(b, deadPid());
    await fsp.rm(b.file);
    await fsp.mkdir(b.file);
    const report = await finishLeftovers(dir);
    expect(report.removedIncomplete).toEqual([]);
    expect(report.completed).toEqual([]);
    expect(existsSync(meta(b))).toBe(true);
  });
});
