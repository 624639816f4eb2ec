// The longest write pause of a clear-all and of a full restore under load, side by side with a baseline
// build, in one run. `BENCH_PAUSE_WRITERS` callers append to random users through the library while
// `Operations.clearAll()` or `Operations.restore(<full backup>, {wholeStore: true})` runs on a SQLite
// store of N users. Per run: the longest append (the pause), p99, the whole-store section's span, how
// many appends were acknowledged during the operation, failed appends, and lost acknowledged appends
// (an acknowledged append that is neither in the store afterwards nor in the operation's backup).
//
// Op `change` (not in the default list) times the store's change of a clear alone, without the engine's
// backup: `store.exclusive('all', ctx => ctx.clear())`; "lost" then counts appends started after it
// returned and missing from the store (a 1M-user clear with its backup takes half an hour here).
// Knobs: BENCH_PAUSE_USERS (100000), BENCH_PAUSE_OPS (clear,restore), BENCH_PAUSE_WRITERS (8),
// BENCH_PAUSE_ROUNDS (1), BENCH_PAUSE_AFTER_MS (500: writers go on this long after the operation), BENCH_PAUSE_BASE (a baseline build's dist/ directory, e.g. the previous commit
// built aside; without it only this tree runs), BENCH_PAUSE_CACHE (where the N-user store and its full
// backup are built once and reused; default a temp dir), BENCH_PAUSE_WORK (where each run's copy goes).
// Prints one line per run, a table, then `JSON {…}`.
//
// BENCH_PAUSE_STORE=postgres: the same on PostgreSQL (BENCH_PG_URL, default the test database) with two
// daemons on one database: half the writers in this process, half in a second process
// (bench/pg-pause-writer.mjs, the same build) that shares the store; "longest write" and "lost" cover
// both. The N users are loaded once into a template schema (kept, named by N); each run copies them
// into a fresh schema that the tree's own build created (its schema version), with the trigram index
// built after the copy, and drops it afterwards.
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, promises as fsp } from 'node:fs';
import { createInterface } from 'node:readline';
import * as os from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chatMessage, envInt, envInts, latencyStats, machineInfo, makeRecord, rng, round, ROOT, userId } from './lib.mjs';

const USERS = envInts('BENCH_PAUSE_USERS', [100_000]);
// 'none': only build the cached store.
const OPS = (process.env.BENCH_PAUSE_OPS ?? 'clear,restore').split(',').filter((o) => o !== 'none' && o !== '');
const WRITERS = envInt('BENCH_PAUSE_WRITERS', 8);
const ROUNDS = envInt('BENCH_PAUSE_ROUNDS', 1);
// How long the writers go on after the operation returned (the "after" columns).
const AFTER_MS = envInt('BENCH_PAUSE_AFTER_MS', 500);
const CACHE = process.env.BENCH_PAUSE_CACHE ?? (await fsp.mkdtemp(path.join(os.tmpdir(), 'chatmem-pause-cache-')));
const WORK = process.env.BENCH_PAUSE_WORK ?? CACHE;
const PG = process.env.BENCH_PAUSE_STORE === 'postgres';
const PG_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const pgUrl = (schema) => {
  const u = new URL(PG_URL);
  u.searchParams.set('options', `-c search_path=${schema}`);
  return u.toString();
};
const COLS = 'user_id, data, name, product, created_at, updated_at, messages, search_text';
async function admin(fn) {
  const { default: pg } = await import('pg');
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}
const wall = () => performance.timeOrigin + performance.now();
const trees = [...(process.env.BENCH_PAUSE_BASE ? [['base', path.resolve(process.env.BENCH_PAUSE_BASE)]] : []), ['this', path.join(ROOT, 'dist')]];

async function lib(dist) {
  const url = (p) => pathToFileURL(path.join(dist, p)).href;
  const [{ openStore }, { Operations }, { AuditLog }] = await Promise.all([import(url('store/open.js')), import(url('ops/operations.js')), import(url('ops/audit.js'))]);
  return { openStore, Operations, AuditLog };
}

async function* generated(n) {
  for (let i = 0; i < n; i++) yield makeRecord(i);
}

/** The N-user store and a full backup of it, built once with this tree (staged bulk write: fastest path). */
async function cached(n) {
  const dir = path.join(CACHE, `pause-${n}`);
  const db = path.join(dir, 'memory.db');
  const backups = path.join(dir, 'backups');
  if (existsSync(path.join(dir, 'ready.json'))) return { db, backups, source: JSON.parse(await fsp.readFile(path.join(dir, 'ready.json'), 'utf8')).source };
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const { openStore, Operations, AuditLog } = await lib(path.join(ROOT, 'dist'));
  const t0 = performance.now();
  const store = await openStore(`sqlite:${db}`);
  await store.exclusive('all', (ctx) => ctx.replaceAll(generated(n)));
  process.stderr.write(`  built ${n} users in ${round((performance.now() - t0) / 1000, 0)} s\n`);
  const ops = new Operations({ store, backupDir: backups, audit: new AuditLog(path.join(dir, 'audit.log')), actor: { kind: 'os', name: 'bench' } });
  const source = (await ops.createBackup()).id;
  await store.close();
  await fsp.writeFile(path.join(dir, 'ready.json'), JSON.stringify({ source }));
  return { db, backups, source };
}

/** PostgreSQL: the N users in a template schema (no trigram index: loads fast) and a full backup of them. */
async function cachedPg(n) {
  const dir = path.join(CACHE, `pause-pg-${n}`);
  const schema = `chatmem_bench_pause_tpl_${n}`;
  const backups = path.join(dir, 'backups');
  const exists = await admin(async (c) => (await c.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema])).rowCount === 1);
  if (exists && existsSync(path.join(dir, 'ready.json'))) return { schema, backups, source: JSON.parse(await fsp.readFile(path.join(dir, 'ready.json'), 'utf8')).source };
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  await admin((c) => c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE; CREATE SCHEMA "${schema}"`));
  const { openStore, Operations, AuditLog } = await lib(path.join(ROOT, 'dist'));
  const t0 = performance.now();
  const store = await openStore(pgUrl(schema));
  await admin((c) => c.query(`DROP INDEX IF EXISTS "${schema}".chatmem_users_search_trgm`));
  await store.exclusive('all', (ctx) => ctx.putAll(generated(n)));
  process.stderr.write(`  loaded ${n} users into ${schema} in ${round((performance.now() - t0) / 1000, 0)} s\n`);
  const ops = new Operations({ store, backupDir: backups, audit: new AuditLog(path.join(dir, 'audit.log')), actor: { kind: 'os', name: 'bench' } });
  const source = (await ops.createBackup()).id;
  await store.close();
  await fsp.writeFile(path.join(dir, 'ready.json'), JSON.stringify({ source }));
  return { schema, backups, source };
}

/** A fresh schema made by `dist`'s own migrations, holding the template's users; its URL. */
async function pgCopy(dist, tree, op, c) {
  const schema = `chatmem_bench_pause_${process.pid}_${tree}_${op}`;
  await admin((a) => a.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE; CREATE SCHEMA "${schema}"`));
  const { openStore } = await lib(dist);
  const s = await openStore(pgUrl(schema));
  await s.close();
  const t0 = performance.now();
  await admin(async (a) => {
    const ns = (await a.query("SELECT extnamespace::regnamespace::text AS s FROM pg_extension WHERE extname = 'pg_trgm'")).rows[0].s;
    await a.query(`DROP INDEX "${schema}".chatmem_users_search_trgm`);
    await a.query(`INSERT INTO "${schema}".chatmem_users (${COLS}) SELECT ${COLS} FROM "${c.schema}".chatmem_users`);
    await a.query(`CREATE INDEX chatmem_users_search_trgm ON "${schema}".chatmem_users USING gin (search_text ${ns}.gin_trgm_ops)`);
    await a.query(`ANALYZE "${schema}".chatmem_users`);
  });
  process.stderr.write(`  copied into ${schema} in ${round((performance.now() - t0) / 1000, 0)} s\n`);
  return { schema, url: pgUrl(schema), drop: () => admin((a) => a.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)) };
}

/** The second daemon: a process of its own appending to the same store; `stop()` gives its log. */
async function secondDaemon(dist, url, n, writers, seed) {
  const child = spawn(process.execPath, [path.join(ROOT, 'bench/pg-pause-writer.mjs'), dist, url, String(n), String(writers), String(seed)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const first = await lines.next();
  if (first.value !== 'ready') throw new Error(`second daemon did not start: ${first.value}`);
  return {
    stop: async () => {
      child.stdin.write('stop\n');
      const r = await lines.next();
      return JSON.parse(r.value);
    },
  };
}

async function runOne(tree, dist, n, op, c) {
  const run = path.join(WORK, `run-${tree}-${op}-${n}`);
  await fsp.rm(run, { recursive: true, force: true });
  mkdirSync(path.join(run, 'backups'), { recursive: true, mode: 0o700 });
  if (!PG) copyFileSync(c.db, path.join(run, 'memory.db'));
  for (const f of [`${c.source}.json`, `${c.source}.meta.json`]) copyFileSync(path.join(c.backups, f), path.join(run, 'backups', f));
  const { openStore, Operations, AuditLog } = await lib(dist);
  const pgRun = PG ? await pgCopy(dist, tree, op, c) : null;
  const store = await openStore(pgRun ? pgRun.url : `sqlite:${path.join(run, 'memory.db')}`);
  const other = pgRun ? await secondDaemon(dist, pgRun.url, n, Math.floor(WRITERS / 2), n + op.length + 7) : null;
  const ops = new Operations({ store, backupDir: path.join(run, 'backups'), audit: new AuditLog(path.join(run, 'audit.log')), actor: { kind: 'os', name: 'bench' } });
  const sections = [];
  const changes = [];
  const exclusive = store.exclusive.bind(store);
  // The section's span, and inside it the store's change itself (the DELETE, or the restore's swap).
  const timed = (f) => async (...a) => {
    const t = performance.now();
    try {
      return await f(...a);
    } finally {
      changes.push(performance.now() - t);
    }
  };
  store.exclusive = (scope, fn) =>
    exclusive(scope, async (ctx) => {
      const t = performance.now();
      try {
        const wrapped = Object.assign(Object.create(ctx), { clear: timed(ctx.clear.bind(ctx)), replaceAll: timed(ctx.replaceAll.bind(ctx)) });
        if (ctx.replaceStaged) wrapped.replaceStaged = timed(ctx.replaceStaged.bind(ctx));
        return await fn(scope === 'all' ? wrapped : ctx);
      } finally {
        if (scope === 'all') sections.push(performance.now() - t);
      }
    });
  const rand = rng(n + op.length);
  let stop = false;
  let k = 0;
  let failed = 0;
  let opStart = Infinity;
  let opEnd = Infinity;
  const during = [];
  // Writes started after the operation returned: the SQLite drop of the old tables runs then.
  const after = [];
  const acks = [];
  const writer = async () => {
    while (!stop) {
      const user = userId(Math.floor(rand() * n));
      const msg = chatMessage(k++);
      const t0 = wall();
      try {
        await store.appendHistory(user, msg);
        const t1 = wall();
        acks.push([user, msg.text, t0]);
        if (t1 >= opStart && t0 <= opEnd) during.push(t1 - t0);
        else if (t0 > opEnd) after.push(t1 - t0);
      } catch {
        failed++;
      }
    }
  };
  // On PostgreSQL half the writers are the second daemon's.
  const writers = Array.from({ length: other ? WRITERS - Math.floor(WRITERS / 2) : WRITERS }, writer);
  await new Promise((r) => setTimeout(r, 1000));
  opStart = wall();
  const res =
    op === 'clear' ? await ops.clearAll() : op === 'change' ? { backup: null, n: await store.exclusive('all', (ctx) => ctx.clear()) } : await ops.restore(c.source, { wholeStore: true });
  opEnd = wall();
  await new Promise((r) => setTimeout(r, AFTER_MS));
  stop = true;
  await Promise.all(writers);
  for (const [t0, t1, user, text, ok] of other ? await other.stop() : []) {
    if (!ok) {
      failed++;
      continue;
    }
    acks.push([user, text, t0]);
    if (t1 >= opStart && t0 <= opEnd) during.push(t1 - t0);
    else if (t0 > opEnd) after.push(t1 - t0);
  }
  const s = latencyStats(during);
  process.stderr.write(`  timing: ${JSON.stringify({ tree, op, n, opMs: round(opEnd - opStart, 0), sectionMs: round(sections.reduce((a, b) => a + b, 0), 0), maxWriteMs: round(s.max, 1) })}\n`);
  // Every acknowledged append is in the store now or in the operation's backup (read in one pass:
  // a lookup per user took tens of minutes at 1M).
  const byUser = new Map();
  for (const [u, t, t0] of acks) if (op !== 'change' || t0 >= opEnd) byUser.set(u, [...(byUser.get(u) ?? []), t]);
  const inBackup = new Map();
  if (res.backup) {
    // This tree's reader for both trees: the backup format is the same, the module moved (src/format/).
    const { readJsonEntries } = await import(pathToFileURL(path.join(ROOT, 'dist/format/json-entries.js')).href);
    for await (const e of readJsonEntries(path.join(run, 'backups', `${res.backup}.json`))) {
      if (byUser.has(e.key)) inBackup.set(e.key, new Set(e.value.history.map((h) => h.text)));
    }
  }
  let lost = 0;
  for (const [u, texts] of byUser) {
    const now = new Set((await store.get(u))?.history.map((h) => h.text) ?? []);
    for (const t of texts) if (!now.has(t) && !inBackup.get(u)?.has(t)) lost++;
  }
  await store.close();
  await pgRun?.drop();
  await fsp.rm(run, { recursive: true, force: true });
  return {
    users: n, op, tree, load1: round(os.loadavg()[0], 2), opMs: round(opEnd - opStart, 0), sectionMs: round(sections.reduce((a, b) => a + b, 0), 0), changeMs: round(changes.reduce((a, b) => a + b, 0), 0),
    maxWriteMs: round(s.max, 1), p99Ms: round(s.p99, 1), over100: during.filter((d) => d > 100).length,
    maxAfterMs: round(after.reduce((a, b) => Math.max(a, b), 0), 1), afterOver100: after.filter((d) => d > 100).length, appendsAfter: after.length, appendsDuring: during.length, failed, lost, acked: acks.length,
  };
}

const results = [];
for (const n of USERS) {
  const c = PG ? await cachedPg(n) : await cached(n);
  for (let r = 0; r < ROUNDS; r++) {
    for (const op of OPS) {
      // Interleaved: base, this, base, this…
      for (const [tree, dist] of trees) {
        const row = await runOne(tree, dist, n, op, c);
        process.stderr.write(`  ${JSON.stringify(row)}\n`);
        results.push(row);
      }
    }
  }
}
console.log('| users | op | tree | load1 | op total ms | whole-store section ms | of it the change ms | longest write ms | p99 ms | writes > 100 ms | appends acked during | longest write after ms | after > 100 ms | appends after | failed | lost |');
console.log('|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const r of results) console.log(`| ${r.users} | ${r.op} | ${r.tree} | ${r.load1} | ${r.opMs} | ${r.sectionMs} | ${r.changeMs} | ${r.maxWriteMs} | ${r.p99Ms} | ${r.over100} | ${r.appendsDuring} | ${r.maxAfterMs} | ${r.afterOver100} | ${r.appendsAfter} | ${r.failed} | ${r.lost} |`);
console.log(`JSON ${JSON.stringify({ bench: 'clear-pause', store: PG ? 'postgres' : 'sqlite', date: new Date().toISOString(), machine: machineInfo(), writers: WRITERS, trees: Object.fromEntries(trees), results })}`);
