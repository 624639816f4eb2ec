import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FIXTURES } from '../helpers/tmp.js';
import { gzipSync } from 'node:zlib';
import { readJsonEntries, locateJsonError, type JsonEntry } from '../../src/format/json-entries.js';
import { BackupError } from '../../src/errors.js';

const SEED = FIXTURES + '/';
const MEMORY = path.join(SEED, 'memory.json');
const TRUNCATED = path.join(SEED, 'memory.truncated.json');
const PY_BACKUP = path.join(SEED, 'backups/memory_backup_20251125_132811.json');
const CP_BACKUP = path.join(SEED, 'backups/memory_backup_20251125_145714.json');
const USER_BACKUP = path.join(SEED, 'backups/memory_backup_628161973069_20251125_140002.json');

let dir: string;
beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'chatmem-json-entries-'));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

async function collect(file: string, opts?: Parameters<typeof readJsonEntries>[1]): Promise<JsonEntry[]> {
  const out: JsonEntry[] = [];
  for await (const e of readJsonEntries(file, opts)) out.push(e);
  return out;
}

/** Object.fromEntries would drop duplicate keys and reorder integer-like ones; compare pairs instead. */
function pairs(entries: JsonEntry[]): [string, unknown][] {
  return entries.map((e) => [e.key, e.value]);
}

let n = 0;
async function tmpFile(content: string | Buffer, name = `f${n++}.json`): Promise<string> {
  const file = path.join(dir, name);
  await fsp.writeFile(file, content);
  return file;
}

async function parseFailure(file: string, opts?: Parameters<typeof readJsonEntries>[1]): Promise<BackupError> {
  try {
    await collect(file, opts);
  } catch (err) {
    expect(err).toBeInstanceOf(BackupError);
    const e = err as BackupError;
    expect(e.code).toBe('E_BACKUP_PARSE');
    expect(e.details?.['file']).toBe(file);
    expect(e.message).toMatch(/at line \d+ column \d+ \(byte \d+\)$/);
    return e;
  }
  throw new Error(`expected ${file} to fail`);
}

describe('readJsonEntries on the seed fixtures', () => {
  it('reads memory.json: 200 entries equal to JSON.parse, in file order, offsets at the key quotes', async () => {
    const entries = await collect(MEMORY);
    const text = readFileSync(MEMORY, 'utf8');
    const parsed = JSON.parse(text) as Record<string, unknown>;
    expect(entries).toHaveLength(200);
    expect(Object.fromEntries(pairs(entries))).toEqual(parsed);
    expect(entries.map((e) => e.key)).toEqual(Object.keys(parsed));
    const bytes = readFileSync(MEMORY);
    for (const e of entries) {
      const keyJson = Buffer.from(JSON.stringify(e.key));
      expect(bytes.subarray(e.offset, e.offset + keyJson.length).equals(keyJson)).toBe(true);
    }
  });

  it('reads the Python-escaped backup as the same data as memory.json', async () => {
    const py = await collect(PY_BACKUP);
    const mem = await collect(MEMORY);
    expect(pairs(py)).toEqual(pairs(mem));
  });

  it('reads the bash cp backup (5 users)', async () => {
    const entries = await collect(CP_BACKUP);
    expect(entries).toHaveLength(5);
    expect(Object.fromEntries(pairs(entries))).toEqual(JSON.parse(readFileSync(CP_BACKUP, 'utf8')));
  });

  it('reads the per-user backup shape', async () => {
    const entries = await collect(USER_BACKUP);
    expect(entries.map((e) => e.key)).toEqual(['user_id', 'backup_timestamp', 'record']);
    expect(entries[0]?.value).toBe('628161973069');
    expect((entries[2]?.value as { user_id: string }).user_id).toBe('628161973069');
  });

  it('refuses the truncated file with a line and column (Python: near line 11757)', async () => {
    const entries: string[] = [];
    const err = await (async () => {
      try {
        for await (const e of readJsonEntries(TRUNCATED)) entries.push(e.key);
      } catch (e) {
        return e as BackupError;
      }
      throw new Error('expected failure');
    })();
    expect(err.code).toBe('E_BACKUP_PARSE');
    expect(err.details).toMatchObject({ file: TRUNCATED, position: 300000, line: 11757 });
    expect(err.details?.['column']).toBeGreaterThan(1);
    expect(err.message).toContain('line 11757');
    // Entries before the cut were yielded; the caller must not treat that as the whole file.
    expect(entries.length).toBeGreaterThan(0);
    expect(entries.length).toBeLessThan(200);
  });

  it('gives the same result with tiny chunks', async () => {
    const small = await collect(CP_BACKUP, { highWaterMark: 3 });
    expect(pairs(small)).toEqual(pairs(await collect(CP_BACKUP)));
    const odd = await collect(PY_BACKUP, { highWaterMark: 61 });
    expect(pairs(odd)).toEqual(pairs(await collect(MEMORY)));
    expect(odd.map((e) => e.offset)).toEqual((await collect(PY_BACKUP)).map((e) => e.offset));
    const err = await parseFailure(TRUNCATED, { highWaterMark: 97 });
    expect(err.details).toMatchObject({ position: 300000, line: 11757 });
  });
});

describe('readJsonEntries with gzip', () => {
  it('round-trips memory.json through gzip, also with tiny chunks', async () => {
    const gz = await tmpFile(gzipSync(readFileSync(MEMORY)), 'memory.json.gz');
    const plain = pairs(await collect(MEMORY));
    expect(pairs(await collect(gz, { gzip: true }))).toEqual(plain);
    expect(pairs(await collect(gz, { gzip: true, highWaterMark: 64 }))).toEqual(plain);
  });

  it('refuses truncated and corrupt gzip data with E_BACKUP_PARSE', async () => {
    const whole = gzipSync(readFileSync(MEMORY));
    const cut = await tmpFile(whole.subarray(0, Math.floor(whole.length / 2)), 'cut.json.gz');
    await parseFailure(cut, { gzip: true });
    const notGzip = await tmpFile('{"a":1}', 'plain.json.gz');
    await parseFailure(notGzip, { gzip: true });
    // A complete gzip of a truncated JSON text is a JSON error, not a gzip one.
    const truncatedJson = await tmpFile(gzipSync(readFileSync(TRUNCATED)), 'trunc.json.gz');
    const err = await parseFailure(truncatedJson, { gzip: true });
    expect(err.details).toMatchObject({ position: 300000, line: 11757 });
  });

  it('passes every uncompressed byte to onChunk', async () => {
    const gz = await tmpFile(gzipSync(readFileSync(CP_BACKUP)), 'cp.json.gz');
    const chunks: Buffer[] = [];
    await collect(gz, { gzip: true, onChunk: (c) => chunks.push(Buffer.from(c)) });
    expect(Buffer.concat(chunks).equals(readFileSync(CP_BACKUP))).toBe(true);
  });
});

describe('readJsonEntries on hand-made files', () => {
  const cases: [string, string, [string, unknown][]][] = [
    ['empty object', '{}', []],
    ['empty object with whitespace', ' \n\t{\r\n }\n\n', []],
    ['scalars', '{"a":1,"b":true,"c":null,"d":-1.5e3,"e":false,"f":0}', [['a', 1], ['b', true], ['c', null], ['d', -1500], ['e', false], ['f', 0]]],
    ['whitespace everywhere', '\n\t{ "a" : [ 1 , 2 ] ,\r\n"b"\n:\n{ }\t}\n', [['a', [1, 2]], ['b', {}]]],
    [
      'quotes, backslashes and brackets inside strings',
      '{"a\\"b":"}{][,:","c\\\\":{"d":"\\\\"},"e":"\\"}","\\u0022f":["\\u005c\\"",{"x":"]"}]}',
      [['a"b', '}{][,:'], ['c\\', { d: '\\' }], ['e', '"}'], ['"f', ['\\"', { x: ']' }]]],
    ],
    ['duplicate keys yield both', '{"a":1,"a":2}', [['a', 1], ['a', 2]]],
    ['non-ASCII and astral keys', '{"é😀":"ñ","日本":[]}', [['é😀', 'ñ'], ['日本', []]]],
    ['string values', '{"a":"x","b":""}', [['a', 'x'], ['b', '']]],
  ];
  for (const [name, text, expected] of cases) {
    it(`reads: ${name}`, async () => {
      const file = await tmpFile(text);
      expect(pairs(await collect(file))).toEqual(expected);
      expect(pairs(await collect(file, { highWaterMark: 1 }))).toEqual(expected);
    });
  }

  const failures: [string, string, { line: number; column: number; position?: number }][] = [
    ['top-level array', '[{"a":1}]', { line: 1, column: 1, position: 0 }],
    ['top-level string', '\n"x"', { line: 2, column: 1, position: 1 }],
    ['empty file', '', { line: 1, column: 1, position: 0 }],
    ['whitespace only', '  \n', { line: 2, column: 1, position: 3 }],
    ['trailing garbage', '{"a":1}\nx', { line: 2, column: 1, position: 8 }],
    ['second object', '{"a":1}{}', { line: 1, column: 8, position: 7 }],
    ['trailing comma', '{"a":1,}', { line: 1, column: 8, position: 7 }],
    ['missing colon', '{"a" 1}', { line: 1, column: 6, position: 5 }],
    ['missing value', '{"a":}', { line: 1, column: 6, position: 5 }],
    ['missing comma', '{"a":1 "b":2}', { line: 1, column: 8, position: 7 }],
    // V8 points at the first byte that cannot continue the literal.
    ['bad literal', '{"a":tru}', { line: 1, column: 9, position: 8 }],
    ['bad value deep inside', '{\n"a": 1,\n"b": [1, 2 x]\n}', { line: 3, column: 12, position: 21 }],
    ['bad value on a later line of the value', '{"a": {\n  "b": 1,\n  "c": nope\n}}', { line: 3, column: 9 }],
    ['raw newline in a string value', '{"a": "x\ny"}', { line: 1, column: 9, position: 8 }],
    ['column counts characters, not bytes', '{"é😀": x}', { line: 1, column: 8, position: 11 }],
    ['unterminated key', '{"a', { line: 1, column: 4, position: 3 }],
    ['truncated after value', '{"a":1', { line: 1, column: 7, position: 6 }],
    ['truncated in string', '{"a":"xyz', { line: 1, column: 10, position: 9 }],
    ['truncated nested', '{"a":{"b":[1,2', { line: 1, column: 15, position: 14 }],
    ['closing bracket mismatch', '{"a":[1}', { line: 1, column: 8, position: 7 }],
    ['bad escape in key', '{"a\\x":1}', { line: 1, column: 5, position: 4 }],
  ];
  for (const [name, text, where] of failures) {
    it(`refuses: ${name}`, async () => {
      const file = await tmpFile(text);
      const err = await parseFailure(file);
      expect(err.details).toMatchObject(where);
      const small = await parseFailure(file, { highWaterMark: 1 });
      expect(small.details).toEqual(err.details);
    });
  }

  it('does not quote record contents in error messages', async () => {
    const file = await tmpFile('{"a": {"secret": "Jl. Sudirman 138", "x": ]}}');
    const err = await parseFailure(file);
    expect(err.message).not.toContain('Sudirman');
  });

  it('stops cleanly when the consumer breaks early', async () => {
    let seen = 0;
    for await (const _e of readJsonEntries(MEMORY, { highWaterMark: 1024 })) {
      if (++seen === 3) break;
    }
    expect(seen).toBe(3);
  });

  it('yields large values that straddle many chunks', async () => {
    const big = { text: 'x'.repeat(300_000) + '"\\😀', list: Array.from({ length: 5000 }, (_, i) => ({ i })) };
    const file = await tmpFile(JSON.stringify({ a: big, b: 'after' }, null, 1));
    const entries = await collect(file, { highWaterMark: 4096 });
    expect(pairs(entries)).toEqual([
      ['a', big],
      ['b', 'after'],
    ]);
  });

  it('throws fs errors unchanged', async () => {
    await expect(collect(path.join(dir, 'missing.json'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('locateJsonError', () => {
  const locate = (text: string): ReturnType<typeof locateJsonError> => {
    try {
      JSON.parse(text);
    } catch (err) {
      return locateJsonError(text, err);
    }
    throw new Error('parsed');
  };

  it('uses the position in the message', () => {
    expect(locate('{"a":1,}')).toEqual({ position: 7, line: 1, column: 8 });
    expect(locate('[\n1,\n 2 3]')).toEqual({ position: 8, line: 3, column: 4 });
  });

  it('maps end of input to the text length', () => {
    expect(locate('{"a":')).toEqual({ position: 5, line: 1, column: 6 });
    expect(locateJsonError('ab\ncd', new SyntaxError('Unexpected end of JSON input'))).toEqual({ position: 5, line: 2, column: 3 });
  });

  it('reads "line L column C" messages', () => {
    const text = '{\n  "a": x\n}';
    expect(locateJsonError(text, new SyntaxError('Unexpected token (line 2 column 8)'))).toEqual({ position: 9, line: 2, column: 8 });
  });

  it('finds the position when the message has none', () => {
    // V8: `Unexpected token '}', "{"a":}" is not valid JSON`
    expect(locate('{"a":}')).toEqual({ position: 5, line: 1, column: 6 });
    expect(locate('{\n"a": tru\n}')).toEqual({ position: 10, line: 2, column: 9 });
  });

  it('counts astral characters as one column', () => {
    expect(locate('["😀😀", x]')).toMatchObject({ line: 1, column: 8 });
  });
});
