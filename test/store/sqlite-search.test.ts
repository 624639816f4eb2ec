import Database from 'better-sqlite3';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareIds } from '../../src/record.js';
import type { MemoryRecord } from '../../src/record.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { SqliteSearch, walkPattern } from '../../src/store/sqlite/search.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { tempDir } from '../helpers/tmp.js';

const NAMES = ['Siti Nurhaliza', 'Budi Santoso', 'Wahyu Nurhaliza', 'Dewi Kusuma', 'Rina Wijaya'];
const STREETS = ['Jl. Sudirman', 'Jl. Diponegoro', 'Jl. Gatot Subroto'];
const CHAT = ['ada bau gosong dari unit', 'filternya sudah saya bersihkan', 'kapan teknisinya datang kak?', 'terima kasih'];
const T = '2026-01-01T00:00:00Z';

/** User i of a 3,000-user store: names, streets and chat lines repeat with different periods, so queries match few to all users. */
function user(i: number): MemoryRecord {
  const id = `62${String(8_100_000_000 + i * 97)}`;
  const history = Array.from({ length: 1 + (i % 4) }, (_, k) => ({ role: k % 2 === 0 ? 'user' : 'bot', text: CHAT[(i + k) % CHAT.length]!, ts: T }));
  if (i % 997 === 5) history.push({ role: 'user', text: `kode unik-${i} "kutip" back\\slash 100% a_b 😢😢😢`, ts: T });
  return {
    user_id: id,
    session_token: 'x',
    name: i % 211 === 0 ? 'Ahmad \u212Aurniawan' : NAMES[i % NAMES.length]!,
    gender: null,
    is_company: false,
    product: i % 3 === 0 ? 'Electronic Air Cleaner' : 'Water Heater',
    serial: null,
    address: `${STREETS[i % STREETS.length]} No ${i % 50}, Jakarta`,
    summary_context: [],
    history,
    last_answer: null,
    flags: { note: 'Jl. Palsu yang hanya ada di flags' },
    slots: {},
    created_at: T,
    updated_at: T,
  } as MemoryRecord;
}

const USERS = Array.from({ length: 3000 }, (_, i) => user(i));

/** The expected answer, from the records (not through the code under test). */
function expected(query: string): string[] {
  const q = query.toLowerCase();
  const fields = (r: MemoryRecord): unknown[] => [r.user_id, r.name, r.address, r.product, ...r.summary_context, ...r.history.map((h) => h.text)];
  return USERS.filter((r) => fields(r).some((f) => typeof f === 'string' && f.toLowerCase().includes(q)))
    .map((r) => r.user_id)
    .sort(compareIds);
}

const QUERIES = [
  'Siti', // a first name, 1 in 5
  'Wahyu Nurhaliza', // a full name, 1 in 5
  'Jl. Sudirman', // an address, 1 in 3
  'electronic air cleaner', // a product, 1 in 3
  'bau gosong', // chat text
  USERS[1234]!.user_id, // a whole phone number
  USERS[2345]!.user_id.slice(3, 11), // 8 digits from its middle
  USERS[400]!.user_id.slice(0, 9), // an id prefix
  '628100', // an id prefix shared by the first ~100 users
  'kurniawan', // stored with U+212A KELVIN SIGN, which lower-cases to "k"
  '"kutip" back\\slash', // characters JSON escapes in the stored text
  '100% a_b', // LIKE wildcards, literally
  '😢😢😢', // no case (three characters: shorter queries are id prefixes)
  'jl. palsu', // only in flags: not searched
  'tidak-ada-di-mana-pun',
];

describe('SQLite search over many turns', () => {
  let t: Awaited<ReturnType<typeof tempDir>>;
  let store: Store;
  let reader: Database.Database;
  beforeAll(async () => {
    t = await tempDir();
    store = createStore(await SqliteDriver.open(path.join(t.dir, 'memory.db')));
    // Half through an import (putMany), half through appends: the index holds both kinds of documents.
    await store.exclusive('all', (ctx) => ctx.putMany(USERS.filter((_, i) => i % 2 === 0)));
    for (const r of USERS.filter((_, i) => i % 2 === 1)) {
      await store.put(r.user_id, { ...r, history: [] });
      for (const h of r.history) await store.appendHistory(r.user_id, h);
    }
    reader = new Database(path.join(t.dir, 'memory.db'), { readonly: true });
  }, 120_000);
  afterAll(async () => {
    reader.close();
    await store.close();
    await t.cleanup();
  });

  it.each(QUERIES)('finds exactly the first users matching %s, whichever way finishes', async (q) => {
    const want = expected(q);
    // The store's own settings, then turns so short that both ways take many turns (the index
    // 64 rows, the walk one window of 1–4 users), so each way is cut and resumed many times.
    const searches = [
      (query: string, limit: number) => store.search(query, { limit }),
      (query: string, limit: number) => new SqliteSearch(reader, { indexMs: 0, walkMs: 0, firstWindow: 1, maxWindow: 4, maxParsedWindow: 2 }).search(query, limit),
    ];
    for (const search of searches) {
      expect((await search(q, 5000)).map((u) => u.user_id)).toEqual(want);
      for (const limit of [1, 7, 100]) expect((await search(q, limit)).map((u) => u.user_id)).toEqual(want.slice(0, limit));
    }
  });

  it('runs overlapping searches on one connection, each complete', async () => {
    const queries = ['Siti', 'Wahyu Nurhaliza', 'bau gosong', 'kurniawan', USERS[1234]!.user_id];
    const slow = new SqliteSearch(reader, { indexMs: 0, walkMs: 0, firstWindow: 1, maxWindow: 4, maxParsedWindow: 2 });
    const answers = await Promise.all([...queries.map((q) => store.search(q, { limit: 5000 })), ...queries.map((q) => slow.search(q, 5000))]);
    expect(answers.map((a) => a.map((u) => u.user_id))).toEqual([...queries, ...queries].map(expected));
  });

  it('counts more than one page for the broad queries (the cases where the limit cuts the answer)', () => {
    expect(expected('Siti').length).toBeGreaterThan(100);
    expect(expected('bau gosong').length).toBeGreaterThan(100);
    expect(expected(USERS[2345]!.user_id.slice(3, 11))).toEqual([USERS[2345]!.user_id]);
    expect(expected('kurniawan').length).toBe(Math.ceil(3000 / 211));
    expect(expected('"kutip" back\\slash')).toHaveLength(4);
    expect(expected('jl. palsu')).toEqual([]);
  });
});

describe('walkPattern', () => {
  it('filters with LIKE only when the stored JSON text holds the needle verbatim', () => {
    expect(walkPattern('jl. sudirman')).toEqual({ pattern: '%jl. sudirman%', alsoIf: ['\u0130'] });
    expect(walkPattern('bau gosong')).toEqual({ pattern: '%bau gosong%', alsoIf: [] });
    expect(walkPattern('100%_')).toEqual({ pattern: '%100\\%\\_%', alsoIf: [] });
    expect(walkPattern('siti')?.alsoIf).toEqual(['\u0130']);
    expect(walkPattern('kak')?.alsoIf).toEqual(['\u212a']);
    expect(walkPattern('😢 sedih')).not.toBeNull();
    for (const unsafe of ['say "hi"', 'back\\slash', 'two\nlines', 'caf\u00e9', '\ud800x']) expect(walkPattern(unsafe)).toBeNull();
  });
});
