import * as path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/types.js';
import { tempDir } from '../helpers/tmp.js';

// A seed-shaped record: 14 turns of a sales chat, ~2.3 KB of JSON (the bench's records are 10-18
// turns, ~2.2 KB; BENCHMARKS.md section 12).
const TS = '2026-01-01T00:00:00.000Z';
function seedShaped(id: string): MemoryRecord {
  const history = Array.from({ length: 14 }, (_, i) => ({
    role: (i % 2 === 0 ? 'user' : 'bot') as 'user' | 'bot',
    text: `${i % 2 === 0 ? 'Kak, saya mau tanya soal' : 'Baik kak, untuk'} paket ${id} nomor ${i}: ongkir ke Bandung berapa dan kapan sampai ya?`,
    ts: TS,
  }));
  return { ...newRecord(id, TS), name: `Pelanggan ${id}`, gender: 'female', product: 'Serum Vitamin C 20 ml', address: 'Jl. Merdeka No. 17, Bandung', history };
}
async function* records(prefix: string, n: number): AsyncGenerator<MemoryRecord> {
  for (let i = 0; i < n; i++) yield seedShaped(`${prefix}${String(i).padStart(5, '0')}`);
}

/** Pages of the live users table that are overflow pages, and whether the table is WITHOUT ROWID. */
function layout(file: string): { overflow: number; leaves: number; withoutRowid: boolean } {
  const db = new Database(file, { readonly: true });
  try {
    const pages = db.prepare<[], { pagetype: string; n: number }>("SELECT pagetype, COUNT(*) AS n FROM dbstat WHERE name = 'users' GROUP BY pagetype").all();
    const sql = db.prepare<[], string>("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'users'").pluck().get() ?? '';
    return {
      overflow: pages.find((p) => p.pagetype === 'overflow')?.n ?? 0,
      leaves: pages.find((p) => p.pagetype === 'leaf')?.n ?? 0,
      withoutRowid: /WITHOUT\s+ROWID/i.test(sql),
    };
  } finally {
    db.close();
  }
}

/** A store as chatmem made them before the rowid layout: schema 1's WITHOUT ROWID table, migrated on open. */
function oldLayoutStore(file: string): void {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.exec(`CREATE TABLE users (user_id TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, name TEXT, product TEXT,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, messages INTEGER NOT NULL, search_text TEXT NOT NULL) WITHOUT ROWID;
    PRAGMA user_version = 1;`);
  db.close();
}

async function expectAll(store: Store, prefix: string, n: number): Promise<void> {
  for (const i of [0, 1, Math.floor(n / 2), n - 1]) {
    const id = `${prefix}${String(i).padStart(5, '0')}`;
    expect(await store.get(id)).toEqual(seedShaped(id));
  }
  expect(await store.count()).toBe(n);
}

describe('SQLite: a seed-shaped record lives on its table page, not in an overflow page', () => {
  it('in a new store', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      expect(Buffer.byteLength(JSON.stringify(seedShaped('a-00000')))).toBeGreaterThan(2000);
      const store = await openStore(`sqlite:${file}`);
      await store.exclusive('all', (ctx) => ctx.putAll(records('a-', 400)));
      // Appends rewrite the row: it must stay on its page as it grows.
      for (let i = 0; i < 400; i += 7) await store.appendHistory(`a-${String(i).padStart(5, '0')}`, { role: 'user', text: 'Sudah transfer ya kak, mohon dicek' });
      await store.close();
      const l = layout(file);
      expect(l.withoutRowid).toBe(false);
      expect(l.leaves).toBeGreaterThan(100);
      expect(l.overflow).toBe(0);
    } finally {
      await t.cleanup();
    }
  });

  it('in an older store (WITHOUT ROWID) once a clear or a full restore has built its new table; it works before and after', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      oldLayoutStore(file);
      let store = await openStore(`sqlite:${file}`);
      await store.exclusive('all', (ctx) => ctx.putAll(records('old-', 200)));
      await expectAll(store, 'old-', 200);
      await store.close();
      // The old layout is kept as it is (no rebuild at open): the point of the test below.
      expect(layout(file)).toMatchObject({ withoutRowid: true });
      expect(layout(file).overflow).toBeGreaterThan(100);

      store = await openStore(`sqlite:${file}`);
      const staged = await store.stage(records('new-', 300));
      expect(await store.exclusive('all', async (ctx) => ctx.replaceStaged!(staged!))).toBe(300);
      await staged!.release();
      await expectAll(store, 'new-', 300);
      await store.appendHistory('new-00007', { role: 'user', text: 'Makasih kak' });
      await store.close();
      expect(layout(file)).toEqual(expect.objectContaining({ withoutRowid: false, overflow: 0 }));

      // A clear of an older store builds the new layout too.
      const other = path.join(t.dir, 'other.db');
      oldLayoutStore(other);
      store = await openStore(`sqlite:${other}`);
      await store.exclusive('all', (ctx) => ctx.putAll(records('x-', 50)));
      expect(await store.clear()).toBe(50);
      await store.exclusive('all', (ctx) => ctx.putAll(records('y-', 200)));
      await expectAll(store, 'y-', 200);
      await store.close();
      expect(layout(other)).toEqual(expect.objectContaining({ withoutRowid: false, overflow: 0 }));
    } finally {
      await t.cleanup();
    }
  });
});
