import { existsSync, mkdirSync, readdirSync, rmSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeBackup } from '../../src/backup/create.js';
import { clearVerifyCache, verifySource } from '../../src/backup/integrity.js';
import { backupHoldsAny, finishRewrites, intentName, rewriteChatmemBackup, rewriteLegacyBackup } from '../../src/backup/rewrite.js';
import { backupRecords, openBackup } from '../../src/backup/source.js';
import { serializeSeed } from '../../src/format/seed.js';
import { isTempName } from '../../src/fs-util.js';
import { defaultFsIo, resetFsIo, setFsIo } from '../../src/fsio.js';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { tempDir } from '../helpers/tmp.js';
import { openUnder } from '../helpers/fd.js';
import { injectFault, type FaultRule } from '../reliability/fs-faults.js';

// The promises of a backup rewrite (src/backup/rewrite.ts, forget's only change to an existing backup):
// the new content is verified before it replaces the old; the manifest then describes it; a backup of
// listed users left empty is deleted whole, a full one kept; a killed rewrite is finished from its
// intent only when the file on disk is exactly the new content.

const rec = (id: string): MemoryRecord => ({ ...newRecord(id, '2026-01-01T00:00:00Z'), name: `n-${id}` });
const at = (iso: string) => () => new Date(iso);
const opts = { reason: 'manual' as const, scope: 'full' as const, source: 's' };

/**
 * Watches the rewrite's file calls through the `src/fsio.ts` seam: each fsync and close, and renames
 * (`atomic` for writeFileAtomic's rename of the intent or the manifest into place). `onSync` runs right
 * before an fsync, as the last point before the re-read.
 */
function watchFs(onSync?: (file: string) => void, onRename?: (to: string) => void): { events: string[]; restore: () => void } {
  const events: string[] = [];
  const base = (f: unknown) => path.basename(String(f)).replace(/\.\d+\.[0-9a-f]{8}\.tmp$/, '.TMP');
  const restore = setFsIo({
    sync: async (fh, file) => {
      onSync?.(file);
      events.push(`sync ${base(file)}`);
      return defaultFsIo.sync(fh, file);
    },
    close: async (fh, file) => {
      events.push(`close ${base(file)}`);
      return defaultFsIo.close(fh, file);
    },
    rename: async (from, to) => {
      onRename?.(to);
      const atomic = to.endsWith('.rewrite.json') || to.endsWith('.meta.json');
      events.push(atomic ? `atomic ${base(to)}` : `rename ${base(from)} -> ${base(to)}`);
      return defaultFsIo.rename(from, to);
    },
  });
  return { events, restore };
}

async function ids(src: Parameters<typeof backupRecords>[0]): Promise<string[]> {
  const out: string[] = [];
  for await (const r of backupRecords(src)) out.push(r.user_id);
  return out;
}

describe('rewriting backups', () => {
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

  it('intentName', () => {
    expect(intentName('memory_backup_20260101_000000.json')).toBe('memory_backup_20260101_000000.rewrite.json');
    expect(intentName('memory_backup_20260101_000000_2.json.gz')).toBe('memory_backup_20260101_000000_2.rewrite.json');
  });

  it('backupHoldsAny: by key in a full backup, by user_id in a per-user file', async () => {
    const b = await writeBackup(dir, [rec('a'), rec('b')], { ...opts, now: at('2026-01-01T00:00:00Z') });
    const src = await openBackup(dir, b.id);
    expect(await backupHoldsAny(src, new Set(['b']))).toBe(true);
    expect(await backupHoldsAny(src, new Set(['n-a', 'c']))).toBe(false);
    writeFileSync(path.join(dir, 'memory_backup_u1_20251125_140002.json'), JSON.stringify({ backup_timestamp: 'x', user_id: 'u1', record: rec('u1') }));
    const user = await openBackup(dir, 'memory_backup_u1_20251125_140002');
    expect(await backupHoldsAny(user, new Set(['u1']))).toBe(true);
    expect(await backupHoldsAny(user, new Set(['user_id', 'record', 'u2']))).toBe(false);
    writeFileSync(path.join(dir, 'memory_backup_u2_20251125_140002.json'), JSON.stringify({ user_id: 7, record: {} }));
    expect(await backupHoldsAny(await openBackup(dir, 'memory_backup_u2_20251125_140002'), new Set(['7', 'u2']))).toBe(false);
  });

  for (const gzip of [false, true]) {
    it(`rewrites a ${gzip ? 'gzip' : 'plain'} chatmem backup without the users: verified, private, its manifest describing it, no intent left`, async () => {
      const b = await writeBackup(dir, [rec('a'), rec('b'), rec('c')], { ...opts, gzip, reason: 'delete-user', scope: ['a', 'b', 'c'], now: at('2026-01-01T00:00:00Z') });
      const src = await openBackup(dir, b.id);
      const when = new Date('2026-05-05T05:05:05.555Z');
      expect(await rewriteChatmemBackup(src, new Set(['b', 'zz']), () => when)).toBe('rewritten');
      const again = await openBackup(dir, b.id);
      expect(again.damage).toBeNull();
      expect(await verifySource(again)).toMatchObject({ ok: true, users: 2 });
      expect(await ids(again)).toEqual(['a', 'c']);
      const m = again.manifest;
      expect(m).toEqual({
        ...b.manifest,
        scope: ['a', 'c'],
        users: 2,
        bytes: m?.bytes,
        sha256: m?.sha256,
        verifiedAt: '2026-05-05T05:05:05.555Z',
        rewrittenAt: '2026-05-05T05:05:05.555Z',
      });
      expect(m?.sha256).not.toBe(b.manifest.sha256);
      expect(m?.bytes).toBeLessThan(b.manifest.bytes);
      expect(statSync(b.file).mode & 0o777).toBe(0o600);
      expect(readdirSync(dir).sort()).toEqual([path.basename(b.file), `${b.id}.meta.json`].sort());
      if (gzip) expect(gunzipSync(readFileSync(b.file)).toString()).not.toContain('"b"');
      // Holds none of them: untouched, byte for byte.
      const bytes = readFileSync(b.file);
      expect(await rewriteChatmemBackup(again, new Set(['b']))).toBe('untouched');
      expect(readFileSync(b.file).equals(bytes)).toBe(true);
    });
  }

  it('syncs and closes the new content, records the intent, then renames it over the old one and replaces the manifest', async () => {
    const b = await writeBackup(dir, [rec('a'), rec('b')], { ...opts, now: at('2026-01-01T00:00:00Z') });
    let intent: Record<string, unknown> | null = null;
    const w = watchFs(undefined, (to) => {
      // Right before the new content takes the old one's name, the intent is on disk.
      if (path.basename(to) === `${b.id}.json`) intent ??= JSON.parse(readFileSync(path.join(dir, `${b.id}.rewrite.json`), 'utf8')) as Record<string, unknown>;
    });
    try {
      expect(await rewriteChatmemBackup(await openBackup(dir, b.id), new Set(['a']))).toBe('rewritten');
    } finally {
      w.restore();
    }
    const e = w.events;
    const idx = (x: string) => e.findIndex((v) => v.startsWith(x));
    expect(idx(`sync .${b.id}.json.TMP`)).toBeGreaterThanOrEqual(0);
    expect(idx(`close .${b.id}.json.TMP`)).toBeGreaterThan(idx(`sync .${b.id}.json.TMP`));
    expect(idx(`atomic ${b.id}.rewrite.json`)).toBeGreaterThan(idx(`sync .${b.id}.json.TMP`));
    expect(idx(`rename .${b.id}.json.TMP -> ${b.id}.json`)).toBeGreaterThan(idx(`atomic ${b.id}.rewrite.json`));
    expect(idx(`atomic ${b.id}.meta.json`)).toBeGreaterThan(idx(`rename .${b.id}.json.TMP -> ${b.id}.json`));
    const m = (await openBackup(dir, b.id)).manifest;
    expect(intent).toEqual({ format: 'chatmem-rewrite', file: `${b.id}.json`, next: { sha256: m?.sha256, users: 1, bytes: m?.bytes, scope: 'full' }, writer: { pid: process.pid, host: hostname() } });
  });

  it('new content that does not read back as written is refused (E_BACKUP_VERIFY): the old backup stands, no temp or intent left', async () => {
    const b = await writeBackup(dir, [rec('a'), rec('b')], { ...opts, now: at('2026-01-01T00:00:00Z') });
    const before = readFileSync(b.file);
    const metaBefore = readFileSync(path.join(dir, `${b.id}.meta.json`));
    const w = watchFs((file) => {
      if (file.endsWith('.tmp')) writeFileSync(file, readFileSync(file, 'utf8').replace('"n-b"', '"n-X"'));
    });
    let e: unknown;
    try {
      e = await rewriteChatmemBackup(await openBackup(dir, b.id), new Set(['a'])).catch((x: unknown) => x);
    } finally {
      w.restore();
    }
    expect(e).toMatchObject({ code: 'E_BACKUP_VERIFY', message: `the rewrite of ${b.id}.json did not verify: wrote 1 users, read back 1` });
    expect(readFileSync(b.file).equals(before)).toBe(true);
    expect(readFileSync(path.join(dir, `${b.id}.meta.json`)).equals(metaBefore)).toBe(true);
    expect(readdirSync(dir).sort()).toEqual([`${b.id}.json`, `${b.id}.meta.json`]);
  });

  it('a seed backup whose new content does not read back as written is refused, and left as it was', async () => {
    const text = serializeSeed([['a', rec('a')], ['b', rec('b')], ['c', rec('c')]]);
    for (const [name, damage] of [
      // Same length, other bytes: only the digest tells.
      ['memory_backup_20250101_000000.json', (t: string) => t.replace('"n-c"', '"n-X"')],
      // A dropped user written back in place of another: same count.
      ['memory_backup_20250101_000001.json', (t: string) => t.replace('"c":', '"b":')],
    ] as const) {
      writeFileSync(path.join(dir, name), text);
      const w = watchFs((file) => {
        if (file.endsWith('.tmp')) writeFileSync(file, damage(readFileSync(file, 'utf8')));
      });
      let e: unknown;
      try {
        e = await rewriteLegacyBackup(await openBackup(dir, name), new Set(['b'])).catch((x: unknown) => x);
      } finally {
        w.restore();
      }
      expect(e, name).toMatchObject({ code: 'E_BACKUP_VERIFY', message: `the rewrite of ${name} did not verify: wrote 2 users, read back 2` });
      expect(readFileSync(path.join(dir, name), 'utf8')).toBe(text);
      expect(w.events.filter((x) => x.startsWith('close')).length).toBe(1);
    }
    expect(readdirSync(dir).sort()).toEqual(['memory_backup_20250101_000000.json', 'memory_backup_20250101_000001.json']);
  });

  it('a backup of listed users left with nobody is deleted with its manifest; a full one is kept empty', async () => {
    const listed = await writeBackup(dir, [rec('a')], { ...opts, reason: 'delete-user', scope: ['a'], now: at('2026-01-01T00:00:00Z') });
    expect(await rewriteChatmemBackup(await openBackup(dir, listed.id), new Set(['a']))).toBe('deleted');
    expect(readdirSync(dir)).toEqual([]);
    const full = await writeBackup(dir, [rec('a')], { ...opts, now: at('2026-01-01T00:00:01Z') });
    expect(await rewriteChatmemBackup(await openBackup(dir, full.id), new Set(['a']))).toBe('rewritten');
    const src = await openBackup(dir, full.id);
    expect(src.manifest).toMatchObject({ scope: 'full', users: 0 });
    expect(await verifySource(src)).toMatchObject({ ok: true, users: 0 });
    expect(readdirSync(dir).sort()).toEqual([`${full.id}.json`, `${full.id}.meta.json`]);
  });

  it('refuses a backup without manifest, and a rewrite that cannot be written leaves the old backup and no temp file', async () => {
    writeFileSync(path.join(dir, 'memory_backup_20250101_000000.json'), serializeSeed([['a', rec('a')]]));
    await expect(rewriteChatmemBackup(await openBackup(dir, 'memory_backup_20250101_000000'), new Set(['a']))).rejects.toMatchObject({
      code: 'E_BACKUP_MANIFEST',
      message: 'memory_backup_20250101_000000.json has no manifest',
    });
    const b = await writeBackup(dir, [rec('a'), rec('b')], { ...opts, now: at('2026-01-01T00:00:00Z') });
    const src = await openBackup(dir, b.id);
    const before = readFileSync(b.file);
    // The content is not what the manifest says any more (a record that does not parse): reading fails mid-way.
    writeFileSync(b.file, readFileSync(b.file, 'utf8').replace('"b":{', '"b":['));
    const e = await rewriteChatmemBackup(src, new Set(['a'])).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: expect.stringMatching(/^E_BACKUP_/) });
    writeFileSync(b.file, before);
    expect(readdirSync(dir).sort()).toEqual(['memory_backup_20250101_000000.json', `${b.id}.json`, `${b.id}.meta.json`]);
    expect(readFileSync(b.file).equals(before)).toBe(true);
  });

  it('rewrites a seed backup as the seed wrote it (plain and gzip), and deletes a per-user file whole', async () => {
    const entries: [string, unknown][] = [['a', rec('a')], ['b', rec('b')], ['c', rec('c')]];
    writeFileSync(path.join(dir, 'memory_backup_20250101_000000.json'), serializeSeed(entries));
    writeFileSync(path.join(dir, 'memory_backup_20250101_000001.json.gz'), gzipSync(serializeSeed(entries)));
    writeFileSync(path.join(dir, 'memory_backup_u1_20251125_140002.json'), JSON.stringify({ user_id: 'u1', record: rec('u1') }));
    writeFileSync(path.join(dir, 'memory_backup_u2_20251125_140002.json'), JSON.stringify({ user_id: 'u2', record: rec('u2') }));
    const plain = await openBackup(dir, 'memory_backup_20250101_000000');
    expect(await rewriteLegacyBackup(plain, new Set(['b']))).toBe('rewritten');
    expect(readFileSync(plain.file, 'utf8')).toBe(serializeSeed([['a', rec('a')], ['c', rec('c')]]));
    expect(statSync(plain.file).mode & 0o777).toBe(0o600);
    const gz = await openBackup(dir, 'memory_backup_20250101_000001.json.gz');
    expect(await rewriteLegacyBackup(gz, new Set(['a', 'c']))).toBe('rewritten');
    expect(gunzipSync(readFileSync(gz.file)).toString('utf8')).toBe(serializeSeed([['b', rec('b')]]));
    expect(await rewriteLegacyBackup(await openBackup(dir, 'memory_backup_u1_20251125_140002'), new Set(['u1']))).toBe('deleted');
    expect(await rewriteLegacyBackup(await openBackup(dir, 'memory_backup_u2_20251125_140002'), new Set(['u1']))).toBe('untouched');
    const bytes = readFileSync(plain.file);
    expect(await rewriteLegacyBackup(await openBackup(dir, 'memory_backup_20250101_000000'), new Set(['b']))).toBe('untouched');
    expect(readFileSync(plain.file).equals(bytes)).toBe(true);
    expect(readdirSync(dir).sort()).toEqual(['memory_backup_20250101_000000.json', 'memory_backup_20250101_000001.json.gz', 'memory_backup_u2_20251125_140002.json']);
  });

  it('a seed backup that cannot be read whole is refused with a catalogue code and left as it was', async () => {
    const text = serializeSeed([['a', rec('a')], ['b', rec('b')]]);
    const broken = `${text.slice(0, -3)}`;
    writeFileSync(path.join(dir, 'memory_backup_20250101_000000.json'), broken);
    const src = await openBackup(dir, 'memory_backup_20250101_000000');
    const e = await rewriteLegacyBackup(src, new Set(['a'])).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: expect.stringMatching(/^E_BACKUP_/) });
    expect(readFileSync(src.file, 'utf8')).toBe(broken);
    expect(readdirSync(dir)).toEqual(['memory_backup_20250101_000000.json']);
  });

  describe('failures injected through the fs seam', () => {
    const isBackupTemp = (f: string) => isTempName(path.basename(f)) && !f.includes('.meta.json') && !f.includes('.rewrite.json');
    async function chatmem(gzip = false) {
      const b = await writeBackup(dir, [rec('a'), rec('b')], { ...opts, gzip, reason: 'delete-user', scope: ['a', 'b'], now: at('2026-01-01T00:00:00Z') });
      return { b, data: readFileSync(b.file), meta: readFileSync(path.join(dir, `${b.id}.meta.json`)) };
    }

    for (const [label, rule] of [
      ['the temp file cannot be created', { call: 'stream-open', match: isBackupTemp, kind: 'EIO' }],
      ['a write of the new content fails', { call: 'stream-write', match: isBackupTemp, kind: 'EIO' }],
      ['a short write of the new content', { call: 'stream-write', match: isBackupTemp, kind: 'short' }],
      ['the new content cannot be reopened for its fsync', { call: 'open', match: (f, flags) => isBackupTemp(f) && flags === 'r+', kind: 'EIO' }],
      ['the fsync of the new content fails', { call: 'sync', match: isBackupTemp, kind: 'EIO' }],
      ['the intent cannot be written', { call: 'writeAll', match: (f) => f.includes('.rewrite.json'), kind: 'ENOSPC' }],
      ['the rename over the old backup fails', { call: 'rename', match: isBackupTemp, kind: 'EIO' }],
      ['the directory fsync after the intent fails', { call: 'fsyncDir', match: () => true, nth: 1, kind: 'EIO' }],
    ] as [string, FaultRule][]) {
      it(`before the rename, ${label}: refused (E_BACKUP_WRITE, cause kept), the old backup and manifest stand, nothing left`, async () => {
        const { b, data, meta } = await chatmem();
        const f = injectFault(rule);
        const e = await rewriteChatmemBackup(await openBackup(dir, b.id), new Set(['a'])).catch((x: unknown) => x);
        f.restore();
        expect(f.hits()).toBe(1);
        expect(e).toMatchObject({ code: 'E_BACKUP_WRITE', message: expect.stringMatching(new RegExp(`^cannot rewrite ${b.id}\\.json: (EIO|ENOSPC): `)) });
        expect((e as { cause?: { code?: string } }).cause?.code).toMatch(/^(EIO|ENOSPC)$/);
        expect(readFileSync(b.file).equals(data)).toBe(true);
        expect(readFileSync(path.join(dir, `${b.id}.meta.json`)).equals(meta)).toBe(true);
        expect(readdirSync(dir).sort()).toEqual([`${b.id}.json`, `${b.id}.meta.json`]);
        expect(await verifySource(await openBackup(dir, b.id))).toMatchObject({ ok: true, users: 2 });
      });
    }

    for (const [label, rule] of [
      ['the directory fsync after the rename', { call: 'fsyncDir', match: () => true, nth: 2, kind: 'EIO' }],
      ['the new manifest write', { call: 'writeAll', match: (f) => f.includes('.meta.json'), kind: 'short' }],
      ['the new manifest rename', { call: 'rename', match: (f) => f.includes('.meta.json'), kind: 'EIO' }],
      ['the directory fsync after the intent goes', { call: 'fsyncDir', match: () => true, nth: 4, kind: 'EIO' }],
    ] as [string, FaultRule][]) {
      it(`after the rename, one failure of ${label} is retried: rewritten, the manifest describes the new content, no intent left`, async () => {
        const { b } = await chatmem();
        const f = injectFault(rule);
        const outcome = await rewriteChatmemBackup(await openBackup(dir, b.id), new Set(['a']));
        f.restore();
        expect(f.hits()).toBe(1);
        expect(outcome).toBe('rewritten');
        const src = await openBackup(dir, b.id);
        expect(src.manifest).toMatchObject({ users: 1, scope: ['b'] });
        expect(await verifySource(src)).toMatchObject({ ok: true, users: 1 });
        expect(await ids(src)).toEqual(['b']);
        expect(readdirSync(dir).sort()).toEqual([`${b.id}.json`, `${b.id}.meta.json`]);
      });
    }

    it('after the rename, a manifest that fails twice: refused, the intent stays, and the recovery completes the manifest from it', async () => {
      const { b, meta } = await chatmem(true);
      const restore = setFsIo({
        writeAll: async (fh, file, data) => {
          if (file.includes('.meta.json')) throw Object.assign(new Error('ENOSPC: injected'), { code: 'ENOSPC' });
          return defaultFsIo.writeAll(fh, file, data);
        },
      });
      const e = await rewriteChatmemBackup(await openBackup(dir, b.id), new Set(['a'])).catch((x: unknown) => x);
      restore();
      expect(e).toMatchObject({ code: 'E_BACKUP_WRITE', message: `cannot rewrite ${b.id}.json.gz: ENOSPC: injected` });
      expect(readFileSync(path.join(dir, `${b.id}.meta.json`)).equals(meta)).toBe(true);
      expect(readdirSync(dir).sort()).toEqual([`${b.id}.json.gz`, `${b.id}.meta.json`, `${b.id}.rewrite.json`]);
      expect(await finishRewrites(dir, () => false)).toEqual([`${b.id}.json.gz`]);
      const src = await openBackup(dir, b.id);
      expect(await verifySource(src)).toMatchObject({ ok: true, users: 1 });
      expect(await ids(src)).toEqual(['b']);
    });

    it('an error that is not chatmem\'s while reading the old backup is wrapped as E_BACKUP_WRITE with its cause', async () => {
      const { b } = await chatmem();
      const src = await openBackup(dir, b.id);
      // The holds-check has read it; then the file becomes a directory.
      const realHolds = await backupHoldsAny(src, new Set(['a']));
      expect(realHolds).toBe(true);
      const restore = setFsIo({
        createWriteStream: (file, options) => {
          rmSync(b.file);
          mkdirSync(b.file);
          return defaultFsIo.createWriteStream(file, options);
        },
      });
      const e = await rewriteChatmemBackup(src, new Set(['a'])).catch((x: unknown) => x);
      restore();
      expect(e).toMatchObject({ code: 'E_BACKUP_WRITE', message: expect.stringMatching(new RegExp(`^cannot rewrite ${b.id}\\.json: `)) });
      expect((e as { cause?: { code?: string } }).cause?.code).toBe('EISDIR');
      expect(readdirSync(dir).filter((n) => isTempName(n))).toEqual([]);
    });

    for (const [label, rule] of [
      ['create', { call: 'open', match: (f, flags) => isTempName(path.basename(f)) && flags === 'wx', kind: 'ENOSPC' }],
      ['write', { call: 'writeAll', match: (f) => isTempName(path.basename(f)), kind: 'short' }],
      ['fsync', { call: 'sync', match: (f) => isTempName(path.basename(f)), kind: 'EIO' }],
      ['rename', { call: 'rename', match: (f) => isTempName(path.basename(f)), kind: 'EIO' }],
    ] as [string, FaultRule][]) {
      for (const gzip of [false, true]) {
        it(`a seed backup (${gzip ? 'gzip' : 'plain'}) whose temp ${label} fails: refused (E_BACKUP_WRITE, cause kept), left as it was, no temp`, async () => {
          const name = gzip ? 'memory_backup_20250101_000000.json.gz' : 'memory_backup_20250101_000000.json';
          const text = serializeSeed([['a', rec('a')], ['b', rec('b')]]);
          writeFileSync(path.join(dir, name), gzip ? gzipSync(text) : text);
          const before = readFileSync(path.join(dir, name));
          const f = injectFault(rule);
          const e = await rewriteLegacyBackup(await openBackup(dir, name), new Set(['a'])).catch((x: unknown) => x);
          f.restore();
          expect(f.hits()).toBe(1);
          expect(e).toMatchObject({ code: 'E_BACKUP_WRITE', message: expect.stringMatching(new RegExp(`^cannot rewrite ${name.replace(/\./g, '\\.')}: (EIO|ENOSPC)`)) });
          expect((e as { cause?: { code?: string } }).cause?.code).toMatch(/^(EIO|ENOSPC)$/);
          expect(readFileSync(path.join(dir, name)).equals(before)).toBe(true);
          expect(readdirSync(dir)).toEqual([name]);
        });
      }
    }

    it('a per-user seed file whose removal cannot be made durable: E_BACKUP_WRITE with its cause (the file is gone)', async () => {
      const name = 'memory_backup_u1_20251125_140002.json';
      writeFileSync(path.join(dir, name), JSON.stringify({ user_id: 'u1', record: rec('u1') }));
      const f = injectFault({ call: 'fsyncDir', match: (d) => d === dir, kind: 'EIO' });
      const e = await rewriteLegacyBackup(await openBackup(dir, name), new Set(['u1'])).catch((x: unknown) => x);
      f.restore();
      expect(f.hits()).toBe(1);
      expect(e).toMatchObject({ code: 'E_BACKUP_WRITE', message: `cannot rewrite ${name}: EIO: injected failure, fsync directory ${dir}` });
      expect((e as { cause?: { code?: string } }).cause?.code).toBe('EIO');
      expect(readdirSync(dir)).toEqual([]);
    });

    it('leaves no descriptor open under the directory, rewritten or refused', async () => {
      const { b } = await chatmem();
      expect(await rewriteChatmemBackup(await openBackup(dir, b.id), new Set(['a']))).toBe('rewritten');
      writeFileSync(path.join(dir, 'memory_backup_20250101_000000.json'), serializeSeed([['a', rec('a')], ['b', rec('b')]]));
      expect(await rewriteLegacyBackup(await openBackup(dir, 'memory_backup_20250101_000000'), new Set(['a']))).toBe('rewritten');
      const f = injectFault({ call: 'sync', match: (x) => isTempName(path.basename(x)), kind: 'EIO' });
      await rewriteLegacyBackup(await openBackup(dir, 'memory_backup_20250101_000000'), new Set(['b'])).catch(() => undefined);
      f.restore();
      expect(f.hits()).toBe(1);
      expect(openUnder(dir)).toEqual([]);
    });
  });

  describe('finishRewrites', () => {
    const dead = () => false;
    async function killedRewrite(gzip = false): Promise<{ id: string; file: string; oldMeta: string; intent: Record<string, unknown> }> {
      const b = await writeBackup(dir, [rec('a'), rec('b')], { ...opts, gzip, reason: 'delete-user', scope: ['a', 'b'], now: at('2026-01-01T00:00:00Z') });
      const metaFile = path.join(dir, `${b.id}.meta.json`);
      const oldMeta = readFileSync(metaFile, 'utf8');
      await rewriteChatmemBackup(await openBackup(dir, b.id), new Set(['b']));
      const next = JSON.parse(readFileSync(metaFile, 'utf8')) as { sha256: string; users: number; bytes: number; scope: string[] };
      // What a kill right after the rename leaves: the new content, the old manifest, the intent.
      writeFileSync(metaFile, oldMeta);
      const intent = { format: 'chatmem-rewrite', file: path.basename(b.file), next: { sha256: next.sha256, users: next.users, bytes: next.bytes, scope: next.scope }, writer: { pid: 12345, host: hostname() } };
      writeFileSync(path.join(dir, `${b.id}.rewrite.json`), JSON.stringify(intent));
      return { id: b.id, file: b.file, oldMeta, intent };
    }

    it('completes the manifest of a dead writer whose new gzip content is on disk', async () => {
      const k = await killedRewrite(true);
      expect(await finishRewrites(dir, () => false)).toEqual([`${k.id}.json.gz`]);
      const src = await openBackup(dir, k.id);
      expect(src.manifest).toMatchObject({ users: 1, scope: ['a'], gzip: true });
      expect(await verifySource(src)).toMatchObject({ ok: true, users: 1 });
    });

    it('completes the manifest of a dead writer whose new content is on disk, and asks about the writer the intent names', async () => {
      const k = await killedRewrite();
      const asked: [number, string][] = [];
      expect(await finishRewrites(dir, (pid, host) => (asked.push([pid, host]), false))).toEqual([`${k.id}.json`]);
      expect(asked).toEqual([[12345, hostname()]]);
      const src = await openBackup(dir, k.id);
      expect(src.manifest).toMatchObject({ users: 1, scope: ['a'] });
      expect(src.manifest?.rewrittenAt).toBe(src.manifest?.verifiedAt);
      expect(await verifySource(src)).toMatchObject({ ok: true, users: 1 });
      expect(existsSync(path.join(dir, `${k.id}.rewrite.json`))).toBe(false);
    });

    it("leaves a live writer's intent alone", async () => {
      const k = await killedRewrite();
      expect(await finishRewrites(dir, () => true)).toEqual([]);
      expect(existsSync(path.join(dir, `${k.id}.rewrite.json`))).toBe(true);
      expect(readFileSync(path.join(dir, `${k.id}.meta.json`), 'utf8')).toBe(k.oldMeta);
    });

    it('an intent whose content never landed, or does not match, only goes: the old manifest stands', async () => {
      const k = await killedRewrite();
      for (const next of [
        { ...(k.intent.next as object), sha256: '0'.repeat(64) },
        { ...(k.intent.next as object), users: 5 },
        { ...(k.intent.next as object), bytes: 1 },
      ]) {
        writeFileSync(path.join(dir, `${k.id}.rewrite.json`), JSON.stringify({ ...k.intent, next }));
        expect(await finishRewrites(dir, dead)).toEqual([]);
        expect(existsSync(path.join(dir, `${k.id}.rewrite.json`))).toBe(false);
        expect(readFileSync(path.join(dir, `${k.id}.meta.json`), 'utf8')).toBe(k.oldMeta);
      }
      // Killed before the rename: the old content and manifest match each other; the intent goes.
      const b = await writeBackup(dir, [rec('x')], { ...opts, now: at('2026-01-02T00:00:00Z') });
      const meta = readFileSync(path.join(dir, `${b.id}.meta.json`), 'utf8');
      writeFileSync(path.join(dir, `${b.id}.rewrite.json`), JSON.stringify({ ...k.intent, file: `${b.id}.json`, next: { sha256: b.manifest.sha256, users: 1, bytes: b.manifest.bytes, scope: 'full' } }));
      expect(await finishRewrites(dir, dead)).toEqual([]);
      expect(readFileSync(path.join(dir, `${b.id}.meta.json`), 'utf8')).toBe(meta);
      expect(existsSync(path.join(dir, `${b.id}.rewrite.json`))).toBe(false);
    });

    it('ignores what is not an intent of the backup it names, and an unreadable one', async () => {
      const k = await killedRewrite();
      const name = `${k.id}.rewrite.json`;
      for (const [label, text] of [
        ['other format', JSON.stringify({ ...k.intent, format: 'x' })],
        ['names another file', JSON.stringify({ ...k.intent, file: 'memory_backup_20990101_000000.json' })],
        ['no file', JSON.stringify({ ...k.intent, file: 5 })],
        ['not JSON', '{'],
      ] as const) {
        writeFileSync(path.join(dir, name), text);
        expect(await finishRewrites(dir, dead), label).toEqual([]);
        expect(readFileSync(path.join(dir, name), 'utf8'), label).toBe(text);
      }
      // The same content under a name without the prefix is no intent either.
      writeFileSync(path.join(dir, name), JSON.stringify(k.intent));
      const other = `x${name}`;
      writeFileSync(path.join(dir, other), JSON.stringify(k.intent));
      expect(await finishRewrites(dir, dead)).toEqual([`${k.id}.json`]);
      expect(existsSync(path.join(dir, other))).toBe(true);
      expect(await finishRewrites(path.join(dir, 'none'), dead)).toEqual([]);
      const f = path.join(dir, 'f');
      writeFileSync(f, '');
      await expect(finishRewrites(f, dead)).rejects.toMatchObject({ code: 'ENOTDIR' });
    });

    it('an intent beside a backup whose manifest is gone only goes', async () => {
      const k = await killedRewrite();
      writeFileSync(path.join(dir, `${k.id}.meta.json`), '{broken');
      expect(await finishRewrites(dir, dead)).toEqual([]);
      expect(existsSync(path.join(dir, `${k.id}.rewrite.json`))).toBe(false);
      expect(readFileSync(path.join(dir, `${k.id}.meta.json`), 'utf8')).toBe('{broken');
    });
  });
});
