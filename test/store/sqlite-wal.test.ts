import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { FTS_CRISISMERGE } from '../../src/store/sqlite/schema.js';
import { createStore } from '../../src/store/store.js';
import { ROOT, tempDir } from '../helpers/tmp.js';

const crisisMerge = (file: string): unknown => {
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare("SELECT v FROM search_fts_config WHERE k = 'crisismerge'").pluck().get();
  } finally {
    db.close();
  }
};

describe('SQLite: WAL checkpoints and index merges off the request path', () => {
  let t: Awaited<ReturnType<typeof tempDir>>;
  let file: string;
  beforeEach(async () => {
    t = await tempDir();
    file = path.join(t.dir, 'memory.db');
  });
  afterEach(() => t.cleanup());

  it('copies the WAL into the database in the background while the store stays open and idle', async () => {
    const store = createStore(await SqliteDriver.open(file));
    const text = 'y'.repeat(4000);
    // In flight together: the appends share commits (one fsync each), as a daemon's do.
    for (let b = 0; b < 2500; b += 250) {
      await Promise.all(Array.from({ length: 250 }, (_, k) => store.appendHistory(`u${(b + k) % 500}`, { role: 'user', text: `${b + k} ${text}` })));
    }
    // SQLite's auto-checkpoint is off on the store's connection: only the worker moves these pages.
    const deadline = Date.now() + 20_000;
    while (statSync(file).size < 6 * 1024 * 1024 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(statSync(file).size).toBeGreaterThanOrEqual(6 * 1024 * 1024);
    const r = await store.get('u7');
    expect(r?.history.at(-1)?.text).toBe(`2007 ${text}`);
    await store.close();
  });

  it('lets a process that wrote and never closed the store exit on its own, its writes kept', async () => {
    const child = spawn(process.execPath, [path.join(ROOT, 'test/fixtures/sqlite-wal-exit.mjs'), file, '2000'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    // A checkpoint worker that kept the process alive would hang here until the test's timeout.
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(err).toBe('');
    expect(code).toBe(0);
    expect(JSON.parse(out)).toEqual({ acked: 2000 });
    const store = createStore(await SqliteDriver.open(file));
    const stats = await store.stats();
    expect(stats.messages).toBe(2000);
    await store.close();
  });

  it("sets FTS5's crisis merge bound on a store made before it, and keeps it through a clear's swap", async () => {
    const first = createStore(await SqliteDriver.open(file));
    await first.appendHistory('u1', { role: 'user', text: 'kipas angin gosong' });
    await first.close();
    expect(crisisMerge(file)).toBe(FTS_CRISISMERGE);
    // As a store made before the setting: FTS5's default.
    const db = new Database(file);
    db.exec("INSERT INTO search_fts (search_fts, rank) VALUES ('crisismerge', 16)");
    db.close();
    expect(crisisMerge(file)).toBe(16);
    const store = createStore(await SqliteDriver.open(file));
    expect(crisisMerge(file)).toBe(FTS_CRISISMERGE);
    await store.exclusive('all', (ctx) => ctx.clear());
    // The clear's new tables carry it too (a new generation's index is created, then renamed in).
    expect(crisisMerge(file)).toBe(FTS_CRISISMERGE);
    await store.appendHistory('u2', { role: 'user', text: 'kulkas bocor' });
    expect((await store.search('bocor')).map((u) => u.user_id)).toEqual(['u2']);
    expect(await store.search('gosong')).toEqual([]);
    await store.close();
  });
});
