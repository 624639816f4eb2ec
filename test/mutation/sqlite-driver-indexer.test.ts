// The SQLite driver's background indexer observed by counts and states, not by the clock (its timers
// armed, runs started, chunks begun: SqliteDriver.indexerCounts), what its queued deletes leave in the
// full-text index itself (read on a connection of its own), forget's WAL retries against a reader on a
// second connection, a checkpoint asked for while close runs, and count/list. Real SQLite files in a
// temp dir. For mutation testing of the lines test/mutation/sqlite-driver-open.test.ts leaves open.
import Database from 'better-sqlite3';
import { existsSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { openUnder } from '../helpers/fd.js';
import { T0, freshFiles, rec, sleep } from '../helpers/sqlite-driver.js';

const freshFile = freshFiles('chatmem-sqlidx-');

/** Polls (bounded) until `cond` holds; false if it never did. */
async function until(cond: () => boolean, limitMs = 10_000): Promise<boolean> {
  const t0 = performance.now();
  while (performance.now() - t0 < limitMs) {
    if (cond()) return true;
    await new Promise((r) => setImmediate(r));
  }
  return cond();
}

/** The rowids the full-text index itself holds for `word`, read on a connection of its own (search_docs not joined). */
function indexed(file: string, word: string): number[] {
  const raw = new Database(file, { readonly: true });
  try {
    return raw.prepare<[string], number>('SELECT rowid FROM search_fts WHERE search_fts MATCH ? ORDER BY rowid').pluck().all(word);
  } finally {
    raw.close();
  }
}

describe('the indexer, counted', () => {
  it('arms one timer for many commits while it is armed, and none once the queue is applied', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 60_000, indexMaxWaitMs: 1e9 });
    for (const id of ['a', 'b', 'c', 'd', 'e']) await d.update(id, () => rec(id, [`${id}word`]));
    expect(d.indexerCounts).toEqual({ armed: 1, runs: 0, chunks: 0 });
    expect(d.indexerState()).toEqual({ armed: true, running: false });
    await d.close();
  });

  it('a commit while a run is under way arms nothing: the run takes its changes; after the run nothing is armed and nothing runs', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 1, indexMaxWaitMs: 1e9 });
    // A backlog of 6,001 changes (a profile, 6,000 messages): chunks of 500 to 2,000 with a pause between.
    let raced = false;
    for (let round = 0; round < 5 && !raced; round++) {
      const id = `big${round}`;
      await d.update(id, () => rec(id, Array.from({ length: 6000 }, (_, i) => `${id}w${i}`)));
      expect(await until(() => d.indexerState().running)).toBe(true);
      const before = { ...d.indexerCounts };
      await d.update(`late${round}`, () => rec(`late${round}`, [`late${round}word`]));
      // The write committed during the run it saw start (the same run, still going): the order this test is about.
      raced = d.indexerState().running && d.indexerCounts.runs === before.runs;
      if (raced) expect(d.indexerCounts.armed).toBe(before.armed);
      expect(await until(() => !d.indexerState().running)).toBe(true);
    }
    expect(raced).toBe(true);
    // The run applied the late write's changes too, and left no timer armed.
    expect(d.pendingIndexWork()).toBe(0);
    expect(d.indexerState()).toEqual({ armed: false, running: false });
    const idle = { ...d.indexerCounts };
    await sleep(200);
    expect(d.indexerCounts).toEqual(idle);
    expect((await d.search('late0word', 10)).map((u) => u.user_id)).toEqual(['late0']);
    await d.close();
  });

  it('a run over exactly one chunk looks once more, finds nothing, and stops', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 1, indexMaxWaitMs: 1e9 });
    // Exactly a batch of 500 (a profile and 499 messages): the first chunk is full, the second empty.
    await d.update('e', () => rec('e', Array.from({ length: 499 }, (_, i) => `e${i}`)));
    expect(await until(() => d.pendingIndexWork() === 0 && !d.indexerState().running)).toBe(true);
    expect(d.indexerCounts).toEqual({ armed: 1, runs: 1, chunks: 2 });
    await sleep(200);
    expect(d.indexerCounts).toEqual({ armed: 1, runs: 1, chunks: 2 });
    await d.close();
  });

  it('a small queue is looked at every indexDelayMs without running until its maximum wait', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 5, indexMaxWaitMs: 1e9 });
    await d.update('a', () => rec('a', ['apple']));
    expect(await until(() => d.indexerCounts.armed >= 3)).toBe(true);
    expect(d.indexerCounts.runs).toBe(0);
    expect(d.pendingIndexWork()).toBe(2);
    await d.close();
  });

  it('a write handed to close is applied by close, which arms no timer', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 60_000, indexMaxWaitMs: 1e9 });
    const written = d.update('a', () => rec('a', ['apple']));
    await d.close();
    await written;
    expect(d.indexerCounts).toEqual({ armed: 0, runs: 0, chunks: 0 });
    const again = await SqliteDriver.open(file, { indexDelayMs: 60_000 });
    expect(again.pendingIndexWork()).toBe(0);
    expect((await again.search('apple', 10)).map((u) => u.user_id)).toEqual(['a']);
    await again.close();
  });

  it('a run interrupted by close begins no chunk after it', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 1, indexMaxWaitMs: 1e9 });
    await d.update('big', () => rec('big', Array.from({ length: 6000 }, (_, i) => `w${i}`)));
    expect(await until(() => d.indexerState().running)).toBe(true);
    const before = d.indexerCounts.chunks;
    await d.close();
    // The run was between two chunks (each is synchronous); its pause (10 ms) ends after close.
    await sleep(100);
    expect(d.indexerCounts.chunks).toBe(before);
  });
});

describe('what queued deletes leave in the full-text index', () => {
  it('a deleted user, a replaced history and a changed profile leave no entry under their old words', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 1e9 });
    await d.update('gone', () => rec('gone', ['zebraword'], { name: 'Oldname' }));
    await d.update('kept', () => rec('kept', ['oldmsgword', 'quokkaword'], { name: 'Firstname' }));
    d.indexChunk(1e6);
    expect(indexed(file, 'zebraword')).toHaveLength(1);
    expect(indexed(file, 'oldmsgword')).toHaveLength(1);
    expect(indexed(file, 'firstname')).toHaveLength(1);
    // Queued: the deletes of every document of 'gone', of 'kept''s replaced messages and old profile.
    await d.exclusive({ ids: ['gone'] }, (ctx) => ctx.delete(['gone']));
    await d.update('kept', () => rec('kept', ['newmsgword'], { name: 'Secondname' }));
    d.indexChunk(1e6);
    expect(d.pendingIndexWork()).toBe(0);
    for (const word of ['zebraword', 'oldname', 'oldmsgword', 'quokkaword', 'firstname']) expect(indexed(file, word), word).toEqual([]);
    expect(indexed(file, 'newmsgword')).toHaveLength(1);
    expect(indexed(file, 'secondname')).toHaveLength(1);
    await d.close();
  });
});

describe('a history changed in its middle', () => {
  it('an entry inserted between two kept ones is indexed, and the kept ones once each', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 1e9 });
    await d.update('r', () => rec('r', ['alphaword', 'gammaword']));
    // The kept entries are the same objects (not an append: the new one is not at the end).
    await d.update('r', (cur) => {
      if (!cur) throw new Error('no record');
      const [first, second] = cur.history;
      if (!first || !second) throw new Error('no history');
      return { ...cur, history: [first, { role: 'user', text: 'betaword', ts: T0, id: 'r-x' }, second] };
    });
    d.indexChunk(1e6);
    for (const word of ['alphaword', 'betaword', 'gammaword']) {
      expect((await d.search(word, 10)).map((u) => u.user_id), word).toEqual(['r']);
      expect(indexed(file, word), word).toHaveLength(1);
    }
    await d.close();
  });
});

describe("forget's WAL retries", () => {
  /** A read transaction on a second connection: its snapshot keeps a TRUNCATE checkpoint from emptying the WAL. */
  function holdWal(file: string): { release: () => void } {
    const reader = new Database(file, { readonly: true });
    reader.prepare('BEGIN').run();
    reader.prepare('SELECT COUNT(*) FROM users').get();
    return {
      release: () => {
        if (!reader.open) return;
        reader.prepare('COMMIT').run();
        reader.close();
      },
    };
  }

  it('gives up after its tries with E_STORE_WRITE naming the store, while a reader holds the WAL', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 1e9 });
    for (const id of ['a', 'gone']) await d.update(id, () => rec(id, [`${id}word`]));
    const reader = holdWal(file);
    let pauses = 0;
    d.forgetWal = {
      tries: 3,
      pause: async () => {
        // A limit that is never reached would retry forever: stop it here, with another error.
        if (++pauses > 10) throw new Error('forget kept retrying');
      },
    };
    const forgot = d.exclusive({ ids: ['gone'] }, async (ctx) => ctx.forget?.(['gone']));
    await expect(forgot).rejects.toMatchObject({ code: 'E_STORE_WRITE' });
    await expect(forgot).rejects.toThrow(`cannot empty the WAL of ${path.resolve(file)}: a reader holds it`);
    // The first try and three retries, a pause before each retry.
    expect(pauses).toBe(3);
    reader.release();
    await d.close();
  });

  it('succeeds when the reader lets go before the last try, and the WAL is empty', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 1e9 });
    for (const id of ['a', 'gone']) await d.update(id, () => rec(id, [`${id}word`]));
    const reader = holdWal(file);
    let pauses = 0;
    d.forgetWal = {
      tries: 3,
      pause: async () => {
        if (++pauses === 3) reader.release();
      },
    };
    expect(await d.exclusive({ ids: ['gone'] }, async (ctx) => ctx.forget?.(['gone']))).toBe(1);
    expect(pauses).toBe(3);
    expect(statSync(`${file}-wal`).size).toBe(0);
    expect(await d.get('gone')).toBeNull();
    // Its words are out of the index itself (the index keeps trigrams, so a byte search of the file for
    // the word would not see them): forget's own deletes, written without the queue, carry the right text.
    expect(indexed(file, 'goneword')).toEqual([]);
    expect(indexed(file, 'aword')).toHaveLength(1);
    await d.close();
  });
});

describe('checkpoints and close', () => {
  it('a checkpoint asked for while close runs starts no worker: nothing is left open on the store', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 1e9 });
    await d.update('a', () => rec('a', ['apple']));
    const closed = d.close();
    const asked = d.checkpointNow();
    await closed;
    await asked;
    // A worker started here would hold its own connection to the file, which close no longer closes.
    await sleep(100);
    expect(openUnder(path.dirname(file))).toEqual([]);
    expect(existsSync(file)).toBe(true);
  });
});

describe('count and list', () => {
  it('count is the number of users; list pages them by id from the start, ids sorting before letters included', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 1e9 });
    expect(await d.count()).toBe(0);
    expect(await d.list({ cursor: null, limit: 10 })).toEqual([]);
    for (const id of ['bob', '+15550001', 'Alice', '0042']) await d.update(id, () => rec(id, ['hi', 'there'], { name: `n-${id}` }));
    expect(await d.count()).toBe(4);
    const all = await d.list({ cursor: null, limit: 10 });
    expect(all.map((u) => u.user_id)).toEqual(['+15550001', '0042', 'Alice', 'bob']);
    expect(all[0]).toMatchObject({ user_id: '+15550001', name: 'n-+15550001', messages: 2 });
    expect((await d.list({ cursor: null, limit: 2 })).map((u) => u.user_id)).toEqual(['+15550001', '0042']);
    expect((await d.list({ cursor: '0042', limit: 10 })).map((u) => u.user_id)).toEqual(['Alice', 'bob']);
    await d.exclusive({ ids: ['bob'] }, (ctx) => ctx.delete(['bob']));
    expect(await d.count()).toBe(3);
    await d.close();
  });
});
