import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { JsonFileDriver } from '../../src/store/json-file.js';
import { PostgresDriver } from '../../src/store/postgres/index.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { applyPut, createStore } from '../../src/store/store.js';
import type { Store, StoreDriver } from '../../src/store/types.js';
import { PG_URL, createSchema, describePg } from '../helpers/pg.js';
import { tempDir } from '../helpers/tmp.js';

// The store core's promises, on real SQLite and JSON files: its configuration and argument checks,
// which writes reach the driver, and which changes a write tracker reports (a clear's two-phase
// backup relies on the tracker to know which users to copy again).

const KINDS = ['sqlite', 'json'] as const;

async function rejection(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err as { code: string; message: string },
  );
}

describe.each(KINDS)('store core over a %s driver', (kind) => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: Store;
  const open = async (options: { historyCap?: number; readOnly?: boolean } = {}): Promise<Store> => {
    const file = path.join(dir, kind === 'sqlite' ? 'memory.db' : 'memory.json');
    return createStore(kind === 'sqlite' ? await SqliteDriver.open(file) : await JsonFileDriver.open(file), options);
  };

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
    store = await open();
  });
  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  it('refuses a history cap that is not a positive integer, and keeps the newest `cap` entries of one that is', async () => {
    await store.close();
    for (const cap of [0, -1, 1.5, Number.NaN]) {
      let err: { code: string; message: string } | undefined;
      try {
        await open({ historyCap: cap });
      } catch (e) {
        err = e as { code: string; message: string };
      }
      expect(err).toMatchObject({ code: 'E_STORE_CONFIG', message: `history cap must be a positive integer, got ${String(cap)}` });
    }
    store = await open({ historyCap: 1 });
    expect(store.historyCap).toBe(1);
    await store.appendHistory('u', { role: 'user', text: 'a' });
    const r = await store.appendHistory('u', { role: 'user', text: 'b' });
    expect(r.history.map((e) => e.text)).toEqual(['b']);
  });

  it('a store without a cap keeps 50 entries', async () => {
    expect(store.historyCap).toBe(50);
    for (let i = 0; i < 51; i++) await store.appendHistory('u', { role: 'user', text: `t${i}` });
    const r = await store.get('u');
    expect(r?.history).toHaveLength(50);
    expect(r?.history[0]?.text).toBe('t1');
  });

  it('refuses writes once closed, and closing twice is harmless', async () => {
    await store.put('u', { name: 'Ana' });
    await store.close();
    await store.close();
    expect(await rejection(store.put('u', {}))).toMatchObject({ code: 'E_STORE_CLOSED', message: 'the store is closed' });
    expect(await rejection(store.delete(['u']))).toMatchObject({ code: 'E_STORE_CLOSED' });
    expect(await rejection(store.exclusive('all', async () => 1))).toMatchObject({ code: 'E_STORE_CLOSED' });
    store = await open();
    expect((await store.get('u'))?.name).toBe('Ana');
  });

  it('a read-only store refuses every write, naming its URL, and writes nothing', async () => {
    await store.put('u', { name: 'Ana' });
    await store.close();
    store = await open({ readOnly: true });
    const err = await rejection(store.patch('u', { name: 'Budi' }));
    expect(err).toMatchObject({ code: 'E_STORE_READONLY', message: `store ${store.url} is open read-only` });
    expect(await rejection(store.clear())).toMatchObject({ code: 'E_STORE_READONLY' });
    expect(await rejection(store.appendHistory('u', { role: 'user', text: 'x' }))).toMatchObject({ code: 'E_STORE_READONLY' });
    expect((await store.get('u'))?.name).toBe('Ana');
    expect(await store.count()).toBe(1);
    // ensure of a known user is a read, so a read-only store answers it.
    expect((await store.ensure('u')).name).toBe('Ana');
    expect(await rejection(store.ensure('new-user'))).toMatchObject({ code: 'E_STORE_READONLY' });
  });

  it('checks a write fully before it reaches the driver', async () => {
    expect(await rejection(store.put('u', { name: 5 } as never))).toMatchObject({ code: 'E_RECORD' });
    expect(await rejection(store.patch('u', { flags: [] }))).toMatchObject({ code: 'E_RECORD' });
    expect(await rejection(store.addContext('u', { maxItems: 0 }))).toMatchObject({ code: 'E_RECORD' });
    expect(await rejection(store.fillSlots('u', [] as never))).toMatchObject({ code: 'E_RECORD' });
    expect(await rejection(store.setFlag('u', '', 1))).toMatchObject({ code: 'E_RECORD', message: 'flags key must be a non-empty string' });
    expect(await rejection(store.setSlot('u', '', 1))).toMatchObject({ code: 'E_RECORD', message: 'slots key must be a non-empty string' });
    expect(await rejection(store.setSlot('u', 'k', undefined))).toMatchObject({ code: 'E_RECORD', message: 'slots.k: a value is required' });
    expect(await rejection(store.appendHistory('u', { role: '', text: 'x' }))).toMatchObject({ code: 'E_RECORD' });
    expect(await rejection(store.appendHistoryMany('u', []))).toMatchObject({ code: 'E_RECORD', message: 'give at least one history entry' });
    expect(await rejection(store.appendHistoryMany('u', 'x' as never))).toMatchObject({ code: 'E_RECORD', message: 'give at least one history entry' });
    for (const bad of ['', 'a\u0000b']) {
      expect(await rejection(store.get(bad))).toMatchObject({ code: 'E_USER_ID' });
      expect(await rejection(store.ensure(bad))).toMatchObject({ code: 'E_USER_ID' });
      expect(await rejection(store.clearFlag(bad, 'f'))).toMatchObject({ code: 'E_USER_ID' });
      expect(await rejection(store.refreshSessionToken(bad))).toMatchObject({ code: 'E_USER_ID' });
      expect(await rejection(store.delete([bad]))).toMatchObject({ code: 'E_USER_ID' });
      expect(await rejection(store.exclusive({ ids: [bad] }, async () => 1))).toMatchObject({ code: 'E_USER_ID' });
    }
    expect(await store.count()).toBe(0);
    const tracker = store.trackWrites();
    expect(tracker?.ids.size).toBe(0);
    tracker?.stop();
  });

  it('put keeps created_at unless given, and sets updated_at to now unless given', async () => {
    const first = await store.put('u', { created_at: '2020-01-01T00:00:00Z', updated_at: '2020-01-02T00:00:00Z' });
    expect(first.created_at).toBe('2020-01-01T00:00:00Z');
    expect(first.updated_at).toBe('2020-01-02T00:00:00Z');
    const before = Date.now() - 1000;
    const second = await store.put('u', { name: 'Ana' });
    expect(second.created_at).toBe('2020-01-01T00:00:00Z');
    expect(Date.parse(second.updated_at)).toBeGreaterThanOrEqual(before);
    const fresh = applyPut(null, 'n', {});
    expect(fresh.created_at).toBe(fresh.updated_at);
    expect(Date.parse(fresh.created_at)).toBeGreaterThanOrEqual(before);
    expect(applyPut(null, 'n', { created_at: '2021-01-01T00:00:00Z' }).created_at).toBe('2021-01-01T00:00:00Z');
  });

  it('ensure writes only for an unknown user; refreshSessionToken always writes a new token', async () => {
    const made = await store.ensure('u');
    expect(made.session_token).toMatch(/^[0-9a-f]{16}$/);
    expect(made.flags.last_activity).toBe(made.created_at);
    await store.patch('u', { name: 'Ana', updated_at: '2001-01-01T00:00:00Z' });
    const again = await store.ensure('u');
    expect(again.name).toBe('Ana');
    expect(again.updated_at).toBe('2001-01-01T00:00:00Z');
    expect(again.session_token).toBe(made.session_token);
    const refreshed = await store.refreshSessionToken('u');
    expect(refreshed.session_token).toMatch(/^[0-9a-f]{16}$/);
    expect(refreshed.session_token).not.toBe(made.session_token);
    expect(refreshed.name).toBe('Ana');
    expect(refreshed.updated_at).not.toBe('2001-01-01T00:00:00Z');
    const newcomer = await store.refreshSessionToken('v');
    expect(newcomer.session_token).toMatch(/^[0-9a-f]{16}$/);
    expect(newcomer.flags.last_activity).toBe(newcomer.created_at);
  });

  it('list takes a limit from 1 to 1000, 100 by default', async () => {
    await store.exclusive('all', (ctx) => ctx.putMany(Array.from({ length: 101 }, (_, i) => ({ ...applyPut(null, `u${String(i).padStart(3, '0')}`, {}) }))));
    for (const limit of [0, 1001, 1.5, -1]) {
      expect(await rejection(store.list({ limit }))).toMatchObject({ code: 'E_STORE_ARG', message: `list limit must be an integer from 1 to 1000, got ${String(limit)}` });
    }
    expect((await store.list()).items).toHaveLength(100);
    expect((await store.list({ limit: 1 })).items).toHaveLength(1);
    expect((await store.list({ limit: 1000 })).items).toHaveLength(101);
    const page = await store.list({ limit: 100 });
    expect((await store.list({ cursor: page.next ?? undefined })).items.map((s) => s.user_id)).toEqual(['u100']);
  });

  it('search refuses an empty query, trims it, and answers 100 users by default', async () => {
    expect(await rejection(store.search('   '))).toMatchObject({ code: 'E_STORE_ARG', message: 'search query must not be empty' });
    await store.exclusive('all', (ctx) => ctx.putMany(Array.from({ length: 101 }, (_, i) => applyPut(null, `user-${String(i).padStart(3, '0')}`, { name: 'Tukang Kebun' }))));
    expect(await store.search('  kebun ')).toHaveLength(100);
    expect(await store.search('kebun', { limit: 3 })).toHaveLength(3);
    expect(await store.search('kebun', { limit: 500 })).toHaveLength(101);
  });

  it('scanJson yields each user with its record as JSON text', async () => {
    await store.put('b', { name: 'B' });
    await store.put('a', { name: 'A' });
    const rows: [string, string][] = [];
    for await (const row of store.scanJson()) rows.push(row);
    expect(rows.map(([id]) => id)).toEqual(['a', 'b']);
    expect(rows.map(([, json]) => (JSON.parse(json) as { name: string }).name)).toEqual(['A', 'B']);
    expect(await store.isLeader()).toBe(true);
  });

  it('every write lands under its own field, and delete answers how many users it removed', async () => {
    await store.addContext('u', { text: 'ctx', product: 'P' });
    await store.fillSlots('u', { a: 1 });
    await store.setSlot('u', 'b', 2);
    await store.setFlag('u', 'f', true);
    const r = await store.get('u');
    expect(r).toMatchObject({ summary_context: ['ctx'], product: 'P', slots: { a: 1, b: 2 }, flags: { f: true } });
    expect(Object.keys(r ?? {})).not.toContain('');
    expect(await store.delete(['u', 'nobody'])).toBe(1);
    expect(await store.get('u')).toBeNull();
    let rows = 0;
    for await (const _ of store.scan()) rows++;
    expect(rows).toBe(0);
    expect((await store.stats()).users).toBe(0);
  });

  it('a tracker sees the users a section deletes, even users written before it started', async () => {
    await store.put('pre', {});
    await store.put('pre2', {});
    const t = store.trackWrites();
    await store.exclusive({ ids: ['pre'] }, (ctx) => ctx.delete(['pre']));
    await store.delete(['pre2']);
    expect([...(t?.ids ?? [])].sort()).toEqual(['pre', 'pre2']);
    t?.stop();
  });

  it('a write tracker reports every user written while it runs, and nothing after stop()', async () => {
    await store.put('before', {});
    const t = store.trackWrites();
    if (t === null) throw new Error('a local store must track writes');
    expect(t.overflow).toBe(false);
    await store.put('p', {});
    await store.patch('q', { name: 'x' });
    await store.appendHistory('r', { role: 'user', text: 'x' });
    await store.setFlag('s', 'f', 1);
    await store.clearFlag('before', 'f');
    await store.exclusive({ ids: ['p'] }, (ctx) => ctx.delete(['p']));
    await store.exclusive('all', (ctx) => ctx.putMany([applyPut(null, 'm', {})]));
    await store.delete(['q']);
    expect([...t.ids].sort()).toEqual(['before', 'm', 'p', 'q', 'r', 's']);
    expect(t.overflow).toBe(false);
    const other = store.trackWrites();
    t.stop();
    await store.put('late', {});
    expect(t.ids.has('late')).toBe(false);
    expect(other?.ids.has('late')).toBe(true);
    other?.stop();
  });

  it('a clear or a replace inside a section makes a tracker give up (overflow), dropping its ids', async () => {
    const t1 = store.trackWrites();
    await store.put('a', {});
    expect(t1?.ids.has('a')).toBe(true);
    await store.clear();
    expect(t1?.overflow).toBe(true);
    expect(t1?.ids.size).toBe(0);
    await store.put('b', {});
    expect(t1?.ids.size).toBe(0);
    t1?.stop();
    const t2 = store.trackWrites();
    await store.exclusive('all', (ctx) => ctx.replaceAll((async function* () {
      yield applyPut(null, 'c', {});
    })()));
    expect(t2?.overflow).toBe(true);
    t2?.stop();
    expect(await store.count()).toBe(1);
  });

  it('a tracker started while a section deletes still sees that delete', async () => {
    await store.put('w', {});
    await store.close();
    const file = path.join(dir, kind === 'sqlite' ? 'memory.db' : 'memory.json');
    const real = kind === 'sqlite' ? await SqliteDriver.open(file) : await JsonFileDriver.open(file);
    let entered!: () => void;
    const inFlight = new Promise<void>((r) => (entered = r));
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    // The real driver, except that the test holds a section's delete between its start and its commit.
    const driver = Object.create(real) as StoreDriver;
    driver.exclusive = (scope, fn) =>
      real.exclusive(scope, (ctx) =>
        fn(
          Object.assign(Object.create(ctx) as typeof ctx, {
            delete: async (ids: string[]) => {
              entered();
              await held;
              return ctx.delete(ids);
            },
          }),
        ),
      );
    store = createStore(driver);
    const deleting = store.delete(['w']);
    await inFlight;
    const t = store.trackWrites();
    release();
    expect(await deleting).toBe(1);
    expect(t?.ids.has('w')).toBe(true);
    t?.stop();
  });

  it('a tracker started while a write is in flight still sees that write', async () => {
    await store.close();
    const file = path.join(dir, kind === 'sqlite' ? 'memory.db' : 'memory.json');
    const real = kind === 'sqlite' ? await SqliteDriver.open(file) : await JsonFileDriver.open(file);
    // The real driver, except that the test holds update() between its start and its commit.
    let entered!: () => void;
    const inFlight = new Promise<void>((r) => (entered = r));
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const driver = Object.create(real) as StoreDriver;
    driver.update = async (id, fn) => {
      entered();
      await held;
      return real.update(id, fn);
    };
    store = createStore(driver);
    const write = store.put('w', { name: 'late' });
    await inFlight;
    const t = store.trackWrites();
    release();
    await write;
    expect(t?.ids.has('w')).toBe(true);
    t?.stop();
  });
});

describePg('store core over PostgreSQL', () => {
  it("gives the database's change feed as its write tracker: another process may write the same store, which an in-process set would miss", async () => {
    const { schema, drop } = await createSchema();
    const store = createStore(await PostgresDriver.connect({ connectionString: PG_URL, schema }));
    try {
      expect(store.kind).toBe('postgres');
      const feed = store.trackWrites();
      expect(feed?.refresh).toBeTypeOf('function');
      feed?.stop();
      // Local stores do track.
      const t = await tempDir();
      const local = createStore(await SqliteDriver.open(path.join(t.dir, 'memory.db')));
      const tracker = local.trackWrites();
      expect(tracker).not.toBeNull();
      tracker?.stop();
      await local.close();
      await t.cleanup();
    } finally {
      await store.close();
      await drop();
    }
  });
});
