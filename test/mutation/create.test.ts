import { existsSync, promises as fsp, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeBackup } from '../../src/backup/create.js';
import { backupRecords, openBackup } from '../../src/backup/source.js';
import { verifySource, clearVerifyCache } from '../../src/backup/integrity.js';
import { defaultFsIo, resetFsIo, setFsIo } from '../../src/fsio.js';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { VERSION } from '../../src/version.js';
import { errnoError } from '../reliability/fs-faults.js';
import { tempDir } from '../helpers/tmp.js';
import { openUnder } from '../helpers/fd.js';

// The promises of the backup writer (src/backup/create.ts): a backup never overwrites another one
// (same second: `_1`, `_2`…, and one id whatever its extension), its manifest says what it holds and
// that it was verified, and a failure leaves nothing behind and is reported with a catalogue code.

const users = (n: number, tag = 'u'): MemoryRecord[] => Array.from({ length: n }, (_, i) => ({ ...newRecord(`${tag}${i}`, '2026-01-01T00:00:00Z'), name: `${tag}-n${i}` }));
const at = new Date('2026-03-04T05:06:07.890Z');
const now = () => at;
const opts = { reason: 'manual' as const, scope: 'full' as const, source: 'sqlite:test', now };

async function namesIn(source: AsyncIterable<MemoryRecord>): Promise<string[]> {
  const out: string[] = [];
  for await (const r of source) out.push(`${r.user_id}:${String(r.name)}`);
  return out;
}

describe('writeBackup', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
    clearVerifyCache();
  });
  afterEach(async () => {
    resetFsIo();
    await cleanup();
  });

  it('writes a verified backup whose final manifest describes it, and nothing else', async () => {
    const before = Date.now();
    const b = await writeBackup(dir, users(3), { ...opts, reason: 'delete-user', scope: ['u1'], auditOp: 'op-123' });
    expect(b.id).toBe('memory_backup_20260304_050607');
    expect(b.file).toBe(path.join(dir, 'memory_backup_20260304_050607.json'));
    expect(readdirSync(dir).sort()).toEqual(['memory_backup_20260304_050607.json', 'memory_backup_20260304_050607.meta.json']);
    const onDisk = JSON.parse(readFileSync(path.join(dir, 'memory_backup_20260304_050607.meta.json'), 'utf8')) as Record<string, unknown>;
    expect(onDisk).toEqual(b.manifest);
    const bytes = statSync(b.file).size;
    expect(b.manifest).toEqual({
      format: 'chatmem-backup',
      formatVersion: 1,
      file: 'memory_backup_20260304_050607.json',
      created_at: '2026-03-04T05:06:07.890Z',
      reason: 'delete-user',
      scope: ['u1'],
      users: 3,
      bytes,
      sha256: b.manifest.sha256,
      gzip: false,
      source: 'sqlite:test',
      chatmemVersion: VERSION,
      auditOp: 'op-123',
      verifiedAt: b.manifest.verifiedAt,
    });
    // The pending manifest's writer goes once the backup is verified: a verified backup has no writer to wait for.
    expect('writer' in b.manifest).toBe(false);
    const verifiedAt = Date.parse(b.manifest.verifiedAt ?? '');
    expect(verifiedAt).toBeGreaterThanOrEqual(before - 1);
    expect(verifiedAt).toBeLessThanOrEqual(Date.now() + 1);
    const src = await openBackup(dir, b.id);
    expect(src.damage).toBeNull();
    expect(await verifySource(src)).toMatchObject({ ok: true, users: 3 });
    expect(await namesIn(backupRecords(src))).toEqual(['u0:u-n0', 'u1:u-n1', 'u2:u-n2']);
    expect(statSync(b.file).mode & 0o777).toBe(0o600);
  });

  it('records no audit operation unless given one, and is uncompressed unless asked', async () => {
    const b = await writeBackup(dir, users(1), opts);
    expect(b.manifest.auditOp).toBeNull();
    expect(b.manifest.gzip).toBe(false);
    expect(b.file.endsWith('.json')).toBe(true);
  });

  it('writes a gzip backup that decompresses to what it holds', async () => {
    const progress: number[] = [];
    const b = await writeBackup(dir, users(2), { ...opts, gzip: true, onProgress: (n) => progress.push(n) });
    expect(b.id).toBe('memory_backup_20260304_050607');
    expect(path.basename(b.file)).toBe('memory_backup_20260304_050607.json.gz');
    expect(b.manifest).toMatchObject({ gzip: true, file: 'memory_backup_20260304_050607.json.gz', users: 2 });
    expect(readdirSync(dir).sort()).toEqual(['memory_backup_20260304_050607.json.gz', 'memory_backup_20260304_050607.meta.json']);
    expect(gunzipSync(readFileSync(b.file)).toString('utf8')).toContain('"u1"');
    const src = await openBackup(dir, b.id);
    expect(await verifySource(src)).toMatchObject({ ok: true, users: 2 });
    expect(await namesIn(backupRecords(src))).toEqual(['u0:u-n0', 'u1:u-n1']);
    expect(progress.at(-1)).toBe(2);
  });

  it('writes `[user_id, JSON text]` pairs as they are', async () => {
    async function* pairs(): AsyncGenerator<[string, string]> {
      yield ['a', JSON.stringify({ ...newRecord('a', '2026-01-01T00:00:00Z'), name: 'raw-a' })];
      yield ['b', JSON.stringify({ ...newRecord('b', '2026-01-01T00:00:00Z'), name: 'raw-b' })];
    }
    const b = await writeBackup(dir, { json: pairs() }, opts);
    expect(b.manifest.users).toBe(2);
    expect(await namesIn(backupRecords(await openBackup(dir, b.id)))).toEqual(['a:raw-a', 'b:raw-b']);
  });

  it('never overwrites: backups in the same second get _1, _2, and one id is never used by both extensions', async () => {
    const first = await writeBackup(dir, users(1, 'a'), opts);
    const second = await writeBackup(dir, users(1, 'b'), { ...opts, gzip: true });
    const third = await writeBackup(dir, users(1, 'c'), opts);
    expect([first.id, second.id, third.id]).toEqual(['memory_backup_20260304_050607', 'memory_backup_20260304_050607_1', 'memory_backup_20260304_050607_2']);
    expect(readdirSync(dir).sort()).toEqual([
      'memory_backup_20260304_050607.json',
      'memory_backup_20260304_050607.meta.json',
      'memory_backup_20260304_050607_1.json.gz',
      'memory_backup_20260304_050607_1.meta.json',
      'memory_backup_20260304_050607_2.json',
      'memory_backup_20260304_050607_2.meta.json',
    ]);
    for (const [b, tag] of [[first, 'a'], [second, 'b'], [third, 'c']] as const) {
      const src = await openBackup(dir, b.id);
      expect(await verifySource(src)).toMatchObject({ ok: true, users: 1 });
      expect(await namesIn(backupRecords(src))).toEqual([`${tag}0:${tag}-n0`]);
    }
  });

  it('a gzip backup first in its second leaves the id to no .json backup either', async () => {
    const gz = await writeBackup(dir, users(1, 'a'), { ...opts, gzip: true });
    const plain = await writeBackup(dir, users(1, 'b'), opts);
    expect([gz.id, plain.id]).toEqual(['memory_backup_20260304_050607', 'memory_backup_20260304_050607_1']);
    expect(await namesIn(backupRecords(await openBackup(dir, `${gz.id}.json.gz`)))).toEqual(['a0:a-n0']);
  });

  it("skips a name held by an operator's file or by another writer's claim (a manifest), touching neither", async () => {
    // A file without manifest (the seed's, or an operator's copy) holds the plain name.
    writeFileSync(path.join(dir, 'memory_backup_20260304_050607.json'), '{"x":1}');
    // Another writer's claim: its manifest is linked first, its backup not yet.
    writeFileSync(path.join(dir, 'memory_backup_20260304_050607_1.meta.json'), 'claim');
    const b = await writeBackup(dir, users(1), opts);
    expect(b.id).toBe('memory_backup_20260304_050607_2');
    expect(readFileSync(path.join(dir, 'memory_backup_20260304_050607.json'), 'utf8')).toBe('{"x":1}');
    expect(readFileSync(path.join(dir, 'memory_backup_20260304_050607_1.meta.json'), 'utf8')).toBe('claim');
    expect(existsSync(path.join(dir, 'memory_backup_20260304_050607_1.json'))).toBe(false);
  });

  it("an id held by a seed file of the other extension (no manifest) is skipped: one id, one backup", async () => {
    writeFileSync(path.join(dir, 'memory_backup_20260304_050607.json.gz'), 'seed gz');
    const plain = await writeBackup(dir, users(1), opts);
    expect(plain.id).toBe('memory_backup_20260304_050607_1');
    writeFileSync(path.join(dir, 'memory_backup_20260304_050607_2.json'), 'seed json');
    const gz = await writeBackup(dir, users(1), { ...opts, gzip: true });
    expect(gz.id).toBe('memory_backup_20260304_050607_3');
    expect(readFileSync(path.join(dir, 'memory_backup_20260304_050607.json.gz'), 'utf8')).toBe('seed gz');
    expect(readFileSync(path.join(dir, 'memory_backup_20260304_050607_2.json'), 'utf8')).toBe('seed json');
    expect(readdirSync(dir).filter((n) => n.endsWith('.meta.json')).sort()).toEqual(['memory_backup_20260304_050607_1.meta.json', 'memory_backup_20260304_050607_3.meta.json']);
  });

  it('the claim is a private, synced, closed manifest naming this writer, linked before the backup', async () => {
    const events: string[] = [];
    let pending: Record<string, unknown> | null = null;
    let pendingMode = 0;
    setFsIo({
      sync: async (fh, file) => {
        events.push(`sync ${path.basename(file).replace(/\.\d+\.[0-9a-f]{8}\.tmp$/, '.TMP')}`);
        return defaultFsIo.sync(fh, file);
      },
      link: async (from, to) => {
        events.push(`link ${path.basename(to)}`);
        return defaultFsIo.link(from, to);
      },
      fsyncDir: async (d) => {
        const meta = path.join(d, 'memory_backup_20260304_050607.meta.json');
        if (pending === null && existsSync(meta)) {
          pending = JSON.parse(readFileSync(meta, 'utf8')) as Record<string, unknown>;
          pendingMode = statSync(meta).mode & 0o777;
        }
        return defaultFsIo.fsyncDir(d);
      },
    });
    await writeBackup(dir, users(2), opts);
    expect(events.slice(0, 4)).toEqual([
      'sync .memory_backup_20260304_050607.json.TMP',
      'sync .memory_backup_20260304_050607.meta.json.TMP',
      'link memory_backup_20260304_050607.meta.json',
      'link memory_backup_20260304_050607.json',
    ]);
    // Until verified, the manifest names the writer, so the next start waits for a live one.
    expect(pending).toMatchObject({ verifiedAt: null, writer: { pid: process.pid, host: hostname() }, users: 2 });
    expect(pendingMode).toBe(0o600);
    // No descriptor left open (the claim's handle is closed).
    expect(openUnder(dir)).toEqual([]);
  });

  it("never claims a name whose data file exists: a claim killed there would make the next start take that file for its own", async () => {
    writeFileSync(path.join(dir, 'memory_backup_20260304_050607.json'), '{"seed":1}');
    writeFileSync(path.join(dir, 'memory_backup_20260304_050607_1.json.gz'), 'seed gz');
    const linked: string[] = [];
    setFsIo({
      link: async (from, to) => {
        linked.push(path.basename(to));
        return defaultFsIo.link(from, to);
      },
    });
    const b = await writeBackup(dir, users(1), opts);
    expect(b.id).toBe('memory_backup_20260304_050607_2');
    expect(linked).toEqual(['memory_backup_20260304_050607_2.meta.json', 'memory_backup_20260304_050607_2.json']);
  });

  it('a name taken between the look and the link (EEXIST) is given up, and the next one taken', async () => {
    // Another writer wins the race for the manifest of the first name, then for the backup of the second.
    let links = 0;
    setFsIo({
      link: async (from, to) => {
        links++;
        if (to.endsWith('050607.meta.json') || to.endsWith('050607_1.json')) {
          await defaultFsIo.writeFile(to, 'theirs', { flag: 'wx', mode: 0o600 });
        }
        return defaultFsIo.link(from, to);
      },
    });
    const b = await writeBackup(dir, users(1), opts);
    expect(links).toBe(5);
    expect(b.id).toBe('memory_backup_20260304_050607_2');
    // Theirs untouched; our claim of _1 (its manifest) withdrawn; no temp file left.
    expect(readdirSync(dir).sort()).toEqual([
      'memory_backup_20260304_050607.meta.json',
      'memory_backup_20260304_050607_1.json',
      'memory_backup_20260304_050607_2.json',
      'memory_backup_20260304_050607_2.meta.json',
    ]);
    expect(readFileSync(path.join(dir, 'memory_backup_20260304_050607.meta.json'), 'utf8')).toBe('theirs');
    expect(readFileSync(path.join(dir, 'memory_backup_20260304_050607_1.json'), 'utf8')).toBe('theirs');
  });

  for (const which of ['manifest', 'backup'] as const) {
    it(`a failed link of the ${which} (EIO) is refused with E_BACKUP_WRITE and its cause, and leaves nothing`, async () => {
      const err = errnoError('EIO', `link ${which}`);
      let hits = 0;
      setFsIo({
        link: async (from, to) => {
          if (to.endsWith('.meta.json') === (which === 'manifest')) {
            hits++;
            throw err;
          }
          return defaultFsIo.link(from, to);
        },
      });
      const e = await writeBackup(dir, users(2), opts).then(
        () => null,
        (x: unknown) => x,
      );
      expect(hits).toBe(1);
      expect(e).toMatchObject({ code: 'E_BACKUP_WRITE', cause: err });
      expect((e as Error).message).toBe(`cannot write backup in ${dir}: ${err.message}`);
      expect(readdirSync(dir)).toEqual([]);
    });
  }

  it('a backup changed on disk before its re-read is refused (E_BACKUP_VERIFY) and removed with its manifest', async () => {
    // The directory fsync right after the link is the last step before the re-read.
    setFsIo({
      fsyncDir: async (d) => {
        for (const n of readdirSync(d)) {
          if (/^memory_backup_\d+_\d+\.json$/.test(n)) {
            const f = path.join(d, n);
            // Same length, one byte different: only the digest tells.
            writeFileSync(f, readFileSync(f, 'utf8').replace('"u-n0"', '"u-m0"'));
          }
        }
        return defaultFsIo.fsyncDir(d);
      },
    });
    const e = await writeBackup(dir, users(2), opts).then(
      () => null,
      (x: unknown) => x,
    );
    expect(e).toMatchObject({ code: 'E_BACKUP_VERIFY' });
    expect((e as Error).message).toMatch(/^backup memory_backup_20260304_050607\.json did not verify: wrote 2 users \(sha256 [0-9a-f]{64}\), read back 2 users \(sha256 [0-9a-f]{64}\)$/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('a directory it cannot create is refused with E_BACKUP_WRITE', async () => {
    const file = path.join(dir, 'plain-file');
    await fsp.writeFile(file, 'x');
    const e = await writeBackup(path.join(file, 'backups'), users(1), opts).then(
      () => null,
      (x: unknown) => x,
    );
    expect(e).toMatchObject({ code: 'E_BACKUP_WRITE' });
    expect((e as Error).message.startsWith(`cannot write backup in ${path.join(file, 'backups')}: `)).toBe(true);
    expect((e as { cause?: { code?: string } }).cause?.code).toBe('ENOTDIR');
  });

  it('gives up after 10,000 names taken in one second, with E_BACKUP_WRITE naming the second, leaving nothing', async () => {
    const taken = errnoError('EIO', 'x');
    taken.code = 'EEXIST';
    let manifestLinks = 0;
    // The temp manifests of the lost claims are not written at all (10,000 real ones cost 20 s here);
    // every other call is real.
    const isClaim = (f: string) => f.endsWith('.tmp') && f.includes('.meta.json.');
    const fake = {} as FileHandle;
    setFsIo({
      writeFile: async (f, data, o) => (isClaim(f) ? undefined : defaultFsIo.writeFile(f, data, o)),
      open: async (f, flags, mode) => (isClaim(f) ? fake : defaultFsIo.open(f, flags, mode)),
      sync: async (fh, f) => (fh === fake ? undefined : defaultFsIo.sync(fh, f)),
      close: async (fh, f) => (fh === fake ? undefined : defaultFsIo.close(fh, f)),
      // Every manifest claim loses: another writer holds the name.
      link: async (from, to) => {
        if (to.endsWith('.meta.json')) {
          manifestLinks++;
          throw taken;
        }
        return defaultFsIo.link(from, to);
      },
    });
    const e = await writeBackup(dir, users(1), opts).then(
      () => null,
      (x: unknown) => x,
    );
    expect(manifestLinks).toBe(10_000);
    expect(e).toMatchObject({ code: 'E_BACKUP_WRITE' });
    expect((e as Error).message).toBe(`no free backup name for 2026-03-04T05:06:07.890Z in ${dir}`);
    expect(readdirSync(dir)).toEqual([]);
  }, 60_000);
});
