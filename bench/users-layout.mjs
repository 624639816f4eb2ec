// The users table's layout: WITHOUT ROWID (chatmem until 2026-11-30) against a rowid table with the
// user id a unique key, 4 KB and 8 KB pages, SQLite's default and a 64 MB page cache: get + parse and a
// grouped append (64 per transaction, synchronous = FULL, WAL) of random users, rounds interleaved, the
// median reported (BENCHMARKS.md section 12). Plain better-sqlite3 with the driver's columns: the
// table's layout alone, without chatmem's search queue and triggers.
// Usage: node bench/users-layout.mjs [USERS=100000] [MESSAGES=0: the seed-shaped 10-18; else padded to it] [ROUNDS=3]
// The databases are built once under BENCH_LAYOUT_DIR (default: the OS temp dir) and reused.
import Database from 'better-sqlite3';
import fs from 'node:fs';
import os from 'node:os';
import { makeRecord } from './lib.mjs';

const N = Number(process.argv[2] ?? 100000);
const MSGS = Number(process.argv[3] ?? 0);
const ROUNDS = Number(process.argv[4] ?? 3);
const dir = `${process.env.BENCH_LAYOUT_DIR ?? os.tmpdir()}/chatmem-layout-${N}-${MSGS}`;
fs.mkdirSync(dir, { recursive: true });
function rec(i) {
  const r = makeRecord(i);
  if (MSGS > 0) { let k = 0; while (r.history.length < MSGS) r.history.push({ ...r.history[k++ % 10], ts: r.history[0].ts }); }
  return r;
}
for (const f of [{ f: 'wr4k', rowid: false, ps: 4096 }, { f: 'rowid4k', rowid: true, ps: 4096 }, { f: 'rowid8k', rowid: true, ps: 8192 }]) {
  const file = `${dir}/${f.f}.db`;
  if (fs.existsSync(`${file}.ready`)) continue;
  for (const s of ['', '-wal', '-shm']) fs.rmSync(file + s, { force: true });
  const db = new Database(file);
  db.pragma(`page_size = ${f.ps}`);
  db.pragma('journal_mode = WAL');
  db.exec(`CREATE TABLE users (user_id TEXT PRIMARY KEY NOT NULL, data TEXT NOT NULL, name TEXT, product TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, messages INTEGER NOT NULL, search_text TEXT NOT NULL)${f.rowid ? '' : ' WITHOUT ROWID'}; CREATE INDEX users_updated_at ON users(updated_at);`);
  const ins = db.prepare('INSERT INTO users VALUES (?,?,?,?,?,?,?,?)');
  // Users arrive in no id order, as a live store grows.
  const order = Array.from({ length: N }, (_, i) => i);
  for (let i = N - 1; i > 0; i--) { const j = (i * 2654435761) % (i + 1); [order[i], order[j]] = [order[j], order[i]]; }
  const load = db.transaction((idx) => { for (const i of idx) { const r = rec(i); ins.run(r.user_id, JSON.stringify(r), r.name, r.product, r.created_at, r.updated_at, r.history.length, ''); } });
  for (let i = 0; i < N; i += 5000) load(order.slice(i, i + 5000));
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
  fs.writeFileSync(`${file}.ready`, '');
}
const configs = [
  { name: 'wr4k', f: 'wr4k' }, { name: 'wr4k-c64', f: 'wr4k', cache: -65536 },
  { name: 'rowid4k', f: 'rowid4k' }, { name: 'rowid4k-c64', f: 'rowid4k', cache: -65536 },
  { name: 'rowid8k', f: 'rowid8k' }, { name: 'rowid8k-c64', f: 'rowid8k', cache: -65536 },
  ];
const res = Object.fromEntries(configs.map((c) => [c.name, { get: [], app: [], scan: [] }]));
let seed = 1;
for (let round = 0; round < ROUNDS; round++) {
  const order = configs.map((_, i) => configs[(i + round) % configs.length]);
  for (const c of order) {
    const db = new Database(`${dir}/${c.f}.db`);
    db.pragma('journal_mode = WAL'); db.pragma('synchronous = FULL'); db.pragma('wal_autocheckpoint = 0');
    if (c.cache) db.pragma(`cache_size = ${c.cache}`);
    const ids = []; for (let k = 0; k < 10000; k++) ids.push(makeRecord(((k + seed) * 7919 + 13) % N).user_id);
    seed += 10007;
    const get = db.prepare('SELECT data FROM users WHERE user_id = ?').pluck();
    for (const id of ids.slice(0, 500)) get.get(id); // warm a little
    let t0 = performance.now(); for (const id of ids) JSON.parse(get.get(id)); res[c.name].get.push((performance.now() - t0) * 1000 / ids.length);
    const upd = db.prepare('UPDATE users SET data = ?, updated_at = ?, messages = ? WHERE user_id = ?');
    const batch = db.transaction((bids) => { for (const id of bids) { const r = JSON.parse(get.get(id)); r.history.push({ role: 'user', text: 'halo kak, mau tanya soal pengiriman ya', ts: new Date().toISOString() }); if (r.history.length > 50) r.history.shift(); r.updated_at = new Date().toISOString(); upd.run(JSON.stringify(r), r.updated_at, r.history.length, id); } });
    t0 = performance.now(); for (let k = 0; k < ids.length; k += 64) batch(ids.slice(k, k + 64)); res[c.name].app.push((performance.now() - t0) * 1000 / ids.length);
    db.pragma('wal_checkpoint(TRUNCATE)');
    db.close();
  }
  process.stderr.write(`round ${round + 1} load ${(await import('node:os')).loadavg()[0].toFixed(1)}\n`);
}
const med = (a) => { const s = [...a].sort((x, y) => x - y); return +s[Math.floor(s.length / 2)].toFixed(1); };
console.table(configs.map((c) => ({ cfg: c.name, sizeMB: Math.round(fs.statSync(`${dir}/${c.f}.db`).size / 1e6), getUs: med(res[c.name].get), appendUs: med(res[c.name].app), getAll: res[c.name].get.map((x) => x.toFixed(0)).join('/'), appAll: res[c.name].app.map((x) => x.toFixed(0)).join('/') })));
