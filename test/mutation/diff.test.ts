import { describe, expect, it } from 'vitest';
import { diffRecords } from '../../src/backup/diff.js';
import { newRecord, type MemoryRecord } from '../../src/record.js';

// The promise of diffRecords (what `chatmem backups diff` shows before a restore): every user of
// either side is counted exactly once, as added, removed, changed (naming what changed) or
// unchanged, from two streams in id order. Expectations are written out by hand.

const T = '2026-01-01T00:00:00.000Z';
const rec = (id: string, fields: Partial<MemoryRecord> & Record<string, unknown> = {}): MemoryRecord => ({ ...newRecord(id, T), ...fields });

async function* stream(records: MemoryRecord[]): AsyncIterable<MemoryRecord> {
  for (const r of records) {
    await Promise.resolve();
    yield r;
  }
}

describe('diffRecords', () => {
  it('sorts users into added, removed, changed and unchanged, each once', async () => {
    const a = [rec('a1'), rec('b2', { name: 'x' }), rec('c3'), rec('e5')];
    const b = [rec('b2', { name: 'y' }), rec('c3'), rec('d4'), rec('f6'), rec('g7')];
    expect(await diffRecords(stream(a), stream(b))).toStrictEqual({
      added: ['d4', 'f6', 'g7'],
      removed: ['a1', 'e5'],
      changed: [{ user_id: 'b2', fields: ['name'] }],
      unchanged: 1,
    });
  });

  it('one side empty: everything added, or everything removed; both empty: nothing', async () => {
    expect(await diffRecords(stream([]), stream([rec('a'), rec('b')]))).toStrictEqual({ added: ['a', 'b'], removed: [], changed: [], unchanged: 0 });
    expect(await diffRecords(stream([rec('a'), rec('b')]), stream([]))).toStrictEqual({ added: [], removed: ['a', 'b'], changed: [], unchanged: 0 });
    expect(await diffRecords(stream([]), stream([]))).toStrictEqual({ added: [], removed: [], changed: [], unchanged: 0 });
  });

  it('orders ids as the stores do (code points, not UTF-16 units)', async () => {
    // U+FF5E sorts before U+1F600 by code point, after it by UTF-16 code unit.
    const a = [rec('\uff5e')];
    const b = [rec('\u{1f600}')];
    expect(await diffRecords(stream(a), stream(b))).toStrictEqual({ added: ['\u{1f600}'], removed: ['\uff5e'], changed: [], unchanged: 0 });
    expect(await diffRecords(stream([rec('\uff5e'), rec('\u{1f600}')]), stream([rec('\uff5e'), rec('\u{1f600}')]))).toMatchObject({ unchanged: 2 });
  });

  it('names the changed fields in order, the history lengths and the flags added, removed and changed', async () => {
    const a = [rec('u', {
      name: 'a', address: 'x', extra: 1,
      history: [{ role: 'user', text: 'hi', ts: T }],
      flags: { keep: 1, drop: 1, change: { v: 1 }, same: [1] },
    })];
    const b = [rec('u', {
      name: 'b', address: 'x', added: true,
      history: [{ role: 'user', text: 'hi', ts: T }, { role: 'bot', text: 'yo', ts: T }],
      flags: { keep: 1, change: { v: 2 }, same: [1], zadd: 0, add: null },
    })];
    expect(await diffRecords(stream(a), stream(b))).toStrictEqual({
      added: [],
      removed: [],
      changed: [{
        user_id: 'u',
        fields: ['added', 'extra', 'flags', 'history', 'name'],
        history: { from: 1, to: 2 },
        flags: { added: ['add', 'zadd'], removed: ['drop'], changed: ['change'] },
      }],
      unchanged: 0,
    });
  });

  it('a change to history alone carries no flags part, and to flags alone no history part', async () => {
    const h = await diffRecords(stream([rec('u')]), stream([rec('u', { history: [{ role: 'user', text: 'x', ts: T }] })]));
    expect(h.changed).toStrictEqual([{ user_id: 'u', fields: ['history'], history: { from: 0, to: 1 } }]);
    const f = await diffRecords(stream([rec('u', { flags: { a: 1 } })]), stream([rec('u', { flags: { a: 2 } })]));
    expect(f.changed).toStrictEqual([{ user_id: 'u', fields: ['flags'], flags: { added: [], removed: [], changed: ['a'] } }]);
  });

  it('lists the flag names sorted, whatever order the records hold them in', async () => {
    const a = [rec('u', { flags: { zdrop: 1, adrop: 1, zc: 1, ac: 1 } })];
    const b = [rec('u', { flags: { zc: 2, ac: 2, znew: 1, anew: 1 } })];
    expect((await diffRecords(stream(a), stream(b))).changed[0]?.flags).toStrictEqual({ added: ['anew', 'znew'], removed: ['adrop', 'zdrop'], changed: ['ac', 'zc'] });
  });

  it('reports progress every 1,000 users seen', async () => {
    const ids = Array.from({ length: 2500 }, (_, i) => `u${String(i).padStart(5, '0')}`);
    const seen: number[] = [];
    const r = await diffRecords(stream(ids.map((id) => rec(id))), stream(ids.slice(0, 2100).map((id) => rec(id))), (n) => seen.push(n));
    expect(seen).toEqual([1000, 2000]);
    expect(r.unchanged).toBe(2100);
    expect(r.removed).toHaveLength(400);
    // Without a callback the same answer.
    expect(await diffRecords(stream(ids.map((id) => rec(id))), stream(ids.slice(0, 2100).map((id) => rec(id))))).toStrictEqual(r);
  });
});
