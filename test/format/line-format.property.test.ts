import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createWriteStream, promises as fsp } from 'node:fs';
import { finished } from 'node:stream/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { digestBackupFile, findInLineBackup, isLineFormat } from '../../src/format/line-reader.js';
import { RawJson, writeBackupBatches, writeBackupStream } from '../../src/format/line-writer.js';
import type { JsonByteBatch } from '../../src/store/types.js';
import { compareIds } from '../../src/record.js';
import { readJsonEntries } from '../../src/format/json-entries.js';

let dir: string;
let n = 0;
beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'chatmem-format-prop-'));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

// Ids the writer must escape or order with care: quotes, backslashes, escapes, separators, astral
// characters (UTF-16 order differs from byte order), a lone surrogate, line and paragraph separators.
const SPECIAL_IDS = ['"', '\\', '\\"', '"quoted"', 'a\nb', '\u2028', '\u2029', '\t', '{', '}', ',', ':', '😀', '\uffff', '\ud800', 'é', 'e\u0301', '628123456789', ''];
const idArb = fc.oneof(fc.string({ unit: 'binary', maxLength: 12 }), fc.string({ unit: 'grapheme', maxLength: 6 }), fc.constantFrom(...SPECIAL_IDS));
const recordArb = fc.record({
  name: fc.option(fc.string({ unit: 'binary', maxLength: 20 }), { nil: null }),
  history: fc.array(fc.record({ role: fc.constantFrom('user', 'assistant'), text: fc.string({ unit: 'binary', maxLength: 40 }) }), { maxLength: 4 }),
  flags: fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
});
// JSON has no -0: records are taken as JSON would give them back, so equality means what was stored.
const entriesArb = fc
  .uniqueArray(fc.tuple(idArb, recordArb, fc.boolean()), { selector: ([id]) => id, maxLength: 40 })
  .map((xs) => xs.map(([id, r, raw]): [string, unknown, boolean] => [id, JSON.parse(JSON.stringify(r)) as unknown, raw]));

async function write(entries: [string, unknown, boolean][], gzip: boolean): Promise<{ file: string; sha256: string; users: number }> {
  const file = path.join(dir, `b${n++}.json${gzip ? '.gz' : ''}`);
  const sorted = [...entries].sort(([a], [b]) => compareIds(a, b));
  async function* source(): AsyncGenerator<[string, unknown]> {
    // The SQL stores hand over stored JSON text (RawJson); the others hand over records.
    for (const [id, value, raw] of sorted) yield [id, raw ? new RawJson(JSON.stringify(value)) : value];
  }
  const out = createWriteStream(file);
  const r = await writeBackupStream(source(), out, { gzip });
  out.end();
  await finished(out);
  return { file, ...r };
}

const RUNS = { numRuns: 120 };

describe('backup format round trip (property)', () => {
  it('reads back exactly what was written, in id order, and finds every user by binary search', async () => {
    await fc.assert(
      fc.asyncProperty(entriesArb, fc.array(idArb, { maxLength: 5 }), async (entries, probes) => {
        const { file, sha256, users } = await write(entries, false);
        const expected = [...entries].sort(([a], [b]) => compareIds(a, b)).map(([id, v]) => [id, v]);
        expect(users).toBe(entries.length);

        const read: [string, unknown][] = [];
        for await (const e of readJsonEntries(file)) read.push([e.key, e.value]);
        expect(read).toEqual(expected);

        // Any JSON reader sees the same object (the seed bot reads backups with json.load).
        const parsed = JSON.parse(await fsp.readFile(file, 'utf8')) as Record<string, unknown>;
        expect(Object.keys(parsed).length).toBe(entries.length);
        for (const [id, v] of entries) expect(parsed[id]).toEqual(v);

        expect(await isLineFormat(file)).toBe(true);
        const digest = await digestBackupFile(file, { lineFormat: true });
        expect(digest).toMatchObject({ sha256, users: entries.length });

        for (const [id, v] of entries) expect(await findInLineBackup(file, id), JSON.stringify(id)).toEqual(v);
        const present = new Set(entries.map(([id]) => id));
        for (const p of probes) if (!present.has(p)) expect(await findInLineBackup(file, p), JSON.stringify(p)).toBeUndefined();
        await fsp.rm(file);
      }),
      RUNS,
    );
  });

  it('a gzip backup holds the same text', async () => {
    await fc.assert(
      fc.asyncProperty(entriesArb, async (entries) => {
        const plain = await write(entries, false);
        const gz = await write(entries, true);
        expect(gz.sha256).toBe(plain.sha256);
        const read: [string, unknown][] = [];
        for await (const e of readJsonEntries(gz.file, { gzip: true })) read.push([e.key, e.value]);
        expect(read).toEqual([...entries].sort(([a], [b]) => compareIds(a, b)).map(([id, v]) => [id, v]));
        expect(await digestBackupFile(gz.file, { gzip: true, lineFormat: true })).toMatchObject({ sha256: plain.sha256, users: entries.length });
        await fsp.rm(plain.file);
        await fsp.rm(gz.file);
      }),
      { numRuns: 40 },
    );
  });

  // The SQLite store hands a full backup its stored bytes in batches: the file must be the very same.
  async function writeBatches(entries: [string, unknown, boolean][], cuts: number[], gzip: boolean): Promise<{ file: string; sha256: string; users: number; bytes: number }> {
    const file = path.join(dir, `b${n++}.json${gzip ? '.gz' : ''}`);
    const sorted = [...entries].sort(([a], [b]) => compareIds(a, b));
    async function* batches(): AsyncGenerator<JsonByteBatch> {
      let i = 0;
      for (const cut of [...cuts, sorted.length]) {
        const part = sorted.slice(i, Math.max(i, Math.min(sorted.length, i + cut)));
        i += part.length;
        const data = part.map(([, v]) => Buffer.from(JSON.stringify(v), 'utf8'));
        // Empty batches too: a batch boundary must never change the bytes.
        yield { ids: part.map(([id]) => id), data, bytes: data.reduce((a, d) => a + d.length, 0) };
      }
    }
    const out = createWriteStream(file);
    const r = await writeBackupBatches(batches(), out, { gzip });
    out.end();
    await finished(out);
    return { file, ...r };
  }

  it('byte batches give the same file, hash and count as entries, wherever the batches are cut', async () => {
    await fc.assert(
      fc.asyncProperty(entriesArb, fc.array(fc.nat(12), { maxLength: 6 }), fc.boolean(), async (entries, cuts, gzip) => {
        const a = await write(entries.map(([id, v]) => [id, v, true]), gzip);
        const b = await writeBatches(entries, cuts, gzip);
        expect(b.sha256).toBe(a.sha256);
        expect(b.users).toBe(entries.length);
        const [fa, fb] = await Promise.all([fsp.readFile(a.file), fsp.readFile(b.file)]);
        if (!gzip) expect(fb.equals(fa)).toBe(true);
        expect(await digestBackupFile(b.file, { gzip, lineFormat: true })).toMatchObject({ sha256: a.sha256, users: entries.length, bytes: b.bytes });
        await fsp.rm(a.file);
        await fsp.rm(b.file);
      }),
      { numRuns: 80 },
    );
  });

  it('byte batches out of order or with a duplicate fail with E_BACKUP_ORDER', async () => {
    for (const ids of [['b', 'a'], ['a', 'a'], ['😀', '\uffff']]) {
      const file = path.join(dir, `b${n++}.json`);
      const out = createWriteStream(file);
      async function* batches(): AsyncGenerator<JsonByteBatch> {
        yield { ids: [ids[0] as string], data: [Buffer.from('{}')], bytes: 2 };
        yield { ids: [ids[1] as string], data: [Buffer.from('{}')], bytes: 2 };
      }
      await expect(writeBackupBatches(batches(), out)).rejects.toMatchObject({ code: 'E_BACKUP_ORDER' });
      out.destroy();
    }
  });
});
