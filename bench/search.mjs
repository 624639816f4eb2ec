// Bench: search on a big SQLite store (FTS5 trigram index), and what it costs the chat path.
//
//   Builds a BENCH_SEARCH_USERS-user SQLite store (default 1000000) with the generator of lib.mjs,
//   then for each query runs it BENCH_SEARCH_REPEAT times (default 30) and reports p50/p99/max ms;
//   then runs appends (BENCH_CONCURRENCY in flight, default 8) for BENCH_SECONDS (default 10) twice:
//   alone, and while one caller searches in a loop, and reports append latency (max = the longest
//   a write was held up). Finally the cost of an append with the index: appends/s, and bytes on disk.
//   BENCH_KEEP=1 keeps the store directory.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
// The record templates: the repository's own fixture unless told otherwise.
process.env.BENCH_FIXTURE ??= path.join(here, '../test/fixtures/seed-format/memory.json');
const { envInt, latencyStats, loadUsers, machineInfo, openStoreAt, Reporter, rmDir, round, runAppends, tmpDir, dirBytes, MB, userId } = await import('./lib.mjs');
const os = await import('node:os');

const users = envInt('BENCH_SEARCH_USERS', 1_000_000);
const repeat = envInt('BENCH_SEARCH_REPEAT', 30);
const seconds = envInt('BENCH_SECONDS', 10);
const concurrency = envInt('BENCH_CONCURRENCY', 8);
const keep = envInt('BENCH_KEEP', 0) === 1;

const rep = new Reporter('search');

// Names and addresses repeat across generated users (200 templates): a name matches ~1/200 of the
// store per template using it, so these are broad queries; ids and rare phrases are selective.
const QUERIES = [
  ['full id', () => userId(Math.floor(users / 2))],
  ['id substring (8 digits)', () => userId(Math.floor(users / 3)).slice(3, 11)],
  ['id prefix (2 chars, primary key range)', () => '62'],
  ['name, broad (Nurhaliza: ~8% of users)', () => 'Nurhaliza'],
  ['address fragment, broad (Jl. Sudirman: ~12%)', () => 'Jl. Sudirman'],
  ['name + street, narrow', () => 'Siti Nurhaliza'],
  ['product (Electronic Air Cleaner)', () => 'electronic air cleaner'],
  ['chat phrase', () => 'bau gosong'],
  ['absent term', () => 'kata-yang-tidak-ada'],
];

async function timeSearch(store, q, limit) {
  const lat = [];
  let found = 0;
  for (let i = 0; i < repeat; i++) {
    const t = performance.now();
    found = (await store.search(q, { limit })).length;
    lat.push(performance.now() - t);
  }
  return { found, latencyMs: latencyStats(lat) };
}

/**
 * What the index adds to one append, without fsync noise: inside transactions of 1,000, the row
 * rewrite an append does anyway (same data, same size) against the index work of an append that
 * pushes one message out (insert a document and its trigrams, delete the oldest one).
 */
function indexCost(file) {
  const Database = require('better-sqlite3');
  const db = new Database(file);
  const n = Math.min(5000, users);
  const ids = Array.from({ length: n }, (_, i) => userId(Math.floor((i * 7919) % users)));
  const rewrite = db.prepare("UPDATE users SET data = data || '', updated_at = updated_at WHERE user_id = ?");
  const oldest = db.prepare('SELECT id FROM search_docs WHERE user_id = ? AND kind = 1 ORDER BY id LIMIT 1').pluck();
  const delFts = db.prepare("INSERT INTO search_fts (search_fts, rowid, text) VALUES ('delete', ?, ?)");
  const delDoc = db.prepare('DELETE FROM search_docs WHERE id = ?');
  const insDoc = db.prepare('INSERT INTO search_docs (user_id, kind) VALUES (?, 1)');
  const insFts = db.prepare('INSERT INTO search_fts (rowid, text) VALUES (?, ?)');
  const text = 'sudah saya cek MCB nya kak, masih mati 😢 nomor 12345';
  const time = (fn) => {
    const t = performance.now();
    for (let i = 0; i < n; i += 1000) db.transaction(() => { for (let j = i; j < Math.min(n, i + 1000); j++) fn(ids[j]); })();
    return ((performance.now() - t) * 1000) / n;
  };
  const rowUs = time((id) => rewrite.run(id));
  const indexUs = time((id) => {
    const old = oldest.get(id);
    // The generator's texts differ from `text`; a contentless delete only needs some text to run.
    if (old !== undefined) { delFts.run(old, text); delDoc.run(old); }
    insFts.run(insDoc.run(id).lastInsertRowid, text);
  });
  db.close();
  rep.add('per-append cost, no fsync', { ops: n, rowRewriteUs: round(rowUs), indexUs: round(indexUs), messageChars: [...text].length });
}

const { createRequire } = await import('node:module');
const require = createRequire(import.meta.url);
const dir = await tmpDir(`search-${users}`);
const t0 = performance.now();
try {
  const store = await openStoreAt(`sqlite:${path.join(dir, 'memory.db')}`);
  const loadS = await loadUsers(store, users, { label: `search ${users}` });
  const bytes = await dirBytes(dir);
  rep.add('build', { users, seconds: round(loadS), diskMB: round(bytes / MB), bytesPerUser: Math.round(bytes / users) });
  // Warm the OS cache the way a running daemon would have it: one pass of every query.
  for (const [, q] of QUERIES) await store.search(q(), { limit: 100 });
  for (const [name, q] of QUERIES) {
    const r = await timeSearch(store, q(), 100);
    rep.add(`search ${name}`, { query: q(), limit: 100, found: r.found, latencyMs: r.latencyMs, load1: round(os.loadavg()[0], 2) });
  }

  const alone = await runAppends(store, { users, concurrency, seconds, seed: 7 });
  rep.add('appends alone', { inFlight: concurrency, msgsPerSec: alone.perSec, latencyMs: alone.latencyMs, errors: alone.errors });
  let stop = false;
  let searches = 0;
  const searchLat = [];
  const searcher = (async () => {
    let k = 0;
    while (!stop) {
      const [, q] = QUERIES[k++ % QUERIES.length];
      const t = performance.now();
      await store.search(q(), { limit: 100 });
      searchLat.push(performance.now() - t);
      searches++;
    }
  })();
  const during = await runAppends(store, { users, concurrency, seconds, seed: 8 });
  stop = true;
  await searcher;
  rep.add('appends during searches', {
    inFlight: concurrency,
    msgsPerSec: during.perSec,
    latencyMs: during.latencyMs,
    errors: during.errors,
    searches,
    searchLatencyMs: latencyStats(searchLat),
  });
  await store.close();
  rep.add('after', { diskMB: round((await dirBytes(dir)) / MB), load1: round(os.loadavg()[0], 2) });
  indexCost(path.join(dir, 'memory.db'));
} finally {
  if (!keep) await rmDir(dir);
  else rep.note(`kept ${dir}`);
}
rep.summary({ machine: machineInfo(), config: { users, repeat, seconds, concurrency }, wallSeconds: round((performance.now() - t0) / 1000) });
