import * as path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { openStore } from '../../src/store/open.js';
import { FTS_CRISISMERGE } from '../../src/store/sqlite/schema.js';
import { tempDir } from '../helpers/tmp.js';

// What an open makes of a store an older chatmem wrote: each older schema is made from a current store
// by taking away what that version did not have, then opened, and everything the later versions keep
// (totals, the search index, the queue) must be there and right.

const TS = '2026-01-01T00:00:00.000Z';
// WhatsApp numbers sort before letters: the first slice of the rebuild must start below them.
const phone: MemoryRecord = { ...newRecord('6281234567890', TS), name: 'Nomor Telepon', history: [] };
const people: MemoryRecord[] = [phone, ...Array.from({ length: 1202 }, (_, i) => ({
  ...newRecord(`u${String(i).padStart(4, '0')}`, TS),
  name: i === 1201 ? 'Ikan Pari' : `Orang ${i}`,
  history: [
    { role: 'user', text: `pesan nomor ${i}`, ts: TS },
    { role: 'assistant', text: i === 7 ? 'jawaban langka' : 'jawaban', ts: TS },
  ],
}))];

async function storeAt(version: 1 | 2 | 3 | 99): Promise<{ file: string; cleanup: () => Promise<void> }> {
  const t = await tempDir();
  const file = path.join(t.dir, 'memory.db');
  const s = await openStore(`sqlite:${file}`);
  await s.exclusive('all', (ctx) => ctx.putMany(people));
  await s.close();
  const db = new Database(file);
  try {
    if (version <= 3) db.exec('DROP TABLE search_pending');
    if (version <= 2) db.exec('DROP TABLE search_fts; DROP TABLE search_docs');
    if (version <= 1) {
      db.exec('DROP TRIGGER users_totals_insert; DROP TRIGGER users_totals_delete; DROP TRIGGER users_totals_update; DROP TABLE totals; DROP INDEX users_updated_at');
    }
    db.pragma(`user_version = ${version}`);
  } finally {
    db.close();
  }
  return { file, cleanup: t.cleanup };
}

describe('sqlite schema migrations', () => {
  for (const version of [1, 2] as const) {
    it(`a version ${version} store gets its totals, search index (built from the records, across slices of 1,000) and queue`, async () => {
      const { file, cleanup } = await storeAt(version);
      try {
        const store = await openStore(`sqlite:${file}`);
        try {
          expect(await store.stats()).toMatchObject({ users: 1203, messages: 2404 });
          expect(await store.count()).toBe(1203);
          // Users in the first and in the last slice of the rebuild, by profile and by message.
          expect((await store.search('ikan pari')).map((u) => u.user_id)).toEqual(['u1201']);
          expect((await store.search('nomor telepon')).map((u) => u.user_id)).toEqual(['6281234567890']);
          expect((await store.search('jawaban langka')).map((u) => u.user_id)).toEqual(['u0007']);
          expect((await store.search('pesan nomor 1201')).map((u) => u.user_id)).toEqual(['u1201']);
          await store.appendHistory('u0001', { role: 'user', text: 'kalimat baru' });
          expect((await store.search('kalimat baru')).map((u) => u.user_id)).toEqual(['u0001']);
          expect((await store.stats()).messages).toBe(2405);
        } finally {
          await store.close();
        }
        const db = new Database(file, { readonly: true });
        try {
          expect(db.pragma('user_version', { simple: true })).toBe(4);
          expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 'users_updated_at'").pluck().get()).toBe('users_updated_at');
          // One profile document and one per message, for every user.
          expect(db.prepare('SELECT COUNT(*) FROM search_docs').pluck().get()).toBe(1 + 1202 * 3 + 1);
        } finally {
          db.close();
        }
      } finally {
        await cleanup();
      }
    });
  }

  it('a store written by a newer chatmem is refused, naming both versions, and left as it is', async () => {
    const { file, cleanup } = await storeAt(99);
    try {
      await expect(openStore(`sqlite:${file}`)).rejects.toMatchObject({
        code: 'E_STORE_OPEN',
        message: expect.stringContaining('store schema version 99 is newer than this chatmem supports (4)'),
        cause: expect.objectContaining({ code: 'E_STORE_VERSION' }),
      });
      const db = new Database(file, { readonly: true });
      try {
        expect(db.pragma('user_version', { simple: true })).toBe(99);
      } finally {
        db.close();
      }
    } finally {
      await cleanup();
    }
  });
  it("a store made before FTS5's crisis merge bound gets it at open, an open that finds it writes nothing, and a clear's new index carries it", async () => {
    const t = await tempDir();
    const file = path.join(t.dir, 'memory.db');
    const crisisMerge = (db: Database.Database): unknown => db.prepare("SELECT v FROM search_fts_config WHERE k = 'crisismerge'").pluck().get();
    try {
      const first = await openStore(`sqlite:${file}`);
      await first.appendHistory('u1', { role: 'user', text: 'kipas angin gosong' });
      await first.close();
      const db = new Database(file);
      try {
        expect(crisisMerge(db)).toBe(FTS_CRISISMERGE);
        // As a store made before the setting: FTS5's default (16).
        db.exec("INSERT INTO search_fts (search_fts, rank) VALUES ('crisismerge', 16)");
        expect(crisisMerge(db)).toBe(16);
        // data_version changes when another connection commits a change to the database.
        const changes = (): unknown => db.pragma('data_version', { simple: true });
        const before = changes();
        const store = await openStore(`sqlite:${file}`);
        expect(crisisMerge(db)).toBe(FTS_CRISISMERGE);
        expect(changes()).not.toBe(before);
        await store.close();
        const set = changes();
        const again = await openStore(`sqlite:${file}`);
        expect(changes()).toBe(set);
        await again.exclusive('all', (ctx) => ctx.clear());
        // The clear's tables were created under new names, then renamed in.
        expect(crisisMerge(db)).toBe(FTS_CRISISMERGE);
        await again.appendHistory('u2', { role: 'user', text: 'kulkas bocor' });
        expect((await again.search('bocor')).map((u) => u.user_id)).toEqual(['u2']);
        expect(await again.search('gosong')).toEqual([]);
        await again.close();
      } finally {
        db.close();
      }
    } finally {
      await t.cleanup();
    }
  });
});
