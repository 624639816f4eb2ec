import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeBackup } from '../../src/backup/create.js';
import { backupRecords, findBackupUser, openBackup, sortedBackupRecords, type BackupSource } from '../../src/backup/source.js';
import { serializeSeed } from '../../src/format/seed.js';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { tempDir } from '../helpers/tmp.js';

// The promises of the backup reader (src/backup/source.ts): an id opens the one file it names inside
// the directory, never a link, directory or FIFO; a manifest that does not describe the file marks the
// backup damaged; records come back validated (without the write limits), in user_id order where
// asked, and one user is found in every kind of backup.

const rec = (id: string, name = `n-${id}`): MemoryRecord => ({ ...newRecord(id, '2026-01-01T00:00:00Z'), name });
const at = (iso: string) => () => new Date(iso);
const opts = { reason: 'manual' as const, scope: 'full' as const, source: 's' };

async function ids(it: AsyncIterable<MemoryRecord>): Promise<string[]> {
  const out: string[] = [];
  for await (const r of it) out.push(`${r.user_id}=${String(r.name)}`);
  return out;
}

const failure = async (p: Promise<unknown> | AsyncIterable<unknown>): Promise<unknown> => {
  try {
    if (Symbol.asyncIterator in p) {
      for await (const _ of p) {
        // drain
      }
    } else {
      await p;
    }
    return null;
  } catch (e) {
    return e;
  }
};

describe('openBackup', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
  });
  afterEach(async () => {
    await cleanup();
  });

  it('opens a chatmem backup by id, with or without extension, and a gzip one by its bare id too', async () => {
    const plain = await writeBackup(dir, [rec('a'), rec('b')], { ...opts, now: at('2026-02-03T04:05:06Z') });
    const gz = await writeBackup(dir, [rec('c')], { ...opts, gzip: true, now: at('2026-02-03T04:05:07Z') });
    for (const id of [plain.id, `${plain.id}.json`]) {
      const src = await openBackup(dir, id);
      expect(src).toMatchObject({ id: plain.id, fileName: `${plain.id}.json`, file: plain.file, gzip: false, kind: 'full', damage: null });
      expect(src.manifest).toEqual(plain.manifest);
      expect(src.size).toBe(plain.manifest.bytes);
      expect(src.createdAt?.toISOString()).toBe('2026-02-03T04:05:06.000Z');
    }
    for (const id of [gz.id, `${gz.id}.json.gz`]) {
      expect(await openBackup(dir, id)).toMatchObject({ id: gz.id, fileName: `${gz.id}.json.gz`, gzip: true, damage: null });
    }
    // With an extension, no fallback: the .json of a gzip-only id does not exist.
    expect(await failure(openBackup(dir, `${gz.id}.json`))).toMatchObject({ code: 'E_BACKUP_NOT_FOUND', message: `no backup ${JSON.stringify(`${gz.id}.json`)} in ${dir}` });
    expect(await failure(openBackup(dir, 'memory_backup_20990101_000000'))).toMatchObject({ code: 'E_BACKUP_NOT_FOUND', message: `no backup "memory_backup_20990101_000000" in ${dir}` });
  });

  it('a path that cannot be looked up is E_BACKUP_READ with its cause', async () => {
    const file = path.join(dir, 'file');
    writeFileSync(file, '');
    const e = await failure(openBackup(file, 'memory_backup_20260101_000000'));
    expect(e).toMatchObject({ code: 'E_BACKUP_READ', cause: expect.objectContaining({ code: 'ENOTDIR' }) });
    expect((e as Error).message).toMatch(new RegExp(`^cannot read ${path.join(file, 'memory_backup_20260101_000000.json')}: `));
  });

  it('refuses a symlink, a directory or a FIFO named like a backup, never following it', async () => {
    const real = await writeBackup(dir, [rec('a')], { ...opts, now: at('2026-01-01T00:00:00Z') });
    symlinkSync(real.file, path.join(dir, 'memory_backup_20260101_000001.json'));
    mkdirSync(path.join(dir, 'memory_backup_20260101_000002.json'));
    execFileSync('mkfifo', [path.join(dir, 'memory_backup_20260101_000003.json')]);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(path.join(dir, 'memory_backup_20260101_000004.json'), resolve));
    try {
      for (const [n, what] of [[1, 'a symlink'], [2, 'a directory'], [3, 'a FIFO'], [4, 'not a regular file']] as const) {
        const id = `memory_backup_20260101_00000${n}`;
        const e = await failure(openBackup(dir, id));
        expect(e).toMatchObject({ code: 'E_BACKUP_NOT_REGULAR', details: { id, file: path.join(dir, `${id}.json`) } });
        expect((e as Error).message).toBe(`refusing ${id}.json: it is ${what}, not a regular backup file (never followed)`);
      }
    } finally {
      server.close();
    }
  });

  it('marks a backup damaged when its manifest describes another file, another compression or another size', async () => {
    const a = await writeBackup(dir, [rec('a')], { ...opts, now: at('2026-01-01T00:00:00Z') });
    const b = await writeBackup(dir, [rec('b')], { ...opts, now: at('2026-01-01T00:00:01Z') });
    const meta = (id: string) => path.join(dir, `${id}.meta.json`);
    const m = JSON.parse(readFileSync(meta(a.id), 'utf8')) as Record<string, unknown>;
    writeFileSync(meta(a.id), JSON.stringify({ ...m, file: `${b.id}.json` }));
    let src = await openBackup(dir, a.id);
    expect(src.manifest).toBeNull();
    expect(src.damage).toEqual({ code: 'E_BACKUP_MANIFEST', message: `${a.id}.json: its manifest describes ${JSON.stringify(`${b.id}.json`)}` });
    writeFileSync(meta(a.id), JSON.stringify({ ...m, gzip: true }));
    src = await openBackup(dir, a.id);
    expect(src.damage).toEqual({ code: 'E_BACKUP_MANIFEST', message: `${a.id}.json: its manifest says gzip true` });
    writeFileSync(meta(a.id), JSON.stringify({ ...m, bytes: (m.bytes as number) + 1 }));
    src = await openBackup(dir, a.id);
    expect(src.damage).toEqual({ code: 'E_BACKUP_VERIFY', message: `${a.id}.json: ${m.bytes as number} bytes on disk, ${(m.bytes as number) + 1} in its manifest` });
    // Damaged: its time is read from the name, as for a backup without manifest.
    expect(src.createdAt?.toISOString()).toBe('2026-01-01T00:00:00.000Z');
    writeFileSync(meta(a.id), '{not json');
    src = await openBackup(dir, a.id);
    expect(src.manifest).toBeNull();
    expect(src.damage?.code).toBe('E_BACKUP_MANIFEST');
    // A gzip file's size is not its content's: not compared.
    const gz = await writeBackup(dir, [rec('c')], { ...opts, gzip: true, now: at('2026-01-01T00:00:02Z') });
    const gm = JSON.parse(readFileSync(meta(gz.id), 'utf8')) as Record<string, unknown>;
    writeFileSync(meta(gz.id), JSON.stringify({ ...gm, bytes: 1 }));
    expect((await openBackup(dir, gz.id)).damage).toBeNull();
  });

  it("reads a seed backup's time in the legacy zone, and knows a per-user file", async () => {
    writeFileSync(path.join(dir, 'memory_backup_20251125_132811.json'), serializeSeed([['a', rec('a')]]));
    writeFileSync(path.join(dir, 'memory_backup_62811_20251125_140002.json'), JSON.stringify({ user_id: '62811', backup_timestamp: '20251125_140002', record: rec('62811') }));
    writeFileSync(path.join(dir, 'memory_backup_20251399_000000.json'), '{}');
    const utc = await openBackup(dir, 'memory_backup_20251125_132811');
    expect(utc).toMatchObject({ kind: 'full', manifest: null, damage: null });
    expect(utc.createdAt?.toISOString()).toBe('2025-11-25T13:28:11.000Z');
    expect((await openBackup(dir, 'memory_backup_20251125_132811', 'Asia/Jakarta')).createdAt?.toISOString()).toBe('2025-11-25T06:28:11.000Z');
    const user = await openBackup(dir, 'memory_backup_62811_20251125_140002', 'Asia/Jakarta');
    expect(user).toMatchObject({ kind: 'user', id: 'memory_backup_62811_20251125_140002' });
    expect(user.createdAt?.toISOString()).toBe('2025-11-25T07:00:02.000Z');
    expect((await openBackup(dir, 'memory_backup_20251399_000000')).createdAt).toBeNull();
  });
});

describe('reading records', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
  });
  afterEach(async () => {
    await cleanup();
  });

  const legacy = (name: string, entries: [string, unknown][], gzip = false): string => {
    const text = serializeSeed(entries);
    writeFileSync(path.join(dir, name), gzip ? gzipSync(text) : text);
    return name;
  };

  it('a per-user file gives its one record, and needs user_id and record', async () => {
    writeFileSync(path.join(dir, 'memory_backup_u1_20251125_140002.json'), JSON.stringify({ backup_timestamp: 'x', user_id: 'u1', record: rec('u1') }));
    const src = await openBackup(dir, 'memory_backup_u1_20251125_140002');
    expect(await ids(backupRecords(src))).toEqual(['u1=n-u1']);
    expect(await findBackupUser(src, 'u1')).toMatchObject({ user_id: 'u1', name: 'n-u1' });
    expect(await findBackupUser(src, 'u2')).toBeNull();
    for (const [n, body] of [[3, { user_id: 'u3' }], [4, { user_id: 4, record: {} }], [5, { record: rec('u5') }]] as const) {
      const name = `memory_backup_u${n}_20251125_140002.json`;
      writeFileSync(path.join(dir, name), JSON.stringify(body));
      const e = await failure(backupRecords(await openBackup(dir, name)));
      expect(e).toMatchObject({ code: 'E_BACKUP_PARSE', message: `${name}: a per-user backup needs "user_id" and "record"` });
    }
  });

  it('a record that does not parse is E_BACKUP_PARSE naming the file and user; one beyond the write limits is restored', async () => {
    legacy('memory_backup_20250101_000000.json', [['ok', rec('ok')], ['bad', { user_id: 'bad', history: 'not a list' }]]);
    const src = await openBackup(dir, 'memory_backup_20250101_000000');
    const e = await failure(backupRecords(src));
    expect(e).toMatchObject({ code: 'E_BACKUP_PARSE' });
    expect((e as Error).message.startsWith('memory_backup_20250101_000000.json: user "bad": ')).toBe(true);
    expect((e as { cause?: unknown }).cause).toBeInstanceOf(Error);
    const huge = { ...rec('big'), name: 'x'.repeat(200_000) };
    legacy('memory_backup_20250101_000001.json', [['big', huge]]);
    const [r] = await (async () => {
      const out: MemoryRecord[] = [];
      for await (const x of backupRecords(await openBackup(dir, 'memory_backup_20250101_000001'))) out.push(x);
      return out;
    })();
    expect(r?.name).toBe(huge.name);
  });

  it('sorted reading: a chatmem backup streams in order and one out of order is refused; a seed file is sorted, the last of a duplicate kept', async () => {
    const b = await writeBackup(dir, [rec('a'), rec('b'), rec('c')], { ...opts, now: at('2026-01-01T00:00:00Z') });
    expect(await ids(sortedBackupRecords(await openBackup(dir, b.id)))).toEqual(['a=n-a', 'b=n-b', 'c=n-c']);
    // Same bytes, two lines swapped: the manifest still matches in size.
    const text = readFileSync(b.file, 'utf8');
    const lines = text.split('\n');
    [lines[1], lines[2]] = [lines[2] as string, lines[1] as string];
    // Both lines end in a comma (neither is the last): the swap keeps the JSON and its size.
    writeFileSync(b.file, lines.join('\n'));
    const src = await openBackup(dir, b.id);
    expect(src.damage).toBeNull();
    expect(await failure(sortedBackupRecords(src))).toMatchObject({ code: 'E_BACKUP_ORDER', message: `${b.id}.json: users out of order at "a"` });
    // A duplicate is out of order too.
    const d = await writeBackup(dir, [rec('a'), rec('b')], { ...opts, now: at('2026-01-01T00:00:01Z') });
    const dl = readFileSync(d.file, 'utf8').split('\n');
    // The last entry ("b", no comma) becomes a copy of the first ("a", same length without its comma).
    dl[2] = (dl[1] as string).replace(/,$/, '');
    writeFileSync(d.file, dl.join('\n'));
    expect(await failure(sortedBackupRecords(await openBackup(dir, d.id)))).toMatchObject({ code: 'E_BACKUP_ORDER', message: `${d.id}.json: users out of order at "a"` });

    legacy('memory_backup_20250101_000000.json', [['c', rec('c')], ['a', rec('a', 'first')], ['b', rec('b')], ['a', rec('a', 'last')]]);
    const seed = await openBackup(dir, 'memory_backup_20250101_000000');
    expect(await ids(sortedBackupRecords(seed))).toEqual(['a=last', 'b=n-b', 'c=n-c']);
    expect(await ids(backupRecords(seed))).toEqual(['c=n-c', 'a=first', 'b=n-b', 'a=last']);
  });

  it('finds one user in a chatmem backup (searched), a gzip one and a seed file (read through; the last of a duplicate)', async () => {
    const many = Array.from({ length: 300 }, (_, i) => rec(`u${String(i).padStart(3, '0')}`));
    const b = await writeBackup(dir, many, { ...opts, now: at('2026-01-01T00:00:00Z') });
    const gz = await writeBackup(dir, many, { ...opts, gzip: true, now: at('2026-01-01T00:00:01Z') });
    legacy('memory_backup_20250101_000000.json', [['u1', rec('u1', 'first')], ['u2', rec('u2')], ['u1', rec('u1', 'last')]]);
    const cases: [BackupSource, string, string | null][] = [
      [await openBackup(dir, b.id), 'u000', 'n-u000'],
      [await openBackup(dir, b.id), 'u150', 'n-u150'],
      [await openBackup(dir, b.id), 'u299', 'n-u299'],
      [await openBackup(dir, b.id), 'u1500', null],
      [await openBackup(dir, gz.id), 'u123', 'n-u123'],
      [await openBackup(dir, gz.id), 'zz', null],
      [await openBackup(dir, 'memory_backup_20250101_000000'), 'u1', 'last'],
      [await openBackup(dir, 'memory_backup_20250101_000000'), 'u3', null],
    ];
    for (const [src, id, name] of cases) {
      const r = await findBackupUser(src, id);
      expect(r ? `${r.user_id}=${String(r.name)}` : null, `${src.fileName} ${id}`).toBe(name === null ? null : `${id}=${name}`);
    }
  });

  it('finds one user in a chatmem backup without reading the whole file; a line the search cannot read falls back to reading through', async () => {
    const many = Array.from({ length: 300 }, (_, i) => rec(`u${String(i).padStart(3, '0')}`));
    const b = await writeBackup(dir, many, { ...opts, now: at('2026-01-01T00:00:00Z') });
    const text = readFileSync(b.file, 'utf8');
    // The last entry made unreadable at the same size: reading through would fail on it.
    writeFileSync(b.file, text.replace('"u299":{', '"u299":['));
    const src = await openBackup(dir, b.id);
    expect(src.damage).toBeNull();
    expect((await findBackupUser(src, 'u000'))?.name).toBe('n-u000');
    await expect(ids(backupRecords(src))).rejects.toBeInstanceOf(Error);
    // A middle line not as our writer writes it (a space after the colon): the search refuses the
    // file's format, and the reader reads it through.
    const spaced = text.replace('"u150":{', '"u150": {');
    writeFileSync(b.file, spaced);
    const metaFile = path.join(dir, `${b.id}.meta.json`);
    writeFileSync(metaFile, JSON.stringify({ ...(JSON.parse(readFileSync(metaFile, 'utf8')) as object), bytes: Buffer.byteLength(spaced) }));
    const src2 = await openBackup(dir, b.id);
    expect(src2.damage).toBeNull();
    expect((await findBackupUser(src2, 'u150'))?.name).toBe('n-u150');
    expect((await findBackupUser(src2, 'u151'))?.name).toBe('n-u151');
    expect(await findBackupUser(src2, 'u1500')).toBeNull();
  });

  it('a chatmem backup not in line format (pretty-printed by hand, manifest made to match) is read through', async () => {
    const b = await writeBackup(dir, [rec('a'), rec('b')], { ...opts, now: at('2026-01-01T00:00:00Z') });
    const pretty = JSON.stringify(JSON.parse(readFileSync(b.file, 'utf8')), null, 2);
    writeFileSync(b.file, pretty);
    const metaFile = path.join(dir, `${b.id}.meta.json`);
    const m = JSON.parse(readFileSync(metaFile, 'utf8')) as Record<string, unknown>;
    writeFileSync(metaFile, JSON.stringify({ ...m, bytes: Buffer.byteLength(pretty) }));
    const src = await openBackup(dir, b.id);
    expect(src.damage).toBeNull();
    expect((await findBackupUser(src, 'b'))?.name).toBe('n-b');
    expect(await findBackupUser(src, 'c')).toBeNull();
  });
});
