// Where an append's cost goes on PostgreSQL, through the library (no HTTP): N users loaded into a fresh
// schema (dropped after), then appends to random users with C in flight, in four variants on the same
// table, interleaved: as shipped; with synchronous_commit off (what the commit's WAL flush costs in
// wall time); without the pg_trgm GIN index on search_text (what the index costs); and both. For each:
// appends/s, latency, and CPU per append of this process (the driver's JS) and of its backends (found
// by application_name), from /proc. Then the same append (parse, push, cap 50, stringify, search_text)
// written with raw SQL three ways, to see what the round trips cost: `raw 4 trips` = the driver's
// statements; `raw 2 trips` = BEGIN + locks + SELECT … FOR UPDATE in one simple query, then the upsert +
// COMMIT in another (literals escaped by pg); `raw batch of C` = C appends to C distinct users in one
// transaction (BEGIN + shared lock, user locks, SELECT … = ANY … FOR UPDATE, one unnest upsert, COMMIT: 5 trips for C appends), a
// group commit on the client; `raw message row` = an O(message) layout (one row per history entry with
// its own trigram index, a small per-user head row): one autocommit statement per append that locks,
// inserts the entry, trims to the cap and bumps the head, without reading or rewriting the record.
// BENCH_PG_PROBE_VARIANTS (a substring: only the variants whose name holds it). Knobs: BENCH_PG_PROBE_USERS (10000), BENCH_PG_PROBE_OPS (2000 per
// variant and round), BENCH_PG_PROBE_CONCURRENCY (8: one daemon's write slots), BENCH_PG_PROBE_ROUNDS (2).
import * as os from 'node:os';
import pg from 'pg';
import { chatMessage, envInt, latencyStats, loadUsers, machineInfo, openStoreAt, rng, round, runAppends, userId, procCpuSeconds as cpuSeconds } from './lib.mjs';
import { searchText } from '../dist/store/search-text.js';
import { stringifyJson } from '../dist/json-safe.js';

const PG = process.env.CHATMEM_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
const USERS = envInt('BENCH_PG_PROBE_USERS', 10_000);
const OPS = envInt('BENCH_PG_PROBE_OPS', 2000);
const CONC = envInt('BENCH_PG_PROBE_CONCURRENCY', 8);
const ROUNDS = envInt('BENCH_PG_PROBE_ROUNDS', 2);
const ONLY = process.env.BENCH_PG_PROBE_VARIANTS ?? '';
const schema = `chatmem_bench_probe_${process.pid}`;
const appName = schema;

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
      if (!name.includes(ONLY)) continue;
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
  // Raw SQL variants, with the index back (as shipped).
  const { rows: ix } = await admin.query(`SELECT count(*)::int AS n FROM pg_indexes WHERE schemaname = $1 AND indexname = $2`, [schema, ginName]);
  if (ix[0].n === 0) await admin.query(ginDef);
  const T = `${schema}.chatmem_users`;
  const COLS = 'user_id, data, name, product, created_at, updated_at, messages, search_text';
  const SET = `ON CONFLICT (user_id) DO UPDATE SET data = EXCLUDED.data, name = EXCLUDED.name, product = EXCLUDED.product,
    created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, messages = EXCLUDED.messages, search_text = EXCLUDED.search_text`;
  const next = (data, k) => {
    const r = JSON.parse(data);
    const ts = new Date().toISOString();
    r.history.push({ id: `p${k}`, ...chatMessage(k), ts });
    if (r.history.length > 50) r.history.splice(0, r.history.length - 50);
    r.updated_at = ts;
    return [r.user_id, stringifyJson(r), r.name, r.product, r.created_at, r.updated_at, r.history.length, searchText(r)];
  };
  const key = (id) => Number.parseInt(id.slice(-6), 10);
  const lit = (c, v) => (v === null ? 'NULL' : typeof v === 'number' ? String(v) : c.escapeLiteral(v));
  let k = 0;
  const raw = {
    'raw 4 trips': async (c, ids) => {
      const id = ids[0];
      await c.query(`BEGIN; SELECT pg_advisory_xact_lock_shared(1, 1); SELECT pg_advisory_xact_lock(2, ${key(id)})`);
      const { rows } = await c.query(`SELECT data FROM ${T} WHERE user_id = $1 FOR UPDATE`, [id]);
      await c.query(`INSERT INTO ${T} (${COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ${SET}`, next(rows[0].data, k++));
      await c.query('COMMIT');
      return 1;
    },
    'raw 2 trips': async (c, ids) => {
      const id = ids[0];
      const res = await c.query(`BEGIN; SELECT pg_advisory_xact_lock_shared(1, 1); SELECT pg_advisory_xact_lock(2, ${key(id)}); SELECT data FROM ${T} WHERE user_id = ${c.escapeLiteral(id)} FOR UPDATE`);
      const v = next(res[3].rows[0].data, k++);
      await c.query(`INSERT INTO ${T} (${COLS}) VALUES (${v.map((x) => lit(c, x)).join(', ')}) ${SET}; COMMIT`);
      return 1;
    },
    [`raw batch of ${CONC}`]: async (c, ids) => {
      const sorted = [...new Set(ids)].sort();
      await c.query(`BEGIN; SELECT pg_advisory_xact_lock_shared(1, 1)`);
      await c.query('SELECT pg_advisory_xact_lock(2, k) FROM unnest($1::int4[]) AS k', [[...new Set(sorted.map(key))].sort((a, b) => a - b)]);
      const { rows } = await c.query(`SELECT data FROM ${T} WHERE user_id = ANY($1::text[]) FOR UPDATE`, [sorted]);
      const cols = [[], [], [], [], [], [], [], []];
      for (const r of rows) next(r.data, k++).forEach((x, i) => cols[i].push(x));
      await c.query(`INSERT INTO ${T} (${COLS}) SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int4[], $8::text[]) ${SET}`, cols);
      await c.query('COMMIT');
      return rows.length;
    },
  };
  // The O(message) layout, filled from the same records.
  const opclass = /\(search_text (\S+)\)/.exec(ginDef)?.[1];
  await admin.query(`CREATE TABLE ${schema}.msgs (user_id TEXT COLLATE "C" NOT NULL, seq BIGSERIAL, entry TEXT NOT NULL, PRIMARY KEY (user_id, seq))`);
  await admin.query(`CREATE TABLE ${schema}.heads (user_id TEXT COLLATE "C" PRIMARY KEY, updated_at TEXT NOT NULL, messages INT NOT NULL)`);
  await admin.query(`INSERT INTO ${schema}.msgs (user_id, entry) SELECT u.user_id, e::text FROM ${T} u, json_array_elements(u.data::json->'history') e ORDER BY u.user_id`);
  await admin.query(`INSERT INTO ${schema}.heads SELECT user_id, updated_at, messages FROM ${T}`);
  await admin.query(`CREATE INDEX ON ${schema}.msgs USING gin (lower(entry) ${opclass})`);
  await admin.query(`ANALYZE ${schema}.msgs; ANALYZE ${schema}.heads`);
  raw['raw message row'] = async (c, ids) => {
    const id = ids[0];
    const ts = new Date().toISOString();
    const entry = JSON.stringify({ id: `p${k}`, ...chatMessage(k++), ts });
    // Data-modifying CTEs share one snapshot: the trim does not see the new row, so it keeps 49 old ones.
    await c.query(
      `WITH l AS (SELECT pg_advisory_xact_lock_shared(1, 1), pg_advisory_xact_lock(2, $3)),
       ins AS (INSERT INTO ${schema}.msgs (user_id, entry) SELECT $1, $2 FROM l RETURNING seq),
       h AS (UPDATE ${schema}.heads SET updated_at = $4, messages = LEAST(messages + 1, 50) WHERE user_id = $1 AND EXISTS (SELECT 1 FROM ins))
       DELETE FROM ${schema}.msgs WHERE user_id = $1 AND EXISTS (SELECT 1 FROM ins) AND seq < (SELECT min(seq) FROM (SELECT seq FROM ${schema}.msgs WHERE user_id = $1 ORDER BY seq DESC LIMIT 49) x)`,
      [id, entry, key(id), ts],
    );
    return 1;
  };
  const rawPool = new pg.Pool({ connectionString: urlWith(''), max: CONC });
  for (let r = 1; r <= ROUNDS; r++) {
    for (const [name, fn] of Object.entries(raw)) {
      if (!name.includes(ONLY)) continue;
      const batch = name.startsWith('raw batch');
      const clients = await Promise.all(Array.from({ length: batch ? 1 : CONC }, () => rawPool.connect()));
      const pids = (await Promise.all(clients.map((c) => c.query('SELECT pg_backend_pid() AS p')))).map((x) => x.rows[0].p);
      const rand = rng(1000 + r);
      const lat = [];
      let done = 0;
      const c0 = await Promise.all(pids.map(cpuSeconds));
      const j0 = process.cpuUsage();
      const t0 = performance.now();
      await Promise.all(
        clients.map(async (c) => {
          while (done < OPS) {
            const ids = Array.from({ length: batch ? CONC : 1 }, () => userId(Math.floor(rand() * USERS)));
            const s0 = performance.now();
            const n = await fn(c, ids);
            const dt = performance.now() - s0;
            for (let i = 0; i < n; i++) lat.push(dt);
            done += n;
          }
        }),
      );
      const secs = (performance.now() - t0) / 1000;
      const j = process.cpuUsage(j0);
      const c1 = await Promise.all(pids.map(cpuSeconds));
      for (const c of clients) c.release();
      const db = c1.reduce((a, x, i) => a + x - (c0[i] ?? 0), 0);
      const st = latencyStats(lat);
      const row = { round: r, variant: name, load1: round(os.loadavg()[0], 1), perSec: round(done / secs, 1), p50: round(st.p50, 1), p99: round(st.p99, 1), jsCpuMs: round((j.user + j.system) / 1000 / done, 3), dbCpuMs: round((db * 1000) / done, 3), errors: 0 };
      results.push(row);
      process.stderr.write(`  ${JSON.stringify(row)}\n`);
    }
  }
  await rawPool.end();
} finally {
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await admin.end();
}
console.log(`users ${USERS}, ${OPS} appends per variant, ${CONC} in flight; CPU ms per append (this process = driver JS; db = its backends)`);
console.log('round  variant                   load1  appends/s  p50 ms  p99 ms  js cpu  db cpu');
for (const r of results) console.log(`${String(r.round).padStart(5)}  ${r.variant.padEnd(24)} ${String(r.load1).padStart(6)} ${String(r.perSec).padStart(10)} ${String(r.p50).padStart(7)} ${String(r.p99).padStart(7)} ${String(r.jsCpuMs).padStart(7)} ${String(r.dbCpuMs).padStart(7)}`);
console.log(`JSON ${JSON.stringify({ bench: 'pg-append-probe', date: new Date().toISOString(), machine: machineInfo(), users: USERS, ops: OPS, concurrency: CONC, results })}`);
