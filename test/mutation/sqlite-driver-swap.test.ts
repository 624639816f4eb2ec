// Fast checks of src/store/sqlite/driver.ts's whole-store paths and background work, for mutation
// testing (test/mutation/sqlite-driver.test.ts covers the hot path, scans and opens): a staged
// restore's build (repeated users, several batches, the totals), releasing and swapping stagings, the
// background drop of a clear's or a restore's old tables, a restore's index queue worked off without
// another write, putAll past one read chunk, the WAL checkpoints (the watch, a failed worker), and
// what close finishes and leaves open. Real SQLite files in a temp dir.
import Database from 'better-sqlite3';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { MemoryRecord } from '../../src/record.js';
import { nextChunkScale } from '../../src/store/sqlite/driver.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { GENERATION } from '../../src/store/sqlite/schema.js';
import { openUnder } from '../helpers/fd.js';
import { T0, counted, freshFiles, rec, sleep } from '../helpers/sqlite-driver.js';

const freshFile = freshFiles('chatmem-sqlswap-');

async function* stream(records: MemoryRecord[]): AsyncIterable<MemoryRecord> {
  for (const r of records) yield r;
}

async function found(driver: SqliteDriver, word: string): Promise<string[]> {
  return (await driver.search(word, 1000)).map((u) => u.user_id).sort();
}

/** Tables of a clear's or a restore's generations still in the file. */
function generations(file: string): string[] {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare<[], string>("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all().filter((n) => GENERATION.test(n));
  } finally {
    db.close();
  }
}

/** Every table in the file (shadow tables of the index included). */
function tables(file: string): string[] {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare<[], string>("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").pluck().all();
  } finally {
    db.close();
  }
}

/** Waits (bounded) until the background drop has removed every old table. */
async function dropped(file: string): Promise<string[]> {
  for (let i = 0; i < 500 && generations(file).length > 0; i++) await sleep(10);
  return generations(file);
}

/** Waits (bounded) until `cond` holds; returns whether it did. */
async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await sleep(10);
  }
  return true;
}

describe("a staged restore's build", () => {
  it('keeps the last record of a user repeated back to back or out of order, with only its documents, and the totals stored', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 60_000 });
    await d.update('old', () => rec('old', ['apple']));
    // b twice in a row (an id equal to the highest so far), a again after higher ids.
    const staged = await d.stageAll(stream([rec('a', ['banana', 'cherry']), rec('b', ['damson']), rec('b', ['elder', 'fig', 'grape']), rec('c', ['kiwi']), rec('a', ['lime'])]));
    expect(staged.read).toBe(5);
    expect(await d.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged))).toBe(3);
    await staged.release();
    expect(await d.stats()).toMatchObject({ users: 3, messages: 5 });
    expect(await d.stats()).toMatchObject(await counted(d));
    expect((await d.get('b'))?.history.map((h) => h.text)).toEqual(['elder', 'fig', 'grape']);
    expect((await d.get('a'))?.history.map((h) => h.text)).toEqual(['lime']);
    for (const w of ['apple', 'banana', 'cherry', 'damson']) expect(await found(d, w), w).toEqual([]);
    expect(await found(d, 'fig')).toEqual(['b']);
    expect(await found(d, 'lime')).toEqual(['a']);
    // The queue holds exactly the survivors' documents: three profiles and five messages.
    expect(d.pendingIndexWork()).toBe(8);
    while (d.indexChunk(3) > 0);
    expect(await found(d, 'elder')).toEqual(['b']);
    expect(await found(d, 'damson')).toEqual([]);
    await d.close();
  });

  it('builds a stream of many batches whole, in order, searchable', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 60_000 });
    const big = 'w'.repeat(1000);
    // From 8 records a batch, doubling at most: a dozen batches or more.
    const records = Array.from({ length: 1500 }, (_, i) => rec(`u${String(i).padStart(4, '0')}`, [`word${i}`, big]));
    const staged = await d.stageAll(stream(records));
    expect(staged.read).toBe(1500);
    await d.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged));
    await staged.release();
    expect(await d.stats()).toMatchObject({ ...(await counted(d)), users: 1500, messages: 3000 });
    expect(await found(d, 'word0')).toEqual(['u0000']);
    expect(await found(d, 'word1499')).toEqual(['u1499']);
    expect(await found(d, 'word700')).toEqual(['u0700']);
    await d.close();
  });
});

describe("a staged restore's build and the WAL", () => {
  it('the build is checkpointed into the database file by the time stageAll returns (a WAL under the watch mark)', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 60_000 });
    const empty = statSync(file).size;
    const staged = await d.stageAll(stream(Array.from({ length: 400 }, (_, i) => rec(`u${String(i).padStart(4, '0')}`, [`word${i} ${'v'.repeat(1000)}`]))));
    // Under the watch's 4 MB: only the build's own checkpoints can have moved these pages.
    expect(statSync(`${file}-wal`).size).toBeLessThan(4000 * 1024);
    expect(statSync(file).size).toBeGreaterThan(empty + 400 * 1000);
    expect(statSync(file).size).toBeGreaterThan(pagesBytes(file) / 2);
    await staged.release();
    await d.close();
  });
});

describe('the build lets the store go on', () => {
  it('a write issued at the start of a long build commits while the build reads on', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 60_000 });
    let committed = false;
    let committedBy: number | null = null;
    async function* source(): AsyncIterable<MemoryRecord> {
      for (let i = 0; i < 1500; i++) {
        if (i === 1) void d.update('w', () => rec('w', ['x'])).then(() => (committed = true));
        if (i === 1200) committedBy = committed ? i : null;
        yield rec(`u${String(i).padStart(4, '0')}`, [`word${i}`]);
      }
    }
    const staged = await d.stageAll(source());
    // The build commits in batches with a turn of the event loop between: the write's group commit ran in one.
    expect(committedBy).toBe(1200);
    expect(await d.get('w')).not.toBeNull();
    await staged.release();
    await d.close();
  });

  it("the build's WAL is checkpointed while the build runs, not only at its end", async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 60_000 });
    // The worker started before, so that its start-up is not what the wait below measures.
    await d.checkpointNow();
    const empty = statSync(file).size;
    let grew = false;
    async function* source(): AsyncIterable<MemoryRecord> {
      for (let i = 0; i < 400; i++) {
        // A slow source: paused half-way, the pages written so far reach the database file meanwhile
        // (the WAL stays under the watch's mark, so only the build's own checkpoints move them).
        if (i === 300) grew = await until(() => statSync(file).size > empty, 3000);
        yield rec(`u${String(i).padStart(4, '0')}`, [`word${i} ${'v'.repeat(1000)}`]);
      }
    }
    const staged = await d.stageAll(source());
    expect(statSync(`${file}-wal`).size).toBeLessThan(4000 * 1024);
    expect(grew).toBe(true);
    await staged.release();
    await d.close();
  });

  it('the next chunk of background work is halved after a slow one, doubled after a fast one, within 1/64 and 4', () => {
    // DROP_TURN_MS is 10: over 20 ms is slow, under 5 ms fast.
    expect(nextChunkScale(1, 20.5)).toBe(0.5);
    expect(nextChunkScale(1, 20)).toBe(1);
    expect(nextChunkScale(1, 10)).toBe(1);
    expect(nextChunkScale(1, 5)).toBe(1);
    expect(nextChunkScale(1, 4.9)).toBe(2);
    expect(nextChunkScale(1 / 16, 0)).toBe(1 / 8);
    expect(nextChunkScale(2, 0)).toBe(4);
    expect(nextChunkScale(4, 0)).toBe(4);
    expect(nextChunkScale(1 / 32, 100)).toBe(1 / 64);
    expect(nextChunkScale(1 / 64, 100)).toBe(1 / 64);
    expect(nextChunkScale(0.5, 21)).toBe(0.25);
  });
});

describe('stagings, swaps and the old tables', () => {
  it('two stagings at once: releasing one leaves the other whole to swap in, and nothing of either stays behind', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    await d.update('a', () => rec('a', ['apple']));
    const live = tables(file);
    const one = await d.stageAll(stream([rec('x', ['banana'])]));
    const two = await d.stageAll(stream([rec('y', ['cherry']), rec('z', ['damson'])]));
    await one.release();
    // Releasing twice, or after the other was swapped, changes nothing.
    await one.release();
    expect(await d.exclusive('all', async (ctx) => ctx.replaceStaged?.(two))).toBe(2);
    await two.release();
    // The refusals say which mistake it was.
    await expect(d.exclusive('all', async (ctx) => ctx.replaceStaged?.(two))).rejects.toMatchObject({ code: 'E_STORE_ARG', message: expect.stringContaining('already swapped in') });
    const foreign = { read: 0, release: async () => undefined };
    await expect(d.exclusive('all', async (ctx) => ctx.replaceStaged?.(foreign))).rejects.toMatchObject({ code: 'E_STORE_ARG', message: expect.stringContaining('not staged by this store') });
    expect((await d.list({ cursor: null, limit: 10 })).map((u) => u.user_id)).toEqual(['y', 'z']);
    expect(await found(d, 'cherry')).toEqual(['y']);
    expect(await found(d, 'banana')).toEqual([]);
    expect(await found(d, 'apple')).toEqual([]);
    expect(await dropped(file)).toEqual([]);
    // Nothing under another name either: a set-aside table renamed wrongly would never be dropped.
    expect(tables(file)).toEqual(live);
    expect(await d.stats()).toMatchObject({ ...(await counted(d)), users: 2 });
    await d.close();
  });

  it('a staging released after close is left for the next open, which drops it', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    const staged = await d.stageAll(stream([rec('x', ['banana'])]));
    await d.close();
    await staged.release();
    expect(generations(file).length).toBeGreaterThan(0);
    const again = await SqliteDriver.open(file);
    expect(generations(file)).toEqual([]);
    expect(await again.count()).toBe(0);
    await again.close();
  });

  it('each of several clears has its old tables dropped in the background, a large table chunk by chunk', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 60_000 });
    for (let round = 0; round < 3; round++) {
      // Users, documents, a queue and an index with rows: each kind of old table has rows to delete.
      await Promise.all(Array.from({ length: 300 }, (_, i) => d.update(`u${i}`, () => rec(`u${i}`, [`r${round}w${i}`, 'common']))));
      d.indexChunk(400);
      expect(await d.exclusive('all', (ctx) => ctx.clear())).toBe(300);
      expect(await d.count()).toBe(0);
      expect(await dropped(file)).toEqual([]);
    }
    await d.update('n', () => rec('n', ['fresh']));
    expect(await found(d, 'common')).toEqual([]);
    expect(await found(d, 'fresh')).toEqual(['n']);
    await d.close();
  });

  it("the drop empties each kind of old table in several chunks, and a write issued meanwhile commits before it ends", async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 60_000 });
    await Promise.all(Array.from({ length: 2000 }, (_, i) => d.update(`u${i}`, () => rec(`u${i}`, [`w${i}`]))));
    // Indexed (rows in the index's shadow tables), then more queued (rows in the queue).
    while (d.indexChunk(5000) > 0);
    await Promise.all(Array.from({ length: 1000 }, (_, i) => d.update(`u${i}`, (cur) => ({ ...(cur as MemoryRecord), history: [...(cur as MemoryRecord).history, { role: 'user', text: `x${i}`, ts: T0 }] }))));
    const raw = new Database(file, { readonly: true });
    const rows = (table: string): number | null => {
      try {
        return raw.prepare(`SELECT COUNT(*) FROM ${table}`).pluck().get() as number;
      } catch {
        return null; // Dropped meanwhile.
      }
    };
    await d.exclusive('all', (ctx) => ctx.clear());
    const old = raw.prepare<[], string>("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%_old_%'").pluck().all().filter((n) => GENERATION.test(n));
    expect(old).toHaveLength(4);
    // Each table's rows (the index's: its document sizes), and whether it was seen part-emptied.
    const counted = (n: string): string => (n.startsWith('search_fts') ? `${n}_docsize` : n);
    const full = new Map(old.map((n) => [n, rows(counted(n)) as number]));
    for (const [n, c] of full) expect(c, n).toBeGreaterThan(400);
    const partly = new Set<string>();
    let committed: number | null = null;
    void d.update('during', () => rec('during', ['y'])).then(() => (committed = generations(file).length));
    for (let i = 0; i < 20_000 && generations(file).length > 0; i++) {
      for (const n of old) {
        const c = rows(counted(n));
        if (c !== null && c > 0 && c < (full.get(n) as number)) partly.add(n);
      }
      await new Promise((r) => setImmediate(r));
    }
    raw.close();
    expect(generations(file)).toEqual([]);
    expect([...partly].sort()).toEqual([...old].sort());
    // The write did not wait for the drop: old tables were still there when it committed.
    expect(committed).toBeGreaterThan(0);
    expect(await d.count()).toBe(1);
    await d.close();
  });

  it('a forget right after a clear takes the cleared users out of the old tables too', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 60_000 });
    // Enough users that the background drop has not reached the last one when the forget runs.
    await Promise.all(Array.from({ length: 2000 }, (_, i) => d.update(`u${String(i).padStart(4, '0')}`, () => rec(`u${String(i).padStart(4, '0')}`, ['filler']))));
    await d.update('zlast', () => rec('zlast', ['Obsoletely'], { name: 'Clearedname' }));
    await d.exclusive('all', (ctx) => ctx.clear());
    expect(generations(file).length).toBeGreaterThan(0);
    expect(await d.exclusive({ ids: ['none'] }, async (ctx) => ctx.forget?.(['none']))).toBe(0);
    expect(generations(file)).toEqual([]);
    const bytes = readdirSync(path.dirname(file))
      .filter((f) => f.startsWith('memory.db'))
      .map((f) => readFileSync(path.join(path.dirname(file), f)).toString('latin1').toLowerCase())
      .join('');
    expect(bytes).not.toContain('obsoletely');
    expect(bytes).not.toContain('clearedname');
    await d.close();
  });

  it('after a clear, the connection commits with synchronous = FULL again (the drop runs its chunks with NORMAL)', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    await Promise.all(Array.from({ length: 200 }, (_, i) => d.update(`u${i}`, () => rec(`u${i}`, ['apple']))));
    await d.exclusive('all', (ctx) => ctx.clear());
    expect(await dropped(file)).toEqual([]);
    const staged = await d.stageAll(stream(Array.from({ length: 200 }, (_, i) => rec(`s${i}`, ['banana']))));
    await d.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged));
    // A power loss cannot be shown in a test; the setting that makes an acknowledged write survive one can.
    // Stryker-visible only through the private connection: the store has no other way to tell it.
    const db = (d as unknown as { db: Database.Database }).db;
    expect(db.pragma('synchronous', { simple: true })).toBe(2);
    await d.close();
  });

  it("a restore's queued documents are indexed in the background without another write", async () => {
    const d = await SqliteDriver.open(freshFile(), { indexMaxWaitMs: 60_000 });
    // A write before: its few queued changes alone would wait for a batch (or the long maximum wait).
    await d.update('w', () => rec('w', ['apple']));
    const staged = await d.stageAll(stream(Array.from({ length: 40 }, (_, i) => rec(`r${i}`, [`word${i}`]))));
    await d.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged));
    await staged.release();
    expect(d.pendingIndexWork()).toBeGreaterThan(0);
    expect(await until(() => d.pendingIndexWork() === 0, 5000)).toBe(true);
    expect(await found(d, 'word39')).toEqual(['r39']);
    await d.close();
  });
});

describe('putAll past one read chunk', () => {
  it('stores every staged record, the last of a repeated user, with its documents', async () => {
    const d = await SqliteDriver.open(freshFile(), { indexDelayMs: 60_000 });
    await d.update('keep', () => rec('keep', ['apple']));
    const records = Array.from({ length: 1200 }, (_, i) => rec(`p${String(i).padStart(4, '0')}`, [`word${i}`]));
    records.push(rec('p0000', ['last']));
    const read = await d.exclusive('all', (ctx) => ctx.putAll(stream(records)));
    expect(read).toBe(1201);
    expect(await d.count()).toBe(1201);
    expect(await d.stats()).toMatchObject(await counted(d));
    expect(await found(d, 'word1199')).toEqual(['p1199']);
    expect(await found(d, 'word600')).toEqual(['p0600']);
    expect(await found(d, 'last')).toEqual(['p0000']);
    expect(await found(d, 'word0')).toEqual([]);
    expect(await found(d, 'apple')).toEqual(['keep']);
    // The staging table (temp, on the store's own connection) went with the putAll.
    const db = (d as unknown as { db: Database.Database }).db;
    expect(db.prepare("SELECT name FROM temp.sqlite_master WHERE type = 'table'").pluck().all()).toEqual([]);
    await d.close();
  });
});

/** The driver's checkpoint worker, read to stop it behind the store's back (as a crashed worker). */
const workerOf = (d: SqliteDriver): { close: () => Promise<void> } | null => (d as unknown as { walWorker: { close: () => Promise<void> } | null }).walWorker;

/** Bytes of the database file that a checkpoint of everything would leave: its pages as read through the WAL. */
function pagesBytes(file: string): number {
  const raw = new Database(file, { readonly: true });
  try {
    return (raw.pragma('page_count', { simple: true }) as number) * (raw.pragma('page_size', { simple: true }) as number);
  } finally {
    raw.close();
  }
}

describe('WAL checkpoints', () => {
  it('the watch leaves a small WAL alone and checkpoints one past the mark without being asked; it keeps no process alive', async () => {
    const file = freshFile();
    const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    const d = await SqliteDriver.open(file, { indexDelayMs: 60_000 });
    // The watch's interval is unref'd: a process with nothing else to do may exit.
    expect(timers()).toBe(before);
    await d.update('small', () => rec('small', ['apple']));
    const small = statSync(file).size;
    // Three looks of the watch: a WAL under the mark stays where it is.
    await sleep(700);
    expect(statSync(file).size).toBe(small);
    const text = 'y'.repeat(4000);
    // ~5 MB in one group commit, then nothing: only the watch can move it.
    await Promise.all(Array.from({ length: 1300 }, (_, i) => d.update(`u${i}`, () => rec(`u${i}`, [`${i} ${text}`]))));
    expect(statSync(file).size).toBe(small);
    expect(await until(() => statSync(file).size >= 5 * 1024 * 1024, 5000)).toBe(true);
    await d.close();
  });

  it('a checkpoint worker that stopped: the checkpoint is done on the store connection, and the next one starts a new worker', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file, { indexDelayMs: 60_000 });
    await d.checkpointNow();
    const first = workerOf(d);
    expect(first).not.toBeNull();
    await first?.close();
    await Promise.all(Array.from({ length: 50 }, (_, i) => d.update(`u${i}`, () => rec(`u${i}`, ['z'.repeat(4000)]))));
    expect(statSync(file).size).toBeLessThan(pagesBytes(file));
    await d.checkpointNow();
    expect(statSync(file).size).toBe(pagesBytes(file));
    // The stopped worker is not asked again: the next checkpoint starts one that answers.
    await d.update('more', () => rec('more', ['z'.repeat(40_000)]));
    await d.checkpointNow();
    const second = workerOf(d);
    expect(second).not.toBeNull();
    expect(second).not.toBe(first);
    expect(statSync(file).size).toBe(pagesBytes(file));
    await d.close();
  });

  it('an in-memory stand-in (read-only, no file) checkpoints nothing, creates nothing, and closes', async () => {
    const file = freshFile();
    const ro = await SqliteDriver.open(file, { readOnly: true });
    await ro.checkpointNow();
    expect(workerOf(ro)).toBeNull();
    await ro.close();
    expect(() => statSync(file)).toThrow();
  });
});

describe('close', () => {
  it('stores a write issued just before it, applies the index queue, empties the WAL and leaves no descriptor open', async () => {
    const file = freshFile();
    const dir = path.dirname(file);
    const d = await SqliteDriver.open(file, { indexDelayMs: 60_000 });
    await d.update('a', () => rec('a', ['apple']));
    // The search reader and the checkpoint worker each hold the file open until close.
    expect(await found(d, 'apple')).toEqual(['a']);
    await d.checkpointNow();
    // Another process's connection, idle: the WAL is not removed at close, only emptied.
    const other = new Database(file, { readonly: true });
    expect(other.prepare('SELECT COUNT(*) AS n FROM users').get()).toEqual({ n: 1 });
    const last = d.update('b', () => rec('b', ['banana']));
    await d.close();
    await expect(last).resolves.toMatchObject({ user_id: 'b' });
    expect(statSync(`${file}-wal`).size).toBe(0);
    expect(other.prepare('SELECT COUNT(*) AS n FROM search_pending').get()).toEqual({ n: 0 });
    expect(other.prepare('SELECT user_id FROM users ORDER BY user_id').pluck().all()).toEqual(['a', 'b']);
    other.close();
    // A checkpoint asked for after close (a build's, the watch's) opens nothing again.
    await d.checkpointNow();
    expect(openUnder(dir)).toEqual([]);
    const again = await SqliteDriver.open(file);
    expect(await found(again, 'banana')).toEqual(['b']);
    await again.close();
  });

  it('a write still queued when close is called (no checkpoint worker to wait for) is stored, not refused', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    const last = d.update('b', () => rec('b', ['banana']));
    await d.close();
    await expect(last).resolves.toMatchObject({ user_id: 'b' });
    const again = await SqliteDriver.open(file);
    expect((await again.get('b'))?.history[0]?.text).toBe('banana');
    await again.close();
  });

  it('a clear just before close: the drop stops, and the next open finishes it', async () => {
    const file = freshFile();
    const d = await SqliteDriver.open(file);
    await Promise.all(Array.from({ length: 300 }, (_, i) => d.update(`u${i}`, () => rec(`u${i}`, ['apple']))));
    await d.exclusive('all', (ctx) => ctx.clear());
    await d.close();
    await sleep(50);
    const again = await SqliteDriver.open(file);
    expect(generations(file)).toEqual([]);
    expect(await again.count()).toBe(0);
    await again.close();
  });
});
