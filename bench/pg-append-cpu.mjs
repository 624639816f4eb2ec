// CPU per append on PostgreSQL through the library (no HTTP), this tree against a baseline tree, in one
// run: N users loaded into a fresh schema per tree (the same users; each tree's own build creates its
// schema version, so a baseline from before a migration runs too; dropped after), then appends to random
// users with C in flight, trees alternating A B A B. For each run: appends/s, latency, CPU per append
// of this process (the driver's JS) and of the store's PostgreSQL backends (found by application_name),
// read from /proc, and the transactions committed per append (pg_stat_database, the whole database: other
// clients of `test` inflate it). CPU moves much less with the machine's load than appends/s do.
// Usage: node bench/pg-append-cpu.mjs [BASELINE_DIST]  (e.g. a copy of main's built dist)
// Knobs: BENCH_PG_CPU_USERS (10000), BENCH_PG_CPU_OPS (4000 per run), BENCH_CONCURRENCY (64,8), BENCH_PG_CPU_ROUNDS (2).
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { envInt, loadUsers, machineInfo, round, runAppends, procCpuSeconds as cpuSeconds } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const PG = process.env.CHATMEM_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
const USERS = envInt('BENCH_PG_CPU_USERS', 10_000);
const OPS = envInt('BENCH_PG_CPU_OPS', 4000);
const ROUNDS = envInt('BENCH_PG_CPU_ROUNDS', 2);
const CONCURRENCY = (process.env.BENCH_CONCURRENCY ?? '64,8').split(',').map(Number);
const schema = `chatmem_bench_pgcpu_${process.pid}`;

const schemaOf = (tree) => `${schema}_${tree.replace(/\W/g, '')}`;
const urlFor = (tree, app) => {
  const u = new URL(PG);
  u.searchParams.set('options', `-c search_path=${schemaOf(tree)}`);
  u.searchParams.set('application_name', app);
  return u.toString();
};

const trees = [['this tree', path.join(here, '..', 'dist')]];
if (process.argv[2]) trees.unshift(['baseline', path.resolve(process.argv[2])]);
const admin = new pg.Client({ connectionString: PG });
await admin.connect();
for (const [name] of trees) await admin.query(`CREATE SCHEMA ${schemaOf(name)}`);
const cleanup = async () => {
  for (const [name] of trees) await admin.query(`DROP SCHEMA IF EXISTS ${schemaOf(name)} CASCADE`).catch(() => undefined);
  await admin.end().catch(() => undefined);
};
process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
const results = [];
try {
  for (const [name, dist] of trees) {
    const { openStore } = await import(path.join(dist, 'store/open.js'));
    const loader = await openStore(urlFor(name, `${schema}_load`));
    const loadS = await loadUsers(loader, USERS, { label: `load ${USERS} (${name})` });
    await loader.close();
    process.stderr.write(`loaded ${USERS} users for ${name} in ${loadS.toFixed(1)} s\n`);
  }
  const commits = async () => Number((await admin.query('SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()')).rows[0].xact_commit);
  let seed = 1;
  for (const conc of CONCURRENCY) {
    for (let r = 1; r <= ROUNDS; r++) {
      for (const [name, dist] of trees) {
        const app = `${schema}_${name.replace(/\W/g, '')}`;
        const { openStore: open } = await import(path.join(dist, 'store/open.js'));
        const store = await open(urlFor(name, app));
        await runAppends(store, { users: USERS, concurrency: conc, maxOps: 200, seconds: 60, seed: 999 }); // opens the pool's connections
        const { rows: b } = await admin.query('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [app]);
        const pids = b.map((x) => x.pid);
        const c0 = await Promise.all(pids.map(cpuSeconds));
        const x0 = await commits();
        const j0 = process.cpuUsage();
        const res = await runAppends(store, { users: USERS, concurrency: conc, maxOps: OPS, seconds: 600, seed: seed++ });
        const j = process.cpuUsage(j0);
        const c1 = await Promise.all(pids.map(cpuSeconds));
        const x1 = await commits();
        await store.close();
        const db = c1.reduce((a, x, i) => a + x - (c0[i] ?? 0), 0);
        const row = {
          concurrency: conc,
          round: r,
          tree: name,
          load1: round(os.loadavg()[0], 1),
          perSec: res.perSec,
          p50: round(res.latencyMs.p50, 1),
          p99: round(res.latencyMs.p99, 1),
          jsCpuUs: round(((j.user + j.system) / res.ops), 0),
          dbCpuUs: round((db * 1e6) / res.ops, 0),
          commitsPerAppend: round((x1 - x0) / res.ops, 2),
          errors: res.errors,
        };
        row.totalCpuUs = row.jsCpuUs + row.dbCpuUs;
        results.push(row);
        process.stderr.write(`  ${JSON.stringify(row)}\n`);
      }
    }
  }
} finally {
  await cleanup();
}
console.log('conc round tree       load1 | appends/s  p50 ms  p99 ms | JS µs  db µs  total µs | commits/append errors');
for (const r of results) {
  console.log(
    `${String(r.concurrency).padStart(4)} ${String(r.round).padStart(5)} ${r.tree.padEnd(10)} ${String(r.load1).padStart(5)} | ${String(r.perSec).padStart(9)} ${String(r.p50).padStart(7)} ${String(r.p99).padStart(7)} | ${String(r.jsCpuUs).padStart(5)} ${String(r.dbCpuUs).padStart(6)} ${String(r.totalCpuUs).padStart(9)} | ${String(r.commitsPerAppend).padStart(14)} ${r.errors}`,
  );
}
console.log(`JSON ${JSON.stringify({ bench: 'pg-append-cpu', date: new Date().toISOString(), machine: machineInfo(), users: USERS, ops: OPS, results })}`);
