import * as path from 'node:path';
import { statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/open.js';
import { newRecord } from '../../src/record.js';
import { tempDir } from '../helpers/tmp.js';
import { testStore } from './conformance.js';
import { testStoreEntry } from '../helpers/stores.js';

testStore('sqlite', () => testStoreEntry('sqlite').harness());

describe('sqlite driver specifics', () => {
  it('creates the data directory 0700 and the database 0600', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'data', 'storage', 'memory.db');
      const store = await openStore(`sqlite:${file}`);
      await store.put('u', {});
      await store.close();
      expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
      expect(statSync(file).mode & 0o777).toBe(0o600);
    } finally {
      await t.cleanup();
    }
  });

  it('refuses a file that is not a SQLite database, naming it, and leaves it alone', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const { writeFileSync, readFileSync } = await import('node:fs');
      writeFileSync(file, 'this is not sqlite at all, just text that is long enough to look like a header');
      const before = readFileSync(file);
      await expect(openStore(`sqlite:${file}`)).rejects.toMatchObject({ code: 'E_STORE_OPEN', message: expect.stringContaining(file) });
      expect(readFileSync(file).equals(before)).toBe(true);
    } finally {
      await t.cleanup();
    }
  });
});

describe('sqlite schema migration', () => {
  it('migrates a version 1 store in place: totals computed from its rows', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const Database = (await import('better-sqlite3')).default;
      const db = new Database(file);
      db.exec(`CREATE TABLE users (user_id TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, name TEXT, product TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, messages INTEGER NOT NULL, search_text TEXT NOT NULL) WITHOUT ROWID;
        PRAGMA user_version = 1;`);
      const rec = { user_id: 'old', history: [{ role: 'user', text: 'x', ts: '2025-01-01T00:00:00Z' }], updated_at: '2025-01-02T00:00:00Z' };
      db.prepare('INSERT INTO users VALUES (?, ?, NULL, NULL, ?, ?, 1, ?)').run('old', JSON.stringify(rec), '2025-01-01T00:00:00Z', '2025-01-02T00:00:00Z', 'x');
      db.close();
      const store = await openStore(`sqlite:${file}`);
      expect(await store.stats()).toEqual({ users: 1, messages: 1, bytes: Buffer.byteLength(JSON.stringify(rec)), lastUpdate: '2025-01-02T00:00:00Z' });
      await store.appendHistory('new', { role: 'user', text: 'y' });
      expect(await store.count()).toBe(2);
      await store.close();
    } finally {
      await t.cleanup();
    }
  });
});

describe('sqlite read-only opens', () => {
  it('create nothing: a missing database reads as an empty store and refuses writes', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'data', 'storage', 'memory.db');
      const store = await openStore(`sqlite:${file}`, { readOnly: true });
      expect(await store.count()).toBe(0);
      expect(await store.list()).toEqual({ items: [], next: null });
      await expect(store.put('u', {})).rejects.toMatchObject({ code: 'E_STORE_READONLY' });
      await store.close();
      const { existsSync } = await import('node:fs');
      expect(existsSync(path.dirname(file))).toBe(false);
    } finally {
      await t.cleanup();
    }
  });

  it('read an existing store while its writer keeps it open', async () => {
    const t = await tempDir();
    try {
      const file = path.join(t.dir, 'memory.db');
      const writer = await openStore(`sqlite:${file}`);
      await writer.appendHistory('u1', { role: 'user', text: 'halo' });
      const reader = await openStore(`sqlite:${file}`, { readOnly: true });
      expect((await reader.get('u1'))?.history).toHaveLength(1);
      await writer.appendHistory('u2', { role: 'user', text: 'hai' });
      const ids: string[] = [];
      for await (const r of reader.scan()) ids.push(r.user_id);
      expect(ids).toEqual(['u1', 'u2']);
      await reader.close();
      await writer.close();
    } finally {
      await t.cleanup();
    }
  });
});

describe('sqlite search over a large store', () => {
  it('finds matches in user id order within the limit by either way, and lets writes through while it works', async () => {
    const t = await tempDir();
    try {
      const store = await openStore(`sqlite:${path.join(t.dir, 'memory.db')}`);
      const records = Array.from({ length: 12_000 }, (_, i) => {
        const id = `u${String(i).padStart(6, '0')}`;
        const history = i >= 9000 ? [1, 2, 3].map((k) => ({ role: 'user', text: `jarum ${k}`, ts: '2025-01-01T00:00:00Z' })) : [];
        return { ...newRecord(id, '2025-01-01T00:00:00Z'), product: i % 1000 === 7 ? 'Needle Cleaner' : 'Haystack', history };
      });
      await store.exclusive('all', (ctx) => ctx.putMany(records));
      const expected = records.filter((r) => r.product === 'Needle Cleaner').map((r) => r.user_id);
      expect((await store.search('needle')).map((u) => u.user_id)).toEqual(expected);
      expect((await store.search('needle', { limit: 5 })).map((u) => u.user_id)).toEqual(expected.slice(0, 5));
      // Common: the walk in id order answers; rare: the index does. Both agree with a plain filter.
      expect((await store.search('haystack', { limit: 50 })).map((u) => u.user_id)).toEqual(
        records.filter((r) => r.product === 'Haystack').slice(0, 50).map((r) => r.user_id),
      );
      const jarum = records.slice(9000).map((r) => r.user_id);
      expect((await store.search('JARUM', { limit: 1000 })).map((u) => u.user_id)).toEqual(jarum.slice(0, 1000));
      const order: string[] = [];
      // 'jarum' is in 9,000 messages of the last 3,000 users: the index's matches take several slices
      // and the walk meets none for 9,000 users, so the search takes turns with the event loop.
      const search = store.search('jarum').then(() => order.push('search'));
      const write = store.appendHistory('u000001', { role: 'user', text: 'during the search' }).then(() => order.push('write'));
      await Promise.all([search, write]);
      expect(order).toEqual(['write', 'search']);
      await store.close();
    } finally {
      await t.cleanup();
    }
  });
});
