// Fast checks of src/store/sqlite/driver.ts's promises, for mutation testing (the conformance suite
// runs beside it; test/store/sqlite-{pending,swap}.test.ts cost seconds per mutant): what a group commit
// stores when one of its ops fails, what search finds after every kind of write (each message carries
// a word of its own, so the oracle is the stored records, not the index), what a backup's scan reads
// (bytes as stored, in order, a snapshot), what exclusive sections store and refuse, what a forget
// leaves in the file, and what opens refuse. Real SQLite files in a temp dir.
import Database from 'better-sqlite3';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { GENERATION } from '../../src/store/sqlite/schema.js';
import { openUnder } from '../helpers/fd.js';
import { T0, counted, freshFiles, newerSchemaStore, rec } from '../helpers/sqlite-driver.js';

const freshFile = freshFiles('chatmem-sqlmut-');

async function* stream(records: MemoryRecord[]): AsyncIterable<MemoryRecord> {
  for (const r of records) yield r;
}

/** What search should find for `word`, read from the stored records themselves. */
async function expected(driver: SqliteDriver, word: string): Promise<string[]> {
  const out: string[] = [];
  for await (const [id, json] of driver.scanJson()) {
    const r = JSON.parse(json) as MemoryRecord;
    if (r.history.some((h) => h.text.toLowerCase().includes(word.toLowerCase()))) out.push(id);
  }
  return out.sort();
}

async function found(driver: SqliteDriver, word: string): Promise<string[]> {
  return (await driver.search(word, 100)).map((u) => u.user_id).sort();
}

/** Search agrees with the stored records on every word, with the queue as it is and after close applies it. */
async function searchAgrees(driver: SqliteDriver, words: string[]): Promise<void> {
  for (const w of words) expect(await found(driver, w), w).toEqual(await expected(driver, w));
}

/** Tables of a clear's or a restore's generations still in the file (the background drop empties them). */
function generations(file: string): string[] {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare<[], string>("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all().filter((n) => GENERATION.test(n));
  } finally {
    db.close();
  }
}

/** Waits (bounded) until the background drop has removed every old table. */
async function dropped(file: string): Promise<string[]> {
  for (let i = 0; i < 500 && generations(file).length > 0; i++) await new Promise((r) => setTimeout(r, 10));
  return generations(file);
}

describe('group commit: ops sharing a transaction', () => {
  it('an op that throws fails alone; the others are stored and durable, in order', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    const circular: Record<string, unknown> = { ...newRecord('c', T0) };
    circular.self = circular;
    const results = await Promise.allSettled([
      d.update('a', () => rec('a', ['alpha'])),
      d.update('b', () => {
        throw new Error('bad op');
      }),
      d.update('c', () => circular as unknown as MemoryRecord),
      d.update('a', (cur) => rec('a', [...(cur?.history.map((h) => h.text) ?? []), 'alpha2'])),
      d.update('d', (cur) => rec('d', [cur === null ? 'fresh' : 'stale'])),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason.message).toBe('bad op');
    await d.close();
    const again = await SqliteDriver.open(file);
    expect((await again.get('a'))?.history.map((h) => h.text)).toEqual(['alpha', 'alpha2']);
    expect(await again.get('b')).toBeNull();
    expect(await again.get('c')).toBeNull();
    expect((await again.get('d'))?.history[0]?.text).toBe('fresh');
    expect(await again.count()).toBe(2);
    await again.close();
  });

  it('a failed statement of one op (a constraint) leaves none of its changes and the others are stored', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    // Made to fail inside SQL: a trigger refuses this user's row.
    const raw = new Database(file);
    raw.exec("CREATE TRIGGER refuse BEFORE INSERT ON users WHEN NEW.user_id = 'no' BEGIN SELECT RAISE(ABORT, 'refused'); END");
    raw.close();
    const results = await Promise.allSettled([d.update('ok1', () => rec('ok1', ['kept1'])), d.update('no', () => rec('no', ['gone'])), d.update('ok2', () => rec('ok2', ['kept2']))]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'E_STORE_WRITE', message: expect.stringContaining('"no"') });
    // SQLite's own error goes along as the cause: what the log shows of a refused write.
    expect((results[1] as PromiseRejectedResult).reason.cause).toBeInstanceOf(Database.SqliteError);
    expect(await found(d, 'gone')).toEqual([]);
    expect(await found(d, 'kept1')).toEqual(['ok1']);
    expect(await d.count()).toBe(2);
    await d.close();
  });

  it('a failure that rolls the whole transaction back fails the whole batch, and none of it is stored', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    await d.update('before', () => rec('before', ['x']));
    const raw = new Database(file);
    raw.exec("CREATE TRIGGER boom BEFORE INSERT ON users WHEN NEW.user_id = 'boom' BEGIN SELECT RAISE(ROLLBACK, 'rolled back'); END");
    raw.close();
    const results = await Promise.allSettled([d.update('ok1', () => rec('ok1', ['a'])), d.update('boom', () => rec('boom', ['b'])), d.update('ok2', () => rec('ok2', ['c']))]);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'E_STORE_WRITE', message: expect.stringContaining('SQLite write failed: rolled back') });
      expect((r as PromiseRejectedResult).reason.cause).toBeInstanceOf(Database.SqliteError);
    }
    await d.close();
    const again = await SqliteDriver.open(file);
    expect(await again.get('ok1')).toBeNull();
    expect(await again.get('ok2')).toBeNull();
    expect(await again.count()).toBe(1);
    await again.close();
  });

  it('a write after close is refused, not lost silently', async () => {
    const d = await SqliteDriver.open(freshFile());
    await d.update('a', () => rec('a', ['x']));
    await d.close();
    await expect(d.update('b', () => rec('b', ['y']))).rejects.toMatchObject({ code: 'E_STORE_WRITE' });
  });
});

describe('search follows every write path', () => {
  const words = ['apple', 'banana', 'cherry', 'damson', 'elder', 'fig', 'grape', 'zeta'];

  it('appends, pushes out, puts, profile changes and deletes, with the queue pending and after it is applied', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 60_000 });
    await d.update('u1', () => rec('u1', ['apple', 'banana']));
    await d.update('u2', () => rec('u2', ['cherry']));
    // An append: the same entry objects, one more.
    await d.update('u1', (cur) => ({ ...(cur as MemoryRecord), history: [...(cur as MemoryRecord).history, { role: 'user', text: 'damson', ts: T0 }] }));
    // The oldest pushed out: history minus its first entry, plus one.
    await d.update('u1', (cur) => ({ ...(cur as MemoryRecord), history: [...(cur as MemoryRecord).history.slice(1), { role: 'user', text: 'elder', ts: T0 }] }));
    // A put that replaces history.
    await d.update('u2', () => rec('u2', ['fig', 'grape']));
    // Profile text: the name is searchable, and a rename forgets the old one.
    await d.update('u3', () => rec('u3', ['zeta'], { name: 'Quintus' }));
    await d.update('u3', (cur) => ({ ...(cur as MemoryRecord), name: 'Sextus' }));
    expect(await found(d, 'quintus')).toEqual([]);
    expect(await found(d, 'sextus')).toEqual(['u3']);
    await searchAgrees(d, words);
    expect(await found(d, 'apple')).toEqual([]);
    expect(await found(d, 'elder')).toEqual(['u1']);
    // A history emptied.
    await d.update('u1', (cur) => ({ ...(cur as MemoryRecord), history: [] }));
    await searchAgrees(d, words);
    await d.exclusive({ ids: ['u2'] }, (ctx) => ctx.delete(['u2']));
    await searchAgrees(d, words);
    expect(d.pendingIndexWork()).toBeGreaterThan(0);
    await d.close();
    // Close applied the queue: the index alone answers now.
    const raw = new Database(file, { readonly: true });
    expect(raw.prepare('SELECT COUNT(*) AS n FROM search_pending').get()).toEqual({ n: 0 });
    raw.close();
    const again = await SqliteDriver.open(file);
    await searchAgrees(again, words);
    expect(await found(again, 'sextus')).toEqual(['u3']);
    expect(await found(again, 'quintus')).toEqual([]);
    await again.close();
  });

  it('each write costs the index only the documents it changes (an append one, a push-out two, a rename two)', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 60_000 });
    const queued = async (write: () => Promise<unknown>): Promise<number> => {
      const before = d.pendingIndexWork();
      await write();
      return d.pendingIndexWork() - before;
    };
    const append = (text: string) => (cur: MemoryRecord | null) => ({ ...(cur as MemoryRecord), history: [...(cur as MemoryRecord).history, { role: 'user', text, ts: T0 }] });
    // A new user: its profile and five messages.
    expect(await queued(() => d.update('u', () => rec('u', ['m0', 'm1', 'm2', 'm3', 'm4'])))).toBe(6);
    expect(await queued(() => d.update('u', append('apple')))).toBe(1);
    // The oldest two pushed out, one added: two deletes and an add.
    expect(await queued(() => d.update('u', (cur) => ({ ...(cur as MemoryRecord), history: [...(cur as MemoryRecord).history.slice(2), { role: 'user', text: 'banana', ts: T0 }] })))).toBe(3);
    // Nothing searchable changed.
    expect(await queued(() => d.update('u', (cur) => ({ ...(cur as MemoryRecord), flags: { seen: true } })))).toBe(0);
    // A rename: the old profile document out, the new one in.
    expect(await queued(() => d.update('u', (cur) => ({ ...(cur as MemoryRecord), name: 'Quintus' })))).toBe(2);
    // A put replacing the five messages by two: five out, two in.
    expect(await queued(() => d.update('u', (cur) => ({ ...(cur as MemoryRecord), history: rec('u', ['cherry', 'damson']).history })))).toBe(7);
    // History emptied: the two out.
    expect(await queued(() => d.update('u', (cur) => ({ ...(cur as MemoryRecord), history: [] })))).toBe(2);
    expect(await queued(() => d.update('u', append('elder')))).toBe(1);
    // A delete: the profile and the one message.
    expect(await queued(() => d.exclusive({ ids: ['u'] }, (ctx) => ctx.delete(['u'])))).toBe(2);
    await searchAgrees(d, ['m0', 'm4', 'apple', 'banana', 'cherry', 'elder', 'quintus']);
    await d.close();
  });

  it('lists users with the columns of their records, after a cursor, up to the limit', async () => {
    const d = await SqliteDriver.open(freshFile());
    await d.update('b', () => rec('b', ['x', 'y'], { name: 'Bea', product: 'P1', updated_at: '2026-02-01T00:00:00.000Z' }));
    await d.update('a', () => rec('a', [], { name: null, product: null }));
    await d.update('c', () => rec('c', ['z']));
    expect(await d.list({ cursor: null, limit: 2 })).toEqual([
      { user_id: 'a', name: null, product: null, created_at: T0, updated_at: T0, messages: 0 },
      { user_id: 'b', name: 'Bea', product: 'P1', created_at: T0, updated_at: '2026-02-01T00:00:00.000Z', messages: 2 },
    ]);
    expect((await d.list({ cursor: 'b', limit: 10 })).map((u) => u.user_id)).toEqual(['c']);
    expect((await d.stats()).lastUpdate).toBe('2026-02-01T00:00:00.000Z');
    await d.close();
  });

  it('the indexer steps through a queue oldest first: search agrees after every chunk', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 60_000 });
    for (let i = 0; i < 6; i++) await d.update(`u${i}`, () => rec(`u${i}`, [words[i] as string, 'zeta']));
    await d.update('u0', () => rec('u0', ['grape']));
    await d.exclusive({ ids: ['u1'] }, (ctx) => ctx.delete(['u1']));
    const before = d.pendingIndexWork();
    let steps = 0;
    while (d.pendingIndexWork() > 0) {
      expect(d.indexChunk(3)).toBeLessThanOrEqual(3);
      steps++;
      await searchAgrees(d, words);
    }
    expect(steps).toBe(Math.ceil(before / 3));
    expect(d.indexChunk(3)).toBe(0);
    await d.close();
  });

  it('putMany, putAndDelete, putAll, replaceAll and a staged restore keep search right, a repeated user by its last record', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 60_000 });
    await d.update('a', () => rec('a', ['apple']));
    await d.update('b', () => rec('b', ['banana']));
    await d.exclusive('all', (ctx) => ctx.putMany([rec('a', ['cherry']), rec('c', ['damson'])]));
    await searchAgrees(d, words);
    expect(await found(d, 'apple')).toEqual([]);
    await d.exclusive('all', async (ctx) => ctx.putAndDelete?.([rec('e', ['elder'])], ['b']));
    expect(await d.get('b')).toBeNull();
    await searchAgrees(d, words);
    const read = await d.exclusive('all', (ctx) => ctx.putAll(stream([rec('f', ['fig']), rec('a', ['grape']), rec('f', ['zeta'])])));
    expect(read).toBe(3);
    expect((await d.get('f'))?.history.map((h) => h.text)).toEqual(['zeta']);
    await searchAgrees(d, words);
    expect(await found(d, 'fig')).toEqual([]);
    const n = await d.exclusive('all', (ctx) => ctx.replaceAll(stream([rec('x', ['apple']), rec('y', ['banana']), rec('x', ['cherry'])])));
    expect(n).toBe(2);
    expect(await d.count()).toBe(2);
    await searchAgrees(d, words);
    expect(await found(d, 'apple')).toEqual([]);
    // Stage out of order, with a repeat: the last record of x wins, with its documents only.
    const staged = await d.stageAll(stream([rec('q', ['damson']), rec('p', ['elder']), rec('q', ['fig']), rec('r', ['fig', 'grape'])]));
    expect(staged.read).toBe(4);
    const before = await d.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged));
    expect(before).toBe(3);
    await staged.release();
    expect(await d.stats()).toMatchObject({ users: 3, messages: 4 });
    expect(await d.stats()).toMatchObject(await counted(d));
    expect((await d.get('q'))?.history.map((h) => h.text)).toEqual(['fig']);
    await searchAgrees(d, words);
    expect(await found(d, 'damson')).toEqual([]);
    await expect(d.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged))).rejects.toMatchObject({ code: 'E_STORE_ARG' });
    const other = await SqliteDriver.open(freshFile());
    const foreign = await other.stageAll(stream([rec('o', ['x'])]));
    await expect(d.exclusive('all', async (ctx) => ctx.replaceStaged?.(foreign))).rejects.toMatchObject({ code: 'E_STORE_ARG' });
    await foreign.release();
    await other.close();
    await d.close();
  });
});

describe('exclusive sections', () => {
  it('delete counts the users that existed; clear empties the store and reports the count before', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    for (const id of ['a', 'b', 'c']) await d.update(id, () => rec(id, ['apple', 'banana']));
    expect(await d.exclusive({ ids: ['a', 'zz'] }, (ctx) => ctx.delete(['a', 'zz']))).toBe(1);
    expect(await d.exclusive({ ids: ['a'] }, (ctx) => ctx.getMany(['a', 'b', 'zz']))).toEqual([await d.get('b')]);
    expect(await d.stats()).toMatchObject({ users: 2, messages: 4 });
    expect(await d.exclusive('all', (ctx) => ctx.clear())).toBe(2);
    expect(await d.stats()).toEqual({ users: 0, messages: 0, bytes: 0, lastUpdate: null });
    expect(await found(d, 'apple')).toEqual([]);
    await d.update('n', () => rec('n', ['cherry']));
    expect(await d.count()).toBe(1);
    await d.close();
    const again = await SqliteDriver.open(file);
    expect(await again.count()).toBe(1);
    expect(await found(again, 'cherry')).toEqual(['n']);
    await again.close();
  });

  it('a putAll whose stream fails stores none of it', async () => {
    const d = await SqliteDriver.open(freshFile());
    await d.update('a', () => rec('a', ['apple']));
    async function* failing(): AsyncIterable<MemoryRecord> {
      yield rec('b', ['banana']);
      yield rec('a', ['cherry']);
      throw new Error('source broke');
    }
    await expect(d.exclusive('all', (ctx) => ctx.putAll(failing()))).rejects.toThrow('source broke');
    await expect(d.exclusive('all', (ctx) => ctx.replaceAll(failing()))).rejects.toThrow('source broke');
    await expect(d.stageAll(failing())).rejects.toThrow('source broke');
    expect(await d.count()).toBe(1);
    expect((await d.get('a'))?.history[0]?.text).toBe('apple');
    expect(await found(d, 'banana')).toEqual([]);
    await d.close();
  });

  it('a forget leaves no byte of the user in the database file or its WAL', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 60_000 });
    await d.update('keep', () => rec('keep', ['apple']));
    await d.update('gone', () => rec('gone', ['Xylophonistically'], { name: 'Secretname' }));
    await d.update('gone', (cur) => ({ ...(cur as MemoryRecord), history: [...(cur as MemoryRecord).history, { role: 'user', text: 'Quizzaciously', ts: T0 }] }));
    // Words the index saw and was told to forget before the forget: a rename, a replaced message.
    await d.update('gone', () => rec('gone', ['Ephemerally', 'Quizzaciously'], { name: 'Othername' }));
    await d.update('gone', (cur) => ({ ...(cur as MemoryRecord), history: [{ role: 'user', text: 'Laterwords', ts: T0 }] }));
    // A queue longer than one pass of its emptying (2,000), the forgotten user's documents behind it.
    await d.update('filler', () => rec('filler', Array.from({ length: 2100 }, (_, i) => `filler${i}`)));
    await d.update('gone', (cur) => ({ ...(cur as MemoryRecord), history: [...(cur as MemoryRecord).history, { role: 'user', text: 'Finalwords', ts: T0 }] }));
    // A clear's old tables still hold rows for a while: a forget must take them too.
    await d.exclusive('all', (ctx) => ctx.putMany([rec('old', ['Obsoletely'])]));
    expect(await d.exclusive({ ids: ['gone', 'none'] }, async (ctx) => ctx.forget?.(['gone', 'none']))).toBe(1);
    const bytes = readdirSync(path.dirname(file))
      .filter((f) => f.startsWith('memory.db'))
      .map((f) => readFileSync(path.join(path.dirname(file), f)).toString('latin1'))
      .join('');
    // The index keeps words lower-cased.
    const secrets = ['Xylophonistically', 'Quizzaciously', 'Secretname', 'Ephemerally', 'Othername', 'Laterwords', 'Finalwords'];
    for (const secret of secrets) expect(bytes.toLowerCase()).not.toContain(secret.toLowerCase());
    expect(bytes).toContain('apple');
    expect(await found(d, 'apple')).toEqual(['keep']);
    expect(await d.get('gone')).toBeNull();
    await d.close();
    // Nothing of the user comes back when the rest of the queue is applied (close does).
    const after = readdirSync(path.dirname(file))
      .filter((f) => f.startsWith('memory.db'))
      .map((f) => readFileSync(path.join(path.dirname(file), f)).toString('latin1').toLowerCase())
      .join('');
    for (const secret of secrets) expect(after).not.toContain(secret.toLowerCase());
    expect(after).toContain('filler2099');
  });
});

describe('clear, restore and their old tables', () => {
  it('the totals stay the stored ones through clear, restore, putAll, replaceAll, deletes and writes after', async () => {
    const d = await SqliteDriver.open(freshFile());
    await Promise.all(['a', 'b', 'c'].map((id) => d.update(id, () => rec(id, ['apple', 'banana']))));
    expect(await d.stats()).toMatchObject(await counted(d));
    await d.exclusive('all', (ctx) => ctx.clear());
    expect(await d.stats()).toMatchObject(await counted(d));
    await d.update('n', () => rec('n', ['cherry', 'damson', 'elder']));
    expect(await d.stats()).toMatchObject(await counted(d));
    await d.exclusive('all', (ctx) => ctx.replaceAll(stream([rec('r1', ['fig']), rec('r2', ['grape', 'zeta']), rec('r1', ['x', 'y', 'z'])])));
    expect(await d.stats()).toMatchObject({ ...(await counted(d)), users: 2 });
    await d.exclusive('all', (ctx) => ctx.putAll(stream([rec('r2', ['one']), rec('p', ['two', 'three'])])));
    expect(await d.stats()).toMatchObject({ ...(await counted(d)), users: 3 });
    const staged = await d.stageAll(stream([rec('s1', ['a', 'b']), rec('s2', ['c'])]));
    await d.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged));
    await staged.release();
    await d.update('s2', (cur) => ({ ...(cur as MemoryRecord), history: [...(cur as MemoryRecord).history, { role: 'user', text: 'more', ts: T0 }] }));
    await d.exclusive({ ids: ['s1'] }, (ctx) => ctx.delete(['s1']));
    expect(await d.stats()).toMatchObject({ ...(await counted(d)), users: 1, messages: 2 });
    await d.close();
  });

  it('the old tables of a clear and a restore are dropped in the background, and a released staging leaves nothing', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    await Promise.all(Array.from({ length: 50 }, (_, i) => d.update(`u${i}`, () => rec(`u${i}`, ['apple', 'banana']))));
    await d.exclusive('all', (ctx) => ctx.clear());
    expect(await dropped(file)).toEqual([]);
    await d.update('a', () => rec('a', ['cherry']));
    const staged = await d.stageAll(stream([rec('b', ['damson'])]));
    await staged.release();
    expect(await dropped(file)).toEqual([]);
    expect(await d.count()).toBe(1);
    expect(await found(d, 'damson')).toEqual([]);
    const used = await d.stageAll(stream([rec('c', ['elder'])]));
    await d.exclusive('all', async (ctx) => ctx.replaceStaged?.(used));
    await used.release();
    expect(await dropped(file)).toEqual([]);
    expect(await found(d, 'elder')).toEqual(['c']);
    expect(await found(d, 'cherry')).toEqual([]);
    await d.close();
    const again = await SqliteDriver.open(file);
    expect(await again.count()).toBe(1);
    expect(await found(again, 'elder')).toEqual(['c']);
    await again.close();
  });

  it("SQLite's own failure of a bulk write is E_STORE_WRITE and stores nothing; the source's error passes as it is", async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    await d.update('a', () => rec('a', ['apple']));
    const raw = new Database(file);
    raw.exec("CREATE TRIGGER refuse BEFORE INSERT ON users WHEN NEW.user_id = 'no' BEGIN SELECT RAISE(ABORT, 'refused'); END");
    raw.close();
    await expect(d.exclusive('all', (ctx) => ctx.putAll(stream([rec('b', ['x']), rec('no', ['y'])])))).rejects.toMatchObject({
      code: 'E_STORE_WRITE',
      message: expect.stringContaining('SQLite write failed: refused'),
    });
    await expect(d.exclusive('all', (ctx) => ctx.putMany([rec('c', ['x']), rec('no', ['y'])]))).rejects.toThrow('refused');
    expect(await d.count()).toBe(1);
    expect(await d.get('b')).toBeNull();
    expect(await d.get('c')).toBeNull();
    await d.close();
  });
});

describe('scans for backups', () => {
  it('reads every record as stored, in user id order, after a cursor, as text and as byte batches of about 1 MB', async () => {
    const d = await SqliteDriver.open(freshFile());
    const big = 'w'.repeat(6000);
    const all: string[] = [];
    // One group commit: a commit (and its fsync) per user would cost most of this test.
    const writes = [];
    for (let i = 0; i < 300; i++) {
      // Digits sort before any letter: a scan that starts after anything but '' would miss some.
      const id = String(i).padStart(3, '0');
      all.push(id);
      writes.push(d.update(id, () => rec(id, [big, `é${i}`])));
    }
    await Promise.all(writes);
    const text: [string, string][] = [];
    for await (const row of d.scanJson()) text.push(row);
    expect(text.map(([id]) => id)).toEqual(all);
    for (const [id, json] of text) expect(JSON.parse(json)).toEqual(await d.get(id));
    const batches = [];
    for await (const b of d.scanJson().jsonBatches?.() ?? []) batches.push(b);
    // 300 records of ~6 KB: two batches, the first cut just before it would pass 1 MiB.
    expect(batches.length).toBe(2);
    expect(batches[0]?.bytes).toBeLessThanOrEqual(1 << 20);
    expect(batches[0]?.bytes).toBeGreaterThan((1 << 20) - 7000);
    for (const b of batches) expect(b.bytes).toBe(b.data.reduce((n, x) => n + x.length, 0));
    expect(batches.flatMap((b) => b.ids)).toEqual(all);
    expect(batches.flatMap((b) => b.data.map((x) => x.toString('utf8')))).toEqual(text.map(([, j]) => j));
    const after: string[] = [];
    for await (const [id] of d.scanJson({ after: '289' })) after.push(id);
    expect(after).toEqual(all.slice(290));
    const afterBatches = [];
    for await (const b of d.scanJson({ after: '289' }).jsonBatches?.() ?? []) afterBatches.push(...b.ids);
    expect(afterBatches).toEqual(all.slice(290));
    // Each scan closed its reader: the store's own connections (its own, and its checkpoint worker's,
    // started here so that the watch cannot start it mid-count) are all that stay open on the file.
    await d.checkpointNow();
    const dir = path.dirname(d.file);
    const open = openUnder(dir).length;
    for await (const _r of d.scanJson()) break;
    for await (const _b of d.scanJson().jsonBatches?.() ?? []) break;
    for await (const _r of d.scanJson());
    for await (const _b of d.scanJson().jsonBatches?.() ?? []);
    expect(openUnder(dir).length).toBe(open);
    await d.close();
  });

  it('a long scan lets writes commit while it runs (the event loop turns every few hundred rows or each batch)', async () => {
    const d = await SqliteDriver.open(freshFile());
    const writes = [];
    for (let i = 0; i < 1200; i++) {
      const id = `u${String(i).padStart(4, '0')}`;
      writes.push(d.update(id, () => rec(id, ['a'.repeat(2000)])));
    }
    await Promise.all(writes);
    let committed = false;
    let rows = 0;
    for await (const _row of d.scanJson()) {
      if (rows++ === 0) void d.update('w1', () => rec('w1', ['x'])).then(() => (committed = true));
    }
    expect(rows).toBe(1200);
    expect(committed).toBe(true);
    let batchCommitted = false;
    let batches = 0;
    for await (const _b of d.scanJson().jsonBatches?.() ?? []) {
      if (batches++ === 0) void d.update('w2', () => rec('w2', ['x'])).then(() => (batchCommitted = true));
      else expect(batchCommitted).toBe(true);
    }
    expect(batches).toBeGreaterThan(1);
    await d.close();
  });

  it('an empty store scans as nothing, in text and in batches', async () => {
    const d = await SqliteDriver.open(freshFile());
    await d.update('a', () => rec('a', ['x']));
    await d.exclusive('all', (ctx) => ctx.clear());
    const rows = [];
    for await (const r of d.scanJson()) rows.push(r);
    const batches = [];
    for await (const b of d.scanJson().jsonBatches?.() ?? []) batches.push(b);
    expect(rows).toEqual([]);
    expect(batches).toEqual([]);
    await d.close();
  });

  it('a scan is a snapshot: writes that commit while it runs are not in it, and are stored', async () => {
    const d = await SqliteDriver.open(freshFile());
    const writes = [];
    for (let i = 0; i < 1200; i++) {
      const id = `u${String(i).padStart(4, '0')}`;
      writes.push(d.update(id, () => rec(id, ['a'])));
    }
    await Promise.all(writes);
    const seen: string[] = [];
    let wrote = false;
    for await (const [id] of d.scanJson()) {
      seen.push(id);
      if (!wrote) {
        wrote = true;
        await d.update('u0000', () => rec('u0000', ['changed']));
        await d.update('zzz', () => rec('zzz', ['new']));
      }
    }
    expect(seen).toHaveLength(1200);
    // The writes, issued at the first row, committed while the scan went on: it lets the hot path run.
    expect(await d.get('zzz')).not.toBeNull();
    expect(seen).not.toContain('zzz');
    const batchIds: string[] = [];
    let batchWrote = false;
    for await (const b of d.scanJson().jsonBatches?.() ?? []) {
      batchIds.push(...b.ids);
      if (!batchWrote) {
        batchWrote = true;
        await d.update('zzzz', () => rec('zzzz', ['newer']));
      }
    }
    expect(batchIds).toHaveLength(1201);
    expect(await d.count()).toBe(1202);
    await d.close();
  });
});

describe('opening', () => {
  it('read-only: a missing database reads as empty and nothing is created; an existing one reads, refuses writes, and finds', async () => {
    const file = freshFile();
    const ro = await SqliteDriver.open(file, { readOnly: true });
    expect(await ro.count()).toBe(0);
    expect(await ro.get('a')).toBeNull();
    expect(await ro.search('apple', 10)).toEqual([]);
    const rows = [];
    for await (const r of ro.scanJson()) rows.push(r);
    for await (const b of ro.scanJson().jsonBatches?.() ?? []) rows.push(b);
    expect(rows).toEqual([]);
    await ro.close();
    expect(existsSync(file)).toBe(false);
    expect(existsSync(path.dirname(file))).toBe(false);
    const d = await SqliteDriver.open(file, { indexDelayMs: 60_000 });
    await d.update('a', () => rec('a', ['apple']));
    // Queued, not yet indexed: a read-only open still finds it.
    const ro2 = await SqliteDriver.open(file, { readOnly: true });
    expect((await ro2.get('a'))?.history[0]?.text).toBe('apple');
    expect(await found(ro2, 'apple')).toEqual(['a']);
    await expect(ro2.update('b', () => rec('b', ['x']))).rejects.toMatchObject({ code: 'E_STORE_WRITE' });
    await ro2.close();
    await d.close();
  });

  it('refuses, naming the versions, a store of a newer schema, writable or read-only, and leaves it as it is', async () => {
    const file = freshFile();
    await newerSchemaStore(file);
    const before = readFileSync(file);
    await expect(SqliteDriver.open(file, { readOnly: true })).rejects.toMatchObject({ code: 'E_STORE_OPEN', message: expect.stringMatching(/read-only.*version 99/) });
    await expect(SqliteDriver.open(file)).rejects.toMatchObject({ code: 'E_STORE_OPEN', message: expect.stringContaining(file) });
    expect(readFileSync(file).equals(before)).toBe(true);
  });

  it('the indexer applies what writes queued, without being asked', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 0, indexMaxWaitMs: 0 });
    await d.update('a', () => rec('a', ['apple']));
    for (let i = 0; i < 300 && d.pendingIndexWork() > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(d.pendingIndexWork()).toBe(0);
    await d.exclusive({ ids: ['a'] }, (ctx) => ctx.putMany([rec('a', ['banana'])]));
    for (let i = 0; i < 300 && d.pendingIndexWork() > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(d.pendingIndexWork()).toBe(0);
    expect(await found(d, 'banana')).toEqual(['a']);
    expect(await found(d, 'apple')).toEqual([]);
    await d.close();
  });

  it('read-only: a store older than the readable schemas is refused with what to do', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    await d.close();
    const raw = new Database(file);
    raw.pragma('user_version = 2');
    raw.close();
    await expect(SqliteDriver.open(file, { readOnly: true })).rejects.toMatchObject({ code: 'E_STORE_OPEN', message: expect.stringMatching(/version 2, expected 3 to 4 \(open it writable once/) });
  });

  it('a new store file is private (0600) in a private directory (0700)', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    await d.close();
    const { statSync } = await import('node:fs');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
  });

  it('resumes index work left queued by a process that stopped without close', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 60_000 });
    await d.update('a', () => rec('a', ['apple']));
    expect(d.pendingIndexWork()).toBeGreaterThan(0);
    // No close: the queue stays in the file, as after a kill.
    const again = await SqliteDriver.open(file, { indexDelayMs: 0, indexMaxWaitMs: 0 });
    expect(await found(again, 'apple')).toEqual(['a']);
    for (let i = 0; i < 200 && again.pendingIndexWork() > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(again.pendingIndexWork()).toBe(0);
    expect(await found(again, 'apple')).toEqual(['a']);
    await again.close();
  });
});
