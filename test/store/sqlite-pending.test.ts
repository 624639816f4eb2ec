import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareIds, newRecord } from '../../src/record.js';
import { openStore } from '../../src/store/open.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { SqliteSearch } from '../../src/store/sqlite/search.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { tempDir } from '../helpers/tmp.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const TS = '2026-01-01T00:00:00.000Z';
// With U+212A KELVIN SIGN (lower-cases to "k") and U+0130 (to "i̇"): LIKE alone would miss them.
const WORDS = ['gosong', 'bocor', 'berisik', 'mati total', 'Kipas', '\u212Aulkas', 'TAR\u0130F'];
/** The background indexer held back: the tests step it by hand. */
const HELD = { indexDelayMs: 1e9 };
const SLOW = { indexMs: 0, walkMs: 0, firstWindow: 1, maxWindow: 4, maxParsedWindow: 2 };

/** The expected answer, from the stored records (not through search). */
async function expected(store: Store, query: string): Promise<string[]> {
  const q = query.toLowerCase();
  const ids: string[] = [];
  for await (const r of store.scan()) {
    const fields = [r.user_id, r.name, r.address, r.product, ...r.summary_context, ...r.history.map((h) => h.text)];
    if (fields.some((f) => typeof f === 'string' && f.toLowerCase().includes(q))) ids.push(r.user_id);
  }
  return ids.sort(compareIds);
}

function pendingRows(file: string): { adds: number; deletes: number } {
  const db = new Database(file, { readonly: true });
  try {
    const n = (op: number): number => db.prepare<[number], number>('SELECT COUNT(*) FROM search_pending WHERE op = ?').pluck().get(op) ?? 0;
    return { adds: n(0), deletes: n(1) };
  } finally {
    db.close();
  }
}

const id = (i: number): string => `u${String(i).padStart(4, '0')}`;

describe('SQLite search with index work queued', () => {
  let t: Awaited<ReturnType<typeof tempDir>>;
  let file: string;
  let driver: SqliteDriver;
  let store: Store;
  let reader: Database.Database;
  let round = 0;

  /** A round of appends: messages that go to the queue, some pushing the oldest out of a full history. */
  async function appendRound(): Promise<void> {
    round++;
    await Promise.all(
      Array.from({ length: 150 }, (_, k) => {
        const i = (k * 7 + round * 13) % 200;
        return store.appendHistory(id(i), { role: 'user', text: `${WORDS[(k + round) % WORDS.length]} putaran-${round} nomor-${k}` });
      }),
    );
  }

  beforeAll(async () => {
    t = await tempDir();
    file = path.join(t.dir, 'memory.db');
    driver = await SqliteDriver.open(file, HELD);
    store = createStore(driver, { historyCap: 4 });
    // Imported users: their documents go to the index directly.
    await store.exclusive('all', (ctx) =>
      ctx.putMany(Array.from({ length: 600 }, (_, i) => ({ ...newRecord(id(i), TS), name: `Pelanggan ${i % 7 === 0 ? 'Istimewa' : 'Biasa'}`, history: [{ role: 'user' as const, text: `awal ${WORDS[i % WORDS.length]}`, ts: TS }] }))),
    );
    // Rounds of appends, partly indexed: documents sit in the index and in the queue, and 'delete's of
    // both kinds (of an indexed message, of one still queued) wait in the queue.
    for (let r = 0; r < 6; r++) {
      await appendRound();
      driver.indexChunk(97);
    }
    reader = new Database(file, { readonly: true });
  }, 120_000);
  afterAll(async () => {
    reader.close();
    await store.close();
    await t.cleanup();
  });

  it('holds queued adds and deletes before the searches start', () => {
    const p = pendingRows(file);
    expect(p.adds).toBeGreaterThan(300);
    expect(p.deletes).toBeGreaterThan(50);
    expect(driver.pendingIndexWork()).toBe(p.adds + p.deletes);
  });

  const QUERIES = ['gosong', 'GOSONG putaran-7', 'mati total', 'kipas', 'putaran-9 nomor-3', 'awal bocor', 'istimewa', 'nomor-149', 'putaran-1 nomor', 'tidak-ada', 'kulkas', 'tari\u0307f', '"kutip"'];

  it.each(QUERIES)('%s: exactly the first matching users while the indexer moves documents between turns', async (q) => {
    await appendRound();
    const want = await expected(store, q);
    const searches = [
      (limit: number) => store.search(q, { limit }),
      (limit: number) => new SqliteSearch(reader, SLOW).search(q, limit),
    ];
    for (const search of searches) {
      for (const limit of [5000, 1, 7, 100]) {
        // The indexer applies a few queued changes at every turn of the event loop the search leaves.
        let done = false;
        const indexer = (async () => {
          while (!done) {
            driver.indexChunk(3);
            await new Promise((r) => setImmediate(r));
          }
        })();
        const got = await search(limit);
        done = true;
        await indexer;
        expect(got.map((u) => u.user_id)).toEqual(want.slice(0, limit));
      }
    }
  });

  it('counts answers cut by the limit and answers found only in queued documents', async () => {
    await appendRound();
    expect((await expected(store, 'gosong')).length).toBeGreaterThan(100);
    const q = `putaran-${round} nomor-1`;
    const want = await expected(store, q);
    expect(want.length).toBeGreaterThan(0);
    // The newest round is all queued: the index alone knows none of it.
    const inIndex = reader
      .prepare<[string], string>('SELECT d.user_id FROM search_fts JOIN search_docs AS d ON d.id = search_fts.rowid WHERE search_fts MATCH ?')
      .pluck()
      .all(`"${q}"`);
    expect(inIndex).toEqual([]);
    expect((await new SqliteSearch(reader, SLOW).search(q, 5000)).map((u) => u.user_id)).toEqual(want);
  });

  it('the background indexer empties the queue in batches and search agrees after', async () => {
    await appendRound();
    const want = await expected(store, 'gosong');
    const fast = await SqliteDriver.open(path.join(t.dir, 'other.db'), { indexDelayMs: 20 });
    const other = createStore(fast, { historyCap: 6 });
    try {
      for (let i = 0; i < 400; i++) await other.appendHistory(id(i % 50), { role: 'user', text: `gosong ${i}` });
      for (let i = 0; i < 200 && fast.pendingIndexWork() > 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(fast.pendingIndexWork()).toBe(0);
      expect((await other.search('gosong', { limit: 100 })).map((u) => u.user_id)).toEqual(await expected(other, 'gosong'));
      expect((await other.search('gosong 399')).map((u) => u.user_id)).toEqual([id(399 % 50)]);
    } finally {
      await other.close();
    }
    expect((await store.search('gosong', { limit: 5000 })).map((u) => u.user_id)).toEqual(want);
  });
});

describe('the background indexer', () => {
  const settle = async (driver: SqliteDriver, until: (n: number) => boolean): Promise<number> => {
    for (let i = 0; i < 500 && !until(driver.pendingIndexWork()); i++) await new Promise((r) => setTimeout(r, 20));
    return driver.pendingIndexWork();
  };

  it('waits for a batch: a few queued changes stay queued, a batch of 500 is applied, in chunks, whatever its size', async () => {
    const t = await tempDir();
    try {
      const driver = await SqliteDriver.open(path.join(t.dir, 'memory.db'), { indexDelayMs: 10, indexMaxWaitMs: 1e9 });
      const store = createStore(driver);
      for (let i = 0; i < 5; i++) await store.appendHistory(id(i), { role: 'user', text: `sedikit ${i}` });
      await new Promise((r) => setTimeout(r, 300));
      // Several looks of the indexer later: 10 changes (a profile and a message per user) wait for more.
      expect(driver.pendingIndexWork()).toBe(10);
      await Promise.all(Array.from({ length: 1200 }, (_, i) => store.appendHistory(id(i), { role: 'user', text: `banyak ${i}` })));
      // 1,195 new users (a profile and a message each) and 5 more messages: more than two chunks of 500.
      expect(await settle(driver, (n) => n === 0)).toBe(0);
      expect((await store.search('sedikit 3')).map((u) => u.user_id)).toEqual([id(3)]);
      expect((await store.search('banyak 1199')).map((u) => u.user_id)).toEqual([id(1199)]);
      await store.close();
    } finally {
      await t.cleanup();
    }
  }, 60_000);

  it('applies a small batch once its oldest change has waited long enough', async () => {
    const t = await tempDir();
    try {
      const driver = await SqliteDriver.open(path.join(t.dir, 'memory.db'), { indexDelayMs: 10, indexMaxWaitMs: 1500 });
      const store = createStore(driver);
      await store.appendHistory('a', { role: 'user', text: 'sebentar' });
      await new Promise((r) => setTimeout(r, 300));
      // The wait counts from the oldest queued change, not from the process's start.
      expect(driver.pendingIndexWork()).toBe(2);
      expect(await settle(driver, (n) => n === 0)).toBe(0);
      expect((await store.search('sebentar')).map((u) => u.user_id)).toEqual(['a']);
      await store.close();
    } finally {
      await t.cleanup();
    }
  });
});

describe('SQLite index queue across clear, restore, forget, close and a kill', () => {
  it('search is right at once after a big full restore, while the indexer works through its queue', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const driver = await SqliteDriver.open(file, HELD);
      const store = createStore(driver);
      for (let i = 0; i < 50; i++) await store.appendHistory(`old-${i}`, { role: 'user', text: `zebrafish ${WORDS[i % WORDS.length]}` });
      const rec = (i: number, word: string) => ({
        ...newRecord(id(i), TS),
        name: `Pelanggan ${i % 11 === 0 ? 'Istimewa' : 'Biasa'}`,
        history: Array.from({ length: 1 + (i % 5) }, (_, k) => ({ role: 'user' as const, text: `${word} ${WORDS[(i + k) % WORDS.length]} nomor-${i}-${k}`, ts: TS })),
      });
      const staged = await store.stage(
        (async function* () {
          for (let i = 0; i < 3000; i++) yield rec(i, 'axolotl');
          // Repeated users, out of order: the last record wins, with only its documents.
          for (const i of [5, 1234, 77]) yield rec(i, 'quokka');
        })(),
      );
      await store.exclusive('all', async (ctx) => ctx.replaceStaged!(staged!));
      await staged!.release();
      const queued = pendingRows(file);
      expect(queued.deletes).toBe(0);
      expect(queued.adds).toBe(3000 + Array.from({ length: 3000 }, (_, i) => 1 + (i % 5)).reduce((a, b) => a + b, 0));
      const stats = await store.stats();
      let messages = 0;
      let bytes = 0;
      for await (const [, json] of store.scanJson()) {
        messages += (JSON.parse(json) as { history: unknown[] }).history.length;
        bytes += Buffer.byteLength(json);
      }
      expect(stats).toMatchObject({ users: 3000, messages, bytes });
      const queries = ['axolotl', 'quokka', 'zebrafish', 'istimewa', 'kipas', 'kulkas', 'tari\u0307f', 'nomor-1234-', 'BOCOR nomor-5', 'mati total'];
      const check = async (): Promise<void> => {
        for (const q of queries) {
          const want = await expected(store, q);
          for (const limit of [1, 7, 100, 5000]) {
            expect((await store.search(q, { limit })).map((u) => u.user_id), `${q} limit ${limit}`).toEqual(want.slice(0, limit));
          }
        }
      };
      // Right after the swap (all queued), half-way through the queue, and once it is applied.
      await check();
      for (let k = 0; k < 30; k++) driver.indexChunk(191);
      await check();
      while (driver.indexChunk(500) > 0);
      expect(pendingRows(file)).toEqual({ adds: 0, deletes: 0 });
      await check();
      await store.close();
    } finally {
      await t.cleanup();
    }
  }, 120_000);

  it('a clear and a restore take the queued work of the old tables with them', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const driver = await SqliteDriver.open(file, HELD);
      const store = createStore(driver);
      for (let i = 0; i < 20; i++) await store.appendHistory(id(i), { role: 'user', text: `zebrafish ${i}` });
      expect(driver.pendingIndexWork()).toBeGreaterThan(0);
      await store.clear();
      expect(driver.pendingIndexWork()).toBe(0);
      expect(await store.search('zebrafish')).toEqual([]);
      await store.appendHistory('late', { role: 'user', text: 'narwhal' });
      const staged = await store.stage(
        (async function* () {
          for (let i = 0; i < 30; i++) yield { ...newRecord(id(i), TS), history: [{ role: 'user' as const, text: `axolotl ${i}`, ts: TS }] };
        })(),
      );
      await store.appendHistory('gone', { role: 'user', text: 'narwhal again' });
      expect(driver.pendingIndexWork()).toBeGreaterThan(0);
      await store.exclusive('all', async (ctx) => ctx.replaceStaged!(staged!));
      await staged!.release();
      // The old queue went with the old tables; the restored documents (30 profiles, 30 messages) are
      // queued for the indexer, not indexed in the build.
      expect(pendingRows(file)).toEqual({ adds: 60, deletes: 0 });
      expect(await store.search('narwhal')).toEqual([]);
      expect((await store.search('axolotl 7')).map((u) => u.user_id)).toEqual([id(7)]);
      await store.appendHistory(id(3), { role: 'user', text: 'capybara' });
      expect((await store.search('capybara')).map((u) => u.user_id)).toEqual([id(3)]);
      // A delete queues its 'delete's behind the restored 'add's instead of applying the queue first.
      await store.delete([id(7)]);
      expect(pendingRows(file)).toEqual({ adds: 61, deletes: 2 });
      expect(await store.search('axolotl 7')).toEqual([]);
      while (driver.indexChunk(7) > 0);
      expect((await store.search('axolotl', { limit: 100 })).map((u) => u.user_id)).toEqual(await expected(store, 'axolotl'));
      expect((await store.search('capybara')).map((u) => u.user_id)).toEqual([id(3)]);
      // The old generation's queue is dropped with its tables in the background.
      const left = (): string[] => {
        const db = new Database(file, { readonly: true });
        try {
          return db.prepare<[], string>("SELECT name FROM sqlite_master WHERE name LIKE 'search_pending_%'").pluck().all();
        } finally {
          db.close();
        }
      };
      for (let i = 0; i < 200 && left().length > 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(left()).toEqual([]);
      await store.close();
    } finally {
      await t.cleanup();
    }
  });

  it("a forget applies the queue first: nothing of the person's queued messages stays in the file", async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const driver = await SqliteDriver.open(file, HELD);
      const store = createStore(driver);
      for (let i = 0; i < 50; i++) await store.appendHistory(id(i), { role: 'user', text: `pesan biasa ${i}` });
      for (let k = 0; k < 5; k++) await store.appendHistory('victim', { role: 'user', text: `Quetzalcoatlus rahasia ${k}` });
      await store.put('victim2', { name: 'Hatzegopteryx Thambema' });
      expect(pendingRows(file).adds).toBeGreaterThan(55);
      await store.exclusive({ ids: ['victim', 'victim2'] }, async (ctx) => ctx.forget!(['victim', 'victim2']));
      expect(driver.pendingIndexWork()).toBe(0);
      expect((await store.search('pesan biasa 42')).map((u) => u.user_id)).toEqual([id(42)]);
      expect(await store.search('quetzalcoatlus')).toEqual([]);
      await store.close();
      const bytes = readFileSync(file);
      expect(bytes.includes('Quetzalcoatlus')).toBe(false);
      expect(bytes.includes('Hatzegopteryx')).toBe(false);
    } finally {
      await t.cleanup();
    }
  });

  it('close applies what is queued; a read-only open still finds queued documents', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const driver = await SqliteDriver.open(file, HELD);
      const store = createStore(driver);
      await store.appendHistory('a', { role: 'user', text: 'manatee one' });
      const ro = await openStore(`sqlite:${file}`, { readOnly: true });
      expect(pendingRows(file).adds).toBe(2);
      expect((await ro.search('manatee')).map((u) => u.user_id)).toEqual(['a']);
      await store.close();
      expect(pendingRows(file)).toEqual({ adds: 0, deletes: 0 });
      expect((await ro.search('manatee')).map((u) => u.user_id)).toEqual(['a']);
      await ro.close();
    } finally {
      await t.cleanup();
    }
  });

  it('a kill with queued work: after reopen search is complete, and the indexer resumes the queue', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const { signal, out } = await new Promise<{ signal: NodeJS.Signals | null; out: string }>((resolve, reject) => {
        const child = spawn(process.execPath, [path.join(ROOT, 'test/fixtures/sqlite-pending-kill.mjs'), file], { stdio: ['ignore', 'pipe', 'pipe'] });
        let text = '';
        child.stdout.on('data', (d: Buffer) => (text += d.toString()));
        child.stderr.on('data', (d: Buffer) => (text += d.toString()));
        child.on('error', reject);
        child.on('exit', (_code, sig) => resolve({ signal: sig, out: text }));
      });
      expect(signal).toBe('SIGKILL');
      const acked = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as { acked: number; pending: number };
      expect(acked.acked).toBe(300);
      expect(acked.pending).toBeGreaterThan(100);
      expect(pendingRows(file).adds).toBeGreaterThan(100);
      const driver = await SqliteDriver.open(file, HELD);
      const store = createStore(driver);
      const want = await expected(store, 'dugong');
      expect(want).toHaveLength(100);
      expect((await store.search('dugong', { limit: 1000 })).map((u) => u.user_id)).toEqual(want);
      expect((await store.search('dugong 299')).map((u) => u.user_id)).toEqual([id(299 % 100)]);
      await store.close();
      // A normal open resumes the queue in the background.
      const resumed = await SqliteDriver.open(file, { indexDelayMs: 10 });
      const again = createStore(resumed);
      for (let i = 0; i < 200 && resumed.pendingIndexWork() > 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(resumed.pendingIndexWork()).toBe(0);
      expect((await again.search('dugong', { limit: 1000 })).map((u) => u.user_id)).toEqual(want);
      await again.close();
    } finally {
      await t.cleanup();
    }
  }, 60_000);
});

describe('sqlite schema 3 to 4', () => {
  it('a version 3 store opens read-only before any writable open (a CLI read after an upgrade): reads and search work, nothing is changed', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const first = await openStore(`sqlite:${file}`);
      await first.exclusive('all', (ctx) => ctx.putMany([{ ...newRecord('old', TS), name: 'Ikan Pari', history: [{ role: 'user', text: 'sudah lama', ts: TS }] }]));
      await first.close();
      const db = new Database(file);
      db.exec('DROP TABLE search_pending; PRAGMA user_version = 3;');
      db.close();
      const store = await openStore(`sqlite:${file}`, { readOnly: true });
      try {
        expect((await store.list()).items.map((u) => u.user_id)).toEqual(['old']);
        expect((await store.search('ikan pari')).map((u) => u.user_id)).toEqual(['old']);
        expect((await store.search('sudah lama')).map((u) => u.user_id)).toEqual(['old']);
        expect((await store.stats()).users).toBe(1);
      } finally {
        await store.close();
      }
      const raw = new Database(file, { readonly: true });
      try {
        expect(raw.pragma('user_version', { simple: true })).toBe(3);
        expect(raw.prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 'search_pending'").get()).toEqual({ n: 0 });
      } finally {
        raw.close();
      }
      // Older than schema 3 (no index at all): refused with what to do.
      const old = new Database(file);
      old.exec('PRAGMA user_version = 2;');
      old.close();
      await expect(openStore(`sqlite:${file}`, { readOnly: true })).rejects.toMatchObject({ code: 'E_STORE_OPEN', message: expect.stringContaining('open it writable once') });
    } finally {
      await t.cleanup();
    }
  });

  it('migrates a version 3 store: adds the queue, keeps the index, and appends queue their documents', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const first = await openStore(`sqlite:${file}`);
      await first.exclusive('all', (ctx) => ctx.putMany([{ ...newRecord('old', TS), name: 'Ikan Pari', history: [{ role: 'user', text: 'sudah lama', ts: TS }] }]));
      await first.close();
      // What schema 3 was: this version's tables without the queue.
      const db = new Database(file);
      db.exec('DROP TABLE search_pending; PRAGMA user_version = 3;');
      db.close();
      const driver = await SqliteDriver.open(file, HELD);
      const store = createStore(driver);
      const raw = new Database(file, { readonly: true });
      try {
        expect(raw.pragma('user_version', { simple: true })).toBe(4);
        expect(raw.prepare('SELECT COUNT(*) AS n FROM search_pending').get()).toEqual({ n: 0 });
      } finally {
        raw.close();
      }
      expect((await store.search('ikan pari')).map((u) => u.user_id)).toEqual(['old']);
      await store.appendHistory('old', { role: 'user', text: 'pesan baru' });
      expect(pendingRows(file).adds).toBe(1);
      expect((await store.search('pesan baru')).map((u) => u.user_id)).toEqual(['old']);
      expect((await store.search('sudah lama')).map((u) => u.user_id)).toEqual(['old']);
      await store.close();
    } finally {
      await t.cleanup();
    }
  });
});
