import pg from 'pg';
import { afterEach, expect, it } from 'vitest';
import type { MemoryRecord } from '../../src/record.js';
import { PostgresDriver } from '../../src/store/postgres/index.js';
import { createStore } from '../../src/store/store.js';
import { PG_URL, createSchema, describePg } from '../helpers/pg.js';

/**
 * The PostgreSQL driver commits the hot-path writes waiting at one moment in one transaction. These
 * tests hold it to what each caller is promised: its own result, its own failure, nothing of anyone
 * else's, and durability before the promise settles. Rows written by one transaction share its xmin,
 * which is how a test sees that writes really did share one.
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

/** A driver whose pool leaves it one batch in flight (pool of 3, less 2 kept for reads and sections). */
async function oneBatchDriver(): Promise<{ driver: PostgresDriver; admin: pg.Client; users: string; schema: string }> {
  const { schema, drop } = await createSchema();
  const pool = new pg.Pool({ connectionString: PG_URL, max: 3 });
  const driver = await PostgresDriver.connect({ pool, schema });
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  cleanups.push(drop, () => pool.end(), () => admin.end(), () => driver.close());
  return { driver, admin, users: `"${schema}".chatmem_users`, schema };
}

const record = (id: string, history: string[] = [], extra: Partial<MemoryRecord> = {}): MemoryRecord => ({
  user_id: id,
  name: null,
  gender: null,
  product: null,
  address: null,
  history: history.map((text) => ({ role: 'user', text })),
  flags: {},
  slots: {},
  summary_context: [],
  created_at: '2026-11-30T00:00:00.000Z',
  updated_at: '2026-11-30T00:00:00.000Z',
  ...extra,
} as MemoryRecord);

const appendFn = (id: string, text: string) => (current: MemoryRecord | null): MemoryRecord =>
  record(id, [...(current?.history ?? []).map((h) => String(h.text)), text]);

async function xmins(admin: pg.Client, users: string): Promise<Map<string, string>> {
  const { rows } = await admin.query<{ user_id: string; x: string }>(`SELECT user_id, xmin::text AS x FROM ${users}`);
  return new Map(rows.map((r) => [r.user_id, r.x]));
}

describePg('PostgreSQL batched hot-path writes', () => {
  it('writes queued while a transaction runs commit together, each op seeing the ones before it on its user', async () => {
    const { driver, admin, users } = await oneBatchDriver();
    const first = driver.update('u0', appendFn('u0', 'alone'));
    // Queued behind the first transaction: the next batch takes all of them.
    const queued = [
      driver.update('u1', appendFn('u1', 'a')),
      driver.update('u2', appendFn('u2', 'a')),
      driver.update('u1', appendFn('u1', 'b')),
      driver.update('u3', appendFn('u3', 'a')),
      driver.update('u1', appendFn('u1', 'c')),
    ];
    await first;
    const results = await Promise.all(queued);
    expect(results.map((r) => r.history.map((h) => h.text).join(''))).toEqual(['a', 'a', 'ab', 'a', 'abc']);
    expect((await driver.get('u1'))?.history.map((h) => h.text)).toEqual(['a', 'b', 'c']);
    const x = await xmins(admin, users);
    expect(new Set([x.get('u1'), x.get('u2'), x.get('u3')]).size).toBe(1);
    expect(x.get('u0')).not.toBe(x.get('u1'));
  });

  it('an op whose function throws fails alone, with its own error; the others of its batch commit', async () => {
    const { driver, admin, users } = await oneBatchDriver();
    await driver.update('v1', () => record('v1', ['kept']));
    const blocker = driver.update('v0', appendFn('v0', 'x'));
    const bad = new Error('caller refuses');
    const ops = [
      driver.update('v1', appendFn('v1', 'before')),
      driver.update('v1', () => {
        throw bad;
      }),
      driver.update('v1', appendFn('v1', 'after')),
      driver.update('v2', appendFn('v2', 'other')),
    ];
    await blocker;
    const settled = await Promise.allSettled(ops);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    expect((settled[1] as PromiseRejectedResult).reason).toBe(bad);
    expect((await driver.get('v1'))?.history.map((h) => h.text)).toEqual(['kept', 'before', 'after']);
    const x = await xmins(admin, users);
    expect(x.get('v1')).toBe(x.get('v2'));
  });

  it('a write the database refuses fails alone: the rest of its batch is written one by one', async () => {
    const { driver, admin, users, schema } = await oneBatchDriver();
    // A real refusal by the server, for one user only.
    await admin.query(`CREATE FUNCTION "${schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.user_id = 'refused' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; RETURN NEW; END $$`);
    await admin.query(`CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON ${users} FOR EACH ROW EXECUTE FUNCTION "${schema}".refuse()`);
    const blocker = driver.update('w0', appendFn('w0', 'x'));
    const ops = [driver.update('w1', appendFn('w1', 'a')), driver.update('refused', appendFn('refused', 'a')), driver.update('w2', appendFn('w2', 'a'))];
    await blocker;
    const settled = await Promise.allSettled(ops);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((settled[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'E_STORE_WRITE' });
    expect(String((settled[1] as PromiseRejectedResult).reason.cause?.message)).toContain('refused by a trigger');
    expect((await driver.get('w1'))?.history).toHaveLength(1);
    expect((await driver.get('w2'))?.history).toHaveLength(1);
    expect(await driver.get('refused')).toBeNull();
  });

  it('a batch whose COMMIT fails is not written again: it might have committed, so every op fails once', async () => {
    const { driver, admin, users, schema } = await oneBatchDriver();
    // A deferred constraint trigger raises at COMMIT, the one point where a client cannot tell
    // whether the server committed (a dropped connection looks the same).
    await admin.query(`CREATE FUNCTION "${schema}".late() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.user_id = 'late' THEN RAISE EXCEPTION 'refused at commit'; END IF; RETURN NEW; END $$`);
    await admin.query(`CREATE CONSTRAINT TRIGGER late AFTER INSERT OR UPDATE ON ${users} DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION "${schema}".late()`);
    const calls = new Map<string, number>();
    const counted = (id: string) => (current: MemoryRecord | null): MemoryRecord => {
      calls.set(id, (calls.get(id) ?? 0) + 1);
      return appendFn(id, 'x')(current);
    };
    const blocker = driver.update('l0', appendFn('l0', 'x'));
    const ops = [driver.update('l1', counted('l1')), driver.update('late', counted('late')), driver.update('l2', counted('l2'))];
    await blocker;
    const settled = await Promise.allSettled(ops);
    expect(settled.map((s) => s.status)).toEqual(['rejected', 'rejected', 'rejected']);
    expect((settled[0] as PromiseRejectedResult).reason).toMatchObject({ code: 'E_STORE_WRITE', message: expect.stringContaining('commit of 3 writes') });
    expect([...calls.values()]).toEqual([1, 1, 1]);
    expect(await driver.get('l1')).toBeNull();
    // The connection that saw the failed COMMIT is not reused; the driver goes on writing.
    await driver.update('l3', appendFn('l3', 'after'));
    expect((await driver.get('l3'))?.history).toHaveLength(1);
  });

  it('a batch holds at most 32 writes; the rest wait for the next', async () => {
    const { driver, admin, users } = await oneBatchDriver();
    const blocker = driver.update('b-block', appendFn('b-block', 'x'));
    const ops = Array.from({ length: 70 }, (_, i) => driver.update(`b${String(i).padStart(2, '0')}`, appendFn(`b${i}`, 'x')));
    await blocker;
    await Promise.all(ops);
    const x = await xmins(admin, users);
    const sizes = new Map<string, number>();
    for (const [id, xid] of x) if (id !== 'b-block') sizes.set(xid, (sizes.get(xid) ?? 0) + 1);
    expect([...sizes.values()].sort((a, b) => b - a)).toEqual([32, 32, 6]);
  });

  it('with several batches in flight, one user is never in two at once: its writes apply in the order they came', async () => {
    const { schema, drop } = await createSchema();
    const pool = new pg.Pool({ connectionString: PG_URL, max: 10 });
    const driver = await PostgresDriver.connect({ pool, schema });
    cleanups.push(drop, () => pool.end(), () => driver.close());
    for (let round = 0; round < 3; round++) {
      const ops: Promise<MemoryRecord>[] = [];
      for (let i = 0; i < 240; i++) ops.push(driver.update(`o${i % 12}`, appendFn(`o${i % 12}`, `${round}.${i}`)));
      await Promise.all(ops);
    }
    for (let u = 0; u < 12; u++) {
      const want = [0, 1, 2].flatMap((round) => Array.from({ length: 20 }, (_, k) => `${round}.${u + 12 * k}`));
      expect((await driver.get(`o${u}`))?.history.map((h) => h.text)).toEqual(want);
    }
  });

  it('a write waiting for its user\'s batch starts no transaction of its own meanwhile (no empty batches)', async () => {
    const { schema, drop } = await createSchema();
    const pool = new pg.Pool({ connectionString: PG_URL, max: 4 });
    const driver = await PostgresDriver.connect({ pool, schema });
    cleanups.push(drop, () => pool.end(), () => driver.close());
    let checkouts = 0;
    pool.on('acquire', () => void checkouts++);
    // Two slots: the first write's batch runs, the second (same user) must wait without using the other slot.
    const ops = [driver.update('e', appendFn('e', 'a')), driver.update('e', appendFn('e', 'b'))];
    await Promise.all(ops);
    expect(checkouts).toBe(2);
    expect((await driver.get('e'))?.history.map((h) => h.text)).toEqual(['a', 'b']);
  });

  it('close() lets every write it accepted commit, queued ones included, and refuses new ones', async () => {
    const { driver, admin, users } = await oneBatchDriver();
    const ops = Array.from({ length: 40 }, (_, i) => driver.update(`c${i % 7}`, appendFn(`c${i % 7}`, String(i))));
    const closing = driver.close();
    await expect(driver.update('late', appendFn('late', 'x'))).rejects.toMatchObject({ code: 'E_STORE_CLOSED' });
    await closing;
    expect((await Promise.allSettled(ops)).every((s) => s.status === 'fulfilled')).toBe(true);
    const { rows } = await admin.query<{ n: string }>(`SELECT SUM(messages)::text AS n FROM ${users}`);
    expect(rows[0]?.n).toBe('40');
  });

  it('two daemons batching over the same users, with scoped sections between them, lose no acknowledged write', async () => {
    const { schema, drop } = await createSchema();
    const a = createStore(await PostgresDriver.connect({ connectionString: PG_URL, schema }), { historyCap: 1000 });
    const b = createStore(await PostgresDriver.connect({ connectionString: PG_URL, schema }), { historyCap: 1000 });
    cleanups.push(drop, async () => void (await Promise.all([a.close(), b.close()])));
    const ids = Array.from({ length: 12 }, (_, i) => `m${i}`);
    let acked = 0;
    const writer = async (store: typeof a, seed: number): Promise<void> => {
      for (let i = 0; i < 60; i++) {
        await store.appendHistory(ids[(seed * 7 + i * 5) % ids.length] ?? 'm0', { role: 'user', text: `${seed}-${i}` });
        acked++;
      }
    };
    const sections = async (): Promise<void> => {
      for (let i = 0; i < 8; i++) {
        const scope = [ids[(i * 5) % 12] ?? 'm0', ids[(i * 5 + 3) % 12] ?? 'm0', ids[(i * 5 + 8) % 12] ?? 'm0'];
        await a.exclusive({ ids: scope }, async (ctx) => {
          await ctx.getMany(scope);
          await new Promise((r) => setTimeout(r, 5));
        });
      }
    };
    await Promise.all([...Array.from({ length: 8 }, (_, s) => writer(s % 2 ? a : b, s)), sections()]);
    expect(acked).toBe(480);
    expect((await a.stats()).messages).toBe(480);
  });

  it('keeps a NUL character in a name or product: PostgreSQL text cannot hold one, the record keeps it', async () => {
    const { driver } = await oneBatchDriver();
    const store = createStore(driver);
    const saved = await store.put('nul', { name: 'a\u0000b', product: '\u0000' });
    expect(await store.get('nul')).toEqual(saved);
    expect((await store.list()).items[0]).toMatchObject({ user_id: 'nul', name: 'a\ufffdb', product: '\ufffd' });
    expect((await store.search('a\ufffdb', { limit: 10 })).map((u) => u.user_id)).toEqual(['nul']);
  });
});
