// Bench: SQLite search while full-text index work is queued (schema 4's search_pending), and what the
// background indexer costs per queued change.
//
//   Builds a store of BENCH_PENDING_USERS generated users (default 10000) the way a full restore writes
//   (the index built directly), with the background indexer held back. Then, for each queue size in
//   BENCH_PENDING_APPENDS (cumulative appends, default 0,1000,10000; 64 in flight), times the query mix
//   (BENCH_SEARCH_REPEAT runs each, default 10, limit 100): wall p50 and CPU p50 per class, with the
//   queue at that size. Last, applies the queue in chunks (one transaction each, as the background
//   indexer does), split equally between the chunk sizes of BENCH_PENDING_CHUNKS (default 50,500,2000:
//   a chunk of the indexer is 500 changes at scale 1, fewer when a burst of 100 ms holds fewer), and
//   prints the CPU per applied change for each size.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
process.env.BENCH_FIXTURE ??= path.join(here, '../test/fixtures/seed-format/memory.json');
const { chatMessage, envInt, envInts, latencyStats, machineInfo, restoreUsers, rmDir, round, tmpDir, userId } = await import('./lib.mjs');
const { SqliteDriver } = await import('../dist/store/sqlite/index.js');
const { createStore } = await import('../dist/store/store.js');
import * as os from 'node:os';

const users = envInt('BENCH_PENDING_USERS', 10_000);
const levels = envInts('BENCH_PENDING_APPENDS', [0, 1000, 10_000]);
const repeat = envInt('BENCH_SEARCH_REPEAT', 10);
const chunkSizes = envInts('BENCH_PENDING_CHUNKS', [50, 500, 2000]);

const mix = [
  ['full phone', userId(Math.floor(users / 2))],
  ['common first name', 'Siti'],
  ['rare full name (0.5%)', 'Wahyu Nurhaliza'],
  ['chat phrase (in queued messages too)', 'bau gosong'],
  ['queued message id', '(#777)'],
  ['absent term', 'kata-yang-tidak-ada'],
];

const dir = await tmpDir('search-pending');
try {
  const driver = await SqliteDriver.open(path.join(dir, 'memory.db'), { indexDelayMs: 1e9 });
  const store = createStore(driver);
  const built = await restoreUsers(store, users);
  process.stderr.write(`  built ${users} users in ${round(built, 1)} s\n`);
  const rows = [];
  let k = 0;
  for (const target of levels) {
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (k < target) await store.appendHistory(userId((k * 7919) % users), chatMessage(k++));
      }),
    );
    const queued = driver.pendingIndexWork();
    const load1 = round(os.loadavg()[0], 2);
    for (const [name, q] of mix) {
      const wall = [];
      const cpu = [];
      let found = 0;
      for (let i = 0; i < repeat; i++) {
        const c = process.cpuUsage();
        const t = performance.now();
        found = (await store.search(q, { limit: 100 })).length;
        wall.push(performance.now() - t);
        const d = process.cpuUsage(c);
        cpu.push((d.user + d.system) / 1000);
      }
      const row = { appends: k, queued, load1, query: name, found, wallP50: latencyStats(wall).p50, cpuP50: latencyStats(cpu).p50 };
      rows.push(row);
      process.stderr.write(`  ${JSON.stringify(row)}\n`);
    }
  }
  const queued = driver.pendingIndexWork();
  const indexer = [];
  for (const [i, size] of chunkSizes.entries()) {
    const share = i === chunkSizes.length - 1 ? Infinity : Math.floor(queued / chunkSizes.length);
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    let applied = 0;
    for (let n; applied < share && (n = driver.indexChunk(Math.min(size, share - applied))) > 0; ) applied += n;
    const c = process.cpuUsage(c0);
    indexer.push({ chunk: size, applied, wallMs: round(performance.now() - t0, 1), cpuUsPerChange: round((c.user + c.system) / Math.max(1, applied), 1) });
  }
  await store.close();

  console.log('queued  appends  load1 | query                                  found  wall p50 ms  cpu p50 ms');
  for (const r of rows) console.log(`${String(r.queued).padStart(6)} ${String(r.appends).padStart(8)} ${String(r.load1).padStart(6)} | ${r.query.padEnd(38)} ${String(r.found).padStart(5)} ${String(r.wallP50).padStart(12)} ${String(r.cpuP50).padStart(11)}`);
  console.log(`indexer: ${queued} queued changes from ${k} appends`);
  for (const r of indexer) console.log(`  chunks of ${r.chunk}: ${r.applied} changes, ${r.wallMs} ms wall, ${r.cpuUsPerChange} µs CPU per change`);
  console.log(`JSON ${JSON.stringify({ bench: 'search-pending', date: new Date().toISOString(), machine: machineInfo(), users, rows, indexer })}`);
} finally {
  await rmDir(dir);
}
