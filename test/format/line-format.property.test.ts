import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createWriteStream, promises as fsp } from 'node:fs';
import { finished } from 'node:stream/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { digestBackupFile, findInLineBackup, isLineFormat } from '../../src/format/line-reader.js';
import { RawJson, writeBackupStream } from '../../src/format/line-writer.js';
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
});
