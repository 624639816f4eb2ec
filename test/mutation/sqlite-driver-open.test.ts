// Fast checks of src/store/sqlite/driver.ts's promises beside test/mutation/sqlite-driver.test.ts, for
// mutation testing of the lines that file leaves open: what an open names and keeps as its cause, which
// schema versions a read-only open takes, when the background indexer runs (a small queue waits for its
// batch or its oldest change's maximum wait, a batch of 500 goes at once, in chunks, whatever its
// size), what every exclusive-section call stores and returns, the search connection, and that staging
// a bulk write gives the event loop a turn every 500 records. Real SQLite files in a temp dir.
import Database from 'better-sqlite3';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { MemoryRecord } from '../../src/record.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { openUnder } from '../helpers/fd.js';
import { T0, freshFiles, newerSchemaStore, rec, sleep } from '../helpers/sqlite-driver.js';

const freshFile = freshFiles('chatmem-sqlopen-');

async function* stream(records: Iterable<MemoryRecord>): AsyncIterable<MemoryRecord> {
  for (const r of records) yield r;
}

async function found(driver: SqliteDriver, word: string): Promise<string[]> {
  return (await driver.search(word, 100)).map((u) => u.user_id).sort();
}

/** Polls (bounded) until the queue is empty; returns the milliseconds since `since`, or null if it never emptied. */
async function emptiedAfter(d: SqliteDriver, since: number, limitMs = 5000): Promise<number | null> {
  while (performance.now() - since < limitMs) {
    if (d.pendingIndexWork() === 0) return performance.now() - since;
    await sleep(5);
  }
  return null;
}

describe('opening', () => {
  it('names the store in its url and kind', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    expect(d.kind).toBe('sqlite');
    expect(d.url).toBe(`sqlite:${path.resolve(file)}`);
    await d.close();
    const ro = await SqliteDriver.open(freshFile(), { readOnly: true });
    expect(ro.kind).toBe('sqlite');
    expect(ro.url).toMatch(/^sqlite:\//);
    await ro.close();
  });

  it("a refused open keeps SQLite's error as its cause; a newer store gets no upgrade hint", async () => {
    const file = freshFile();
    await newerSchemaStore(file);
    const ro = SqliteDriver.open(file, { readOnly: true });
    await expect(ro).rejects.toMatchObject({ code: 'E_STORE_OPEN', cause: expect.any(Error) });
    await expect(ro).rejects.toThrow(/^cannot open SQLite store .* read-only: schema version 99, expected 3 to 4$/);
    const rw = SqliteDriver.open(file);
    await expect(rw).rejects.toMatchObject({ code: 'E_STORE_OPEN', cause: expect.any(Error) });
    await expect(rw).rejects.toThrow(`cannot open SQLite store ${path.resolve(file)}: `);
  });

  it('read-only takes every readable version: the oldest (3) and the current (4)', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    await d.update('a', () => rec('a', ['apple'], { name: 'Ikan' }));
    await d.close();
    const ro = await SqliteDriver.open(file, { readOnly: true });
    expect(await ro.count()).toBe(1);
    await ro.close();
    const raw = new Database(file);
    raw.exec('DROP TABLE search_pending; PRAGMA user_version = 3;');
    raw.close();
    const ro3 = await SqliteDriver.open(file, { readOnly: true });
    expect((await ro3.get('a'))?.history[0]?.text).toBe('apple');
    expect(await found(ro3, 'apple')).toEqual(['a']);
    expect(await ro3.stats()).toMatchObject({ users: 1, messages: 1, lastUpdate: T0 });
    await ro3.close();
  });

  it('an empty read-only stand-in has empty stats', async () => {
    const ro = await SqliteDriver.open(freshFile(), { readOnly: true });
    expect(await ro.stats()).toEqual({ users: 0, messages: 0, bytes: 0, lastUpdate: null });
    expect(await ro.search('apple', 10)).toEqual([]);
    await ro.close();
  });
});

describe('the background indexer: when it runs', () => {
  it('a small queue waits for its oldest change to wait indexMaxWaitMs, then goes', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 10, indexMaxWaitMs: 600 });
    const t0 = performance.now();
    await d.update('a', () => rec('a', ['apple']));
    await sleep(300);
    // Many looks of the indexer later (every 10 ms), the two changes still wait.
    expect(d.pendingIndexWork()).toBe(2);
    // A later change does not restart the wait: it counts from the oldest (600 ms after the first
    // write, not after this one at ~300 ms). Timers fire late under load, never early.
    await d.update('b', () => rec('b', ['banana']));
    const took = await emptiedAfter(d, t0);
    expect(took).not.toBeNull();
    expect(took).toBeGreaterThanOrEqual(595);
    expect(took).toBeLessThan(850);
    expect(await found(d, 'banana')).toEqual(['b']);
    await d.close();
  });

  it('by default a small queue waits a second, looked at every 100 ms', async () => {
    // Without the options: the maximum wait is INDEX_MAX_WAIT_MS (1 s).
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 10 });
    await d.update('a', () => rec('a', ['apple']));
    await sleep(300);
    expect(d.pendingIndexWork()).toBe(2);
    await d.close();
    // Without indexDelayMs: the first look is INDEX_DELAY_MS (100 ms) after the commit, never sooner.
    const e = await SqliteDriver.open(freshFile(), { indexMaxWaitMs: 0 });
    const t0 = performance.now();
    await e.update('a', () => rec('a', ['apple']));
    const took = await emptiedAfter(e, t0);
    expect(took).not.toBeNull();
    expect(took).toBeGreaterThanOrEqual(95);
    await e.close();
  });

  it('a batch of 500 queued changes goes at once, whatever the maximum wait, in chunks to the last one', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 10, indexMaxWaitMs: 1e9 });
    // Exactly a batch: a profile and 499 messages.
    await d.update('e', () => rec('e', Array.from({ length: 499 }, (_, i) => `e${i}`)));
    expect(await emptiedAfter(d, performance.now())).not.toBeNull();
    // 1,201 changes: a profile and 1,200 messages, more than two chunks of 500.
    const words = Array.from({ length: 1200 }, (_, i) => `w${i}`);
    await d.update('a', () => rec('a', words));
    expect(await emptiedAfter(d, performance.now())).not.toBeNull();
    expect(await found(d, 'w1199')).toEqual(['a']);
    // Back to waiting: the next small change stays queued.
    await d.update('b', () => rec('b', ['banana']));
    await sleep(200);
    expect(d.pendingIndexWork()).toBe(2);
    await d.close();
  });

  it('after a run, the next write starts the indexer again; a maximum wait of 0 is kept, not the default second', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 5, indexMaxWaitMs: 0 });
    for (const id of ['a', 'b', 'c']) {
      const t0 = performance.now();
      await d.update(id, () => rec(id, [`${id}word`]));
      const took = await emptiedAfter(d, t0);
      expect(took, id).not.toBeNull();
      expect(took, id).toBeLessThan(700);
    }
    await d.exclusive({ ids: ['a'] }, (ctx) => ctx.delete(['a']));
    expect(await emptiedAfter(d, performance.now())).not.toBeNull();
    expect(await found(d, 'aword')).toEqual([]);
    await d.close();
  });

  it('a long first delay is kept: with no maximum wait, nothing runs before it', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 60_000, indexMaxWaitMs: 0 });
    await d.update('a', () => rec('a', ['apple']));
    await sleep(300);
    expect(d.pendingIndexWork()).toBe(2);
    await d.close();
  });

  it('a store opened with nothing queued does not count a batch: a small write after it waits', async () => {
    const file = freshFile();
    const first = await SqliteDriver.open(file);
    await first.close();
    const d = await SqliteDriver.open(file, { indexDelayMs: 150, indexMaxWaitMs: 1e9 });
    await d.update('a', () => rec('a', ['apple']));
    await sleep(400);
    expect(d.pendingIndexWork()).toBe(2);
    await d.close();
  });

  it('a read-only open never indexes', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 1e9 });
    await d.update('a', () => rec('a', ['apple']));
    const ro = await SqliteDriver.open(file, { readOnly: true, indexDelayMs: 0, indexMaxWaitMs: 0 });
    await sleep(50);
    expect(d.pendingIndexWork()).toBe(2);
    expect(await found(ro, 'apple')).toEqual(['a']);
    await ro.close();
    await d.close();
  });
});

describe('staging a bulk write', () => {
  /** The longest run of records `write` pulls from its stream without the event loop turning, and how many turns it took. */
  async function runs(
    write: (records: AsyncIterable<MemoryRecord>) => Promise<unknown>,
    n: number,
    make: (i: number) => MemoryRecord = (i) => rec(`u${String(i).padStart(5, '0')}`, [`m${i}`]),
  ): Promise<{ longest: number; turns: number; lengths: number[] }> {
    let turns = 0;
    let done = false;
    const tick = (): void => {
      turns++;
      if (!done) setImmediate(tick);
    };
    const seen: number[] = [];
    async function* source(): AsyncIterable<MemoryRecord> {
      for (let i = 0; i < n; i++) {
        seen.push(turns);
        yield make(i);
      }
    }
    setImmediate(tick);
    try {
      await write(source());
    } finally {
      done = true;
    }
    const lengths: number[] = [];
    for (let i = 0; i < seen.length; i++) {
      if (i > 0 && seen[i] === seen[i - 1]) lengths[lengths.length - 1]! += 1;
      else lengths.push(1);
    }
    return { longest: Math.max(...lengths), turns: lengths.length, lengths };
  }

  it('putAll and replaceAll give the event loop a turn every 500 records at most, and store every record', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 1e9 });
    const put = await runs((s) => d.exclusive('all', (ctx) => ctx.putAll(s)), 2000);
    expect(put.longest).toBeLessThanOrEqual(500);
    expect(put.turns).toBeGreaterThanOrEqual(4);
    expect(await d.count()).toBe(2000);
    const replaced = await runs((s) => d.exclusive('all', (ctx) => ctx.replaceAll(s)), 1500);
    expect(replaced.longest).toBeLessThanOrEqual(500);
    expect(await d.count()).toBe(1500);
    expect(await found(d, 'm1499')).toEqual(['u01499']);
    await d.close();
  });

  it('a batch that took long halves the next (500, then 250), and fast batches grow back to 500', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 1e9 });
    const broke = new Error('enough');
    // 500 records of 100 KB (50 MB: far over 2 × DROP_TURN_MS to stage on any machine), then small ones.
    const big = 'x'.repeat(100_000);
    const make = (i: number): MemoryRecord => {
      if (i === 3000) throw broke;
      return rec(`u${String(i).padStart(5, '0')}`, [i < 500 ? big : `m${i}`]);
    };
    let failure: unknown = null;
    // The source fails at its end: only the staging is measured, and nothing is stored.
    const { lengths } = await runs(
      (s) =>
        d.exclusive('all', (ctx) => ctx.putAll(s)).catch((e: unknown) => {
          failure = e;
        }),
      3001,
      make,
    );
    expect(failure).toBe(broke);
    expect(lengths.slice(0, 2)).toEqual([500, 250]);
    expect(Math.max(...lengths)).toBeLessThanOrEqual(500);
    // Somewhere among the small records' batches (each a few ms at most), one doubled back to 500.
    expect(lengths.slice(2, -1)).toContain(500);
    expect(await d.count()).toBe(0);
    await d.close();
  });
});

describe('exclusive sections: every call', () => {
  it('getMany, scanJson, count and putAndDelete inside a section answer from the store', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 1e9 });
    await d.update('a', () => rec('a', ['apple']));
    await d.update('b', () => rec('b', ['banana']));
    const seen = await d.exclusive({ ids: ['a', 'b', 'c'] }, async (ctx) => {
      const rows: string[] = [];
      for await (const [id] of ctx.scanJson({ after: 'a' })) rows.push(id);
      return { rows, count: await ctx.count(), many: (await ctx.getMany(['b', 'zz', 'a'])).map((r) => r.user_id) };
    });
    expect(seen).toEqual({ rows: ['b'], count: 2, many: ['b', 'a'] });
    await d.exclusive({ ids: ['a', 'c'] }, async (ctx) => ctx.putAndDelete?.([rec('c', ['cherry'])], ['a']));
    expect(await d.get('a')).toBeNull();
    expect(await found(d, 'cherry')).toEqual(['c']);
    expect(await found(d, 'apple')).toEqual([]);
    await d.close();
  });

  it("SQLite's own failure of a clear, a restore and a staged restore is E_STORE_WRITE naming the operation, with SQLite's error as cause; the store is as it was", async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    await d.update('a', () => rec('a', ['apple']));
    const staged = await d.stageAll(stream([rec('s', ['staged'])]));
    // Every change of the totals refused: a clear and both restores set them.
    const raw = new Database(file);
    raw.exec("CREATE TRIGGER refuse BEFORE UPDATE ON totals BEGIN SELECT RAISE(ABORT, 'refused'); END");
    raw.close();
    const failure = async (run: Promise<unknown>, what: string, reason = 'refused'): Promise<void> => {
      const err = await run.then(
        () => null,
        (e: unknown) => e as Error & { code?: string; cause?: unknown },
      );
      expect(err?.code).toBe('E_STORE_WRITE');
      expect(err?.message).toMatch(new RegExp(`^SQLite ${what} failed: ${reason}$`));
      expect(err?.cause).toBeInstanceOf(Database.SqliteError);
    };
    await failure(d.exclusive('all', (ctx) => ctx.clear()), 'clear');
    await failure(d.exclusive('all', (ctx) => ctx.replaceAll(stream([rec('r', ['restored'])]))), 'restore');
    await failure(d.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged)), 'restore');
    await staged.release();
    const raw2 = new Database(file);
    raw2.exec('DROP TRIGGER refuse');
    raw2.close();
    expect(await d.count()).toBe(1);
    expect((await d.get('a'))?.history[0]?.text).toBe('apple');
    expect(await found(d, 'restored')).toEqual([]);
    // A record SQLite refuses (no user id) fails a staging the same way.
    const bad = { ...rec('x', ['x']), user_id: null } as unknown as MemoryRecord;
    await failure(d.stageAll(stream([bad])), 'restore', 'NOT NULL constraint failed: users_new_\\w+\\.user_id');
    await d.close();
  });

  it("a failing source's own error passes through a bulk write as it is", async () => {
    const d = await SqliteDriver.open(freshFile());
    const broke = new Error('source broke');
    async function* failing(): AsyncIterable<MemoryRecord> {
      yield rec('b', ['banana']);
      throw broke;
    }
    await expect(d.exclusive('all', (ctx) => ctx.putAll(failing()))).rejects.toBe(broke);
    await expect(d.exclusive('all', (ctx) => ctx.replaceAll(failing()))).rejects.toBe(broke);
    await expect(d.stageAll(failing())).rejects.toBe(broke);
    expect(await d.count()).toBe(0);
    await d.close();
  });
});

describe('search and scans', () => {
  it('searches share one read-only connection, closed with the store', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    await d.update('a', () => rec('a', ['apple']));
    const dir = path.dirname(file);
    expect(await found(d, 'apple')).toEqual(['a']);
    const after1 = openUnder(dir).length;
    for (let i = 0; i < 5; i++) expect(await found(d, 'apple')).toEqual(['a']);
    expect(openUnder(dir).length).toBe(after1);
    await d.close();
    expect(openUnder(dir)).toEqual([]);
  });

  it('a write commits while a search pauses between its turns (the search has a connection of its own)', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 1e9 });
    await d.exclusive('all', (ctx) => ctx.putMany(Array.from({ length: 4000 }, (_, i) => rec(`u${String(i).padStart(5, '0')}`, [`common word${i}`]))));
    d.indexChunk(1e6);
    const [hits, written] = await Promise.all([d.search('common', 5000), d.update('w', () => rec('w', ['written']))]);
    expect(hits).toHaveLength(4000);
    expect(written.user_id).toBe('w');
    expect(await d.get('w')).not.toBeNull();
    await d.close();
  });

  it('a batch of byte scans ends at 1 MiB exactly', async () => {
    const d = await SqliteDriver.open(freshFile());
    const base = rec('a', ['']);
    const pad = (1 << 20) - Buffer.byteLength(JSON.stringify(base));
    await d.update('a', () => rec('a', ['x'.repeat(pad)]));
    await d.update('b', () => rec('b', ['y']));
    const sizes: number[][] = [];
    for await (const b of d.scanJson().jsonBatches?.() ?? []) sizes.push(b.data.map((x) => x.length));
    expect(sizes).toEqual([[1 << 20], [Buffer.byteLength(JSON.stringify(rec('b', ['y'])))]]);
    await d.close();
  });

  it('a batch of byte scans takes records up to exactly 1 MiB together', async () => {
    const d = await SqliteDriver.open(freshFile());
    const size = (id: string, text: string): number => Buffer.byteLength(JSON.stringify(rec(id, [text])));
    await d.update('a', () => rec('a', ['x'.repeat(1000)]));
    const pad = (1 << 20) - size('a', 'x'.repeat(1000)) - size('b', '');
    await d.update('b', () => rec('b', ['y'.repeat(pad)]));
    await d.update('c', () => rec('c', ['z']));
    const batches: string[][] = [];
    for await (const b of d.scanJson().jsonBatches?.() ?? []) batches.push(b.ids);
    expect(batches).toEqual([['a', 'b'], ['c']]);
    await d.close();
  });

  it('a batch of byte scans stays within 1 MiB however the record sizes change, holds a larger record alone, and at most 1,024 records', async () => {
    const d = await SqliteDriver.open(freshFile());
    const ids: string[] = [];
    const writes: Promise<unknown>[] = [];
    const put = (id: string, text: string): void => {
      ids.push(id);
      writes.push(d.update(id, () => rec(id, [text])));
    };
    // 1,500 small records, then 40 of ~100 KB (a row count sized from the small ones would take all
    // 40 at once: 4 MB), one of 1.5 MiB, and a small one after it.
    for (let i = 0; i < 1500; i++) put(`a${String(i).padStart(4, '0')}`, 's');
    for (let i = 0; i < 40; i++) put(`b${String(i).padStart(2, '0')}`, 'm'.repeat(100_000));
    put('c', 'L'.repeat(1.5 * (1 << 20)));
    put('d', 'e');
    await Promise.all(writes);
    const batches: { ids: string[]; sizes: number[]; bytes: number; text: string[] }[] = [];
    for await (const b of d.scanJson().jsonBatches?.() ?? []) {
      batches.push({ ids: b.ids, sizes: b.data.map((x) => x.length), bytes: b.bytes, text: b.data.map((x) => x.toString('utf8')) });
    }
    expect(batches.flatMap((b) => b.ids)).toEqual(ids);
    for (const b of batches) {
      expect(b.ids.length).toBeLessThanOrEqual(1024);
      expect(b.bytes).toBe(b.sizes.reduce((n, x) => n + x, 0));
      if (b.ids.length > 1) expect(b.bytes).toBeLessThanOrEqual(1 << 20);
    }
    expect(batches[0]?.ids.length).toBe(1024);
    expect(batches.find((b) => b.ids.includes('c'))?.ids).toEqual(['c']);
    expect(batches.at(-1)?.ids).toEqual(['d']);
    // The bytes of each record are its stored text, cut at the right places.
    const text: string[] = [];
    for await (const [, json] of d.scanJson()) text.push(json);
    expect(batches.flatMap((b) => b.text)).toEqual(text);
    await d.close();
  });
});

describe('forget', () => {
  /** Every byte of the store's files, lower-cased (the index keeps words lower-cased). */
  const bytesOf = (file: string): string =>
    readdirSync(path.dirname(file))
      .filter((f) => f.startsWith('memory.db'))
      .map((f) => readFileSync(path.join(path.dirname(file), f)).toString('latin1').toLowerCase())
      .join('');

  it('leaves nothing of the user: not an indexed word, not its queued deletes, not an older version freed before', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 1e9 });
    await d.update('keep', () => rec('keep', ['apple']));
    // An older version of the row large enough for overflow pages: replaced (freed without
    // secure_delete), its pages keep their bytes until VACUUM rebuilds the file.
    await d.update('gone', () => rec('gone', [`Oldversionword ${'q'.repeat(30_000)}`]));
    await d.update('gone', () => rec('gone', ['Indexedword', 'Replacedword']));
    // Applied to the index (its own segment), then replaced: the 'delete's wait in the queue.
    d.indexChunk(1e6);
    await d.update('gone', () => rec('gone', ['Laterword']));
    expect(await d.exclusive({ ids: ['gone'] }, async (ctx) => ctx.forget?.(['gone']))).toBe(1);
    const bytes = bytesOf(file);
    for (const secret of ['oldversionword', 'qqqqqqqqqqqqqqqq', 'indexedword', 'replacedword', 'laterword']) expect(bytes, secret).not.toContain(secret);
    expect(bytes).toContain('apple');
    expect(await found(d, 'apple')).toEqual(['keep']);
    await d.close();
  });

  it('secure_delete is for the forget alone: a later replaced row is freed as usual (zeroing costs every write)', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 1e9 });
    await d.update('gone', () => rec('gone', ['goneword']));
    expect(await d.exclusive({ ids: ['gone'] }, async (ctx) => ctx.forget?.(['gone']))).toBe(1);
    // Overflow pages of a large row, freed by the replace: zeroed only with secure_delete on.
    await d.update('later', () => rec('later', [`Freedlater ${'k'.repeat(30_000)}`]));
    await d.update('later', () => rec('later', ['small']));
    await d.close();
    expect(readFileSync(file).toString('latin1')).toContain('k'.repeat(1000));
  });

  it("after a forget, close still waits for another process's reader to empty the WAL (the busy timeout is back)", async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 1e9 });
    await d.update('gone', () => rec('gone', ['goneword']));
    expect(await d.exclusive({ ids: ['gone'] }, async (ctx) => ctx.forget?.(['gone']))).toBe(1);
    await d.update('a', () => rec('a', ['after']));
    expect(statSync(`${file}-wal`).size).toBeGreaterThan(0);
    // Another process reads for 400 ms: close's TRUNCATE checkpoint waits for it (busy timeout 10 s).
    const holder = spawn(
      process.execPath,
      [
        '-e',
        "const D = require('better-sqlite3'); const db = new D(process.argv[1], { readonly: true }); db.prepare('BEGIN').run(); db.prepare('SELECT COUNT(*) FROM users').get(); console.log('held'); setTimeout(() => { db.prepare('COMMIT').run(); db.close(); }, 400);",
        file,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const exited = new Promise<number | null>((resolve) => holder.on('exit', resolve));
    await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
    await d.close();
    expect(await exited).toBe(0);
    // Emptied by the checkpoint (or removed by the last close): no commit is left only in the WAL.
    expect(existsSync(`${file}-wal`) ? statSync(`${file}-wal`).size : 0).toBe(0);
  });

  it('waits for a scan that holds the WAL without holding the event loop, then empties the WAL', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 1e9 });
    for (const id of ['a', 'b', 'gone']) await d.update(id, () => rec(id, [`${id}word`]));
    // A backup's scan, paused after its first row: its read transaction keeps the WAL from emptying.
    const scan = d.scanJson()[Symbol.asyncIterator]();
    expect((await scan.next()).value?.[0]).toBe('a');
    let gap = 0;
    let last = performance.now();
    const ticker = setInterval(() => {
      const now = performance.now();
      gap = Math.max(gap, now - last);
      last = now;
    }, 10);
    const ended = sleep(300).then(async () => {
      const ids: string[] = [];
      for (let r = await scan.next(); !r.done; r = await scan.next()) ids.push(r.value[0]);
      return ids;
    });
    const n = await d.exclusive({ ids: ['gone'] }, async (ctx) => ctx.forget?.(['gone']));
    clearInterval(ticker);
    expect(n).toBe(1);
    // The scan is a snapshot from before the forget.
    expect(await ended).toEqual(['b', 'gone']);
    expect(gap).toBeLessThan(1000);
    expect(statSync(`${file}-wal`).size).toBe(0);
    expect(bytesOf(file)).not.toContain('goneword');
    await d.close();
  }, 30_000);
});
