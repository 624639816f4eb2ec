// Bench: search on SQLite stores of 10k, 100k and 1M users (FTS5 trigram index + id-order walk),
// against baselines in the same run, and what searching costs the chat path.
//
//   For each size in BENCH_SEARCH_SIZES (default 10000,100000,1000000) opens or builds a store of
//   generated users (bench/lib.mjs; built the way a full restore writes, `replaceAll`). With
//   BENCH_STORE_CACHE=DIR the store is kept in DIR/search-<n>/ and reused by later runs (a 1M store
//   takes ~7 GB and several minutes to build); without it, a temp dir removed at the end.
//   Then, per query class, BENCH_SEARCH_REPEAT runs (default 20) of:
//     new       store.search() of this tree (limit 100)
//     previous  the algorithm of the commit before (index matches in turns with a walk that parses
//               every record in JS, 200 users per turn), on its own read-only connection
//     like      a plain `data LIKE '%q%' ORDER BY user_id LIMIT 100` scan (BENCH_LIKE_REPEAT runs,
//               default 3; skipped above BENCH_LIKE_MAX_USERS, default 100000, where one scan of an
//               absent term takes seconds)
//   and prints wall p50/p95 and CPU p50 (process CPU time: less sensitive to other processes' load).
//   Then appends (BENCH_CONCURRENCY in flight, default 8) for BENCH_SECONDS (default 10), alone and
//   while one caller runs the query mix back to back: latency p50/p99/max and the event loop's
//   longest stall; and the event loop's longest stall while only searches run (how long one turn of a
//   search holds it). Appends change the cached store (a few thousand messages); queries are unaffected.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import * as os from 'node:os';
import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
process.env.BENCH_FIXTURE ??= path.join(here, '../test/fixtures/seed-format/memory.json');
const { envInt, envInts, latencyStats, machineInfo, openStoreAt, Reporter, rmDir, round, runAppends, tmpDir, dirBytes, MB, userId, restoreUsers } =
  await import('./lib.mjs');
const { searchText } = await import('../dist/store/search-text.js');
const { compareIds } = await import('../dist/record.js');
const Database = createRequire(import.meta.url)('better-sqlite3');

const sizes = envInts('BENCH_SEARCH_SIZES', [10_000, 100_000, 1_000_000]);
const repeat = envInt('BENCH_SEARCH_REPEAT', 20);
const likeRepeat = envInt('BENCH_LIKE_REPEAT', 3);
const likeMax = envInt('BENCH_LIKE_MAX_USERS', 100_000);
const seconds = envInt('BENCH_SECONDS', 10);
const concurrency = envInt('BENCH_CONCURRENCY', 8);
const cache = process.env.BENCH_STORE_CACHE || null;

const rep = new Reporter('search');

// Generated users share 200 templates: a template's full name is 1/200 of the store (a "rare" name
// here is still 5,000 users at 1M), "Siti" starts ~10% of names, "Jl. Sudirman" is ~12% of addresses
// and every user has the product. Ids are 62 + (8100000000 + 97 i), so 9 leading digits pick ~10 users.
const mix = (n) => [
  ['full phone', userId(Math.floor(n / 2))],
  ['phone substring (8 middle digits)', userId(Math.floor(n / 3)).slice(3, 11)],
  ['id prefix (9 digits)', userId(Math.floor(n / 4)).slice(0, 9)],
  ['common first name', 'Siti'],
  ['rare full name (0.5%)', 'Wahyu Nurhaliza'],
  ['address fragment', 'Jl. Sudirman'],
  ['product', 'electronic air cleaner'],
  ['chat phrase', 'bau gosong'],
  ['absent term', 'kata-yang-tidak-ada'],
];

/** The search of the commit before this bench's tree, over a read-only connection (reproduced for comparison). */
function previousSearch(db) {
  const matchesStmt = db.prepare('SELECT d.user_id FROM search_fts JOIN search_docs AS d ON d.id = search_fts.rowid WHERE search_fts MATCH ?').pluck();
  const walkStmt = db.prepare('SELECT user_id, data FROM users WHERE user_id > ? ORDER BY user_id LIMIT ?');
  const summary = db.prepare('SELECT user_id, name, product, created_at, updated_at, messages FROM users WHERE user_id = ?');
  const keepSmallest = (first, id, limit) => {
    if (first.length >= limit && compareIds(id, first[first.length - 1]) >= 0) return;
    if (first.includes(id)) return;
    first.push(id);
    first.sort(compareIds);
    if (first.length > limit) first.pop();
  };
  return async (query, limit) => {
    const matches = matchesStmt.iterate(`"${query.replace(/"/g, '""')}"`);
    const needle = query.toLowerCase();
    const first = [];
    const walked = [];
    let after = '';
    let result = null;
    try {
      while (result === null) {
        for (let k = 0; k < 2000; k++) {
          const next = matches.next();
          if (next.done) { result = first; break; }
          keepSmallest(first, next.value, limit);
        }
        if (result !== null) break;
        const rows = walkStmt.all(after, 200);
        for (const row of rows) {
          if (searchText(JSON.parse(row.data)).includes(needle)) walked.push(row.user_id);
          if (walked.length >= limit) break;
        }
        const last = rows[rows.length - 1];
        if (walked.length >= limit || rows.length < 200 || !last) result = walked.slice(0, limit);
        else after = last.user_id;
        await new Promise((r) => setImmediate(r));
      }
    } finally {
      matches.return?.();
    }
    return result.map((id) => summary.get(id)).filter(Boolean);
  };
}

function likeSearch(db) {
  const stmt = db.prepare("SELECT user_id FROM users WHERE data LIKE ? ESCAPE '\\' ORDER BY user_id LIMIT ?").pluck();
  return async (query, limit) => stmt.all(`%${query.replace(/[\\%_]/g, (c) => `\\${c}`)}%`, limit);
}

async function time(fn, q, n) {
  const wall = [];
  const cpu = [];
  let found = 0;
  for (let i = 0; i < n; i++) {
    const c = process.cpuUsage();
    const t = performance.now();
    found = (await fn(q, 100)).length;
    wall.push(performance.now() - t);
    const d = process.cpuUsage(c);
    cpu.push((d.user + d.system) / 1000);
  }
  const w = latencyStats(wall);
  const s = [...wall].sort((a, b) => a - b);
  return { found, p50: w.p50, p95: round(s[Math.min(s.length - 1, Math.ceil(0.95 * s.length) - 1)], 2), cpuP50: latencyStats(cpu).p50 };
}

async function openOrBuild(n) {
  let dir;
  let temp = false;
  if (cache) {
    dir = path.join(cache, `search-${n}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } else {
    dir = await tmpDir(`search-${n}`);
    temp = true;
  }
  const file = path.join(dir, 'memory.db');
  const existed = existsSync(file);
  const store = await openStoreAt(`sqlite:${file}`);
  const built = existed && (await store.count()) === n;
  if (!built) {
    if ((await store.count()) !== 0) await store.exclusive('all', (ctx) => ctx.clear());
    const s = await restoreUsers(store, n, { label: `search ${n}` });
    rep.add(`build ${n}`, { users: n, seconds: round(s), diskMB: round((await dirBytes(dir)) / MB), load1: round(os.loadavg()[0], 2) });
  } else rep.note(`reusing ${file} (${round((await dirBytes(dir)) / MB)} MB)`);
  return { store, file, dir, temp };
}

const t0 = performance.now();
for (const n of sizes) {
  const { store, file, dir, temp } = await openOrBuild(n);
  try {
    const ro = new Database(file, { readonly: true });
    ro.pragma('busy_timeout = 10000');
    const ways = [
      ['new', (q, l) => store.search(q, { limit: l }), repeat],
      ['previous', previousSearch(ro), repeat],
      ...(n <= likeMax ? [['like', likeSearch(ro), likeRepeat]] : []),
    ];
    const queries = mix(n);
    // Warm the page cache the way a running daemon would have it: one pass of every query, each way.
    for (const [, q] of queries) for (const [, fn] of ways) await fn(q, 100);
    for (const [name, q] of queries) {
      const row = { query: q, load1: round(os.loadavg()[0], 2) };
      for (const [way, fn, times] of ways) row[way] = await time(fn, q, times);
      rep.add(`${n} ${name}`, row);
    }
    ro.close();
    // How long one search holds the event loop: the longest stall while the mix runs (no writes).
    const held = monitorEventLoopDelay({ resolution: 1 });
    held.enable();
    const mixStart = performance.now();
    for (let k = 0; k < 3; k++) for (const [, q] of queries) await store.search(q, { limit: 100 });
    held.disable();
    rep.add(`${n} event loop during searches`, { searches: 3 * queries.length, ms: round(performance.now() - mixStart), loopMaxMs: round(held.max / 1e6, 2), loopP99Ms: round(held.percentile(99) / 1e6, 2), load1: round(os.loadavg()[0], 2) });

    const loop = monitorEventLoopDelay({ resolution: 1 });
    loop.enable();
    const alone = await runAppends(store, { users: n, concurrency, seconds, seed: 7 });
    loop.disable();
    rep.add(`${n} appends alone`, { inFlight: concurrency, perSec: alone.perSec, latencyMs: alone.latencyMs, loopMaxMs: round(loop.max / 1e6), load1: round(os.loadavg()[0], 2) });
    let stop = false;
    const searchLat = [];
    const searcher = (async () => {
      for (let k = 0; !stop; k++) {
        const [, q] = queries[k % queries.length];
        const t = performance.now();
        await store.search(q, { limit: 100 });
        searchLat.push(performance.now() - t);
      }
    })();
    loop.reset();
    loop.enable();
    const during = await runAppends(store, { users: n, concurrency, seconds, seed: 8 });
    loop.disable();
    stop = true;
    await searcher;
    rep.add(`${n} appends during searches`, {
      inFlight: concurrency,
      perSec: during.perSec,
      latencyMs: during.latencyMs,
      loopMaxMs: round(loop.max / 1e6),
      searches: searchLat.length,
      searchMs: latencyStats(searchLat),
      load1: round(os.loadavg()[0], 2),
    });
  } finally {
    await store.close();
    if (temp) await rmDir(dir);
  }
}
rep.summary({ machine: machineInfo(), config: { sizes, repeat, likeRepeat, seconds, concurrency, cache }, wallSeconds: round((performance.now() - t0) / 1000) });
