// The longest write pause of a clear-all under load: `BENCH_CLEAR_WRITERS` callers append to random users
// through the library while `Operations.clearAll` runs on a store of N users; prints the longest append,
// how many appends were acknowledged during the clear, and how long the clear took.
// Knobs: BENCH_CLEAR_USERS (20000,100000), BENCH_CLEAR_WRITERS (8).
import * as os from 'node:os';
import { chatMessage, envInt, envInts, latencyStats, loadUsers, machineInfo, makeOps, openStoreAt, rmDir, rng, round, tmpDir, userId } from './lib.mjs';

const USERS = envInts('BENCH_CLEAR_USERS', [20_000, 100_000]);
const WRITERS = envInt('BENCH_CLEAR_WRITERS', 8);
const results = [];
for (const n of USERS) {
  const dir = await tmpDir('clear');
  try {
    const store = await openStoreAt(`sqlite:${dir}/memory.db`);
    await loadUsers(store, n, { label: `load ${n}` });
    const ops = await makeOps(store, dir);
    // The whole-store section's span: a write that overlaps it waited for it.
    const sections = [];
    const clearDelete = [];
    const exclusive = store.exclusive.bind(store);
    store.exclusive = (scope, fn) =>
      exclusive(scope, async (ctx) => {
        const t = performance.now();
        try {
          return await fn(
            Object.assign(Object.create(ctx), {
              clear: async () => {
                const c0 = performance.now();
                try {
                  return await ctx.clear();
                } finally {
                  clearDelete.push(performance.now() - c0);
                }
              },
            }),
          );
        } finally {
          if (scope === 'all') sections.push([t, performance.now()]);
        }
      });
    const rand = rng(n);
    let stop = false;
    let k = 0;
    const lat = [];
    const inSection = [];
    const outside = [];
    let failed = 0;
    const writer = async () => {
      while (!stop) {
        const t0 = performance.now();
        try {
          await store.appendHistory(userId(Math.floor(rand() * n)), chatMessage(k++));
          const t1 = performance.now();
          lat.push(t1 - t0);
          if (sections.some(([a, b]) => t1 >= a && t0 <= b)) inSection.push(t1 - t0);
          else outside.push(t1 - t0);
        } catch {
          failed++;
        }
      }
    };
    const writers = Array.from({ length: WRITERS }, writer);
    await new Promise((r) => setTimeout(r, 1000));
    const before = lat.length;
    lat.length = 0;
    outside.length = 0;
    const t0 = performance.now();
    const res = await ops.clearAll();
    const clearMs = performance.now() - t0;
    const during = lat.length;
    await new Promise((r) => setTimeout(r, 500));
    stop = true;
    await Promise.all(writers);
    const s = latencyStats(lat);
    const row = { users: n, load1: round(os.loadavg()[0], 2), clearMs: round(clearMs, 0), backupUsers: res.deleted, appendsBefore1s: before, appendsDuringClear: during, failed, writeMaxMs: round(s.max, 1), writeP99Ms: round(s.p99, 1),
      sectionMs: round(sections.reduce((a, [x, y]) => a + y - x, 0), 0), maxWaitedForSectionMs: round(Math.max(0, ...inSection), 1), maxOutsideSectionMs: round(Math.max(0, ...outside), 1), deleteMs: round(clearDelete.reduce((a, b) => a + b, 0), 0) };
    process.stderr.write(`  ${JSON.stringify(row)}\n`);
    results.push(row);
    await store.close();
  } finally {
    await rmDir(dir);
  }
}
console.log(`JSON ${JSON.stringify({ bench: 'clear-pause', date: new Date().toISOString(), machine: machineInfo(), writers: WRITERS, results })}`);
