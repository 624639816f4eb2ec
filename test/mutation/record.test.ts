import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  DEFAULT_CONTEXT_ITEMS,
  DEFAULT_HISTORY_CAP,
  RECORD_LIMITS,
  applyAppend,
  applyAppendMany,
  applyClearFlag,
  applyContext,
  applyFillSlots,
  applyPatch,
  applySetKey,
  checkLimits,
  messageCount,
  newEntryId,
  newRecord,
  newSeedRecord,
  newSessionToken,
  nowIso,
  parseHistoryInput,
  parseRecord,
  validateUserId,
  type HistoryEntry,
  type MemoryRecord,
} from '../../src/record.js';

// The record model's promises to callers: what a write may store, what an error tells the caller
// (code and message: the API and CLI pass them on verbatim), and what each change leaves alone.

function failure(f: () => unknown): { code: string; message: string; details?: unknown } {
  try {
    f();
  } catch (err) {
    return err as { code: string; message: string; details?: unknown };
  }
  throw new Error('did not throw');
}

const T0 = '2026-01-01T00:00:00Z';
const T1 = '2026-02-02T02:02:02Z';

describe('nowIso', () => {
  it('writes UTC to the second with a Z, as the seed did', () => {
    expect(nowIso(new Date('2026-11-30T09:08:07.654Z'))).toBe('2026-11-30T09:08:07Z');
    expect(nowIso(new Date('2026-11-30T09:08:07.000Z'))).toBe('2026-11-30T09:08:07Z');
    expect(nowIso()).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
  });

  afterEach(() => vi.useRealTimers());
  it('follows the clock from one second to the next, and back (the text is reused within a second only)', () => {
    vi.useFakeTimers();
    vi.setSystemTime(new Date('2026-11-30T09:08:07.001Z'));
    expect(nowIso()).toBe('2026-11-30T09:08:07Z');
    vi.setSystemTime(new Date('2026-11-30T09:08:07.999Z'));
    expect(nowIso()).toBe('2026-11-30T09:08:07Z');
    vi.setSystemTime(new Date('2026-11-30T09:08:08.000Z'));
    expect(nowIso()).toBe('2026-11-30T09:08:08Z');
    vi.setSystemTime(new Date('2026-11-30T09:08:07.500Z'));
    expect(nowIso()).toBe('2026-11-30T09:08:07Z');
    vi.setSystemTime(new Date('1969-12-31T23:59:59.500Z'));
    expect(nowIso()).toBe('1969-12-31T23:59:59Z');
  });
});

describe('validateUserId', () => {
  it('accepts quotes, spaces, non-ASCII and exactly 256 characters', () => {
    for (const id of ['62811', 'a "quoted" id', 'Zoë Ünïcode 😀', 'x'.repeat(256), ' ', '\u00a0']) expect(validateUserId(id)).toBe(id);
  });

  it.each([
    [42, 'user id must be a string, got number'],
    [undefined, 'user id must be a string, got undefined'],
    ['', 'user id must not be empty'],
    ['x'.repeat(257), 'user id is 257 characters long; the limit is 256'],
    ['a\u0000b', 'user id contains the control character U+0000 at index 1'],
    ['ab\u001f', 'user id contains the control character U+001f at index 2'],
    ['\u007fz', 'user id contains the control character U+007f at index 0'],
    ['z\u009f', 'user id contains the control character U+009f at index 1'],
    ['line\u2028sep', 'user id contains the control character U+2028 at index 4'],
    ['para\u2029sep', 'user id contains the control character U+2029 at index 4'],
    ['tab\there', 'user id contains the control character U+0009 at index 3'],
    ['lone \ud800 surrogate', 'user id contains an unpaired UTF-16 surrogate'],
    ['\udc00', 'user id contains an unpaired UTF-16 surrogate'],
  ])('refuses %j: %s', (id, message) => {
    expect(failure(() => validateUserId(id))).toMatchObject({ code: 'E_USER_ID', message });
  });

  it('accepts the characters right next to the refused ranges', () => {
    for (const id of ['\u0020', '\u007e', '\u00a0', '\u2027', '\u202a']) expect(validateUserId(`a${id}`)).toBe(`a${id}`);
  });
});

describe('parseRecord', () => {
  it('fills every missing field with its empty default, updated_at from created_at', () => {
    expect(parseRecord('u', {}, T0)).toEqual(newRecord('u', T0));
    expect(newRecord('u', T0)).toEqual({
      user_id: 'u', session_token: null, name: null, gender: null, is_company: null, product: null, serial: null,
      address: null, summary_context: [], history: [], last_answer: null, flags: {}, slots: {}, created_at: T0, updated_at: T0,
    });
    const r = parseRecord('u', { created_at: T1 }, T0);
    expect(r.created_at).toBe(T1);
    expect(r.updated_at).toBe(T1);
    expect(parseRecord('u', { created_at: T0, updated_at: T1 }, T0).updated_at).toBe(T1);
    expect(parseRecord('u', { user_id: 'u' }, T0).user_id).toBe('u');
  });

  it('refuses what is not an object, and a user_id that disagrees with the key', () => {
    for (const v of [null, [], 'x', 3]) {
      expect(failure(() => parseRecord('u1', v))).toMatchObject({ code: 'E_RECORD', message: 'record of user "u1" must be a JSON object' });
    }
    expect(failure(() => parseRecord('u1', { user_id: 'u2' }))).toMatchObject({
      code: 'E_RECORD',
      message: 'record\'s user_id "u2" does not match its key "u1"',
    });
    expect(failure(() => parseRecord('', {}))).toMatchObject({ code: 'E_USER_ID' });
  });

  it('names each invalid field by its path, at most five, and counts the rest', () => {
    expect(failure(() => parseRecord('u', { name: 5 }))).toMatchObject({
      code: 'E_RECORD',
      message: expect.stringMatching(/^invalid record of user "u": name: [^;]+$/) as unknown,
    });
    expect(failure(() => parseRecord('u', { history: [{ role: 'user', text: 'x', ts: 'yesterday' }] })).message).toBe(
      'invalid record of user "u": history.0.ts: must be a UTC ISO timestamp ending in Z, e.g. 2025-11-20T01:02:07Z',
    );
    const seven = { name: 1, gender: 1, product: 1, serial: 1, address: 1, last_answer: 1, session_token: 1 };
    const m = failure(() => parseRecord('u', seven)).message;
    expect(m).toMatch(/^invalid record of user "u": /);
    expect(m.split('; ')).toHaveLength(5);
    expect(m).toMatch(/ \(and 2 more\)$/);
    const five = { name: 1, gender: 1, product: 1, serial: 1, address: 1 };
    expect(failure(() => parseRecord('u', five)).message).not.toMatch(/more\)/);
    const six = { ...five, last_answer: 1 };
    expect(failure(() => parseRecord('u', six)).message).toMatch(/ \(and 1 more\)$/);
  });

  it('accepts only UTC timestamps with an optional fraction of up to nine digits', () => {
    for (const ts of ['2026-01-01T00:00:00Z', '2026-01-01T00:00:00.1Z', '2026-01-01T00:00:00.123456789Z']) {
      expect(parseRecord('u', { created_at: ts }).created_at).toBe(ts);
    }
    for (const ts of ['2026-01-01T00:00:00', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00.Z', '2026-01-01T00:00:00.1234567890Z', ' 2026-01-01T00:00:00Z', '2026-01-01T00:00:00Zx', '2026-01-01 00:00:00Z']) {
      expect(failure(() => parseRecord('u', { created_at: ts })).code, ts).toBe('E_RECORD');
    }
  });

  it('checks the limits on writes, naming the user, and not on reads', () => {
    const big = 'x'.repeat(RECORD_LIMITS.maxStringBytes + 1);
    expect(failure(() => parseRecord('u7', { name: big }))).toMatchObject({
      code: 'E_RECORD',
      message: 'record of user "u7": field "name" has a string longer than 65536 bytes',
      details: { userId: 'u7' },
    });
    expect(parseRecord('u7', { name: big }, T0, { limits: false }).name).toBe(big);
    expect(() => parseRecord('u7', { name: big }, T0, {})).toThrow(/longer than 65536 bytes/);
  });
});

describe('checkLimits', () => {
  it('stops at exactly 65536 UTF-8 bytes per string, counting multi-byte characters', () => {
    const max = RECORD_LIMITS.maxStringBytes;
    expect(max).toBe(65536);
    expect(() => checkLimits('a'.repeat(max), 'v')).not.toThrow();
    expect(() => checkLimits('a'.repeat(max + 1), 'v')).toThrow('v: has a string longer than 65536 bytes');
    // 21,846 three-byte characters: 65,538 bytes in 21,846 UTF-16 units.
    expect(() => checkLimits('中'.repeat(21_846), 'v')).toThrow('v: has a string longer than 65536 bytes');
    expect(() => checkLimits('中'.repeat(21_845), 'v')).not.toThrow();
    expect(() => checkLimits(`${'中'.repeat(21_845)}a`, 'v')).not.toThrow();
    expect(() => checkLimits(`${'中'.repeat(21_845)}ab`, 'v')).toThrow(/longer than 65536 bytes/);
    // Two-byte characters: exactly at the limit and one over, in the band that needs counting.
    expect(() => checkLimits('é'.repeat(max / 2), 'v')).not.toThrow();
    expect(() => checkLimits(`${'é'.repeat(max / 2)}a`, 'v')).toThrow(/longer than 65536 bytes/);
  });

  it('checks keys as strings too, and names the top-level field a problem sits under', () => {
    const longKey = 'k'.repeat(RECORD_LIMITS.maxStringBytes + 1);
    expect(() => checkLimits({ flags: { [longKey]: 1 } }, 'patch')).toThrow('patch: field "flags" has a key longer than 65536 bytes');
    expect(() => checkLimits({ [longKey]: 1 }, 'patch')).toThrow(`patch: has a key longer than 65536 bytes`);
    expect(() => checkLimits({ flags: { a: 1 } }, 'patch', { nameFields: false })).not.toThrow();
    expect(() => checkLimits({ flags: { a: 'x'.repeat(70_000) } }, 'flags.a', { nameFields: false })).toThrow(/^flags\.a: has a string/);
    // A long field name is cut at 64 characters in the message.
    const field = 'f'.repeat(70);
    expect(() => checkLimits({ [field]: 'x'.repeat(70_000) }, 'r')).toThrow(`r: field "${'f'.repeat(64)}…" has a string longer than 65536 bytes`);
    const field64 = 'g'.repeat(64);
    expect(() => checkLimits({ [field64]: 'x'.repeat(70_000) }, 'r')).toThrow(`r: field "${field64}" has a string`);
  });

  it('counts keys and array elements across the whole value, refusing the first one past 10,000', () => {
    expect(RECORD_LIMITS.maxKeys).toBe(10_000);
    const flat = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i]));
    expect(() => checkLimits(flat(10_000), 'v')).not.toThrow();
    expect(() => checkLimits(flat(10_001), 'v')).toThrow('v: has more than 10000 keys and array elements');
    expect(() => checkLimits(new Array(10_000).fill(0), 'v')).not.toThrow();
    expect(() => checkLimits(new Array(10_001).fill(0), 'v')).toThrow('v: has more than 10000 keys and array elements');
    expect(() => checkLimits({ a: new Array(9_999).fill(0) }, 'v')).not.toThrow();
    expect(() => checkLimits({ a: new Array(9_999).fill(0), b: 1 }, 'v')).toThrow('v: field "a" has more than 10000 keys and array elements');
    expect(() => checkLimits([new Array(9_999).fill(0)], 'v')).not.toThrow();
    expect(() => checkLimits([new Array(10_000).fill(0)], 'v')).toThrow(/more than 10000/);
  });

  it('measures depth from where the value sits, refusing level 65, and names the user', () => {
    let v: unknown = 1;
    for (let i = 0; i < 62; i++) v = { a: v };
    // v is 62 objects deep: fine at level 1 and 3 (64), too deep at level 4.
    expect(() => checkLimits(v, 'x', { depth: 3 })).not.toThrow();
    expect(failure(() => checkLimits(v, 'x', { depth: 4, userId: 'u9' }))).toMatchObject({
      code: 'E_RECORD',
      message: 'x: field "a" nests objects/arrays deeper than 64 levels',
      details: { userId: 'u9' },
    });
    expect(failure(() => checkLimits([[[]]], 'x', { depth: 63 }))).toMatchObject({ message: 'x: nests objects/arrays deeper than 64 levels', details: undefined });
    expect(() => checkLimits([[]], 'x', { depth: 63 })).not.toThrow();
    // Scalars never count as a level.
    expect(() => checkLimits('s', 'x', { depth: 1000 })).not.toThrow();
    expect(() => checkLimits(null, 'x', { depth: 1000 })).not.toThrow();
    expect(() => checkLimits(7, 'x', { depth: 1000 })).not.toThrow();
  });
});

describe('applyPatch', () => {
  const base = (): MemoryRecord => ({ ...newRecord('u', T0), name: 'Ana', flags: { a: 1, b: 2 }, slots: { s: 1 } });

  it.each([
    [null, 'patch must be a JSON object'],
    [[], 'patch must be a JSON object'],
    ['x', 'patch must be a JSON object'],
    [{ user_id: 'v' }, 'patch cannot change user_id'],
    [{ created_at: T1 }, 'patch cannot change created_at'],
    [{ flags: [] }, 'invalid patch: flags must be an object'],
    [{ slots: 'x' }, 'invalid patch: slots must be an object'],
    [{ slots: 1 }, 'invalid patch: slots must be an object'],
  ])('refuses %j', (patch, message) => {
    expect(failure(() => applyPatch(base(), 'u', patch, T1))).toMatchObject({ code: 'E_RECORD', message });
  });

  it('refuses bad field types and over-limit values, naming them', () => {
    expect(failure(() => applyPatch(base(), 'u', { name: 7 }, T1))).toMatchObject({ code: 'E_RECORD', message: expect.stringMatching(/^invalid patch: name: /) as unknown });
    expect(failure(() => applyPatch(base(), 'u', { name: 'x'.repeat(70_000) }, T1)).message).toBe('patch: field "name" has a string longer than 65536 bytes');
    // flags: null is no object either.
    expect(failure(() => applyPatch(base(), 'u', { flags: null }, T1)).message).toBe('invalid patch: flags must be an object');
  });

  it('merges maps key by key and replaces other fields, keeping user_id and created_at', () => {
    const next = applyPatch(base(), 'other', { name: 'Budi', flags: { a: null, c: 3 }, extra: { x: 1 } }, T1);
    expect(next).toEqual({ ...base(), name: 'Budi', flags: { b: 2, c: 3 }, slots: { s: 1 }, extra: { x: 1 }, updated_at: T1 });
    expect(next.user_id).toBe('u');
    const fresh = applyPatch(null, 'n', { slots: { z: 0 } }, T1);
    expect(fresh).toEqual({ ...newRecord('n', T1), slots: { z: 0 } });
    // An explicit updated_at in the patch wins over now.
    expect(applyPatch(base(), 'u', { updated_at: T0 }, T1).updated_at).toBe(T0);
  });

  it('refuses to grow flags or slots past 10,000 keys, but lets a map already past it shrink', () => {
    const full = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`k${i}`, 1]));
    const rec = { ...newRecord('u', T0), flags: { ...full }, slots: { ...full } };
    expect(failure(() => applyPatch(rec, 'u', { flags: { more: 1 } }, T1))).toMatchObject({ code: 'E_RECORD', message: 'flags would hold 10001 keys; the limit is 10000' });
    expect(failure(() => applyPatch(rec, 'u', { slots: { more: 1 } }, T1))).toMatchObject({ code: 'E_RECORD', message: 'slots would hold 10001 keys; the limit is 10000' });
    // Growing to exactly the limit is allowed.
    const almost = { ...newRecord('u', T0), flags: Object.fromEntries(Array.from({ length: 9_999 }, (_, i) => [`k${i}`, 1])) };
    expect(Object.keys(applyPatch(almost, 'u', { flags: { last: 1 } }, T1).flags)).toHaveLength(10_000);
    expect(Object.keys(applySetKey(almost, 'u', 'flags', 'last', 1, T1).flags)).toHaveLength(10_000);
    // Replacing a key keeps the count at the limit.
    expect(Object.keys(applyPatch(rec, 'u', { flags: { k0: 2 } }, T1).flags)).toHaveLength(10_000);
    const over = { ...newRecord('u', T0), flags: { ...full, x1: 1, x2: 2 } };
    expect(Object.keys(applyPatch(over, 'u', { flags: { x1: null } }, T1).flags)).toHaveLength(10_001);
    expect(Object.keys(applyPatch(over, 'u', { flags: { x1: null, y: 1 } }, T1).flags)).toHaveLength(10_002);
  });
});

describe('history', () => {
  it('parseHistoryInput fills ts and a fresh 12-character id, keeping what the caller gave', () => {
    const e = parseHistoryInput({ role: 'user', text: 'halo' }, T0);
    expect(e.ts).toBe(T0);
    expect(e.id).toMatch(/^[A-Za-z0-9_-]{12}$/);
    expect(parseHistoryInput({ role: 'user', text: 'x', ts: T1, id: 'wamid.1', meta: { a: 1 }, extra: true }, T0)).toEqual({ role: 'user', text: 'x', ts: T1, id: 'wamid.1', meta: { a: 1 }, extra: true });
    const input = { role: 'user', text: 'x' };
    parseHistoryInput(input, T0);
    expect(input).toEqual({ role: 'user', text: 'x' });
  });

  it('parseHistoryInput refuses what is not an entry', () => {
    for (const v of [null, [], 'hi']) {
      expect(failure(() => parseHistoryInput(v))).toMatchObject({ code: 'E_RECORD', message: 'history entry must be a JSON object with role and text' });
    }
    expect(failure(() => parseHistoryInput({ role: '', text: 'x' }))).toMatchObject({ code: 'E_RECORD', message: expect.stringMatching(/^invalid history entry: role: /) as unknown });
    expect(failure(() => parseHistoryInput({ role: 'user' })).message).toMatch(/^invalid history entry: text: /);
    expect(failure(() => parseHistoryInput({ role: 'user', text: 'x', id: '' })).message).toMatch(/^invalid history entry: id: /);
    expect(failure(() => parseHistoryInput({ role: 'user', text: 'x', id: 'i'.repeat(257) })).message).toMatch(/^invalid history entry: id: /);
    expect(parseHistoryInput({ role: 'user', text: 'x', id: 'i'.repeat(256) }).id).toHaveLength(256);
    expect(failure(() => parseHistoryInput({ role: 'user', text: 'x', meta: [] })).message).toMatch(/^invalid history entry: meta: /);
    // An entry sits at level 3: a meta value 62 levels deep is one too many.
    let deep: unknown = 1;
    for (let i = 0; i < 61; i++) deep = { a: deep };
    expect(() => parseHistoryInput({ role: 'user', text: 'x', meta: deep })).not.toThrow();
    expect(() => parseHistoryInput({ role: 'user', text: 'x', meta: { a: deep } })).toThrow('history entry: field "meta" nests objects/arrays deeper than 64 levels');
  });

  it('newEntryId and newSessionToken are fresh each time, in their documented shapes', () => {
    // Ids come from a pool of random bytes refilled every 512 ids: 2,000 cross several refills.
    const ids = new Set(Array.from({ length: 2000 }, () => newEntryId()));
    expect(ids.size).toBe(2000);
    for (const id of ids) expect(id).toMatch(/^[A-Za-z0-9_-]{12}$/);
    const tokens = new Set(Array.from({ length: 200 }, () => newSessionToken()));
    expect(tokens.size).toBe(200);
    for (const t of tokens) expect(t).toMatch(/^[0-9a-f]{16}$/);
  });

  const entry = (id: string | undefined, role = 'user', text = `t-${id}`): HistoryEntry => ({ role, text, ts: T0, ...(id === undefined ? {} : { id }) });

  it('appends skip ids already in the history or earlier in the batch; an all-skipped append changes nothing', () => {
    const r1 = applyAppendMany(null, 'u', [entry('a'), entry('b', 'assistant')], 10, T0);
    expect(r1.history.map((e) => e.id)).toEqual(['a', 'b']);
    expect(r1.last_answer).toBe('t-a');
    const r2 = applyAppendMany(r1, 'u', [entry('b'), entry('c'), entry('c'), entry(undefined), entry(undefined)], 10, T1);
    expect(r2.history.map((e) => e.id)).toEqual(['a', 'b', 'c', undefined, undefined]);
    expect(r2.updated_at).toBe(T1);
    const same = applyAppendMany(r2, 'u', [entry('a'), entry('c')], 10, '2027-01-01T00:00:00Z');
    expect(same).toBe(r2);
    expect(same.updated_at).toBe(T1);
    // An empty batch on a new user gives the new, empty record.
    expect(applyAppendMany(null, 'n', [], 10, T0)).toEqual(newRecord('n', T0));
  });

  it('keeps the newest `cap` entries; cap 0 or less keeps everything; the default cap is 50', () => {
    let r: MemoryRecord | null = null;
    for (let i = 0; i < 5; i++) r = applyAppend(r, 'u', entry(`e${i}`), 3, T0);
    expect(r?.history.map((e) => e.id)).toEqual(['e2', 'e3', 'e4']);
    let all: MemoryRecord | null = null;
    for (let i = 0; i < 5; i++) all = applyAppend(all, 'u', entry(`e${i}`), 0, T0);
    expect(all?.history).toHaveLength(5);
    for (let i = 0; i < 5; i++) all = applyAppend(all, 'u', entry(`f${i}`), -1, T0);
    expect(all?.history).toHaveLength(10);
    expect(DEFAULT_HISTORY_CAP).toBe(50);
    let d: MemoryRecord | null = null;
    for (let i = 0; i < 55; i++) d = applyAppend(d, 'u', entry(`d${i}`));
    expect(d?.history).toHaveLength(50);
    expect(d?.history[0]?.id).toBe('d5');
    // Exactly at the cap nothing is dropped.
    let c: MemoryRecord | null = null;
    for (let i = 0; i < 3; i++) c = applyAppend(c, 'u', entry(`c${i}`), 3, T0);
    expect(c?.history.map((e) => e.id)).toEqual(['c0', 'c1', 'c2']);
    // A dropped entry's id may come back: only the capped history counts.
    expect(applyAppend(r, 'u', entry('e0'), 3, T1).history.map((e) => e.id)).toEqual(['e3', 'e4', 'e0']);
  });

  it('only a user message becomes last_answer, the last one of a batch', () => {
    const r = applyAppendMany(null, 'u', [entry('1', 'user', 'first'), entry('2', 'user', 'second'), entry('3', 'assistant', 'reply')], 10, T0);
    expect(r.last_answer).toBe('second');
    expect(applyAppend(r, 'u', entry('4', 'system', 'sys'), 10, T1).last_answer).toBe('second');
    expect(messageCount(r)).toBe(3);
    expect(messageCount(newRecord('x'))).toBe(0);
  });
});

describe('seed helpers', () => {
  it('newSeedRecord starts with the session token and flags.last_activity', () => {
    expect(newSeedRecord('u', 'abcd', T0)).toEqual({ ...newRecord('u', T0), session_token: 'abcd', flags: { last_activity: T0 } });
  });
});

describe('applyContext', () => {
  const rec = (): MemoryRecord => ({ ...newRecord('u', T0), summary_context: ['a', 'b'], serial: 'F57A, X1', product: 'old' });

  it.each([
    [{ maxItems: 0 }, 'maxItems must be an integer from 1 to 1000, got 0'],
    [{ maxItems: 1001 }, 'maxItems must be an integer from 1 to 1000, got 1001'],
    [{ maxItems: 1.5 }, 'maxItems must be an integer from 1 to 1000, got 1.5'],
    [{ text: 5 }, 'text must be a string'],
    [{ product: 5 }, 'product must be a string'],
    [{ serials: 'F57A' }, 'serials must be a list of non-empty strings'],
    [{ serials: ['F57A', ' '] }, 'serials must be a list of non-empty strings'],
    [{ serials: [5] }, 'serials must be a list of non-empty strings'],
  ])('refuses %j', (input, message) => {
    expect(failure(() => applyContext(rec(), 'u', input as never, T1))).toMatchObject({ code: 'E_RECORD', message });
  });

  it('accepts maxItems 1 and 1000', () => {
    expect(applyContext(rec(), 'u', { text: 'c', maxItems: 1 }, T1).summary_context).toEqual(['c']);
    expect(applyContext(rec(), 'u', { text: 'c', maxItems: 1000 }, T1).summary_context).toEqual(['a', 'b', 'c']);
  });

  it('adds a trimmed summary once, keeping the newest 15 by default', () => {
    const r = applyContext(rec(), 'u', { text: '  c  ' }, T1);
    expect(r.summary_context).toEqual(['a', 'b', 'c']);
    expect(r.updated_at).toBe(T1);
    expect(applyContext(r, 'u', { text: 'a' }, T1).summary_context).toEqual(['a', 'b', 'c']);
    expect(applyContext(r, 'u', { text: '   ' }, T1).summary_context).toEqual(['a', 'b', 'c']);
    expect(applyContext(r, 'u', {}, T1)).toEqual({ ...r });
    expect(DEFAULT_CONTEXT_ITEMS).toBe(15);
    let many: MemoryRecord | null = null;
    for (let i = 0; i < 20; i++) many = applyContext(many, 'u', { text: `s${i}` }, T1);
    expect(many?.summary_context).toEqual(Array.from({ length: 15 }, (_, i) => `s${i + 5}`));
    // A repeated text still trims an over-long summary to the limit.
    expect(applyContext(rec(), 'u', { text: 'b', maxItems: 1 }, T1).summary_context).toEqual(['b']);
    // The record it started from is not changed.
    const before = rec();
    applyContext(before, 'u', { text: 'z' }, T1);
    expect(before.summary_context).toEqual(['a', 'b']);
  });

  it('sets a trimmed product, ignoring a blank one', () => {
    expect(applyContext(rec(), 'u', { product: '  Printer X ' }, T1).product).toBe('Printer X');
    expect(applyContext(rec(), 'u', { product: '   ' }, T1).product).toBe('old');
  });

  it('merges serials into a sorted, trimmed, duplicate-free list', () => {
    expect(applyContext(rec(), 'u', { serials: [' X1', 'B2', 'F57A '] }, T1).serial).toBe('B2, F57A, X1');
    expect(applyContext({ ...rec(), serial: ' F57A,, X1 ,' }, 'u', { serials: ['A0'] }, T1).serial).toBe('A0, F57A, X1');
    expect(applyContext({ ...rec(), serial: null }, 'u', { serials: ['Z9', 'A0'] }, T1).serial).toBe('A0, Z9');
    expect(applyContext(rec(), 'u', { serials: [] }, T1).serial).toBe('F57A, X1');
    // No serials given: the stored value is left exactly as it was, even an untidy one or none.
    expect(applyContext({ ...rec(), serial: 'X1,F57A ' }, 'u', { serials: [] }, T1).serial).toBe('X1,F57A ');
    expect(applyContext({ ...rec(), serial: null }, 'u', { serials: [] }, T1).serial).toBeNull();
    expect(applyContext(null, 'n', { serials: ['Q'] }, T1)).toEqual({ ...newRecord('n', T1), serial: 'Q' });
  });
});

describe('applyFillSlots, applySetKey, applyClearFlag', () => {
  it('fills slots verbatim, null included', () => {
    const r = applyFillSlots({ ...newRecord('u', T0), slots: { a: 1, b: 2 } }, 'u', { b: null, c: 'x' }, T1);
    expect(r.slots).toEqual({ a: 1, b: null, c: 'x' });
    expect(r.updated_at).toBe(T1);
    for (const v of [null, [], 'x']) expect(failure(() => applyFillSlots(null, 'u', v, T1))).toMatchObject({ code: 'E_RECORD', message: 'slots must be a JSON object' });
  });

  it('sets one key, refusing an empty key, a missing value, an over-long key and a full map', () => {
    const r = applySetKey(null, 'u', 'flags', 'k', { v: 1 }, T1);
    expect(r).toEqual({ ...newRecord('u', T1), flags: { k: { v: 1 } } });
    expect(applySetKey(r, 'u', 'slots', 'k', null, T1).slots).toEqual({ k: null });
    expect(failure(() => applySetKey(null, 'u', 'flags', '', 1))).toMatchObject({ code: 'E_RECORD', message: 'flags key must be a non-empty string' });
    // JSON callers can send any type as the key.
    for (const key of [5, null, ['k']]) {
      expect(failure(() => applySetKey(null, 'u', 'slots', key as never, 1))).toMatchObject({ code: 'E_RECORD', message: 'slots key must be a non-empty string' });
    }
    expect(failure(() => applySetKey(null, 'u', 'slots', 'k', undefined))).toMatchObject({ code: 'E_RECORD', message: 'slots.k: a value is required' });
    expect(failure(() => applySetKey(null, 'u', 'flags', 'k'.repeat(70_000), 1))).toMatchObject({ code: 'E_RECORD', message: 'flags key is longer than 65536 bytes' });
    const longKey = 'q'.repeat(70);
    expect(failure(() => applySetKey(null, 'u', 'flags', longKey, 'x'.repeat(70_000))).message).toBe(`flags.${'q'.repeat(64)}…: has a string longer than 65536 bytes`);
    expect(failure(() => applySetKey(null, 'u', 'flags', 'q'.repeat(64), 'x'.repeat(70_000))).message).toBe(`flags.${'q'.repeat(64)}: has a string longer than 65536 bytes`);
    const full = { ...newRecord('u', T0), slots: Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`k${i}`, 1])) };
    expect(failure(() => applySetKey(full, 'u', 'slots', 'new', 1))).toMatchObject({ code: 'E_RECORD', message: 'slots would hold 10001 keys; the limit is 10000' });
    expect(Object.keys(applySetKey(full, 'u', 'slots', 'k1', 2).slots)).toHaveLength(10_000);
  });

  it('clears a flag, and a missing flag leaves the record as it was', () => {
    const r = { ...newRecord('u', T0), flags: { a: 1, b: 2 } };
    const cleared = applyClearFlag(r, 'u', 'a', T1);
    expect(cleared.flags).toEqual({ b: 2 });
    expect(cleared.updated_at).toBe(T1);
    expect(r.flags).toEqual({ a: 1, b: 2 });
    expect(applyClearFlag(r, 'u', 'zz', T1)).toBe(r);
    expect(applyClearFlag(null, 'n', 'zz', T1)).toEqual(newRecord('n', T1));
  });
});
