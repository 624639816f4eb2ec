import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { createWriteStream, promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { FIXTURES } from '../helpers/tmp.js';
import { gunzipSync, gzipSync } from 'node:zlib';
import { BACKUP_PREFIX, backupBaseName, manifestName, parseBackupName, resolveBackupId } from '../../src/backup/format.js';
import { digestBackupFile, findInLineBackup, isLineFormat } from '../../src/format/line-reader.js';
import { entryLine, writeBackupStream } from '../../src/format/line-writer.js';
import { compareIds } from '../../src/record.js';
import { readJsonEntries } from '../../src/format/json-entries.js';
import { BackupError, ChatmemError } from '../../src/errors.js';
import { tempNameFor } from '../../src/fs-util.js';

const SEED = FIXTURES + '/';
const MEMORY = path.join(SEED, 'memory.json');

const hasPython = spawnSync('python3', ['--version']).status === 0;

let dir: string;
beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'chatmem-format-'));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

let fileNo = 0;
function tmp(name = `b${fileNo++}.json`): string {
  return path.join(dir, name);
}

async function* iterate(pairs: Iterable<[string, unknown]>): AsyncGenerator<[string, unknown]> {
  for (const p of pairs) yield p;
}

/** Writes through a real file stream, the way the backup engine will. */
async function writeFile(
  file: string,
  pairs: Iterable<[string, unknown]>,
  opts: { gzip?: boolean } = {},
): Promise<{ sha256: string; users: number; bytes: number }> {
  const out = createWriteStream(file);
  try {
    return await writeBackupStream(iterate(pairs), out, opts);
  } finally {
    await new Promise<void>((resolve, reject) => {
      out.end((err?: Error | null) => (err ? reject(err) : resolve()));
    });
  }
}

function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

function pythonLoad(file: string): { count: number; keys: string[] } {
  const script = 'import json,sys; d=json.load(open(sys.argv[1], encoding="utf-8")); print(len(d)); print(json.dumps(list(d)))';
  const r = spawnSync('python3', ['-c', script, file], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  const [count, keys] = r.stdout.split('\n');
  return { count: Number(count), keys: JSON.parse(keys ?? '[]') as string[] };
}

const ODD_IDS = [
  '',
  ' ',
  'a b',
  'with "quotes"',
  'back\\slash',
  'tab\there',
  'new\nline',
  '😀',
  '😀😀',
  '\uFFFF',
  '\uE000',
  'ü',
  'Ünïcödé',
  '日本語',
  'Zebra',
  'apple',
  '628123',
  '6281234567890',
  '~',
  '\u007f',
];

function makeUsers(count: number): [string, unknown][] {
  const users = new Map<string, unknown>();
  for (let i = 0; i < count; i++) {
    const id = `62${String(i * 7919).padStart(10, '0')}`;
    users.set(id, { user_id: id, name: `User ${i}`, history: [{ role: 'user', text: `halo ${i} 🙏`, ts: '2025-11-20T01:02:07Z' }] });
  }
  for (const id of ODD_IDS) users.set(id, { user_id: id, name: 'odd', note: 'quote " backslash \\ newline \n emoji 😀' });
  users.set('62big', { user_id: '62big', history: [{ text: 'x'.repeat(200_000) + '\n"end"' }] });
  return [...users].sort((a, b) => compareIds(a[0], b[0]));
}

describe('compareIds', () => {
  it('orders by code point, unlike JS <', () => {
    expect('\uFFFF' < '😀').toBe(false);
    expect(compareIds('\uFFFF', '😀')).toBeLessThan(0);
    expect(compareIds('😀', '\uFFFF')).toBeGreaterThan(0);
    expect(compareIds('a', 'a')).toBe(0);
    expect(compareIds('a', 'ab')).toBeLessThan(0);
    expect(compareIds('ab', 'a')).toBeGreaterThan(0);
    expect(compareIds('B', 'a')).toBeLessThan(0);
  });

  it('agrees with UTF-8 byte order on random strings', () => {
    const alphabet = ['a', 'Z', '0', ' ', '"', 'é', '\u07FF', '\u0800', '\uD7FF', '\uE000', '\uFFFD', '\uFFFF', '😀', '𐀀', '\u{10FFFF}'];
    let seed = 42;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const ids = Array.from({ length: 400 }, () => Array.from({ length: rand(5) }, () => alphabet[rand(alphabet.length)]).join(''));
    const byBytes = [...ids].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    expect([...ids].sort(compareIds)).toEqual(byBytes);
  });
});

describe('backup names', () => {
  const date = new Date(Date.UTC(2025, 10, 25, 13, 28, 11));

  it('builds names in UTC with an optional sequence number', () => {
    expect(backupBaseName(date, 0)).toBe('memory_backup_20251125_132811');
    expect(backupBaseName(date, 3)).toBe('memory_backup_20251125_132811_3');
    expect(backupBaseName(new Date(Date.UTC(2025, 0, 2, 3, 4, 5, 999)), 0)).toBe('memory_backup_20250102_030405');
    expect(backupBaseName(date, 0).startsWith(BACKUP_PREFIX)).toBe(true);
  });

  it('round-trips through parseBackupName', () => {
    for (const seq of [0, 1, 12]) {
      const base = backupBaseName(date, seq);
      expect(parseBackupName(`${base}.json`)).toEqual({ id: base, createdAt: date, gzip: false, kind: 'full' });
      expect(parseBackupName(`${base}.json.gz`)).toEqual({ id: base, createdAt: date, gzip: true, kind: 'full' });
    }
  });

  it('recognises the seed files', () => {
    expect(parseBackupName('memory_backup_20251125_145714.json')).toMatchObject({ id: 'memory_backup_20251125_145714', kind: 'full' });
    expect(parseBackupName('memory_backup_628161973069_20251125_140002.json')).toEqual({
      id: 'memory_backup_628161973069_20251125_140002',
      createdAt: new Date(Date.UTC(2025, 10, 25, 14, 0, 2)),
      gzip: false,
      kind: 'user',
    });
  });

  it('rejects manifests, temp files and other names', () => {
    for (const name of [
      'memory_backup_20251125_132811.meta.json',
      'memory_backup_20251125_132811_2.meta.json',
      path.basename(tempNameFor('/x/memory_backup_20251125_132811.json')),
      'memory_backup_20251125_132811',
      'memory_backup_20251125_132811.json.tmp',
      'memory_backup_20251125_1328.json',
      'memory_backup_20251125_132811_0.json',
      'memory_backup_x.json',
      'memory.json',
      'backup_20251125_132811.json',
      'memory_backup_a/b_20251125_132811.json',
    ]) {
      expect(parseBackupName(name), name).toBeNull();
    }
  });

  it('keeps a name whose digits are not a date, without a time', () => {
    expect(parseBackupName('memory_backup_20251399_256161.json')).toMatchObject({ kind: 'full', createdAt: null });
  });

  it('names the manifest beside a backup', () => {
    expect(manifestName('memory_backup_20251125_132811_2.json')).toBe('memory_backup_20251125_132811_2.meta.json');
    expect(manifestName('memory_backup_20251125_132811.json.gz')).toBe('memory_backup_20251125_132811.meta.json');
  });
});

describe('resolveBackupId', () => {
  it('resolves ids, file names and gzip names inside the directory', () => {
    const d = '/var/backups/chatmem';
    expect(resolveBackupId(d, 'memory_backup_20251125_132811')).toEqual({
      id: 'memory_backup_20251125_132811',
      fileName: 'memory_backup_20251125_132811.json',
      file: '/var/backups/chatmem/memory_backup_20251125_132811.json',
      gzip: false,
    });
    expect(resolveBackupId(d, 'memory_backup_20251125_132811_4.json')).toMatchObject({
      id: 'memory_backup_20251125_132811_4',
      fileName: 'memory_backup_20251125_132811_4.json',
    });
    expect(resolveBackupId(d, 'memory_backup_20251125_132811.json.gz')).toMatchObject({
      id: 'memory_backup_20251125_132811',
      file: '/var/backups/chatmem/memory_backup_20251125_132811.json.gz',
      gzip: true,
    });
    expect(resolveBackupId('rel/dir', 'memory_backup_628161973069_20251125_140002').file).toBe(
      path.resolve('rel/dir', 'memory_backup_628161973069_20251125_140002.json'),
    );
  });

  it('rejects anything that is not a plain backup name', () => {
    for (const id of [
      '../x',
      '/etc/passwd',
      'a/b',
      'memory_backup_x',
      'memory_backup_20251125_132811\0',
      '\0',
      '',
      '..',
      'memory_backup_20251125_132811/../../etc/passwd',
      '../memory_backup_20251125_132811',
      'memory_backup_..\\x_20251125_132811',
      'sub\\memory_backup_20251125_132811',
      'memory_backup_20251125_132811.meta.json',
      'memory_backup_20251125_132811.meta',
    ]) {
      let caught: unknown;
      try {
        resolveBackupId('/var/backups', id);
      } catch (err) {
        caught = err;
      }
      expect(caught, JSON.stringify(id)).toBeInstanceOf(BackupError);
      expect((caught as BackupError).code).toBe('E_BACKUP_ID');
    }
  });
});

describe('entryLine', () => {
  it('is JSON.stringify of key and value joined by a colon', () => {
    expect(entryLine('a "b"', { x: [1, '\n'] })).toBe('"a \\"b\\"":{"x":[1,"\\n"]}');
  });

  it('refuses values JSON cannot represent', () => {
    expect(() => entryLine('u', undefined)).toThrow(ChatmemError);
    expect(() => entryLine('u', 10n)).toThrow(/not JSON-serialisable/);
  });
});

describe('writeBackupStream', () => {
  const users = makeUsers(5000);
  let file: string;
  let result: { sha256: string; users: number; bytes: number };

  beforeAll(async () => {
    file = tmp('memory_backup_20251125_132811.json');
    result = await writeFile(file, users);
  });

  it('writes the line format, hashes and counts what it wrote', () => {
    const bytes = readFileSync(file);
    expect(result.users).toBe(users.length);
    expect(result.bytes).toBe(bytes.length);
    expect(result.sha256).toBe(sha256(bytes));
    const lines = bytes.toString('utf8').split('\n');
    expect(lines[0]).toBe('{');
    expect(lines.at(-2)).toBe('}');
    expect(lines.at(-1)).toBe('');
    expect(lines).toHaveLength(users.length + 3);
    users.forEach(([k, v], i) => {
      expect(lines[i + 1]).toBe(entryLine(k, v) + (i < users.length - 1 ? ',' : ''));
    });
  });

  it('is loaded by JSON.parse and by readJsonEntries with the same entries', async () => {
    const text = readFileSync(file, 'utf8');
    const parsed = JSON.parse(text) as Record<string, unknown>;
    expect(Object.keys(parsed)).toHaveLength(users.length);
    const read: [string, unknown][] = [];
    for await (const e of readJsonEntries(file)) read.push([e.key, e.value]);
    expect(read).toEqual(users);
  });

  it.skipIf(!hasPython)("is loaded by Python's json.load with the same keys in the same order", () => {
    const { count, keys } = pythonLoad(file);
    expect(count).toBe(users.length);
    expect(keys).toEqual(users.map(([k]) => k));
  });

  it('digests to the same hash, size and count', async () => {
    expect(await digestBackupFile(file)).toEqual(result);
  });

  it('is sniffed as line format; the seed files are not', async () => {
    expect(await isLineFormat(file)).toBe(true);
    expect(await isLineFormat(MEMORY)).toBe(false);
    expect(await isLineFormat(path.join(SEED, 'backups/memory_backup_20251125_132811.json'))).toBe(false);
  });

  it('finds the first, middle, last and odd users by binary search', async () => {
    const pick = [0, 1, Math.floor(users.length / 2), users.length - 2, users.length - 1];
    for (const i of pick) {
      const [id, record] = users[i]!;
      expect(await findInLineBackup(file, id), JSON.stringify(id)).toEqual(record);
    }
    for (const id of [...ODD_IDS, '62big']) {
      expect(await findInLineBackup(file, id), JSON.stringify(id)).toEqual(users.find(([k]) => k === id)?.[1]);
    }
    const big = (await findInLineBackup(file, '62big')) as { history: { text: string }[] };
    expect(big.history[0]?.text.length).toBeGreaterThan(200_000);
  });

  it('finds every user', async () => {
    for (let i = 0; i < users.length; i += 7) {
      const [id, record] = users[i]!;
      expect(await findInLineBackup(file, id)).toEqual(record);
    }
  });

  it('returns undefined for absent users before, between and after the entries', async () => {
    for (const id of ['\u0000', '!', '62000000000x', '62', '620000000000 ', '😀😀😀', '\u{10FFFF}', 'zzz', '😁']) {
      expect(users.some(([k]) => k === id)).toBe(false);
      expect(await findInLineBackup(file, id), JSON.stringify(id)).toBeUndefined();
    }
  });

  it('handles empty and single-entry backups', async () => {
    const empty = tmp();
    expect(await writeFile(empty, [])).toMatchObject({ users: 0, bytes: 4 });
    expect(readFileSync(empty, 'utf8')).toBe('{\n}\n');
    expect(await isLineFormat(empty)).toBe(true);
    expect(await findInLineBackup(empty, 'x')).toBeUndefined();
    expect(await digestBackupFile(empty)).toMatchObject({ users: 0, bytes: 4 });

    const one = tmp();
    await writeFile(one, [['only', { a: 1 }]]);
    expect(readFileSync(one, 'utf8')).toBe('{\n"only":{"a":1}\n}\n');
    expect(await findInLineBackup(one, 'only')).toEqual({ a: 1 });
    expect(await findInLineBackup(one, 'a')).toBeUndefined();
    expect(await findInLineBackup(one, 'z')).toBeUndefined();
    if (hasPython) {
      expect(pythonLoad(empty).count).toBe(0);
      expect(pythonLoad(one).count).toBe(1);
    }
  });

  it('refuses out-of-order and duplicate keys and writes nothing more', async () => {
    for (const pairs of [
      [['a', 1], ['c', 2], ['b', 3]],
      [['a', 1], ['a', 2]],
      [['😀', 1], ['\uFFFF', 2]],
    ] as [string, unknown][][]) {
      const f = tmp();
      const err = await writeFile(f, pairs).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackupError);
      expect((err as BackupError).code).toBe('E_BACKUP_ORDER');
      const written = readFileSync(f, 'utf8');
      expect(written).not.toContain(JSON.stringify(pairs[2]?.[0] ?? '') + ':' + JSON.stringify(pairs[2]?.[1] ?? 2));
      expect(written.endsWith('}\n')).toBe(false);
    }
  });

  it('reports progress as entries written', async () => {
    const seen: number[] = [];
    const out = new Writable({ write: (_c, _e, cb) => cb() });
    await writeBackupStream(iterate(users), out, { onProgress: (n) => seen.push(n) });
    expect(seen.at(-1)).toBe(users.length);
    expect(seen).toEqual([...seen].sort((a, b) => a - b));
  });
});

describe('writeBackupStream with gzip', () => {
  it('compresses the same JSON text and hashes the uncompressed bytes', async () => {
    const users = makeUsers(300);
    const plain = tmp();
    const gz = tmp('memory_backup_20251125_132811.json.gz');
    const a = await writeFile(plain, users);
    const b = await writeFile(gz, users, { gzip: true });
    expect(b).toEqual(a);
    const unzipped = gunzipSync(readFileSync(gz));
    expect(unzipped.equals(readFileSync(plain))).toBe(true);
    expect(await digestBackupFile(gz, { gzip: true })).toEqual(a);
    const read: [string, unknown][] = [];
    for await (const e of readJsonEntries(gz, { gzip: true })) read.push([e.key, e.value]);
    expect(read).toEqual(users);
    expect(await isLineFormat(gz)).toBe(false);
  });
});

describe('writeBackupStream and slow or failing streams', () => {
  /** A writable that takes its time and holds little, so backpressure kicks in constantly. */
  function slowSink(): { out: Writable; data: () => Buffer; maxBuffered: () => number } {
    const chunks: Buffer[] = [];
    let maxBuffered = 0;
    const out = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _enc, cb) {
        maxBuffered = Math.max(maxBuffered, out.writableLength);
        chunks.push(Buffer.from(chunk));
        setTimeout(cb, 0);
      },
    });
    return { out, data: () => Buffer.concat(chunks), maxBuffered: () => maxBuffered };
  }

  it('waits for drain and delivers every byte (plain)', async () => {
    const users = makeUsers(2000);
    const { out, data, maxBuffered } = slowSink();
    const r = await writeBackupStream(iterate(users), out);
    expect(sha256(data())).toBe(r.sha256);
    expect(data().length).toBe(r.bytes);
    // At most one batch (64 KB, or one line when a record is bigger, here ~200 KB) is queued beyond the high-water mark.
    expect(maxBuffered()).toBeLessThan(300 * 1024);
  });

  it('waits for drain and delivers every byte (gzip)', async () => {
    const users = makeUsers(2000);
    const { out, data } = slowSink();
    const r = await writeBackupStream(iterate(users), out, { gzip: true });
    const unzipped = gunzipSync(data());
    expect(sha256(unzipped)).toBe(r.sha256);
    expect(unzipped.length).toBe(r.bytes);
  });

  for (const gzip of [false, true]) {
    it(`rejects when the output fails (gzip: ${gzip})`, async () => {
      let calls = 0;
      const out = new Writable({
        highWaterMark: 1024,
        write(_chunk, _enc, cb) {
          calls++;
          if (calls === 3) cb(new Error('ENOSPC: no space left on device'));
          else setTimeout(cb, 0);
        },
      });
      await expect(writeBackupStream(iterate(makeUsers(3000)), out, { gzip })).rejects.toThrow(/ENOSPC/);
    });
  }

  it('rejects when the entries source fails', async () => {
    async function* broken(): AsyncGenerator<[string, unknown]> {
      yield ['a', 1];
      throw new Error('store went away');
    }
    const out = new Writable({ write: (_c, _e, cb) => cb() });
    await expect(writeBackupStream(broken(), out)).rejects.toThrow('store went away');
  });
});

describe('findInLineBackup on files in other formats', () => {
  it('refuses pretty-printed and escaped seed files with E_BACKUP_FORMAT', async () => {
    for (const f of [MEMORY, path.join(SEED, 'backups/memory_backup_20251125_132811.json'), path.join(SEED, 'backups/memory_backup_20251125_145714.json')]) {
      await expect(findInLineBackup(f, '628161973069')).rejects.toMatchObject({ code: 'E_BACKUP_FORMAT' });
    }
  });

  it('refuses a single-line file, a gzip file and an indent=0 file', async () => {
    const oneLine = tmp();
    await fsp.writeFile(oneLine, JSON.stringify({ a: 1, b: 2 }));
    await expect(findInLineBackup(oneLine, 'a')).rejects.toMatchObject({ code: 'E_BACKUP_FORMAT' });

    const gz = tmp();
    await fsp.writeFile(gz, gzipSync('{\n"a":1\n}\n'));
    await expect(findInLineBackup(gz, 'a')).rejects.toMatchObject({ code: 'E_BACKUP_FORMAT' });

    // What json.dump(indent=0) writes: every line starts with '"' but nested lines are not entries.
    const indent0 = tmp();
    await fsp.writeFile(indent0, '{\n"u1": {\n"name": "Budi",\n"user_id": "u1"\n},\n"u2": {\n"name": "Sari"\n}\n}');
    expect(await isLineFormat(indent0)).toBe(false);
    await expect(findInLineBackup(indent0, 'name')).rejects.toMatchObject({ code: 'E_BACKUP_FORMAT' });

    // json.dump(indent=0, separators=(',', ':')) passes the sniff; the per-line checks still catch it.
    const compact = tmp();
    await fsp.writeFile(compact, '{\n"u1":{\n"name":"Budi",\n"user_id":"u1"\n},\n"u2":{\n"name":"Sari"\n}\n}');
    expect(await isLineFormat(compact)).toBe(true);
    for (const id of ['name', 'u1', 'u2', 'user_id', 'zz']) {
      await expect(findInLineBackup(compact, id)).rejects.toMatchObject({ code: 'E_BACKUP_FORMAT' });
    }
  });

  it('refuses a line-format file cut short', async () => {
    const f = tmp();
    await writeFile(f, makeUsers(50));
    const full = readFileSync(f);
    const cut = tmp();
    await fsp.writeFile(cut, full.subarray(0, Math.floor(full.length / 2)));
    await expect(findInLineBackup(cut, '620000000000')).rejects.toMatchObject({ code: 'E_BACKUP_FORMAT' });
  });
});
