import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import pg from 'pg';
import { afterEach, expect, it } from 'vitest';
import type { MemoryRecord } from '../../src/record.js';
import { PostgresDriver } from '../../src/store/postgres/index.js';
import { hashKey } from '../../src/store/postgres/locks.js';
import type { StagedRecords } from '../../src/store/types.js';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { openStore } from '../../src/store/open.js';
import { runChild } from '../helpers/crash.js';
import { PG_URL, createSchema, describePg, driverInSchema, fromArray, swapRecord as record, tableOid as oid, waitUntilBlocked } from '../helpers/pg.js';
import { ROOT, tempDir } from '../helpers/tmp.js';

/**
 * What a PostgreSQL whole-store swap (src/store/postgres/swap.ts) leaves and loses: stages of killed
 * daemons and set-aside tables are dropped later by any daemon, never a stage a live daemon is
 * building; the old table is dropped after the section; the table's owner, grants, comment and
 * storage options are carried over; a table with what a swap cannot carry (a view on it, a trigger,
 * ...) is cleared and restored in place instead, with a warning saying why.
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

const CHILD = path.join(ROOT, 'test/fixtures/pg-swap-kill.mjs');
/** The first key of a stage's advisory lock (locks.ts, NS_STAGE), as pg_locks shows it. */
const NS_STAGE = 0x63686d73;

async function tables(admin: pg.Client, schema: string): Promise<string[]> {
  const { rows } = await admin.query<{ t: string }>('SELECT tablename AS t FROM pg_tables WHERE schemaname = $1 ORDER BY 1', [schema]);
  return rows.map((r) => r.t);
}

async function rowCount(admin: pg.Client, schema: string, table: string): Promise<number> {
  return Number((await admin.query<{ n: string }>(`SELECT COUNT(*) AS n FROM "${schema}"."${table}"`)).rows[0]?.n);
}

/** Polls (no sleep-and-hope) until `held()` counts at most `n`. */
async function waitForStageKeys(held: () => Promise<number>, n: number): Promise<void> {
  while ((await held()) > n) await new Promise((r) => setTimeout(r, 5));
}

/** The warnings (code and message) emitted while `body` runs. */
async function warningsOf<T>(body: () => Promise<T>): Promise<{ result: T; warnings: { code: string; message: string }[] }> {
  const warnings: { code: string; message: string }[] = [];
  const onWarning = (w: Error & { code?: string }) => warnings.push({ code: w.code ?? '', message: w.message });
  process.on('warning', onWarning);
  try {
    const result = await body();
    await new Promise((r) => setImmediate(r));
    return { result, warnings };
  } finally {
    process.off('warning', onWarning);
  }
}

describePg('PostgreSQL swap: no leftovers, nothing silently lost', () => {
  it('a stage left by a killed daemon is dropped at the next start and at the next staging; a stage a live daemon is building is kept, and swaps in', async () => {
    const { driver, admin, schema } = await driverInSchema(cleanups);
    const base = await tables(admin, schema);
    const stages = async () => (await tables(admin, schema)).filter((t) => t.includes('_stage_'));
    // This schema's stage keys only: the other test files run in parallel.
    const keysHeld = async () => {
      const names = await stages();
      const { rows } = await admin.query<{ n: string }>(
        `SELECT COUNT(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objsubid = 2 AND granted
           AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())
           AND objid = ANY($2::oid[])`,
        [NS_STAGE, stageKeys(schema, names)],
      );
      return Number(rows[0]?.n);
    };

    // A live builder: its stream waits for the test after 10 records.
    let go = (): void => undefined;
    const gate = new Promise<void>((r) => (go = r));
    // Run first by afterEach, so that a failure leaves no staging open past the driver's close.
    cleanups.push(async () => go());
    async function* slow(): AsyncGenerator<MemoryRecord> {
      for (let i = 0; i < 10; i++) yield record(`live${i}`, 'the live restore');
      await gate;
    }
    const building = driver.stageAll?.(slow()) as Promise<StagedRecords>;
    while ((await stages()).length === 0) await new Promise((r) => setTimeout(r, 5));
    const [live] = await stages();

    const killed = async (): Promise<string> => {
      const before = new Set(await stages());
      const run = await runChild([CHILD, PG_URL, schema, 'stage'], { killAfterMs: 0, readyMarker: 'building' });
      expect(run.killed).toBe(true);
      const dead = (await stages()).find((t) => !before.has(t));
      expect(dead).toBeDefined();
      expect(await rowCount(admin, schema, dead ?? '')).toBe(500);
      // Once the server has ended the killed session, the live builder's key at most is held.
      await waitForStageKeys(keysHeld, 1);
      return dead ?? '';
    };

    // At the next start of any daemon.
    const dead1 = await killed();
    expect(await stages()).toEqual([dead1, live].sort());
    const other = await PostgresDriver.connect({ connectionString: PG_URL, schema });
    cleanups.push(() => other.close());
    expect(await stages()).toEqual([live]);

    // At the next staging (the live builder's own daemon).
    const dead2 = await killed();
    expect(await stages()).toEqual([dead2, live].sort());
    const empty = (await driver.stageAll?.(fromArray([]))) as StagedRecords;
    expect((await stages()).includes(dead2)).toBe(false);
    expect((await stages()).includes(live ?? '')).toBe(true);
    const emptyName = (await stages()).find((t) => t !== live) ?? '';
    expect(await keyHeld(admin, schema, emptyName)).toBe(true);
    await empty.release();
    // Released: its key is given back at once (a key left held would keep a connection open for nothing).
    expect(await keyHeld(admin, schema, emptyName)).toBe(false);

    // The live stage was never touched: it finishes and swaps in whole.
    go();
    const staged = await building;
    expect(await driver.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged))).toBe(10);
    expect(await keyHeld(admin, schema, live ?? '')).toBe(true);
    await staged.release();
    expect(await keyHeld(admin, schema, live ?? '')).toBe(false);
    expect((await driver.list({ cursor: null, limit: 20 })).length).toBe(10);
    expect((await driver.get('live9'))?.history[0]?.text).toBe('the live restore');
    expect(await tables(admin, schema)).toEqual(base);
  });

  it('a daemon killed after its swap committed, before the old table is dropped: that table keeps the old rows until the next start drops it', async () => {
    const { driver, admin, schema } = await driverInSchema(cleanups);
    const base = await tables(admin, schema);
    for (const id of ['a', 'b', 'c']) await driver.update(id, () => record(id));
    const run = await runChild([CHILD, PG_URL, schema, 'swapped'], { killAfterMs: 0, readyMarker: 'swapped' });
    expect(run.killed).toBe(true);
    // Waits for the killed section's locks to go with its session.
    await driver.update('d', () => record('d'));
    const left = (await tables(admin, schema)).filter((t) => !base.includes(t));
    expect(left).toHaveLength(1);
    expect(left[0]).toMatch(/^chatmem_users_old_[0-9a-f]{12}$/);
    expect(await rowCount(admin, schema, left[0] ?? '')).toBe(3);
    expect((await driver.list({ cursor: null, limit: 10 })).map((u) => u.user_id)).toEqual(['d']);
    const again = await PostgresDriver.connect({ connectionString: PG_URL, schema });
    await again.close();
    expect(await tables(admin, schema)).toEqual(base);
    expect((await driver.list({ cursor: null, limit: 10 })).map((u) => u.user_id)).toEqual(['d']);
  });

  it("the old table's drop runs after the section: another daemon writes while it waits, and the table is gone when the section's call returns", async () => {
    const { driver, admin, schema } = await driverInSchema(cleanups);
    const base = await tables(admin, schema);
    const other = await PostgresDriver.connect({ connectionString: PG_URL, schema });
    cleanups.push(() => other.close());
    for (const id of ['a', 'b', 'c']) await driver.update(id, () => record(id));
    const holder = new pg.Client({ connectionString: PG_URL });
    await holder.connect();
    cleanups.push(() => holder.end());
    let old = '';
    const cleared = driver.exclusive('all', async (ctx) => {
      const n = await ctx.clear();
      // In the section, after the swap: the old table is set aside whole, not yet dropped.
      const aside = (await tables(admin, schema)).filter((t) => !base.includes(t));
      expect(aside).toHaveLength(1);
      old = aside[0] ?? '';
      // Named so that any daemon's clean-up finds it should this process die before its drop.
      expect(old).toMatch(/^chatmem_users_old_[0-9a-f]{12}$/);
      expect(await rowCount(admin, schema, old)).toBe(3);
      // Something else holds it, so its drop has to wait.
      await holder.query(`BEGIN; LOCK TABLE "${schema}"."${old}" IN ACCESS SHARE MODE`);
      return n;
    });
    // The section's call must not return before its drop (which waits on the holder); if it fails, so does this.
    await Promise.race([waitUntilBlocked(admin, schema), cleared.then(() => expect.fail('returned before the old table was dropped'))]);
    expect((await admin.query<{ q: string }>(`SELECT query AS q FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`, [old])).rows[0]?.q).toMatch(/^DROP TABLE/);
    // The section is over: another daemon's write and this daemon's read go through.
    await other.update('e', () => record('e'));
    expect((await driver.list({ cursor: null, limit: 10 })).map((u) => u.user_id)).toEqual(['e']);
    expect(await tables(admin, schema)).toContain(old);
    await holder.query('COMMIT');
    expect(await cleared).toBe(3);
    expect(await tables(admin, schema)).toEqual(base);
  });

  it("the users table's owner, grants (a real extra role), comment and storage options survive a clear and a full restore", async () => {
    const { driver, admin, users, schema } = await driverInSchema(cleanups);
    const tag = `${process.pid}_${randomBytes(3).toString('hex')}`;
    const reader = `chatmem_reader_${tag}`;
    const owner = `chatmem_owner_${tag}`;
    await admin.query(`CREATE ROLE ${reader} NOLOGIN; CREATE ROLE ${owner} NOLOGIN`);
    // Runs after the schema's drop (cleanups run last first): the roles own and hold nothing then.
    cleanups.unshift(async () => {
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      try {
        await c.query(`DROP ROLE IF EXISTS ${reader}; DROP ROLE IF EXISTS ${owner}`);
      } finally {
        await c.end();
      }
    });
    await admin.query(`GRANT USAGE ON SCHEMA "${schema}" TO ${reader};
      ALTER TABLE ${users} OWNER TO ${owner};
      GRANT SELECT ON ${users} TO ${reader};
      GRANT INSERT, UPDATE ON ${users} TO ${reader} WITH GRANT OPTION;
      REVOKE TRUNCATE ON ${users} FROM ${owner};
      COMMENT ON TABLE ${users} IS 'the operator''s note';
      ALTER TABLE ${users} SET (fillfactor = 90)`);
    const props = async () =>
      (
        await admin.query<{ acl: string; owner: string; note: string | null; opts: string | null }>(
          `SELECT relacl::text AS acl, relowner::regrole::text AS owner, obj_description(oid, 'pg_class') AS note, reloptions::text AS opts FROM pg_class WHERE oid = $1::regclass`,
          [users],
        )
      ).rows[0];
    const before = await props();
    expect(before?.acl).toContain(`${reader}=a*rw*/${owner}`);
    const readAs = async () => {
      await admin.query(`SET ROLE ${reader}`);
      try {
        return (await admin.query<{ id: string }>(`SELECT user_id AS id FROM ${users} ORDER BY 1`)).rows.map((r) => r.id);
      } finally {
        await admin.query('RESET ROLE');
      }
    };
    for (const id of ['a', 'b']) await driver.update(id, () => record(id));
    expect(await readAs()).toEqual(['a', 'b']);

    const first = await oid(admin, users);
    expect(await driver.exclusive('all', (ctx) => ctx.clear())).toBe(2);
    expect(await oid(admin, users)).not.toBe(first);
    expect(await props()).toEqual(before);
    await driver.update('c', () => record('c'));
    expect(await readAs()).toEqual(['c']);

    const second = await oid(admin, users);
    const staged = (await driver.stageAll?.(fromArray([record('r1'), record('r2')]))) as StagedRecords;
    expect(await driver.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged))).toBe(2);
    await staged.release();
    expect(await oid(admin, users)).not.toBe(second);
    expect(await props()).toEqual(before);
    expect(await readAs()).toEqual(['r1', 'r2']);
  });

  it('a daemon whose role may write the rows but does not own the table clears and restores in place, saying why', async () => {
    const { admin, users, schema } = await driverInSchema(cleanups);
    const role = `chatmem_writer_${process.pid}_${randomBytes(3).toString('hex')}`;
    await admin.query(`CREATE ROLE ${role} LOGIN`);
    cleanups.unshift(async () => {
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      try {
        await c.query(`DROP ROLE IF EXISTS ${role}`);
      } finally {
        await c.end();
      }
    });
    await admin.query(`GRANT USAGE, CREATE ON SCHEMA "${schema}" TO ${role};
      GRANT SELECT, INSERT, UPDATE, DELETE ON ${users}, "${schema}".chatmem_users_deleted TO ${role};
      GRANT SELECT ON "${schema}".chatmem_schema TO ${role}`);
    const u = new URL(PG_URL);
    u.username = role;
    const { result: driver } = await warningsOf(() => PostgresDriver.connect({ connectionString: u.toString(), schema }));
    cleanups.push(() => driver.close());
    for (const id of ['a', 'b']) await driver.update(id, () => record(id));
    const before = await oid(admin, users);
    const { result, warnings } = await warningsOf(() => driver.exclusive('all', (ctx) => ctx.clear()));
    expect(result).toBe(2);
    expect(warnings.filter((w) => w.code === 'CHATMEM_SWAP_FALLBACK').map((w) => w.message)).toEqual([expect.stringMatching(/^PostgreSQL clear: the users table is not swapped \(this role may not replace the table \(/) as string]);
    expect(await oid(admin, users)).toBe(before);
    expect(await driver.count()).toBe(0);
    const staged = (await driver.stageAll?.(fromArray([record('r1'), record('r2')]))) as StagedRecords;
    const restored = await warningsOf(() => driver.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged)));
    await staged.release();
    expect(restored.result).toBe(2);
    expect(restored.warnings.map((w) => w.code)).toContain('CHATMEM_SWAP_FALLBACK');
    expect(await oid(admin, users)).toBe(before);
    expect((await driver.list({ cursor: null, limit: 10 })).map((x) => x.user_id)).toEqual(['r1', 'r2']);
    expect((await tables(admin, schema)).filter((n) => n.includes('_stage_') || n.includes('_old_'))).toEqual([]);
  });

  it('a users table whose name needs quoting (a quote, a double quote) swaps with its grants, and its side tables are found and dropped', async () => {
    const { schema, drop } = await createSchema();
    cleanups.push(drop);
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    cleanups.push(() => admin.end());
    const table = `it's "odd"`;
    const q = (name: string) => `"${schema}"."${name.replace(/"/g, '""')}"`;
    const users = q(table);
    const driver = await PostgresDriver.connect({ connectionString: PG_URL, schema, table });
    cleanups.push(() => driver.close());
    await admin.query(`GRANT SELECT ON ${users} TO PUBLIC; COMMENT ON TABLE ${users} IS 'it''s noted'`);
    const acl = async () => (await admin.query<{ a: string; c: string }>(`SELECT relacl::text AS a, obj_description(oid, 'pg_class') AS c FROM pg_class WHERE oid = $1::regclass`, [users])).rows[0];
    const before = { oid: await oid(admin, users), acl: await acl(), tables: await tables(admin, schema) };
    for (const id of ['a', 'b']) await driver.update(id, () => record(id));
    expect(await driver.exclusive('all', (ctx) => ctx.clear())).toBe(2);
    expect(await oid(admin, users)).not.toBe(before.oid);
    expect(await acl()).toEqual(before.acl);
    expect(await tables(admin, schema)).toEqual(before.tables);
    // A leftover of a killed daemon, and an operator's table one character off, which stays.
    await admin.query(`CREATE TABLE ${q(`${table}_old_0123456789ab`)} (x int); CREATE TABLE ${q(`${table}_old_0123456789abc`)} (x int)`);
    const again = await PostgresDriver.connect({ connectionString: PG_URL, schema, table });
    await again.close();
    expect((await tables(admin, schema)).sort()).toEqual([...before.tables, `${table}_old_0123456789abc`].sort());
  });

  it('an index made on the live table after its twin was staged is renamed aside with it: its name is free again after the swap', async () => {
    const { driver, admin, users, schema } = await driverInSchema(cleanups);
    for (const id of ['a', 'b']) await driver.update(id, () => record(id));
    const base = await tables(admin, schema);
    const staged = (await driver.stageAll?.(fromArray([record('n1')]))) as StagedRecords;
    // No twin of it in the stage: unpaired.
    await admin.query(`CREATE INDEX late_name ON ${users} (name)`);
    expect(await driver.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged))).toBe(1);
    await staged.release();
    expect(await tables(admin, schema)).toEqual(base);
    expect((await driver.list({ cursor: null, limit: 10 })).map((u) => u.user_id)).toEqual(['n1']);
    // Dropped with the old table; the name can be used on the new one.
    await admin.query(`CREATE INDEX late_name ON ${users} (name)`);
  });

  it("a stage's key connection killed by the server (an administrator's pg_terminate_backend) does not crash the daemon; the stage still swaps in", async () => {
    const { driver, admin, schema } = await driverInSchema(cleanups);
    let go = (): void => undefined;
    const gate = new Promise<void>((r) => (go = r));
    cleanups.push(async () => go());
    async function* slow(): AsyncGenerator<MemoryRecord> {
      yield record('k1');
      await gate;
      yield record('k2');
    }
    const building = driver.stageAll?.(slow()) as Promise<StagedRecords>;
    let name = '';
    while (!name) name = (await tables(admin, schema)).find((t) => t.includes('_stage_')) ?? '';
    const keeper = async () =>
      (await admin.query<{ pid: number }>(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 AND objsubid = 2 AND granted`, [NS_STAGE, stageKeys(schema, [name])[0]]))
        .rows[0]?.pid;
    const pid = await keeper();
    expect(pid).toBeDefined();
    await admin.query('SELECT pg_terminate_backend($1)', [pid]);
    while ((await admin.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rows.length > 0) await new Promise((r) => setTimeout(r, 5));
    // The client sees its socket end on the next turns of the event loop; an unheard 'error' would crash the run here.
    await new Promise((r) => setTimeout(r, 50));
    go();
    const staged = await building;
    expect(await driver.exclusive('all', async (ctx) => ctx.replaceStaged?.(staged))).toBe(2);
    await staged.release();
    expect((await driver.list({ cursor: null, limit: 10 })).map((u) => u.user_id)).toEqual(['k1', 'k2']);
  });

  it('a view on the users table: clear-all and full restore replace the rows in place, say why, the view still works, and every user is in the pre-clear backup', async () => {
    const { schema, url, drop } = await createSchema();
    cleanups.push(drop);
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    cleanups.push(() => admin.end());
    const users = `"${schema}".chatmem_users`;
    const t = await tempDir('chatmem-pgview-');
    cleanups.push(t.cleanup);
    const store = await openStore(url);
    cleanups.push(() => store.close());
    const ops = new Operations({ store, backupDir: `${t.dir}/backups`, audit: new AuditLog(`${t.dir}/audit.log`), actor: { kind: 'os', name: 'test' } });
    const ids = ['a', 'b', 'c', 'd', 'e'];
    for (const id of ids.slice(0, 4)) await store.appendHistory(id, { role: 'user', text: `hi ${id}` });
    const source = await ops.createBackup();
    await store.appendHistory('e', { role: 'user', text: 'hi e' });
    await admin.query(`CREATE VIEW "${schema}".names AS SELECT user_id FROM ${users}`);
    const view = async () => (await admin.query<{ user_id: string }>(`SELECT user_id FROM "${schema}".names ORDER BY 1`)).rows.map((r) => r.user_id);
    expect(await view()).toEqual(ids);
    const before = await oid(admin, users);

    const { result: cleared, warnings } = await warningsOf(() => ops.clearAll());
    expect(cleared.deleted).toBe(5);
    expect(warnings).toContainEqual({ code: 'CHATMEM_SWAP_FALLBACK', message: expect.stringMatching(/^PostgreSQL \w+: the users table is not swapped \(other objects depend on it/) as string });
    expect(await oid(admin, users)).toBe(before);
    expect(await store.count()).toBe(0);
    const backup = JSON.parse(readFileSync(cleared.backupFile, 'utf8')) as Record<string, MemoryRecord>;
    expect(Object.keys(backup).sort()).toEqual(ids);
    expect(backup.e?.history.map((m) => m.text)).toEqual(['hi e']);
    expect((await ops.verifyBackups()).find((v) => v.id === cleared.backup)?.ok).toBe(true);
    await store.appendHistory('z', { role: 'user', text: 'after the clear' });
    expect(await view()).toEqual(['z']);

    const { result: restored, warnings: w2 } = await warningsOf(() => ops.restore(source.id, { wholeStore: true }));
    expect(restored.written).toBe(4);
    expect(w2.map((w) => w.code)).toContain('CHATMEM_SWAP_FALLBACK');
    expect(await oid(admin, users)).toBe(before);
    expect(await view()).toEqual(ids.slice(0, 4));
    expect((await tables(admin, schema)).filter((n) => n.includes('_stage_') || n.includes('_old_'))).toEqual([]);
  });

  it('a trigger, a foreign key to the table, a function of its row type or column privileges keep the table: cleared in place, each still there and working', async () => {
    const cases: { name: string; setup: (s: string, users: string) => string; check: (s: string, users: string) => string; why: RegExp }[] = [
      {
        name: 'trigger',
        setup: (s, u) => `CREATE TABLE ${s}.seen (id text); CREATE FUNCTION ${s}.note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO ${s}.seen VALUES (NEW.user_id); RETURN NEW; END $$;
          CREATE TRIGGER note AFTER INSERT ON ${u} FOR EACH ROW EXECUTE FUNCTION ${s}.note()`,
        check: (s) => `SELECT string_agg(id, ',' ORDER BY id) AS v FROM ${s}.seen`,
        why: /it has triggers/,
      },
      {
        name: 'foreign key',
        setup: (s, u) => `CREATE TABLE ${s}.notes (user_id text COLLATE "C" REFERENCES ${u} (user_id) ON DELETE CASCADE)`,
        check: (s) => `SELECT conname AS v FROM pg_constraint WHERE conrelid = '${s}.notes'::regclass AND contype = 'f' AND confrelid = '${s}.chatmem_users'::regclass`,
        why: /other objects depend on it/,
      },
      {
        name: 'row type',
        setup: (s, u) => `CREATE FUNCTION ${s}.uid(r ${u}) RETURNS text LANGUAGE sql AS 'SELECT r.user_id'`,
        check: (s, u) => `SELECT string_agg(${s}.uid(x), ',') AS v FROM ${u} x`,
        why: /other objects depend on it/,
      },
      {
        name: 'column privileges',
        setup: (_s, u) => `GRANT SELECT (user_id) ON ${u} TO PUBLIC`,
        check: (_s, u) => `SELECT attacl::text AS v FROM pg_attribute WHERE attrelid = '${u}'::regclass AND attname = 'user_id'`,
        why: /column privileges/,
      },
    ];
    for (const c of cases) {
      const { driver, admin, users, schema } = await driverInSchema(cleanups);
      const s = `"${schema}"`;
      await admin.query(c.setup(s, users));
      for (const id of ['a', 'b']) await driver.update(id, () => record(id));
      const before = { oid: await oid(admin, users), tables: await tables(admin, schema) };
      const { result, warnings } = await warningsOf(() => driver.exclusive('all', (ctx) => ctx.clear()));
      expect(result, c.name).toBe(2);
      // The refused swap rolled back its twin: no table left, none committed with the row path's transaction.
      expect(await tables(admin, schema), c.name).toEqual(before.tables);
      expect(warnings.filter((w) => w.code === 'CHATMEM_SWAP_FALLBACK').map((w) => w.message), c.name).toEqual([expect.stringMatching(c.why) as string]);
      expect(await oid(admin, users), c.name).toBe(before.oid);
      expect(await driver.count(), c.name).toBe(0);
      await driver.update('z', () => record('z'));
      const v = (await admin.query<{ v: string | null }>(c.check(s, users))).rows[0]?.v;
      expect(v, c.name).toMatch(c.name === 'trigger' ? /^a,b,z$/ : c.name === 'row type' ? /^z$/ : /./);
    }
  });
});

/** Whether a session holds the stage key of `name` (a table of the store `chatmem_users` in `schema`). */
async function keyHeld(admin: pg.Client, schema: string, name: string): Promise<boolean> {
  const { rows } = await admin.query(`SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 AND objsubid = 2 AND granted`, [
    NS_STAGE,
    stageKeys(schema, [name])[0],
  ]);
  return rows.length > 0;
}

/** The stage keys (locks.ts, `LockKeys.stage`) of the tables `names` of the store `chatmem_users` in `schema`, as pg_locks' objid. */
function stageKeys(schema: string, names: string[]): number[] {
  return names.map((n) => hashKey(`${schema}\0chatmem_users\0stage\0${n}`) >>> 0);
}
