import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { readJsonEntries } from '../../src/format/json-entries.js';

let dir: string;
let n = 0;
beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'chatmem-entries-prop-'));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

const keyArb = fc.oneof(fc.string({ unit: 'binary', maxLength: 10 }), fc.constantFrom('"', '\\', '{"a":1}', '}', ',', ':', '\n', '😀', '\ud800', '0', '12', '__proto__', ''));
const wsArb = fc.constantFrom('', ' ', '\n', '\t', '\r\n', '  \n    ');

type Layout = 'compact' | 'pretty2' | 'tabs' | 'indent0' | 'random';

/** The object's text in one layout, entries in the given order (JSON.stringify would move integer-like keys first). */
function render(pairs: [string, unknown][], layout: Layout, ws: string[]): string {
  const at = (i: number): string => ws[i % Math.max(ws.length, 1)] ?? '';
  if (pairs.length === 0) return layout === 'compact' ? '{}' : `{${at(0)}}`;
  const parts = pairs.map(([k, v], i) => {
    switch (layout) {
      case 'compact':
        return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
      case 'pretty2':
        return `  ${JSON.stringify(k)}: ${(JSON.stringify(v, null, 2) ?? 'null').replace(/\n/g, '\n  ')}`;
      case 'tabs':
        return `\t${JSON.stringify(k)}: ${(JSON.stringify(v, null, '\t') ?? 'null').replace(/\n/g, '\n\t')}`;
      case 'indent0':
        // Python's json.dump(indent=0): newlines, no indentation, ': ' after keys.
        return `${JSON.stringify(k)}: ${JSON.stringify(v, null, ' ').replace(/\n +/g, '\n')}`;
      case 'random':
        return `${at(3 * i)}${JSON.stringify(k)}${at(3 * i + 1)}:${at(3 * i + 2)}${JSON.stringify(v)}`;
    }
  });
  if (layout === 'compact') return `{${parts.join(',')}}`;
  if (layout === 'random') return `${at(7)}{${parts.join(',')}${at(5)}}${at(9)}`;
  return `{\n${parts.join(',\n')}\n}\n`;
}

const docArb = fc.record({
  pairs: fc.uniqueArray(fc.tuple(keyArb, fc.jsonValue({ maxDepth: 3 })), { selector: ([k]) => k, maxLength: 25 }),
  layout: fc.constantFrom<Layout>('compact', 'pretty2', 'tabs', 'indent0', 'random'),
  ws: fc.array(wsArb, { minLength: 1, maxLength: 12 }),
  chunk: fc.integer({ min: 1, max: 97 }),
});

describe('readJsonEntries (property)', () => {
  it('streams the entries JSON.parse sees, in file order, with byte offsets at each key', async () => {
    await fc.assert(
      fc.asyncProperty(docArb, fc.boolean(), async ({ pairs, layout, ws, chunk }, gzip) => {
        const text = render(pairs, layout, ws);
        const bytes = Buffer.from(text, 'utf8');
        const file = path.join(dir, `d${n++}.json${gzip ? '.gz' : ''}`);
        await fsp.writeFile(file, gzip ? gzipSync(bytes) : bytes);
        const got: { key: string; value: unknown; offset: number }[] = [];
        for await (const e of readJsonEntries(file, { gzip, highWaterMark: chunk })) got.push(e);

        // What the text says: JSON has no -0, so fast-check's -0 reads back as 0.
        const said = pairs.map(([k, v]) => [k, JSON.parse(JSON.stringify(v)) as unknown]);
        expect(got.map((e) => [e.key, e.value])).toEqual(said);
        const parsed = JSON.parse(text) as Record<string, unknown>;
        expect(Object.keys(parsed).sort()).toEqual(pairs.map(([k]) => k).sort());
        for (const e of got) {
          expect(e.value).toEqual(parsed[e.key]);
          // Offsets count uncompressed bytes and land on the key's opening quote.
          const key = Buffer.from(JSON.stringify(e.key), 'utf8');
          expect(bytes.subarray(e.offset, e.offset + key.length).equals(key)).toBe(true);
        }
        await fsp.rm(file);
      }),
      { numRuns: 300 },
    );
  });

  it('refuses any strict prefix of a non-empty object as truncated', async () => {
    await fc.assert(
      fc.asyncProperty(docArb, fc.nat(), async ({ pairs, layout, ws }, cut) => {
        const text = render(pairs, layout, ws).trimEnd();
        const bytes = Buffer.from(text, 'utf8');
        const at = cut % bytes.length;
        const file = path.join(dir, `t${n++}.json`);
        await fsp.writeFile(file, bytes.subarray(0, at));
        let failed: unknown;
        try {
          for await (const _ of readJsonEntries(file)) void _;
        } catch (err) {
          failed = err;
        }
        expect(failed).toMatchObject({ code: 'E_BACKUP_PARSE' });
        await fsp.rm(file);
      }),
      { numRuns: 150 },
    );
  });
});
