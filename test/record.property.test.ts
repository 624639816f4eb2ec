import fc from 'fast-check';
import * as path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonEqual, nestedDeeperThan, prettyJson, stringifyIterative, stringifyJson } from '../src/json-safe.js';
import {
  RECORD_LIMITS,
  applyAppend,
  applyAppendMany,
  applyPatch,
  applySetKey,
  checkLimits,
  historyEntrySchema,
  isHistoryEntry,
  newRecord,
  parseHistoryInput,
  parseRecord,
  type HistoryEntry,
  type MemoryRecord,
} from '../src/record.js';
import { JsonFileDriver } from '../src/store/json-file.js';
import { SqliteDriver } from '../src/store/sqlite/index.js';
import { createStore } from '../src/store/store.js';
import type { Store } from '../src/store/types.js';
import { tempDir } from './helpers/tmp.js';

const KNOWN = new Set(Object.keys(newRecord('x')));
const ts = fc.date({ min: new Date('2000-01-01T00:00:00Z'), max: new Date('2099-12-31T23:59:59Z'), noInvalidDate: true }).map((d) => d.toISOString().replace(/\.\d{3}Z$/, 'Z'));
/** JSON values well inside the limits (depth counted from where they sit in a record). */
const value = fc.jsonValue({ maxDepth: 4 });
const key = fc.string({ minLength: 1, maxLength: 12 });
const nullableString = fc.option(fc.string(), { nil: null });
const historyEntry = fc.record({ role: fc.constantFrom('user', 'assistant', 'system'), text: fc.string(), ts }, { requiredKeys: ['role', 'text', 'ts'] });
/** Unknown top-level fields: any key that is not a known field (and not one JS treats specially). */
const extraKey = key.filter((k) => !KNOWN.has(k) && k !== '__proto__');
const recordInput = fc.record(
  {
    name: nullableString,
    gender: nullableString,
    is_company: fc.option(fc.boolean(), { nil: null }),
    product: nullableString,
    address: nullableString,
    summary_context: fc.array(fc.string(), { maxLength: 4 }),
    history: fc.array(historyEntry, { maxLength: 6 }),
    flags: fc.dictionary(key, value, { maxKeys: 5 }),
    slots: fc.dictionary(key, value, { maxKeys: 5 }),
    created_at: ts,
  },
  { requiredKeys: [] },
);
const withExtras = fc.tuple(recordInput, fc.dictionary(extraKey, value, { maxKeys: 4 })).map(([r, extra]) => ({ ...extra, ...r }));

describe('record model properties', () => {
  it('parseRecord is idempotent and keeps every unknown field as it was', () => {
    fc.assert(
      fc.property(withExtras, (input) => {
        const once = parseRecord('u1', input);
        const twice = parseRecord('u1', once);
        expect(twice).toEqual(once);
        expect(JSON.stringify(twice)).toBe(JSON.stringify(once));
        for (const [k, v] of Object.entries(input)) {
          if (!KNOWN.has(k)) expect(jsonEqual(once[k], v)).toBe(true);
        }
        // What parseRecord returns is what the store keeps: it survives a JSON round trip unchanged
        // (compared as text: JSON has no -0).
        expect(JSON.stringify(parseRecord('u1', JSON.parse(JSON.stringify(once))))).toBe(JSON.stringify(once));
      }),
      { numRuns: 300 },
    );
  });

  it('a patch merges flags and slots key by key, null removing; other fields are replaced; unknown fields survive', () => {
    const mapPatch = fc.dictionary(key, fc.oneof(fc.constant(null), value), { maxKeys: 6 });
    fc.assert(
      fc.property(withExtras, mapPatch, mapPatch, fc.option(fc.string(), { nil: undefined }), (input, flags, slots, name) => {
        const base = parseRecord('u1', input);
        const patch: Record<string, unknown> = { flags, slots };
        if (name !== undefined) patch.name = name;
        const next = applyPatch(base, 'u1', patch, '2030-01-01T00:00:00Z');
        for (const [field, changes] of [['flags', flags], ['slots', slots]] as const) {
          const expected: Record<string, unknown> = { ...base[field] };
          for (const [k, v] of Object.entries(changes)) {
            if (v === null) delete expected[k];
            else expected[k] = v;
          }
          expect(next[field]).toEqual(expected);
          expect(Object.keys(next[field]).sort()).toEqual(Object.keys(expected).sort());
        }
        expect(next.name).toBe(name === undefined ? base.name : name);
        expect(next.history).toEqual(base.history);
        expect(next.created_at).toBe(base.created_at);
        expect(next.updated_at).toBe('2030-01-01T00:00:00Z');
        for (const k of Object.keys(base)) if (!KNOWN.has(k)) expect(next[k]).toEqual(base[k]);
        // The patch itself is not mutated (the store applies it twice: once to validate, once to write).
        expect(patch.flags).toBe(flags);
      }),
      { numRuns: 300 },
    );
  });

  it('append keeps the newest `cap` entries in order, never loses the newest, and sets last_answer for user messages', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.array(historyEntry, { minLength: 1, maxLength: 30 }), (cap, entries) => {
        let r: MemoryRecord | null = null;
        const appended: HistoryEntry[] = [];
        for (const e of entries) {
          const parsed = parseHistoryInput(e);
          appended.push(parsed);
          r = applyAppend(r, 'u1', parsed, cap);
          expect(r.history.at(-1)).toBe(parsed);
          expect(r.history.length).toBeLessThanOrEqual(cap);
        }
        expect(r?.history).toEqual(appended.slice(-cap));
        const lastUser = [...appended].reverse().find((e) => e.role === 'user');
        expect(r?.last_answer).toBe(lastUser ? lastUser.text : null);
      }),
      { numRuns: 300 },
    );
  });

  it('checkLimits accepts exactly the values nested at most 64 levels deep in a record', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200 }), fc.constantFrom(1, 3), fc.boolean(), (depth, at, arrays) => {
        let v: unknown = 'leaf';
        for (let i = 0; i < depth; i++) v = arrays ? [v] : { a: v };
        const ok = at + depth - 1 <= RECORD_LIMITS.maxDepth;
        if (ok) expect(() => checkLimits(v, 'v', { depth: at })).not.toThrow();
        else expect(() => checkLimits(v, 'v', { depth: at })).toThrow(/deeper than 64 levels/);
      }),
    );
  });

  it('checkLimits counts keys and array elements, and string bytes in UTF-8', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 12_000 }), fc.integer({ min: 0, max: 12_000 }), (nKeys, nItems) => {
        const obj: Record<string, unknown> = {};
        for (let i = 0; i < nKeys; i++) obj[`k${i}`] = 1;
        const v = { obj, arr: new Array<number>(nItems).fill(0) };
        const total = 2 + nKeys + nItems;
        if (total <= RECORD_LIMITS.maxKeys) expect(() => checkLimits(v, 'v')).not.toThrow();
        else expect(() => checkLimits(v, 'v')).toThrow(/more than 10000 keys/);
      }),
      { numRuns: 40 },
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 70_000 }), fc.constantFrom('a', 'é', '😀', '中'), (n, ch) => {
        const s = ch.repeat(Math.ceil(n / ch.length));
        const bytes = Buffer.byteLength(s);
        const check = () => applySetKey(null, 'u', 'slots', 'k', s);
        if (bytes <= RECORD_LIMITS.maxStringBytes) expect(check).not.toThrow();
        else expect(check).toThrow(/longer than 65536 bytes/);
      }),
      { numRuns: 100 },
    );
  });

  it('over-limit values are refused by every write path, naming the user where there is one', () => {
    let deep: unknown = 1;
    for (let i = 0; i < 100_000; i++) deep = { a: deep };
    expect(() => parseRecord('62811', { flags: { f: deep } })).toThrow('record of user "62811": field "flags" nests objects/arrays deeper than 64 levels');
    try {
      parseRecord('62811', { x: deep });
    } catch (err) {
      expect(err).toMatchObject({ code: 'E_RECORD', details: { userId: '62811' } });
    }
    expect(() => applyPatch(null, 'u', { slots: { s: deep } })).toThrow(/^patch: field "slots" nests/);
    expect(() => parseHistoryInput({ role: 'user', text: 'x', meta: deep })).toThrow(/^history entry: field "meta" nests/);
    expect(() => applySetKey(null, 'u', 'flags', 'f', deep)).toThrow(/^flags\.f: nests/);
    // Reading what is already stored is not refused.
    expect(parseRecord('62811', { x: deep }, undefined, { limits: false }).x).toBe(deep);
  });
});

/** Values near the edges of each history field's rule, and arbitrary values, so both answers are common. */
const edgy = fc.oneof(
  fc.string({ maxLength: 3 }),
  fc.string({ minLength: 255, maxLength: 258 }),
  ts,
  ts.map((t) => t.replace('Z', '.123456789Z')),
  ts.map((t) => t.replace('Z', '.1234567890Z')),
  ts.map((t) => t.replace('Z', '+00:00')),
  ts.map((t) => ` ${t}`),
  ts.map((t) => `${t}\n`),
  fc.constantFrom('2025-11-20T01:02:07Z', '2025-11-20T01:02:07.Z', '2025-11-20 01:02:07Z', '２025-11-20T01:02:07Z', '', 'user'),
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(undefined, null, 0, 1, true, [], {}, Object.create(null), new Date(0), new String('user'), [1, 2]),
);
/** Objects zod's record schema judges by their prototype, constructor and symbol keys. */
const metaValue = fc.oneof(
  fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
  fc.constantFrom(
    Object.create(null),
    { constructor: 1 },
    { constructor: { prototype: {} } },
    { constructor: function F() {} },
    { constructor: Object },
    { constructor: Array },
    { constructor: Object.assign(function G() {}, { prototype: Object.assign([], { isPrototypeOf: 1 }) }) },
    { constructor: Object.assign(function H() {}, { prototype: { isPrototypeOf: 1 } }) },
    new (class Meta {})(),
    new Map(),
    new Date(0),
    [],
    { [Symbol('s')]: 1 },
    Object.defineProperty({}, Symbol('hidden'), { value: 1, enumerable: false }),
    { __proto__: { isPrototypeOf: 1 } },
    JSON.parse('{"__proto__": {"x": 1}}'),
  ),
  edgy,
);
const candidateEntry = fc.record(
  { role: edgy, text: edgy, ts: edgy, id: edgy, meta: metaValue, extra: fc.jsonValue({ maxDepth: 2 }) },
  { requiredKeys: [] },
);

/** Valid entries with one field replaced by an edge value: the rule of that one field decides. */
const nearValid = fc
  .tuple(historyEntry, fc.constantFrom('role', 'text', 'ts', 'id', 'meta'), edgy, metaValue)
  .map(([e, field, v, meta]) => ({ ...e, id: 'x', [field]: field === 'meta' ? meta : v }));

describe('the history entry fast check', () => {
  it('accepts exactly what the zod schema accepts, on arbitrary values and near-valid entries', () => {
    fc.assert(
      fc.property(fc.oneof(fc.anything(), candidateEntry, historyEntry, { arbitrary: nearValid, weight: 4 }), (v) => {
        expect(isHistoryEntry(v)).toBe(historyEntrySchema.safeParse(v).success);
      }),
      { numRuns: 5000 },
    );
  });

  it('both answers come up: the comparison above is not between two constant answers', () => {
    const answers = fc.sample(candidateEntry, 2000).map((v) => isHistoryEntry(v));
    expect(answers.filter(Boolean).length).toBeGreaterThan(20);
    expect(answers.filter((a) => !a).length).toBeGreaterThan(20);
  });

  it('parseHistoryInput refuses with zod\'s message what the fast check refuses', () => {
    expect(() => parseHistoryInput({ role: '', text: 'x' })).toThrow(/role/);
    expect(() => parseHistoryInput({ role: 'user', text: 'x', ts: '2025-11-20 01:02:07Z' })).toThrow(/ts: must be a UTC ISO timestamp/);
    expect(() => parseHistoryInput({ role: 'user', text: 'x', meta: [] })).toThrow(/meta/);
    expect(() => parseHistoryInput({ role: 'user', text: 'x', id: 'i'.repeat(257) })).toThrow(/id/);
  });
});

describe('appending skips known ids alike for one turn and for a batch', () => {
  /** The rule as applyAppendMany first wrote it, with a set of every id: the small-batch scan must agree with it. */
  function reference(history: HistoryEntry[], entries: HistoryEntry[]): HistoryEntry[] {
    const seen = new Set<string>();
    for (const e of history) if (typeof e.id === 'string') seen.add(e.id);
    return entries.filter((e) => {
      if (e.id === undefined) return true;
      if (seen.has(e.id)) return false;
      seen.add(e.id);
      return true;
    });
  }
  // Few ids, so that repeats within the history, within the batch and across both are common.
  const id = fc.option(fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f'), { nil: undefined });
  const entry = fc.record({ role: fc.constantFrom('user', 'bot'), text: fc.string({ maxLength: 3 }), ts, id }).map((e) => {
    if (e.id === undefined) delete e.id;
    return e as HistoryEntry;
  });
  it('for batches of 1 to 20 entries', () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 12 }), fc.array(entry, { minLength: 1, maxLength: 20 }), (history, entries) => {
        const base = { ...newRecord('u', '2020-01-01T00:00:00Z'), history };
        const fresh = reference(history, entries);
        const next = applyAppendMany(base, 'u', entries, 1000, '2021-01-01T00:00:00Z');
        expect(next.history).toEqual([...history, ...fresh]);
        if (fresh.length === 0) expect(next).toBe(base);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('JSON without recursion', () => {
  it('stringifyIterative writes exactly what JSON.stringify writes, compact and indented', () => {
    const anyJsonish = fc.anything({ withNullPrototype: false, withBoxedValues: true, withMap: false, withSet: false, withBigInt: false, withTypedArray: false, withSparseArray: true, maxDepth: 6 });
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), anyJsonish), fc.constantFrom(0, 2, 4), (v, indent) => {
        expect(stringifyIterative(v, indent)).toBe(JSON.stringify(v, null, indent));
      }),
      { numRuns: 500 },
    );
    const withToJson = { d: new Date(0), u: undefined, f: () => 1, nested: [undefined, { toJSON: () => ({ x: [1] }) }] };
    expect(stringifyIterative(withToJson, 2)).toBe(JSON.stringify(withToJson, null, 2));
    expect(stringifyIterative({ a: {}, b: [], c: [{}] }, 2)).toBe(JSON.stringify({ a: {}, b: [], c: [{}] }, null, 2));
  });

  it('stringifyJson and jsonEqual handle 200,000 levels, and a cycle is a TypeError, not a hang', () => {
    let v: unknown = [];
    for (let i = 0; i < 200_000; i++) v = i % 2 ? [v] : { k: v };
    const text = stringifyJson(v);
    expect(text.length).toBe(JSON.stringify([]).length + 100_000 * ('{"k":}'.length + '[]'.length));
    expect(jsonEqual(JSON.parse(text), v)).toBe(true);
    expect(nestedDeeperThan(v, 64)).toBe(true);
    expect(prettyJson(v)).toBe(text);
    const cyclic: Record<string, unknown> = {};
    let c = cyclic;
    for (let i = 0; i < 20_000; i++) c = (c.n = {}) as Record<string, unknown>;
    c.back = cyclic;
    expect(() => stringifyJson(cyclic)).toThrow(TypeError);
  });

  it('jsonEqual agrees with util.isDeepStrictEqual on JSON values', () => {
    const pair = fc.oneof(
      fc.jsonValue().map((a) => [a, JSON.parse(JSON.stringify(a)) as unknown] as const),
      fc.tuple(fc.jsonValue({ maxDepth: 3 }), fc.jsonValue({ maxDepth: 3 })),
    );
    fc.assert(
      fc.property(pair, ([a, b]) => {
        expect(jsonEqual(a, b)).toBe(isDeepStrictEqual(a, b));
      }),
      { numRuns: 500 },
    );
  });
});

describe.each(['sqlite', 'json'] as const)('values within the limits round-trip through a %s store', (kind) => {
  let store: Store;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    const t = await tempDir();
    cleanup = t.cleanup;
    const file = path.join(t.dir, kind === 'sqlite' ? 'memory.db' : 'memory.json');
    store = createStore(kind === 'sqlite' ? await SqliteDriver.open(file) : await JsonFileDriver.open(file));
  });
  afterAll(async () => {
    await store.close();
    await cleanup();
  });

  it('any flag value, history meta and unknown field within the limits comes back equal', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.jsonValue({ maxDepth: 8 }), fc.dictionary(fc.string({ minLength: 1, maxLength: 10 }), fc.jsonValue({ maxDepth: 6 }), { maxKeys: 4 }), async (v, meta) => {
        const id = `prop-${n++}`;
        await store.setFlag(id, 'v', v);
        await store.appendHistory(id, { role: 'user', text: 'halo', meta });
        const back = await store.get(id);
        // JSON has no -0: compare with what JSON itself makes of the value.
        expect(jsonEqual(back?.flags.v, JSON.parse(JSON.stringify(v)))).toBe(true);
        expect(jsonEqual(back?.history[0]?.meta, JSON.parse(JSON.stringify(meta)))).toBe(true);
      }),
      { numRuns: kind === 'json' ? 60 : 150 },
    );
  });
});
