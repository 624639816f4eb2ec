import { describe, expect, it } from 'vitest';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { MIN_SUBSTRING_QUERY, isPrefixQuery, likeEscape, profileText, searchText } from '../../src/store/search-text.js';

// What search looks in (README, "Search"): id, name, address, product, summary and history text,
// case-insensitively; queries under three characters match id prefixes only.

const rec = (fields: Partial<MemoryRecord>): MemoryRecord => ({ ...newRecord('62811', '2026-01-01T00:00:00Z'), ...fields });

describe('search text', () => {
  it('profileText is the id, then name, address, product and each summary entry, one per line, skipping empty ones', () => {
    expect(profileText(rec({}))).toBe('62811');
    expect(profileText(rec({ name: 'Ana', address: 'Jl. Mawar 1', product: 'Printer X', summary_context: ['first', '', 'second'] }))).toBe(
      '62811\nAna\nJl. Mawar 1\nPrinter X\nfirst\nsecond',
    );
    expect(profileText(rec({ name: '', address: null, product: 'P' }))).toBe('62811\nP');
    // Older stored data may lack fields or hold other types: what is there is indexed, nothing throws.
    const old = { ...rec({ name: 'Ana' }), summary_context: undefined, product: 7 } as unknown as MemoryRecord;
    expect(profileText(old)).toBe('62811\nAna');
    const odd = { ...rec({}), summary_context: ['a', 5, null, 'b'] } as unknown as MemoryRecord;
    expect(profileText(odd)).toBe('62811\na\nb');
  });

  it('searchText adds every history text and lower-cases everything', () => {
    const r = rec({
      name: 'ANA',
      history: [
        { role: 'user', text: 'Halo DUNIA', ts: '2026-01-01T00:00:00Z' },
        { role: 'assistant', text: '', ts: '2026-01-01T00:00:00Z' },
        { role: 'user', text: 'Bye', ts: '2026-01-01T00:00:00Z' },
      ],
    });
    expect(searchText(r)).toBe('62811\nana\nhalo dunia\n\nbye');
    const broken = { ...rec({}), history: [null, { role: 'user' }, { role: 'user', text: 'OK' }] } as unknown as MemoryRecord;
    expect(searchText(broken)).toBe('62811\n\n\nok');
    const none = { ...rec({ name: 'X' }), history: undefined } as unknown as MemoryRecord;
    expect(searchText(none)).toBe('62811\nx');
  });

  it('a query under three characters (counted as characters, not UTF-16 units) is a prefix query', () => {
    expect(MIN_SUBSTRING_QUERY).toBe(3);
    expect(isPrefixQuery('')).toBe(true);
    expect(isPrefixQuery('ab')).toBe(true);
    expect(isPrefixQuery('abc')).toBe(false);
    expect(isPrefixQuery('😀😀')).toBe(true);
    expect(isPrefixQuery('😀😀😀')).toBe(false);
  });

  it('likeEscape makes %, _ and \\ literal and leaves everything else', () => {
    expect(likeEscape('100%_a\\b')).toBe('100\\%\\_a\\\\b');
    expect(likeEscape('plain text')).toBe('plain text');
    expect(likeEscape('%%')).toBe('\\%\\%');
  });
});
