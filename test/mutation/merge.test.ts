import { describe, expect, it } from 'vitest';
import { mergeRecords } from '../../src/ops/merge.js';
import { newRecord, type HistoryEntry, type MemoryRecord } from '../../src/record.js';

// The promise of mergeRecords (two ids of one person become one record): nothing of either side is
// lost except what INTO already says, every turn appears once in time order, the newest `cap` turns
// are kept, and the result is INTO's user. Expectations are written out by hand.

const NOW = '2026-11-30T12:00:00.000Z';
const t = (m: number): string => `2026-11-20T10:${String(m).padStart(2, '0')}:00.000Z`;
const turn = (role: string, text: string, m: number, id?: string): HistoryEntry => ({ role, text, ts: t(m), ...(id !== undefined ? { id } : {}) });

function rec(userId: string, fields: Partial<MemoryRecord> & Record<string, unknown> = {}): MemoryRecord {
  return { ...newRecord(userId, '2026-01-01T00:00:00.000Z'), ...fields };
}

describe('mergeRecords', () => {
  it('is INTO\'s user, stamped now, created at the earlier of the two', () => {
    const from = rec('from@lid', { created_at: '2025-05-01T00:00:00.000Z', updated_at: '2026-02-01T00:00:00.000Z' });
    const into = rec('628111', { created_at: '2025-06-01T00:00:00.000Z' });
    const m = mergeRecords(from, into, 100, NOW);
    expect(m.user_id).toBe('628111');
    expect(m.updated_at).toBe(NOW);
    expect(m.created_at).toBe('2025-05-01T00:00:00.000Z');
    const later = mergeRecords(rec('f', { created_at: '2025-07-01T00:00:00.000Z' }), into, 100, NOW);
    expect(later.created_at).toBe('2025-06-01T00:00:00.000Z');
    // Equal instants written differently: INTO's text stays.
    const same = mergeRecords(rec('f', { created_at: '2025-06-01T00:00:00Z' }), into, 100, NOW);
    expect(same.created_at).toBe('2025-06-01T00:00:00.000Z');
  });

  it('fills each empty identity field of INTO from FROM, and keeps every one INTO has', () => {
    const from = rec('f', {
      session_token: 's-from', name: 'Budi', gender: 'male', is_company: true, product: 'P', serial: 'SN', address: 'Jl. 1', last_answer: 'hi',
    });
    const filled = mergeRecords(from, rec('i', { name: '', gender: null }), 100, NOW);
    expect({
      session_token: filled.session_token, name: filled.name, gender: filled.gender, is_company: filled.is_company,
      product: filled.product, serial: filled.serial, address: filled.address, last_answer: filled.last_answer,
    }).toEqual({ session_token: 's-from', name: 'Budi', gender: 'male', is_company: true, product: 'P', serial: 'SN', address: 'Jl. 1', last_answer: 'hi' });

    const into = rec('i', {
      session_token: 's-into', name: 'Budi S', gender: 'm', is_company: false, product: 'Q', serial: 'SN2', address: 'Jl. 2', last_answer: 'yo',
    });
    const kept = mergeRecords(from, into, 100, NOW);
    expect({
      session_token: kept.session_token, name: kept.name, gender: kept.gender, is_company: kept.is_company,
      product: kept.product, serial: kept.serial, address: kept.address, last_answer: kept.last_answer,
    }).toEqual({ session_token: 's-into', name: 'Budi S', gender: 'm', is_company: false, product: 'Q', serial: 'SN2', address: 'Jl. 2', last_answer: 'yo' });

    // An empty FROM never blanks INTO, and an empty string in FROM does not replace INTO's null.
    const blank = mergeRecords(rec('f', { name: '' }), rec('i', { name: null, address: 'A' }), 100, NOW);
    expect(blank.name).toBe(null);
    expect(blank.address).toBe('A');
  });

  it('takes unknown fields FROM has and INTO lacks or has empty, INTO\'s own value winning otherwise', () => {
    const from = rec('f', { city: 'Bandung', lang: 'id', note: 'from', zero: 0, off: false });
    const into = rec('i', { lang: '', note: 'into', extra: 1, zero: null, off: null });
    const m = mergeRecords(from, into, 100, NOW);
    expect(m.city).toBe('Bandung');
    expect(m.lang).toBe('id');
    expect(m.note).toBe('into');
    expect(m.extra).toBe(1);
    // 0 and false are values, not emptiness.
    expect(m.zero).toBe(0);
    expect(m.off).toBe(false);
    const keepsEmptyWhenFromEmpty = mergeRecords(rec('f', { lang: null }), rec('i', { lang: '' }), 100, NOW);
    expect(keepsEmptyWhenFromEmpty.lang).toBe('');
  });

  it('merges flags and slots key by key with INTO winning', () => {
    const m = mergeRecords(
      rec('f', { flags: { a: 1, b: 1 }, slots: { x: 'f', y: 'f' } }),
      rec('i', { flags: { b: 2, c: 2 }, slots: { y: 'i', z: 'i' } }),
      100,
      NOW,
    );
    expect(m.flags).toEqual({ a: 1, b: 2, c: 2 });
    expect(m.slots).toEqual({ x: 'f', y: 'i', z: 'i' });
  });

  it('keeps the summary lines of both, distinct, INTO\'s first', () => {
    const m = mergeRecords(rec('f', { summary_context: ['s2', 'f1', 'f1', 's1'] }), rec('i', { summary_context: ['s1', 'i1', 's2'] }), 100, NOW);
    expect(m.summary_context).toEqual(['s1', 'i1', 's2', 'f1']);
  });

  it('merges histories in time order, a turn both hold once, INTO first on equal times, keeping the newest cap', () => {
    const into = rec('i', { history: [turn('user', 'i1', 1, 'a'), turn('bot', 'i3', 3), turn('user', 'same', 5), turn('user', 'i7', 7, 'x')] });
    const from = rec('f', {
      history: [
        turn('user', 'f2', 2, 'b'),
        turn('bot', 'f3', 3), // same time as INTO's i3: after it
        turn('user', 'same', 5), // same role, text and time, no id: one turn
        turn('user', 'copy of i1 by id', 1, 'a'), // same id as INTO's: INTO's wins
        turn('user', 'same', 6), // same text, other time: kept
        turn('bot', 'same', 5), // same text and time, other role: kept
        turn('user', 'f7', 7, 'y'),
      ],
    });
    const m = mergeRecords(from, into, 100, NOW);
    expect(m.history.map((e) => e.text)).toEqual(['i1', 'f2', 'i3', 'f3', 'same', 'same', 'same', 'i7', 'f7']);
    expect(m.history.map((e) => e.role)).toEqual(['user', 'user', 'bot', 'bot', 'user', 'bot', 'user', 'user', 'user']);
    expect(m.history[6]?.ts).toBe(t(6));
    // The cap keeps the newest turns.
    expect(mergeRecords(from, into, 3, NOW).history.map((e) => e.text)).toEqual(['same', 'i7', 'f7']);
  });

  it('keeps each side\'s own order among turns of equal time', () => {
    const into = rec('i', { history: [turn('user', 'i-a', 4), turn('user', 'i-b', 4), turn('user', 'i-c', 4)] });
    const from = rec('f', { history: [turn('user', 'f-a', 4), turn('user', 'f-b', 4)] });
    expect(mergeRecords(from, into, 100, NOW).history.map((e) => e.text)).toEqual(['i-a', 'i-b', 'i-c', 'f-a', 'f-b']);
    // FROM's list given out of order is put in time order too.
    const shuffled = rec('f', { history: [turn('user', 'late', 9), turn('user', 'early', 0)] });
    expect(mergeRecords(shuffled, rec('i'), 100, NOW).history.map((e) => e.text)).toEqual(['early', 'late']);
  });

  it('keeps INTO first and each side\'s order on long histories of one instant', () => {
    const into = rec('i', { history: Array.from({ length: 70 }, (_, k) => turn('user', `i${k}`, 5)) });
    const from = rec('f', { history: Array.from({ length: 70 }, (_, k) => turn('bot', `f${k}`, 5)) });
    const expected = [...Array.from({ length: 70 }, (_, k) => `i${k}`), ...Array.from({ length: 70 }, (_, k) => `f${k}`)];
    expect(mergeRecords(from, into, 1000, NOW).history.map((e) => e.text)).toEqual(expected);
    // Out of order in time, then equal times: time first, then INTO, then each side's order.
    const mixedInto = rec('i', { history: Array.from({ length: 60 }, (_, k) => turn('user', `i${k}`, 59 - k)) });
    const mixedFrom = rec('f', { history: Array.from({ length: 60 }, (_, k) => turn('bot', `f${k}`, 59 - k)) });
    const got = mergeRecords(mixedFrom, mixedInto, 1000, NOW).history.map((e) => e.text);
    expect(got).toEqual(Array.from({ length: 60 }, (_, m) => [`i${59 - m}`, `f${59 - m}`]).flat());
  });

  it('an identity or unknown field INTO holds as undefined counts as empty', () => {
    const from = rec('f', { name: 'Budi', lang: 'id' });
    const into = rec('i', { name: undefined as unknown as null, lang: undefined });
    const m = mergeRecords(from, into, 100, NOW);
    expect(m.name).toBe('Budi');
    expect(m.lang).toBe('id');
  });

  it('leaves both inputs as they were', () => {
    const from = rec('f', { flags: { a: 1 }, history: [turn('user', 'x', 1)], summary_context: ['s'] });
    const into = rec('i', { flags: { b: 1 }, history: [turn('user', 'y', 2)] });
    const before = JSON.stringify([from, into]);
    mergeRecords(from, into, 1, NOW);
    expect(JSON.stringify([from, into])).toBe(before);
  });
});
