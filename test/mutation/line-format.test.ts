import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BackupError, RecordError } from '../../src/errors.js';
import { resetFsIo, setFsIo } from '../../src/fsio.js';
import { digestBackupFile, findInLineBackup, isLineFormat } from '../../src/format/line-reader.js';
import { entryLine, rawEntries, RawJson, writeBackupBatches, writeBackupStream, writeStreamDurably } from '../../src/format/line-writer.js';
import type { JsonByteBatch } from '../../src/store/types.js';

/**
 * The backup's byte path (src/format/line-writer.ts, line-reader.ts): every full backup is written by
 * these functions and read back by them. Real files in a temp directory; the promises are the bytes
 * written, the hash and counts reported, the refusals, and the files left behind.
 */
let dir: string;
beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'chatmem-line-format-'));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});
afterEach(() => resetFsIo());

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function* iterate<T>(items: T[]): AsyncGenerator<T> {
  for (const i of items) yield i;
}

function collector(): { out: Writable; data: () => Buffer } {
  const chunks: Buffer[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(Buffer.from(chunk));
      cb();
    },
  });
  return { out, data: () => Buffer.concat(chunks) };
}

const batch = (pairs: [string, string][]): JsonByteBatch => ({ ids: pairs.map(([id]) => id), data: pairs.map(([, json]) => Buffer.from(json, 'utf8')) }) as JsonByteBatch;

// Each describe fails a test after 10 s (a test takes at most a second or two): a mutant that breaks a
// stream wait hangs, and failing it here spares the mutation run StrykerJS's timeout and restart.
let n = 0;
const file = (name: string): string => path.join(dir, `${n++}-${name}`);

describe('writeStreamDurably', { timeout: 10_000 }, () => {
  it('refuses a name that exists and leaves that file as it was', async () => {
    const f = file('taken');
    await fsp.writeFile(f, 'not ours');
    const err = await writeStreamDurably(f, async (out) => void out.write('new')).then(() => null, (e: unknown) => e);
    expect((err as NodeJS.ErrnoException | null)?.code).toBe('EEXIST');
    expect(await fsp.readFile(f, 'utf8')).toBe('not ours');
  });

  it('writes the file with mode 0600 and returns what the writer returned; a failing writer leaves no file', async () => {
    const f = file('made');
    expect(await writeStreamDurably(f, async (out) => (out.write('hello'), 42))).toBe(42);
    expect(await fsp.readFile(f, 'utf8')).toBe('hello');
    expect((await fsp.stat(f)).mode & 0o777).toBe(0o600);
    const g = file('failed');
    await expect(writeStreamDurably(g, async (out) => { out.write('partial'); throw new Error('source broke'); })).rejects.toThrow('source broke');
    await expect(fsp.stat(g)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('writeStreamDurably when the disk fails', { timeout: 10_000 }, () => {
  it('an fsync that fails rejects with its error, closes the file and removes it', async () => {
    const f = file('nosync');
    const closed: string[] = [];
    setFsIo({
      sync: async () => {
        throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
      },
      close: async (fh, name) => {
        closed.push(name);
        await fh.close();
      },
    });
    await expect(writeStreamDurably(f, async (out) => void out.write('data'))).rejects.toMatchObject({ code: 'EIO' });
    expect(closed).toEqual([f]);
    await expect(fsp.stat(f)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('syncs the file it wrote, after every byte is in it', async () => {
    const f = file('synced');
    const seen: string[] = [];
    setFsIo({
      sync: async (fh, name) => {
        seen.push(`${name === f ? 'file' : name}:${(await fsp.readFile(f, 'utf8')).length}`);
        await fh.sync();
      },
    });
    await writeStreamDurably(f, async (out) => {
      for (let i = 0; i < 100; i++) out.write('x'.repeat(1000));
    });
    expect(seen).toEqual(['file:100000']);
  });
});

/** A writable that takes its time and holds little, so backpressure kicks in constantly. */
function slowSink(fail?: { at: number; how: 'callback' | 'destroy' }): { out: Writable; data: () => Buffer; maxBuffered: () => number } {
  const chunks: Buffer[] = [];
  let maxBuffered = 0;
  let calls = 0;
  const out = new Writable({
    highWaterMark: 1024,
    write(chunk: Buffer, _enc, cb) {
      calls++;
      maxBuffered = Math.max(maxBuffered, out.writableLength);
      if (fail && calls === fail.at) {
        const err = Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
        if (fail.how === 'callback') cb(err);
        else out.destroy(err);
        return;
      }
      chunks.push(Buffer.from(chunk));
      setTimeout(cb, 0);
    },
  });
  return { out, data: () => Buffer.concat(chunks), maxBuffered: () => maxBuffered };
}

const users = (count: number, size: number): [string, unknown][] =>
  Array.from({ length: count }, (_, i) => [`u${String(i).padStart(6, '0')}`, { i, pad: 'p'.repeat(size) }] as [string, unknown]);

describe('both writers against slow and failing outputs', { timeout: 10_000 }, () => {
  const writers = {
    entries: (entries: [string, unknown][], out: Writable, gzip: boolean) => writeBackupStream(iterate(entries), out, { gzip }),
    batches: (entries: [string, unknown][], out: Writable, gzip: boolean) => {
      const pairs = entries.map(([id, v]) => [id, JSON.stringify(v)] as [string, string]);
      const chunks: JsonByteBatch[] = [];
      for (let i = 0; i < pairs.length; i += 50) chunks.push(batch(pairs.slice(i, i + 50)));
      return writeBackupBatches(iterate(chunks), out, { gzip });
    },
  };
  for (const [name, write] of Object.entries(writers)) {
    for (const gzip of [false, true]) {
      it(`${name}, gzip ${gzip}: every byte arrives in order through backpressure, and little is buffered`, async () => {
        const entries = users(1500, 300);
        const sink = slowSink();
        const r = await write(entries, sink.out, gzip);
        const text = gzip ? gunzipSync(sink.data()) : sink.data();
        expect(sha256(text)).toBe(r.sha256);
        expect([text.length, r.users]).toEqual([r.bytes, 1500]);
        expect(JSON.parse(text.toString('utf8'))).toEqual(Object.fromEntries(entries));
        // One batch (64 KB of lines) at most beyond the high-water mark, however big the backup.
        expect(sink.maxBuffered()).toBeLessThan(200 * 1024);
        expect(r.bytes).toBeGreaterThan(400 * 1024);
      });

      for (const how of ['callback', 'destroy'] as const) {
        it(`${name}, gzip ${gzip}: an output that fails (${how}) rejects with its error`, async () => {
          const sink = slowSink({ at: 3, how });
          await expect(write(users(3000, 300), sink.out, gzip)).rejects.toMatchObject({ code: 'ENOSPC' });
        });
      }

      // A closed socket or response: destroyed with no error, its write in progress never called back
      // (the gzip writer waited for it forever before).
      it(`${name}, gzip ${gzip}: an output closed with a write in progress rejects instead of waiting forever`, async () => {
        let calls = 0;
        const out = new Writable({
          highWaterMark: 1024,
          write(_chunk: Buffer, _enc, cb) {
            if (++calls === 3) {
              setTimeout(() => out.destroy(), 5);
              return;
            }
            setTimeout(cb, 0);
          },
        });
        await expect(write(users(3000, 300), out, gzip)).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
      });
    }
  }

  it('an output that takes everything at once (never asks to wait) gets the same bytes', async () => {
    const c = collector();
    const entries = users(500, 500);
    const r = await writeBackupStream(iterate(entries), c.out);
    expect(sha256(c.data())).toBe(r.sha256);
    expect(c.out.listenerCount('error')).toBe(0);
    expect(c.out.listenerCount('drain')).toBe(0);
  });

  it('a source that fails mid-way rejects, and a gzip stream is not left running', async () => {
    async function* broken(): AsyncGenerator<[string, unknown]> {
      yield* users(400, 500);
      throw new Error('store went away');
    }
    for (const gzip of [false, true]) {
      const sink = slowSink();
      await expect(writeBackupStream(broken(), sink.out, { gzip })).rejects.toThrow('store went away');
    }
  });
});

describe('entryLine and raw entries', { timeout: 10_000 }, () => {
  it('writes RawJson text as it is, and names the user and the cause of a value JSON cannot hold', async () => {
    expect(entryLine('a"b', new RawJson('{"x": 1}'))).toBe('"a\\"b":{"x": 1}');
    const pairs: [string, string][] = [['u1', '{"n":1}'], ['u2', '{"n":2}']];
    const got: [string, unknown][] = [];
    for await (const e of rawEntries(iterate(pairs))) got.push(e);
    expect(got.map(([id, v]) => [id, (v as RawJson).text])).toEqual(pairs);
    expect(got.every(([, v]) => v instanceof RawJson)).toBe(true);
    let err: unknown;
    try {
      entryLine('who', { big: 10n });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RecordError);
    expect(err).toMatchObject({ code: 'E_RECORD', details: { userId: 'who' } });
    expect((err as Error).message).toBe('the record of "who" is not JSON-serialisable');
    expect((err as Error).cause).toBeInstanceOf(TypeError);
    let undef: unknown;
    try {
      entryLine('fn', () => 1);
    } catch (e) {
      undef = e;
    }
    expect(undef).toMatchObject({ code: 'E_RECORD' });
    expect((undef as Error).cause).toBeUndefined();
  });
});

describe('writeBackupStream and writeBackupBatches', { timeout: 10_000 }, () => {
  it('give the same bytes, hash, size and count; an empty batch and a multi-byte id change nothing', async () => {
    const pairs: [string, string][] = [['a', '{"v":"x"}'], ['z"q', '{"v":"ü€😀"}'], ['é', '{}']];
    const a = collector();
    const ra = await writeBackupStream(rawEntries(iterate(pairs)), a.out);
    const b = collector();
    const progress: number[] = [];
    const rb = await writeBackupBatches(iterate([batch([]), batch(pairs.slice(0, 2)), batch([]), batch(pairs.slice(2))]), b.out, { onProgress: (u) => progress.push(u) });
    const text = '{\n"a":{"v":"x"},\n"z\\"q":{"v":"ü€😀"},\n"é":{}\n}\n';
    expect(a.data().toString('utf8')).toBe(text);
    expect(b.data().toString('utf8')).toBe(text);
    expect(ra).toEqual({ sha256: sha256(Buffer.from(text)), users: 3, bytes: Buffer.byteLength(text) });
    expect(rb).toEqual(ra);
    expect(progress).toEqual([2, 3, 3]);
  });

  it('an empty store is "{\\n}\\n" both ways, with a progress report of 0', async () => {
    for (const write of [
      (out: Writable, p: (u: number) => void) => writeBackupStream(iterate<[string, unknown]>([]), out, { onProgress: p }),
      (out: Writable, p: (u: number) => void) => writeBackupBatches(iterate([batch([])]), out, { onProgress: p }),
    ]) {
      const c = collector();
      const progress: number[] = [];
      const r = await write(c.out, (u) => progress.push(u));
      expect(c.data().toString('utf8')).toBe('{\n}\n');
      expect(r).toEqual({ sha256: sha256(Buffer.from('{\n}\n')), users: 0, bytes: 4 });
      expect(progress).toEqual([0]);
    }
  });

  it('batches refuse an id out of order across batches, naming both, and a duplicate as such', async () => {
    const out = collector();
    const err = await writeBackupBatches(iterate([batch([['b', '1']]), batch([['a', '2']])]), out.out).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(BackupError);
    expect(err).toMatchObject({ code: 'E_BACKUP_ORDER', details: { previous: 'b', key: 'a' } });
    expect((err as Error).message).toBe('backup entries out of order: "a" after "b"');
    const dup = await writeBackupBatches(iterate([batch([['b', '1'], ['b', '2']])]), collector().out).then(() => null, (e: unknown) => e);
    expect((dup as Error).message).toBe('backup entries out of order: "b" after "b" (duplicate)');
  });

  it('a plain write reports progress per 64 KB batch and the gzip form holds the same text', async () => {
    const big = 'x'.repeat(40 * 1024);
    const entries: [string, unknown][] = ['a', 'b', 'c', 'd'].map((id) => [id, { big }]);
    const c = collector();
    const progress: number[] = [];
    const r = await writeBackupStream(iterate(entries), c.out, { onProgress: (u) => progress.push(u) });
    // Lines of ~40 KB: a batch is sent once it reaches 64 KB, so after every second user.
    expect(progress).toEqual([2, 4, 4]);
    const g = collector();
    const rg = await writeBackupStream(iterate(entries), g.out, { gzip: true });
    expect(gunzipSync(g.data()).equals(c.data())).toBe(true);
    expect(rg).toEqual(r);
    expect(g.data().length).toBeLessThan(r.bytes / 10);
  });
});

describe('digestBackupFile', { timeout: 10_000 }, () => {
  it('counts the users of a line-format file by its lines, plain and gzip, and refuses what is not a regular file', async () => {
    const f = file('three.json');
    const text = '{\n"a":1,\n"b":2,\n"c":3\n}\n';
    await fsp.writeFile(f, text);
    expect(await digestBackupFile(f, { lineFormat: true })).toEqual({ sha256: sha256(Buffer.from(text)), bytes: text.length, users: 3 });
    expect(await digestBackupFile(f)).toEqual({ sha256: sha256(Buffer.from(text)), bytes: text.length, users: 3 });
    const empty = file('empty.json');
    await fsp.writeFile(empty, '{\n}\n');
    expect((await digestBackupFile(empty, { lineFormat: true })).users).toBe(0);
    const nothing = file('nothing.json');
    await fsp.writeFile(nothing, '');
    expect((await digestBackupFile(nothing, { lineFormat: true })).users).toBe(0);
    const gz = file('three.json.gz');
    const c = collector();
    await writeBackupStream(iterate<[string, unknown]>([['a', 1], ['b', 2], ['c', 3]]), c.out, { gzip: true });
    await fsp.writeFile(gz, c.data());
    expect(await digestBackupFile(gz, { gzip: true, lineFormat: true })).toEqual({ sha256: sha256(Buffer.from(text)), bytes: text.length, users: 3 });
    const sub = file('dir.json');
    await fsp.mkdir(sub);
    const err = await digestBackupFile(sub, { lineFormat: true }).then(() => null, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_BACKUP_NOT_REGULAR' });
    expect((err as Error).message).toBe(`refusing ${path.basename(sub)}: not a regular file`);
    const link = file('link.json');
    await fsp.symlink(f, link);
    await expect(digestBackupFile(link, { lineFormat: true })).rejects.toMatchObject({ code: 'ELOOP' });
  });
});

describe('findInLineBackup and isLineFormat', { timeout: 10_000 }, () => {
  async function lineFile(entries: [string, unknown][]): Promise<string> {
    const f = file('b.json');
    const c = collector();
    await writeBackupStream(iterate(entries), c.out);
    await fsp.writeFile(f, c.data());
    return f;
  }

  it('finds users whose lines span several 16 KB reads, and ids with escaped quotes and backslashes', async () => {
    const long = 'y'.repeat(40 * 1024);
    const ids = ['a', 'b\\', 'c"', 'd', 'e', 'f', 'g'];
    const f = await lineFile(ids.map((id, i) => [id, { i, long: i % 2 === 0 ? long : '' }]));
    for (const [i, id] of ids.entries()) expect(((await findInLineBackup(f, id)) as { i: number } | undefined)?.i, id).toBe(i);
    for (const id of ['', '0', 'b', 'c', 'dd', 'h']) expect(await findInLineBackup(f, id), id).toBeUndefined();
  });

  it('refuses files whose first or last line is wrong, or whose probed line is not an entry line', async () => {
    const cases: [string, string][] = [
      ['', "first line is not '{'"],
      ['{', "first line is not '{'"],
      ['[\n"a":1\n}\n', "first line is not '{'"],
      ['{\n"a":1\n]\n', "last line is not '}'"],
      ['{\n"a":1}\n', "last line is not '}'"],
      ['{}\n', "first line is not '{'"],
      ['{\n"a" :1\n}\n', 'malformed entry line at byte 2'],
      ['{\n"a": 1\n}\n', 'malformed entry line at byte 2'],
      ['{\n"a":1,\n}\n', 'malformed entry line at byte 2'],
      ['{\na:1\n}\n', 'malformed entry line at byte 2'],
      ['{\n"a:1\n}\n', 'malformed entry line at byte 2'],
      ['{\n"a":1\n"b":2\n}\n', 'malformed entry line'],
      ['{\n"a":{\n}\n', 'bad entry line'],
      ['{\n"a":tru\n}\n', 'bad entry line at byte 2'],
    ];
    for (const [text, why] of cases) {
      const f = file('bad.json');
      await fsp.writeFile(f, text);
      const err = await findInLineBackup(f, 'a').then(() => null, (e: unknown) => e);
      expect(err, JSON.stringify(text)).toBeInstanceOf(BackupError);
      expect((err as BackupError).code).toBe('E_BACKUP_FORMAT');
      expect((err as Error).message, JSON.stringify(text)).toContain(`not in chatmem line format (${why}`);
    }
    const ok = file('ok.json');
    await fsp.writeFile(ok, '{\n"a":1\n}\n  \r\n\t\n');
    expect(await findInLineBackup(ok, 'a')).toBe(1);
  });

  it('sniffs the line format from the first line and the first key', async () => {
    const cases: [string, boolean][] = [
      ['{\n}\n', true],
      ['{\n}', true],
      ['{\n}x', false],
      ['{\n"a":1\n}\n', true],
      ['{\n"a": 1\n}\n', false],
      ['{\n"a"\t:1\n}\n', false],
      ['{\n"a":', true],
      ['{\n"a\\"b":{}\n}\n', true],
      ['{\n"abc', true],
      ['{\n  "a": 1\n}\n', false],
      ['{"a":1}\n', false],
      ['[\n]\n', false],
      ['{\r\n}\r\n', false],
      ['', false],
    ];
    for (const [text, want] of cases) {
      const f = file('sniff.json');
      await fsp.writeFile(f, text);
      expect(await isLineFormat(f), JSON.stringify(text)).toBe(want);
    }
  });
});
