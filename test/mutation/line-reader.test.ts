import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackupError } from '../../src/errors.js';
import { digestBackupFile, findInLineBackup, isLineFormat } from '../../src/format/line-reader.js';

/**
 * The reader's promises beyond the round trip (test/mutation/line-format.test.ts): one user is found
 * in O(log n) small reads, never by reading the file whole; what is not the line format is refused
 * with the file named and the cause kept; no file handle is left open; the sniff says no to near
 * misses. Real files; the read counter below only counts the reads the code makes, it answers nothing.
 */
let dir: string;
beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'chatmem-line-reader-'));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

let n = 0;
const file = (name: string): string => path.join(dir, `${n++}-${name}`);
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** The line format as the writer makes it (its bytes are checked in line-format.test.ts). */
function lineText(entries: [string, unknown][]): string {
  if (entries.length === 0) return '{\n}\n';
  return `{\n${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',\n')}\n}\n`;
}

async function lineFile(entries: [string, unknown][]): Promise<string> {
  const f = file('b.json');
  await fsp.writeFile(f, lineText(entries));
  return f;
}

/** Counts the positioned reads made through any FileHandle while `fn` runs, and their sizes. */
async function countReads<T>(fn: () => Promise<T>): Promise<{ result: T; reads: number; biggest: number; total: number }> {
  const probe = await fsp.open(fileURLToPath(import.meta.url), 'r');
  const proto = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<unknown> };
  await probe.close();
  const original = proto.read;
  let reads = 0;
  let biggest = 0;
  let total = 0;
  proto.read = function (this: unknown, ...args: unknown[]) {
    reads++;
    const length = typeof args[2] === 'number' ? args[2] : 0;
    biggest = Math.max(biggest, length);
    total += length;
    return original.apply(this, args);
  };
  try {
    return { result: await fn(), reads, biggest, total };
  } finally {
    proto.read = original;
  }
}

async function openFds(): Promise<number> {
  return (await fsp.readdir('/proc/self/fd')).length;
}

const ids = (count: number): string[] => Array.from({ length: count }, (_, i) => `u${String(i).padStart(5, '0')}`);

describe('findInLineBackup reads little', { timeout: 10_000 }, () => {
  it('finds each of 2,000 users in a handful of small reads, never the whole file', async () => {
    const all = ids(2000);
    const f = await lineFile(all.map((id, i) => [id, { i }]));
    let worst = 0;
    let bytes = 0;
    for (const [i, id] of all.entries()) {
      if (i % 97 !== 0 && i !== all.length - 1) continue;
      const r = await countReads(() => findInLineBackup(f, id));
      expect((r.result as { i: number } | undefined)?.i, id).toBe(i);
      worst = Math.max(worst, r.reads);
      bytes = Math.max(bytes, r.biggest);
      // log2(2000) is 11 probes of two or three reads each; a scan from the start needs hundreds.
      expect(r.reads, id).toBeLessThan(60);
    }
    expect(bytes).toBeLessThanOrEqual(16 * 1024);
    expect(worst).toBeGreaterThan(10);
    const miss = await countReads(() => findInLineBackup(f, 'u99999'));
    expect(miss.result).toBeUndefined();
    expect(miss.reads).toBeLessThan(60);
  });

  it('finds users between lines longer than one 16 KB read without scanning from the first line', async () => {
    const long = 'y'.repeat(40 * 1024);
    const all = ids(64);
    const f = await lineFile(all.map((id, i) => [id, { i, long }]));
    const size = (await fsp.stat(f)).size;
    for (const [i, id] of all.entries()) {
      if (i % 9 !== 0 && i !== all.length - 1) continue;
      const r = await countReads(() => findInLineBackup(f, id));
      expect((r.result as { i: number } | undefined)?.i, id).toBe(i);
      // 6 probes, each a newline search and a line read of up to three 16 KB reads each; from the first
      // line on, the 63rd user costs 63 line reads.
      expect(r.reads, id).toBeLessThan(70);
      expect(r.total, id).toBeLessThan(size / 2);
      expect(r.biggest, id).toBeLessThanOrEqual(16 * 1024);
    }
  });

  it('leaves no file handle open, found or not, and after a refusal', async () => {
    const f = await lineFile(ids(50).map((id, i) => [id, i]));
    const bad = file('bad.json');
    await fsp.writeFile(bad, '{\n"a":1\n]\n');
    const before = await openFds();
    for (let i = 0; i < 20; i++) {
      await findInLineBackup(f, 'u00007');
      await findInLineBackup(f, 'nobody');
      await findInLineBackup(bad, 'a').catch(() => undefined);
      await isLineFormat(f);
      await isLineFormat(bad);
    }
    expect(await openFds()).toBe(before);
  });
});

describe('findInLineBackup edges', { timeout: 10_000 }, () => {
  it('finds an empty id, and nothing in an empty backup', async () => {
    const f = await lineFile([['', 'empty'], ['a', 'A']]);
    expect(await findInLineBackup(f, '')).toBe('empty');
    expect(await findInLineBackup(f, 'a')).toBe('A');
    const empty = await lineFile([]);
    expect(await findInLineBackup(empty, 'a')).toBeUndefined();
    expect(await findInLineBackup(empty, '')).toBeUndefined();
  });

  // 63 bytes or more of it are refused (the '\n' before '}' is then outside the 64-byte tail read):
  // the caller falls back to parsing the whole file, and chatmem's writer adds none.
  it('reads a last line whose "}" is followed by up to 62 bytes of whitespace (the end of the 64-byte tail)', async () => {
    for (const pad of [0, 61, 62]) {
      const f = file('padded.json');
      await fsp.writeFile(f, `{\n"a":1,\n"b":2\n}${' \r\t\n'.repeat(16).slice(0, pad)}`);
      expect(await findInLineBackup(f, 'b'), String(pad)).toBe(2);
      expect(await findInLineBackup(f, 'c'), String(pad)).toBeUndefined();
    }
  });

  it('names the file in a refusal and keeps the parse error and the line position', async () => {
    const f = file('broken.json');
    await fsp.writeFile(f, '{\n"a":tru\n}\n');
    const err = await findInLineBackup(f, 'a').then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(BackupError);
    expect(err).toMatchObject({ code: 'E_BACKUP_FORMAT', details: { file: f, position: 2 } });
    expect((err as Error).message).toBe(`${f}: not in chatmem line format (bad entry line at byte 2)`);
    expect((err as Error).cause).toBeInstanceOf(SyntaxError);
    const g = file('square.json');
    await fsp.writeFile(g, '[\n"a":1\n}\n');
    const head = await findInLineBackup(g, 'a').then(() => null, (e: unknown) => e);
    expect(head).toMatchObject({ code: 'E_BACKUP_FORMAT', details: { file: g } });
    expect((head as Error).message).toBe(`${g}: not in chatmem line format (first line is not '{')`);
  });

  it('calls a line that does not open with a quote malformed, even with a quote later on it', async () => {
    for (const text of ['{\na":1\n}\n', '{\nx"a":1\n}\n']) {
      const f = file('unquoted.json');
      await fsp.writeFile(f, text);
      const err = await findInLineBackup(f, 'a').then(() => null, (e: unknown) => e);
      expect((err as Error).message, JSON.stringify(text)).toContain('(malformed entry line at byte 2)');
    }
  });
});

describe('digestBackupFile without the line-format shortcut', { timeout: 10_000 }, () => {
  it('counts entries by parsing, plain and gzip, whatever the lines', async () => {
    const text = '{"a": 1, "b": {"x": [1,\n2]},\n"c": 3}\n';
    const f = file('pretty.json');
    await fsp.writeFile(f, text);
    const want = { sha256: sha256(Buffer.from(text)), bytes: Buffer.byteLength(text), users: 3 };
    expect(await digestBackupFile(f)).toEqual(want);
    const gz = file('pretty.json.gz');
    await fsp.writeFile(gz, gzipSync(text));
    expect(await digestBackupFile(gz, { gzip: true })).toEqual(want);
  });
});

describe('isLineFormat near misses', { timeout: 10_000 }, () => {
  it('says no to a wrong first line or whitespace after the colon, yes to a key that ends the file', async () => {
    const cases: [string, boolean][] = [
      ['x\n"a":1\n}\n', false],
      ['{ "a":1}\n', false],
      ['{\n"a":\n1\n}\n', false],
      ['{\n"a":\r1\n}\n', false],
      ['{\n"a":\t1\n}\n', false],
      ['{\n"abc"', true],
      ['{\n"a":1', true],
    ];
    for (const [text, want] of cases) {
      const f = file('sniff.json');
      await fsp.writeFile(f, text);
      expect(await isLineFormat(f), JSON.stringify(text)).toBe(want);
    }
  });
});
