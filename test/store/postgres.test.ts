import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import type { MemoryRecord } from '../../src/record.js';
import { POSTGRES_SCHEMA_VERSION, PostgresDriver } from '../../src/store/postgres/index.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { testStore, type ConformanceContext } from './conformance.js';
import { testStoreEntry } from '../helpers/stores.js';
import { PG_URL, createSchema, describePg, pgUnreachable, urlWithSchema } from '../helpers/pg.js';

/** First int of the driver's store-wide advisory lock keys ('chmc'). */
const NS_CTRL = 0x63686d63;

const admin = pgUnreachable === null ? new pg.Pool({ connectionString: PG_URL, max: 3 }) : null;
afterAll(async () => {
  await admin?.end();
});

function adminPool(): pg.Pool {
  if (!admin) throw new Error('PostgreSQL is unreachable');
  return admin;
}

/** PostgreSQL's own tests that need nothing but a fresh store: run on the conformance suite's. */
function postgresOnFreshStore(t: ConformanceContext): void {
  it('keeps records byte for byte (key order and unknown fields), which JSONB would not', async () => {
    const store = t.store();
    const saved = await store.put('k', { zeta: 1, alpha: { b: 2, a: 1 }, name: 'Z', nul: 'a\u0000b', emoji: '😀' });
    const got = await store.get('k');
    expect(JSON.stringify(got)).toBe(JSON.stringify(saved));
    expect((await store.stats()).bytes).toBe(Buffer.byteLength(JSON.stringify(saved)));
  });

  it('replaceAll rolls back and rethrows the source error unchanged', async () => {
    const store = t.store();
    const kept = await store.put('kept', {});
    const bad = new Error('corrupt backup');
    async function* source(): AsyncGenerator<MemoryRecord> {
      for (let i = 0; i < 700; i++) yield { ...kept, user_id: `r${i}` };
      throw bad;
    }
    await expect(store.exclusive('all', (ctx) => ctx.replaceAll(source()))).rejects.toBe(bad);
    expect(await store.count()).toBe(1);
    expect(await store.get('kept')).toEqual(kept);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`${what} did not finish within ${ms} ms`)))]);
}

/** Two daemons sharing one database: two drivers, two pools. */
async function twoDaemons(schema: string, historyCap = 50): Promise<{ a: Store; b: Store; close: () => Promise<void> }> {
  const a = createStore(await PostgresDriver.connect({ connectionString: PG_URL, schema }), { historyCap });
  const b = createStore(await PostgresDriver.connect({ connectionString: PG_URL, schema }), { historyCap });
  return { a, b, close: async () => void (await Promise.all([a.close(), b.close()])) };
}

async function waitingAdvisoryLocks(): Promise<number> {
  const { rows } = await adminPool().query<{ n: string }>(
    `SELECT COUNT(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = $1::oid`,
    [NS_CTRL],
  );
  return Number(rows[0]?.n ?? 0);
}

describePg('postgres', () => {
  testStore('postgres', () => testStoreEntry('postgres').harness(), { additionalTests: postgresOnFreshStore });

  describe('postgres driver specifics', () => {
    it('elects exactly one leader among daemons, and another takes over when it closes', async () => {
      const { schema, drop } = await createSchema();
      const { a, b, close } = await twoDaemons(schema);
      try {
        expect(await a.isLeader()).toBe(true);
        expect(await a.isLeader()).toBe(true);
        expect(await b.isLeader()).toBe(false);
        await a.close();
        expect(await b.isLeader()).toBe(true);
      } finally {
        await close();
        await drop();
      }
    });

    it('two daemons, 500 concurrent appends across 20 users: none lost, caps respected', async () => {
      const { schema, drop } = await createSchema();
      const { a, b, close } = await twoDaemons(schema, 10);
      try {
        const N = 500;
        const U = 20;
        const results = await Promise.all(
          Array.from({ length: N }, (_, i) => (i % 2 ? b : a).appendHistory(`u${i % U}`, { role: 'user', text: `m${i}` })),
        );
        for (let u = 0; u < U; u++) {
          // Each acknowledged append returns the record it wrote: its entry last, the entry it built
          // on just before. Without lost updates these links form one chain through all 25 appends;
          // two appends that read the same state would share a predecessor.
          const successor = new Map<string | null, string>();
          for (let i = u; i < N; i += U) {
            const h = results[i]?.history ?? [];
            expect(h.length).toBeLessThanOrEqual(10);
            expect(h.at(-1)?.text).toBe(`m${i}`);
            const pred = h.at(-2)?.text ?? null;
            expect(successor.has(pred), `user u${u}: two appends built on ${String(pred)}`).toBe(false);
            successor.set(pred, `m${i}`);
          }
          const chain: string[] = [];
          for (let at = successor.get(null); at !== undefined; at = successor.get(at)) chain.push(at);
          expect(chain).toHaveLength(N / U);
          const stored = await a.get(`u${u}`);
          expect(stored?.history.map((e) => e.text)).toEqual(chain.slice(-10));
        }
        expect((await b.stats()).messages).toBe(U * 10);
      } finally {
        await close();
        await drop();
      }
    });

    it("a whole-store section on daemon A holds back daemon B's append until it ends; the append survives the clear", async () => {
      const { schema, drop } = await createSchema();
      const { a, b, close } = await twoDaemons(schema);
      try {
        await a.put('existing', {});
        const events: string[] = [];
        let bWrite: Promise<MemoryRecord> | undefined;
        const cleared = await a.exclusive('all', async (ctx) => {
          bWrite = b.appendHistory('late', { role: 'user', text: 'during the section' }).then((r) => {
            events.push('b-write-acknowledged');
            return r;
          });
          await sleep(300);
          // B's transaction is parked on the store-wide advisory lock inside PostgreSQL.
          expect(await waitingAdvisoryLocks()).toBeGreaterThanOrEqual(1);
          expect(events).toEqual([]);
          const n = await ctx.clear();
          events.push('section-end');
          return n;
        });
        const written = await bWrite;
        expect(cleared).toBe(1);
        expect(events).toEqual(['section-end', 'b-write-acknowledged']);
        expect(written?.history.map((e) => e.text)).toEqual(['during the section']);
        expect((await a.get('late'))?.history.map((e) => e.text)).toEqual(['during the section']);
        expect(await a.get('existing')).toBeNull();
      } finally {
        await close();
        await drop();
      }
    });

    it('a clear on daemon A while clients append through daemon B loses no acknowledged write', async () => {
      const { schema, drop } = await createSchema();
      const { a, b, close } = await twoDaemons(schema, 10_000);
      try {
        const acked: { id: string; text: string }[] = [];
        let sectionDone = false;
        const worker = async (w: number): Promise<void> => {
          let extra = 20;
          for (let i = 0; !sectionDone || extra-- > 0; i++) {
            const id = `w${w}`;
            await b.appendHistory(id, { role: 'user', text: `w${w}-${i}` });
            acked.push({ id, text: `w${w}-${i}` });
          }
        };
        const workers = Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
        while (acked.length < 80) await sleep(5);
        const backup = new Map<string, MemoryRecord>();
        const ackedBefore = acked.length;
        await a.exclusive('all', async (ctx) => {
          for await (const r of ctx.scan()) backup.set(r.user_id, r);
          expect(await ctx.clear()).toBe(backup.size);
        });
        sectionDone = true;
        await workers;
        const after = new Map<string, Set<string>>();
        for await (const r of a.scan()) after.set(r.user_id, new Set(r.history.map((e) => e.text)));
        const inBackup = (id: string, text: string) => backup.get(id)?.history.some((e) => e.text === text) ?? false;
        let fromBackup = 0;
        for (const { id, text } of acked) {
          const here = after.get(id)?.has(text) ?? false;
          const there = inBackup(id, text);
          expect(here || there, `${id}: ${text} was acknowledged but is neither in the backup nor in the store`).toBe(true);
          if (there) fromBackup++;
        }
        // The test is only meaningful if writes landed on both sides of the clear.
        expect(fromBackup).toBeGreaterThanOrEqual(ackedBefore);
        expect(acked.length - fromBackup).toBeGreaterThanOrEqual(8 * 20);
      } finally {
        await close();
        await drop();
      }
    });

    it("a section scoped to user X on daemon A does not hold back B's writes to user Y", async () => {
      const { schema, drop } = await createSchema();
      const { a, b, close } = await twoDaemons(schema);
      try {
        await a.put('x', {});
        const order: string[] = [];
        let xWrite: Promise<unknown> | undefined;
        await a.exclusive({ ids: ['x'] }, async (ctx) => {
          await within(b.appendHistory('y', { role: 'user', text: 'free' }), 5_000, "B's write to y");
          order.push('y-written');
          xWrite = b.appendHistory('x', { role: 'user', text: 'held' }).then(() => order.push('x-written'));
          await sleep(200);
          expect(await ctx.delete(['x'])).toBe(1);
          order.push('section-end');
        });
        await xWrite;
        expect(order).toEqual(['y-written', 'section-end', 'x-written']);
        expect((await b.get('x'))?.history.map((e) => e.text)).toEqual(['held']);
      } finally {
        await close();
        await drop();
      }
    });

    it('a scope too large for per-user locks takes the store-wide lock instead', async () => {
      const { schema, drop } = await createSchema();
      const { a, b, close } = await twoDaemons(schema);
      try {
        const ids = Array.from({ length: 300 }, (_, i) => `big${i}`);
        const order: string[] = [];
        let other: Promise<unknown> | undefined;
        await a.exclusive({ ids }, async () => {
          other = b.appendHistory('outside', { role: 'user', text: 'x' }).then(() => order.push('outside-written'));
          await sleep(200);
          order.push('section-end');
        });
        await other;
        expect(order).toEqual(['section-end', 'outside-written']);
      } finally {
        await close();
        await drop();
      }
    });

    it('scan reads one consistent snapshot while writes continue', async () => {
      const { schema, drop } = await createSchema();
      const { a, b, close } = await twoDaemons(schema);
      try {
        const template = await a.put('tmp', {});
        const ids = Array.from({ length: 1200 }, (_, i) => `u${String(i).padStart(4, '0')}`);
        await a.exclusive('all', async (ctx) => {
          await ctx.delete(['tmp']);
          await ctx.putMany(ids.map((id) => ({ ...template, user_id: id, name: id })));
        });
        const it = a.scan()[Symbol.asyncIterator]();
        const seen: MemoryRecord[] = [];
        const first = await it.next();
        if (!first.done) seen.push(first.value);
        // Mid-scan, through the other daemon: new users on both sides of the cursor, a change and a delete.
        await b.appendHistory('00_new', { role: 'user', text: 'new' });
        await b.appendHistory('zz_new', { role: 'user', text: 'new' });
        await b.appendHistory('u1100', { role: 'user', text: 'changed' });
        expect(await b.delete(['u0900'])).toBe(1);
        for (let r = await it.next(); !r.done; r = await it.next()) seen.push(r.value);
        expect(seen.map((r) => r.user_id)).toEqual(ids);
        expect(seen.find((r) => r.user_id === 'u1100')?.history).toEqual([]);
        expect(await a.count()).toBe(1200 - 1 + 2);
        const after: string[] = [];
        for await (const r of b.scan({ after: 'u1197' })) after.push(r.user_id);
        expect(after).toEqual(['u1198', 'u1199', 'zz_new']);
      } finally {
        await close();
        await drop();
      }
    });

    it('a scan stopped early gives its connection back; a passed pool is left open by close()', async () => {
      const { schema, drop } = await createSchema();
      // Named, so the check below sees only this pool's sessions, not other test files' scans running at the same time.
      const appName = `scan-test-${process.pid}-${Date.now()}`;
      const pool = new pg.Pool({ connectionString: PG_URL, max: 3, application_name: appName });
      try {
        const driver = await PostgresDriver.connect({ pool, schema });
        expect(driver.url).toBe('postgres://(pool)');
        const store = createStore(driver);
        for (let i = 0; i < 600; i++) await store.put(`p${i}`, {});
        for (let round = 0; round < 5; round++) {
          for await (const r of store.scan()) {
            expect(r.user_id).toBe('p0');
            break;
          }
        }
        expect(pool.totalCount).toBeLessThanOrEqual(3);
        expect(pool.idleCount).toBe(pool.totalCount);
        const { rows } = await pool.query<{ n: string }>(
          `SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1 AND state LIKE 'idle in transaction%' AND query LIKE '%chatmem_scan%'`,
          [appName],
        );
        expect(Number(rows[0]?.n)).toBe(0);
        await store.close();
        expect((await pool.query<{ one: number }>('SELECT 1 AS one')).rows[0]?.one).toBe(1);
      } finally {
        await pool.end();
        await drop();
      }
    });

    it('migrations are idempotent under concurrent starts, and a newer schema is refused', async () => {
      const schema = `chatmem_test_${process.pid}_${randomBytes(4).toString('hex')}`;
      try {
        // The schema does not exist yet: six daemons start at once and race to create it.
        const drivers = await Promise.all(Array.from({ length: 6 }, () => PostgresDriver.connect({ connectionString: PG_URL, schema })));
        const store = createStore(drivers[0]!);
        await store.put('kept', { name: 'K' });
        await Promise.all(drivers.map((d) => d.close()));
        const versions = await adminPool().query(`SELECT table_name, version FROM "${schema}".chatmem_schema`);
        expect(versions.rows).toEqual([{ table_name: 'chatmem_users', version: POSTGRES_SCHEMA_VERSION }]);
        const again = createStore(await PostgresDriver.connect({ connectionString: PG_URL, schema }));
        expect((await again.get('kept'))?.name).toBe('K');
        await again.close();
        await adminPool().query(`UPDATE "${schema}".chatmem_schema SET version = 99`);
        await expect(PostgresDriver.connect({ connectionString: PG_URL, schema })).rejects.toMatchObject({ code: 'E_STORE_VERSION' });
      } finally {
        await adminPool().query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      }
    });

    it('uses the schema named by search_path in the URL', async () => {
      const { schema, drop } = await createSchema();
      try {
        const store = createStore(await PostgresDriver.connect({ connectionString: urlWithSchema(schema) }));
        await store.put('via-url', {});
        await store.close();
        const { rows } = await adminPool().query(`SELECT user_id FROM "${schema}".chatmem_users`);
        expect(rows).toEqual([{ user_id: 'via-url' }]);
      } finally {
        await drop();
      }
    });

    it('removes the password from its url and from connection errors', async () => {
      const u = new URL(PG_URL);
      const secret = u.password || 's3cret-pw';
      u.password = secret;
      const { schema, drop } = await createSchema();
      try {
        const driver = await PostgresDriver.connect({ connectionString: u.toString(), schema });
        expect(driver.url).not.toContain(secret);
        expect(driver.url).toBe(u.toString().replace(`:${secret}@`, ':***@'));
        await driver.close();
      } finally {
        await drop();
      }
      const down = `postgres://chatmem:${secret}@127.0.0.1:1/test`;
      const err = await PostgresDriver.connect({ connectionString: down }).then(
        () => null,
        (e: unknown) => e as Error & { code?: string },
      );
      expect(err?.code).toBe('E_STORE_OPEN');
      expect(err?.message).toContain('postgres://chatmem:***@127.0.0.1:1/test');
      expect(err?.message).not.toContain(secret);
    });


    it('a failing update function writes nothing, releases its locks and rethrows the same error', async () => {
      const { schema, drop } = await createSchema();
      const driver = await PostgresDriver.connect({ connectionString: PG_URL, schema });
      try {
        const boom = new Error('boom');
        await expect(
          driver.update('f', () => {
            throw boom;
          }),
        ).rejects.toBe(boom);
        expect(await driver.get('f')).toBeNull();
        const store = createStore(driver);
        await within(store.appendHistory('f', { role: 'user', text: 'ok' }), 5_000, 'the next write');
        expect(await store.count()).toBe(1);
      } finally {
        await driver.close();
        await drop();
      }
    });

  });
});
