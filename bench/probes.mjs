// Probes: what is still open around the SQLite schema, measured at a moderate size (BENCH_PROBE_USERS,
// default 100000). Nothing in src/ is changed: the alternatives are made here with better-sqlite3
// (already a dependency) on copies of a store the library built.
//
// The raw-text backup and the hash + line-count verification that this script used to probe are in
// src/ now (Store.scanJson, digestBackupFile lineFormat); big-store.mjs measures them at 1M users.
//
//   c. disk: the driver's WITHOUT ROWID table (2 KB rows spill into overflow pages) vs a rowid table
//      with UNIQUE(user_id), both with the updated_at index: bytes per user, and get() by user_id
//   d. the clear's DELETE of every row: with the totals triggers (the driver today: per-row trigger,
//      SQLite's truncate optimisation is off), with a delete trigger that does not read the row's
//      data, and with the delete trigger dropped for that one transaction and the totals zeroed
//   e. what the totals triggers and the updated_at index cost an append: the same store with and
//      without them, through the library, sequential and BENCH_CONCURRENCY (64) in flight
//      (BENCH_PROBE_SECONDS per run, default 5; the two variants alternate, twice)
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { envInt, loadUsers, machineInfo, MB, openStoreAt, Reporter, rmDir, round, runAppends, tmpDir, userId } from './lib.mjs';

const users = envInt('BENCH_PROBE_USERS', 100_000);
const seconds = envInt('BENCH_PROBE_SECONDS', 5);
const concurrency = envInt('BENCH_CONCURRENCY', 64);
const rep = new Reporter('probes');
const tStart = performance.now();
const dir = await tmpDir('probes');

const STATS_SQL = 'SELECT COUNT(*) AS users, SUM(messages) AS messages, SUM(length(CAST(data AS BLOB))) AS bytes FROM users';

/** A compact copy of `file` (VACUUM INTO), opened read-write in WAL mode with the driver's pragmas. */
function copyOf(src, name) {
  const file = path.join(dir, name);
  src.exec(`VACUUM INTO '${file}'`);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  return { file, db };
}

const fileBytes = async (file) => (await fsp.stat(file)).size;

try {
  const dbFile = path.join(dir, 'memory.db');
  {
    const store = await openStoreAt(`sqlite:${dbFile}`);
    const loadS = await loadUsers(store, users, { label: `probe ${users}` });
    rep.note(`loaded ${users} users in ${round(loadS)} s (not measured)`);
    await store.close();
  }
  const src = new Database(dbFile);

  // ---- c. disk and get() ----
  {
    const aBytes = await fileBytes(dbFile);
    const altFile = path.join(dir, 'alt.db');
    const b = new Database(altFile);
    b.pragma('journal_mode = WAL');
    b.exec(`CREATE TABLE users (
      id INTEGER PRIMARY KEY, user_id TEXT NOT NULL UNIQUE, data TEXT NOT NULL, name TEXT, product TEXT,
      created_at TEXT NOT NULL, updated_at TEXT NOT NULL, messages INTEGER NOT NULL, search_text TEXT NOT NULL)`);
    b.exec('CREATE INDEX users_updated_at ON users (updated_at)');
    b.exec(`ATTACH '${dbFile}' AS src`);
    b.exec('INSERT INTO main.users (user_id, data, name, product, created_at, updated_at, messages, search_text) SELECT * FROM src.users ORDER BY user_id');
    b.exec('DETACH src');
    b.pragma('wal_checkpoint(TRUNCATE)');
    const bBytes = await fileBytes(altFile);
    const gets = (db) => {
      const stmt = db.prepare('SELECT data FROM users WHERE user_id = ?');
      const t = [];
      for (let k = 0; k < 2000; k++) {
        const id = userId((k * 7919) % users);
        const t0 = performance.now();
        stmt.get(id);
        t.push(performance.now() - t0);
      }
      t.sort((x, y) => x - y);
      return round(t[Math.floor(t.length / 2)], 3);
    };
    for (const [label, db, size] of [['WITHOUT ROWID (driver today)', src, aBytes], ['rowid table + UNIQUE(user_id)', b, bBytes]]) {
      rep.add(`c schema ${label} users=${users}`, { mbOnDisk: round(size / MB), bytesPerUser: Math.round(size / users), getP50Ms: gets(db) });
    }
    b.close();
    await fsp.rm(altFile);
  }

  // ---- d. the clear's DELETE ----
  {
    const variants = [
      ['driver today (totals triggers)', () => {}],
      [
        'delete trigger without reading data (bytes not kept; attribution only)',
        (db) =>
          db.exec(`DROP TRIGGER users_totals_delete;
            CREATE TRIGGER users_totals_delete AFTER DELETE ON users BEGIN
              UPDATE totals SET users = users - 1, messages = messages - OLD.messages WHERE id = 1;
            END;`),
      ],
    ];
    for (const [label, prep] of variants) {
      const { file, db } = copyOf(src, 'clear.db');
      prep(db);
      const t0 = performance.now();
      const n = db.transaction(() => db.prepare('DELETE FROM users').run().changes)();
      const ms = performance.now() - t0;
      rep.add(`d clear DELETE: ${label} users=${users}`, { deleted: n, ms: round(ms, 1), totals: db.prepare('SELECT users, messages, bytes FROM totals').get() });
      db.close();
      await fsp.rm(file);
    }
    {
      // A possible fix: the delete trigger is dropped and re-created inside the clear's transaction, and
      // the totals are zeroed in it, so SQLite can truncate the table instead of visiting every row.
      const { file, db } = copyOf(src, 'clear.db');
      const ddl = db.prepare("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'users_totals_delete'").get().sql;
      const t0 = performance.now();
      const n = db.transaction(() => {
        db.exec('DROP TRIGGER users_totals_delete');
        const changes = db.prepare('DELETE FROM users').run().changes;
        db.exec('UPDATE totals SET users = 0, messages = 0, bytes = 0 WHERE id = 1');
        db.exec(ddl);
        return changes;
      })();
      const ms = performance.now() - t0;
      const after = db.prepare(STATS_SQL).get();
      rep.add(`d clear DELETE: trigger dropped in the transaction, totals zeroed users=${users}`, {
        deleted: n,
        ms: round(ms, 1),
        totals: db.prepare('SELECT users, messages, bytes FROM totals').get(),
        recount: after,
        triggerBack: db.prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'trigger' AND name = 'users_totals_delete'").get().n === 1,
      });
      db.close();
      await fsp.rm(file);
    }
  }

  // ---- e. what the totals triggers and the updated_at index cost an append ----
  {
    const withT = copyOf(src, 'with-totals.db');
    withT.db.close();
    const without = copyOf(src, 'without-totals.db');
    without.db.exec(`DROP TRIGGER users_totals_insert; DROP TRIGGER users_totals_update; DROP TRIGGER users_totals_delete;
      DROP INDEX users_updated_at;`);
    without.db.close();
    const stores = [
      ['driver today (totals triggers + updated_at index)', await openStoreAt(`sqlite:${withT.file}`)],
      ['same store without them', await openStoreAt(`sqlite:${without.file}`)],
    ];
    const res = new Map(stores.map(([label]) => [label, { seq: [], conc: [], seqP50: [], concP50: [] }]));
    for (let round_ = 0; round_ < 2; round_++) {
      for (const [label, store] of stores) {
        const seq = await runAppends(store, { users, concurrency: 1, seconds, seed: 100 + round_ });
        const conc = await runAppends(store, { users, concurrency, seconds, seed: 200 + round_ });
        const r = res.get(label);
        r.seq.push(seq.perSec);
        r.conc.push(conc.perSec);
        r.seqP50.push(seq.latencyMs.p50);
        r.concP50.push(conc.latencyMs.p50);
      }
    }
    for (const [label, store] of stores) {
      const r = res.get(label);
      rep.add(`e append ${label} users=${users}`, { seqMsgsPerSec: r.seq, seqP50Ms: r.seqP50, concMsgsPerSec: r.conc, concP50Ms: r.concP50, inFlight: concurrency });
      await store.close();
    }
  }
  src.close();
} finally {
  await rmDir(dir);
}
rep.summary({ machine: machineInfo(), config: { users, seconds, concurrency }, wallSeconds: round((performance.now() - tStart) / 1000) });
