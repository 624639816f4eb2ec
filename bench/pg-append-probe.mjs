// Where an append's cost goes on PostgreSQL, through the library (no HTTP): N users loaded into a fresh
// schema (dropped after), then appends to random users with C in flight, in four variants on the same
// table, interleaved: as shipped; with synchronous_commit off (what the commit's WAL flush costs in
// wall time); without the pg_trgm GIN index on search_text (what the index costs); and both. For each:
// appends/s, latency, and CPU per append of this process (the driver's JS) and of its backends (found
// by application_name), from /proc. Knobs: BENCH_PG_PROBE_USERS (10000), BENCH_PG_PROBE_OPS (2000 per
// variant and round), BENCH_PG_PROBE_CONCURRENCY (8: one daemon's write slots), BENCH_PG_PROBE_ROUNDS (2).
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import pg from 'pg';
import { envInt, loadUsers, machineInfo, openStoreAt, round, runAppends } from './lib.mjs';

const PG = process.env.CHATMEM_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
const USERS = envInt('BENCH_PG_PROBE_USERS', 10_000);
const OPS = envInt('BENCH_PG_PROBE_OPS', 2000);
const CONC = envInt('BENCH_PG_PROBE_CONCURRENCY', 8);
const ROUNDS = envInt('BENCH_PG_PROBE_ROUNDS', 2);
const schema = `chatmem_bench_probe_${process.pid}`;
const appName = schema;

async function cpuSeconds(pid) {
  try {
    const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

function urlWith(extra) {
  const u = new URL(PG);
  u.searchParams.set('options', `-c search_path=${schema}${extra}`);
  u.searchParams.set('application_name', appName);
  return u.toString();
}

const admin = new pg.Client({ connectionString: PG });
await admin.connect();
await admin.query(`CREATE SCHEMA ${schema}`);
const results = [];
try {
  const loader = await openStoreAt(urlWith(''));
  const loadS = await loadUsers(loader, USERS, { label: `load ${USERS}` });
  await loader.close();
  const { rows: idx } = await admin.query(`SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexdef ILIKE '%gin%'`, [schema]);
  const ginDef = idx[0]?.indexdef;
  if (!ginDef) throw new Error('no GIN index found: pg_trgm missing?');
  const ginName = /INDEX (\S+) ON/.exec(ginDef)?.[1];
  process.stderr.write(`loaded ${USERS} users in ${loadS.toFixed(1)} s; index ${ginName}\n`);
  const variants = [
    ['as shipped', '', true],
    ['synchronous_commit off', ' -c synchronous_commit=off', true],
    ['no trigram index', '', false],
    ['no index, sync off', ' -c synchronous_commit=off', false],
  ];
  let seed = 1;
  for (let r = 1; r <= ROUNDS; r++) {
    for (const [name, extra, withIndex] of variants) {
      const { rows } = await admin.query(`SELECT count(*)::int AS n FROM pg_indexes WHERE schemaname = $1 AND indexname = $2`, [schema, ginName]);
      if (withIndex && rows[0].n === 0) await admin.query(ginDef);
      if (!withIndex && rows[0].n === 1) await admin.query(`DROP INDEX ${schema}.${ginName}`);
      const store = await openStoreAt(urlWith(extra));
      await runAppends(store, { users: USERS, concurrency: CONC, maxOps: 50, seconds: 60, seed: 999 }); // opens the pool's connections
      const { rows: b } = await admin.query('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [appName]);
      const pids = b.map((x) => x.pid);
      const c0 = await Promise.all(pids.map(cpuSeconds));
      const j0 = process.cpuUsage();
      const res = await runAppends(store, { users: USERS, concurrency: CONC, maxOps: OPS, seconds: 600, seed: seed++ });
      const j = process.cpuUsage(j0);
      const c1 = await Promise.all(pids.map(cpuSeconds));
      await store.close();
      const db = c1.reduce((a, x, i) => a + x - (c0[i] ?? 0), 0);
      const row = {
        round: r,
        variant: name,
        load1: round(os.loadavg()[0], 1),
        perSec: res.perSec,
        p50: round(res.latencyMs.p50, 1),
        p99: round(res.latencyMs.p99, 1),
        jsCpuMs: round(((j.user + j.system) / 1000) / res.ops, 3),
        dbCpuMs: round((db * 1000) / res.ops, 3),
        errors: res.errors,
      };
      results.push(row);
      process.stderr.write(`  ${JSON.stringify(row)}\n`);
    }
  }
} finally {
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await admin.end();
}
console.log(`users ${USERS}, ${OPS} appends per variant, ${CONC} in flight; CPU ms per append (this process = driver JS; db = its backends)`);
console.log('round  variant                   load1  appends/s  p50 ms  p99 ms  js cpu  db cpu');
for (const r of results) console.log(`${String(r.round).padStart(5)}  ${r.variant.padEnd(24)} ${String(r.load1).padStart(6)} ${String(r.perSec).padStart(10)} ${String(r.p50).padStart(7)} ${String(r.p99).padStart(7)} ${String(r.jsCpuMs).padStart(7)} ${String(r.dbCpuMs).padStart(7)}`);
console.log(`JSON ${JSON.stringify({ bench: 'pg-append-probe', date: new Date().toISOString(), machine: machineInfo(), users: USERS, ops: OPS, concurrency: CONC, results })}`);
