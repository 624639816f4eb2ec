// Probes: what the proposed fixes of the big-store findings would buy, measured at a moderate size
// (BENCH_PROBE_USERS, default 100000; every cost here is linear in the store). Nothing in src/ is
// changed: the alternatives are written here with better-sqlite3 (already a dependency) and node:crypto.
//
//   a. backup read side: store.scan() (JSON.parse per row, then JSON.stringify again by the writer)
//      vs reading the stored JSON text as-is and writing lines (what a raw-text scan would do)
//   b. backup verification: digestBackupFile (full JSON parse) vs SHA-256 + newline count
//   c. schema: the driver's WITHOUT ROWID table (2 KB rows spill into overflow pages) vs a rowid table
//      with a UNIQUE index on user_id: bytes on disk, COUNT(*), the stats() aggregate
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { envInt, loadUsers, machineInfo, makeOps, MB, openStoreAt, Reporter, rmDir, round, tmpDir } from './lib.mjs';

const users = envInt('BENCH_PROBE_USERS', 100_000);
const rep = new Reporter('probes');
const tStart = performance.now();
const dir = await tmpDir('probes');

const secs = (t0) => round((performance.now() - t0) / 1000, 2);

async function timeIt(fn) {
  const t0 = performance.now();
  const v = await fn();
  return { v, ms: performance.now() - t0 };
}

try {
  const dbFile = path.join(dir, 'memory.db');
  const store = await openStoreAt(`sqlite:${dbFile}`);
  await loadUsers(store, users, { label: `probe ${users}` });
  const ops = await makeOps(store, dir);

  // ---- a. backup read side ----
  const backup = await timeIt(() => ops.createBackup());
  const bytes = backup.v.manifest.bytes;
  rep.add(`a createBackup (library) users=${users}`, { seconds: round(backup.ms / 1000, 2), mb: round(bytes / MB), mbPerSec: round(bytes / MB / (backup.ms / 1000)) });
  {
    let n = 0;
    const t0 = performance.now();
    for await (const _r of store.scan()) n++;
    rep.add('a store.scan() alone (JSON.parse per row)', { users: n, seconds: secs(t0) });
  }
  {
    const reader = new Database(dbFile, { readonly: true });
    const stmt = reader.prepare('SELECT user_id, data FROM users ORDER BY user_id');
    let n = 0;
    let t0 = performance.now();
    for (const _row of stmt.iterate()) n++;
    rep.add('a raw SELECT user_id, data alone (no parse)', { users: n, seconds: secs(t0) });
    t0 = performance.now();
    for (const row of stmt.iterate()) JSON.stringify(JSON.parse(row.data));
    rep.add('a JSON.parse + JSON.stringify of every row (what scan + entryLine add)', { users: n, seconds: secs(t0) });
    // A raw-text backup: the stored JSON is written as the line's value (the driver stores JSON.stringify(record)).
    const out = path.join(dir, 'raw-backup.json');
    t0 = performance.now();
    const ws = createWriteStream(out);
    await once(ws, 'open');
    const hash = createHash('sha256');
    let batch = '{\n';
    let first = true;
    for (const row of stmt.iterate()) {
      batch += (first ? '' : ',\n') + JSON.stringify(row.user_id) + ':' + row.data;
      first = false;
      if (batch.length >= 64 * 1024) {
        const buf = Buffer.from(batch, 'utf8');
        hash.update(buf);
        if (!ws.write(buf)) await once(ws, 'drain');
        batch = '';
      }
    }
    const buf = Buffer.from(batch + '\n}\n', 'utf8');
    hash.update(buf);
    ws.end(buf);
    await finished(ws);
    const fh = await fsp.open(out, 'r+');
    await fh.sync();
    await fh.close();
    const rawSecs = secs(t0);
    reader.close();
    const same = hash.digest('hex') === backup.v.manifest.sha256;
    rep.add('a raw-text backup write (SELECT data → lines, SHA-256, fsync)', { seconds: rawSecs, mbPerSec: round(bytes / MB / rawSecs), identicalToLibraryBackup: same });
    await fsp.rm(out);
  }

  // ---- b. verification ----
  {
    const { digestBackupFile } = await import('../dist/backup/format.js');
    const d = await timeIt(() => digestBackupFile(backup.v.file));
    rep.add('b verify: digestBackupFile (library, parses every entry)', { seconds: round(d.ms / 1000, 2), mbPerSec: round(bytes / MB / (d.ms / 1000)) });
    const t0 = performance.now();
    const hash = createHash('sha256');
    let lines = 0;
    for await (const chunk of createReadStream(backup.v.file, { highWaterMark: 1024 * 1024 })) {
      hash.update(chunk);
      for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
    }
    const ok = hash.digest('hex') === d.v.sha256 && lines - 2 === d.v.users;
    const s = secs(t0);
    rep.add('b verify: SHA-256 + newline count', { seconds: s, mbPerSec: round(bytes / MB / s), agrees: ok });
  }
  await store.close();

  // ---- c. schema ----
  {
    const a = new Database(dbFile);
    const aBytes = (await fsp.stat(dbFile)).size;
    const altFile = path.join(dir, 'alt.db');
    const b = new Database(altFile);
    b.pragma('journal_mode = WAL');
    b.exec(`CREATE TABLE users (
      id INTEGER PRIMARY KEY, user_id TEXT NOT NULL UNIQUE, data TEXT NOT NULL, name TEXT, product TEXT,
      created_at TEXT NOT NULL, updated_at TEXT NOT NULL, messages INTEGER NOT NULL, search_text TEXT NOT NULL)`);
    b.exec(`ATTACH '${dbFile}' AS src`);
    b.exec('INSERT INTO main.users (user_id, data, name, product, created_at, updated_at, messages, search_text) SELECT * FROM src.users ORDER BY user_id');
    b.exec('DETACH src');
    b.pragma('wal_checkpoint(TRUNCATE)');
    const bBytes = (await fsp.stat(altFile)).size;
    const q = (db, sql) => {
      const t0 = performance.now();
      const v = db.prepare(sql).get();
      return { v, ms: round(performance.now() - t0, 1) };
    };
    const statsSql = 'SELECT COUNT(*) AS users, SUM(messages) AS messages, SUM(length(CAST(data AS BLOB))) AS bytes, MAX(updated_at) AS last FROM users';
    for (const [label, db, size] of [['WITHOUT ROWID (driver today)', a, aBytes], ['rowid table + UNIQUE(user_id)', b, bBytes]]) {
      q(db, 'SELECT COUNT(*) AS n FROM users'); // warm
      const c = q(db, 'SELECT COUNT(*) AS n FROM users');
      const s = q(db, statsSql);
      const g = q(db, `SELECT data FROM users WHERE user_id = '${'62' + (8100000000 + 97 * Math.floor(users / 2))}'`);
      rep.add(`c schema ${label} users=${users}`, { mbOnDisk: round(size / MB), bytesPerUser: Math.round(size / users), countMs: c.ms, statsMs: s.ms, getMs: g.ms });
    }
    a.close();
    b.close();
  }
} finally {
  await rmDir(dir);
}
rep.summary({ machine: machineInfo(), config: { users }, wallSeconds: round((performance.now() - tStart) / 1000) });
