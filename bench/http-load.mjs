// HTTP append load, side by side: the chatmem daemon (built dist, SQLite store of N seed-shaped users),
// the same route answered by a no-op Fastify handler, and a Redis-backed peer (RPUSH + LTRIM 50 + HSET per
// message, its own redis-server with appendfsync always). One autocannon load generator drives all three,
// interleaved A B C A B C, so that the shared machine's load hits each one alike: compare ratios per round.
// Knobs: BENCH_HTTP_USERS (10000,100000), BENCH_HTTP_SECONDS (10), BENCH_HTTP_ROUNDS (2),
// BENCH_CONCURRENCY (64), BENCH_HTTP_MINIMAL (0: 1 sends `Prefer: return=minimal` to chatmem),
// BENCH_HTTP_PROFILE (a directory: the daemon runs with --cpu-prof and writes its profile there on exit).
// BENCH_HTTP_STORE=postgres: chatmem is TWO daemons on one PostgreSQL database (CHATMEM_TEST_PG, default
// postgres://postgres@127.0.0.1:5432/test; a fresh schema per size, dropped after), and the one load
// generator's connections alternate between them (autocannon's url list: connection i goes to daemon
// i mod 2, so 32 + 32 of 64, one latency histogram). With BENCH_HTTP_PROFILE only the first daemon is profiled.
// BENCH_HTTP_BASE_DIST (SQLite only): another tree's built dist (e.g. a copy of main's, with its package.json
// and node_modules beside it) runs too, as `base`, on its own copy of the same loaded store, interleaved with
// the others (base chatmem noop redis, ...): a before/after in one run.
// Every run also reports the CPU seconds its server side used (daemons + their PostgreSQL backends, the
// peer + its redis-server) and the load generator's, per 1,000 acknowledged appends: a figure the
// machine's load stretches much less than req/s.
import { spawn } from 'node:child_process';
import { promises as fsp, openSync } from 'node:fs';
import { createServer } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import pg from 'pg';
import { chatMessage, envInt, envInts, loadUsers, machineInfo, makeRecord, openStoreAt, rmDir, rng, round, tmpDir, userId, procCpuSeconds as cpuSeconds } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const USERS = envInts('BENCH_HTTP_USERS', [10_000, 100_000]);
const SECONDS = envInt('BENCH_HTTP_SECONDS', 10);
const ROUNDS = envInt('BENCH_HTTP_ROUNDS', 2);
const CONNECTIONS = envInt('BENCH_CONCURRENCY', 64);
const MINIMAL = envInt('BENCH_HTTP_MINIMAL', 0) === 1;
const STORE = process.env.BENCH_HTTP_STORE ?? 'sqlite';
if (STORE !== 'sqlite' && STORE !== 'postgres') throw new Error(`BENCH_HTTP_STORE must be sqlite or postgres, got ${STORE}`);
const PG = process.env.CHATMEM_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
const DAEMONS = STORE === 'postgres' ? 2 : 1;
const BASE_DIST = process.env.BENCH_HTTP_BASE_DIST ? path.resolve(process.env.BENCH_HTTP_BASE_DIST) : null;
if (BASE_DIST && STORE !== 'sqlite') throw new Error('BENCH_HTTP_BASE_DIST runs with the SQLite store only');


async function vmHwmMB(pid) {
  return fsp.readFile(`/proc/${pid}/status`, 'utf8').then((s) => round(Number(/VmHWM:\s+(\d+)/.exec(s)?.[1] ?? 0) / 1024, 0), () => null);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function waitFor(check, what, ms = 120_000) {
  const until = Date.now() + ms;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > until) throw new Error(`${what} did not start`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function start(cmd, args, opts) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], ...opts });
  let stderr = '';
  child.stderr?.on('data', (d) => (stderr = (stderr + d.toString()).slice(-4000)));
  child.on('exit', (code) => {
    if (!child.stopping) process.stderr.write(`  ${path.basename(String(args[0] ?? cmd))} exited (${code}): ${stderr}\n`);
  });
  return {
    child,
    stop: () =>
      new Promise((resolve) => {
        child.stopping = true;
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** Loads each user's history into Redis as the peer keeps it, so both sides start from the same data. */
async function loadRedis(port, n) {
  const redis = new Redis({ port, host: '127.0.0.1' });
  for (let i = 0; i < n; i += 1000) {
    const p = redis.pipeline();
    for (let j = i; j < Math.min(n, i + 1000); j++) {
      const r = makeRecord(j);
      p.rpush(`h:${r.user_id}`, ...r.history.map((h) => JSON.stringify(h)));
      p.hset(`u:${r.user_id}`, { updated_at: r.updated_at, last_answer: r.last_answer ?? '' });
    }
    await p.exec();
  }
  await redis.quit();
}

function drive(url, users, seed, headers = {}) {
  const rand = rng(seed);
  let k = 0;
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url,
        connections: CONNECTIONS,
        duration: SECONDS,
        requests: [
          {
            method: 'POST',
            setupRequest: (req) => ({
              ...req,
              path: `/v1/users/${userId(Math.floor(rand() * users))}/history`,
              headers: { 'content-type': 'application/json', ...headers },
              body: JSON.stringify(chatMessage(k++)),
            }),
          },
        ],
      },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
  });
}

function summary(res) {
  return {
    rps: round(res.requests.average, 0),
    ok: res['2xx'],
    failed: res.errors + res.timeouts + res.non2xx,
    p50: res.latency.p50,
    p99: res.latency.p99,
    max: res.latency.max,
  };
}

// Ctrl-C or a kill still stops the servers and drops the schema (the loop's finally does it).
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    process.stderr.write(`  ${sig}: stopping after cleanup\n`);
    for (const c of cleanups) void c().finally(() => process.exit(130));
    if (cleanups.size === 0) process.exit(130);
  });
}
const cleanups = new Set();

const results = [];
const dateUtc = new Date().toISOString();
process.stderr.write(`http-load: ${CONNECTIONS} connections, ${SECONDS} s per run, ${ROUNDS} rounds, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}\n`);
for (const n of USERS) {
  const dir = await tmpDir('http');
  const procs = [];
  let admin = null;
  let schema = null;
  let cleaning = null;
  const cleanup = () =>
    (cleaning ??= (async () => {
      await Promise.all(procs.map((p) => p.stop()));
      if (admin) {
        if (schema) await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch((e) => process.stderr.write(`  drop schema: ${e.message}\n`));
        await admin.end();
      }
      await rmDir(dir);
    })());
  cleanups.add(cleanup);
  try {
    const storeFile = path.join(dir, 'data', 'memory.db');
    let storeUrl = `sqlite:${storeFile}`;
    let appName = null;
    if (STORE === 'postgres') {
      // A schema of its own per size, and an application_name to find the daemons' backends (the URL's
      // parameters win over the driver's own application_name).
      schema = `chatmem_bench_http_${process.pid}_${n}`;
      appName = schema;
      admin = new pg.Client({ connectionString: PG });
      await admin.connect();
      await admin.query(`CREATE SCHEMA ${schema}`);
      const u = new URL(PG);
      u.searchParams.set('options', `-c search_path=${schema}`);
      u.searchParams.set('application_name', appName);
      storeUrl = u.toString();
    }
    const store = await openStoreAt(storeUrl);
    const loadS = await loadUsers(store, n, { label: `load ${n}` });
    const before = await store.stats();
    await store.close();
    const [pNoop, pPeer, pRedis, pBase, ...pDaemons] = await Promise.all([freePort(), freePort(), freePort(), freePort(), ...Array.from({ length: DAEMONS }, freePort)]);
    // The base tree gets its own copy of the loaded store (closed, so the file is whole).
    const baseStoreFile = path.join(dir, 'base-data', 'memory.db');
    if (BASE_DIST) {
      await fsp.mkdir(path.dirname(baseStoreFile), { recursive: true, mode: 0o700 });
      await fsp.copyFile(storeFile, baseStoreFile);
      // Schema 4 is schema 3 plus the (here empty) full-text queue: a base tree of schema 3 gets its copy as schema 3.
      const { SCHEMA_VERSION: baseSchema } = await import(path.join(BASE_DIST, 'store/sqlite/schema.js'));
      if (baseSchema === 3) {
        const db = new Database(baseStoreFile);
        if (db.prepare('SELECT COUNT(*) AS n FROM search_pending').get().n !== 0) throw new Error('the loaded store has queued index work; cannot hand it to a schema-3 tree');
        db.exec('DROP TABLE search_pending; PRAGMA user_version = 3;');
        db.close();
      }
    }
    await fsp.mkdir(path.join(dir, 'redis'), { recursive: true });
    procs.push(start('redis-server', ['--port', String(pRedis), '--bind', '127.0.0.1', '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--dir', path.join(dir, 'redis')]));
    await waitFor(async () => {
      const r = new Redis({ port: pRedis, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
      r.on('error', () => undefined);
      try {
        await r.connect();
        return (await r.ping()) === 'PONG';
      } finally {
        r.disconnect();
      }
    }, 'redis-server');
    const tR = performance.now();
    await loadRedis(pRedis, n);
    process.stderr.write(`  [${n}] ${STORE} load ${loadS.toFixed(1)} s, redis load ${((performance.now() - tR) / 1000).toFixed(1)} s\n`);
    const profile = process.env.BENCH_HTTP_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(process.env.BENCH_HTTP_PROFILE)}`] : [];
    const daemon = (dist, port, name, url, dataDir, args = []) => {
      const log = openSync(path.join(dir, `${name}.log`), 'a');
      const d = start(process.execPath, [...args, path.join(dist, 'cli/bin.js'), 'serve'], {
        cwd: dir,
        env: {
          ...process.env,
          CHATMEM_STORE: url,
          CHATMEM_PORT: String(port),
          CHATMEM_DATA_DIR: dataDir,
          CHATMEM_BACKUP_DIR: path.join(dir, 'backups'),
          CHATMEM_AUDIT_LOG: path.join(dir, 'audit.log'),
        },
        stdio: ['ignore', log, 'pipe'],
      });
      procs.push(d);
      return d;
    };
    // Each daemon has its own pid/log/token directory; backups and the audit log are shared, as on
    // app servers with one shared volume (README, Scaling out).
    const daemons = pDaemons.map((port, i) => daemon(path.join(here, '..', 'dist'), port, `daemon${i + 1}`, storeUrl, path.join(dir, i === 0 ? 'data' : `data${i + 1}`), i === 0 ? profile : []));
    const base = BASE_DIST ? daemon(BASE_DIST, pBase, 'base', `sqlite:${baseStoreFile}`, path.dirname(baseStoreFile)) : null;
    const noop = start(process.execPath, [path.join(here, 'http-peers.mjs'), 'noop', String(pNoop)]);
    const peer = start(process.execPath, [path.join(here, 'http-peers.mjs'), 'redis', String(pPeer), String(pRedis)]);
    procs.push(noop, peer);
    for (const p of [...pDaemons, ...(base ? [pBase] : []), pNoop, pPeer]) {
      await waitFor(async () => (await globalThis.fetch(`http://127.0.0.1:${p}/v1/users/${userId(0)}/history`, { method: 'OPTIONS' })).status > 0, `port ${p}`);
    }
    /** [pid, is a database process] of the chatmem side: the daemons, and on PostgreSQL their backends. */
    const chatmemPids = async () => {
      const pids = daemons.map((d) => [d.child.pid, false]);
      if (admin) {
        const { rows } = await admin.query('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [appName]);
        pids.push(...rows.map((r) => [r.pid, true]));
      }
      return pids;
    };
    const redisServer = procs[0];
    const targets = [
      ...(base ? [['base', `http://127.0.0.1:${pBase}`, MINIMAL ? { prefer: 'return=minimal' } : {}, async () => [[base.child.pid, false]]]] : []),
      ['chatmem', pDaemons.map((p) => `http://127.0.0.1:${p}`), MINIMAL ? { prefer: 'return=minimal' } : {}, chatmemPids],
      ['noop', `http://127.0.0.1:${pNoop}`, {}, async () => [[noop.child.pid, false]]],
      ['redis', `http://127.0.0.1:${pPeer}`, {}, async () => [[peer.child.pid, false], [redisServer.child.pid, true]]],
    ];
    let acked = 0;
    let baseAcked = 0;
    for (let round_ = 1; round_ <= ROUNDS; round_++) {
      const row = { users: n, round: round_, load1: round(os.loadavg()[0], 2) };
      for (const [name, url, headers, pidsOf] of targets) {
        // Backends appear as the pools open connections, so the pids are read again after the run; one
        // that exists only after started within the run, and all its CPU belongs to it.
        const pids0 = await pidsOf();
        const cpu0 = new Map(await Promise.all(pids0.map(async ([p]) => [p, await cpuSeconds(p)])));
        const gen0 = process.cpuUsage();
        const res = await drive(url, n, round_ * 7 + name.length, headers);
        const gen = process.cpuUsage(gen0);
        const pids1 = new Map([...pids0, ...(await pidsOf())]);
        let serverCpu = 0;
        let dbCpu = 0;
        for (const [p, db] of pids1) {
          const used = (await cpuSeconds(p)) - (cpu0.get(p) ?? 0);
          serverCpu += used;
          if (db) dbCpu += used;
        }
        row[name] = summary(res);
        const perK = 1000 / Math.max(1, res['2xx']);
        row[name].serverCpuMsPerK = round(serverCpu * 1000 * perK, 0);
        row[name].dbCpuMsPerK = round(dbCpu * 1000 * perK, 0);
        row[name].genCpuMsPerK = round(((gen.user + gen.system) / 1000) * perK, 0);
        if (name === 'chatmem') acked += res['2xx'];
        if (name === 'base') baseAcked += res['2xx'];
        process.stderr.write(`  [${n} r${round_}] ${name.padEnd(8)} ${JSON.stringify(row[name])}\n`);
      }
      row.chatmemVsRedis = round(row.chatmem.rps / row.redis.rps, 2);
      row.chatmemVsNoop = round(row.chatmem.rps / row.noop.rps, 2);
      if (row.base) row.cpuVsBase = round(row.chatmem.serverCpuMsPerK / row.base.serverCpuMsPerK, 2);
      results.push(row);
    }
    const rss = await Promise.all(daemons.map((d) => vmHwmMB(d.child.pid)));
    await Promise.all(daemons.map((d) => d.stop()));
    if (base) {
      // The base tree's acknowledged appends must all be in its copy too.
      await base.stop();
      const baseCheck = await openStoreAt(`sqlite:${baseStoreFile}`);
      const baseAfter = await baseCheck.stats();
      await baseCheck.close();
      const baseAdded = baseAfter.messages - before.messages;
      results.push({ users: n, base: BASE_DIST, ackedAppends: baseAcked, messagesAdded: baseAdded, missing: Math.max(0, baseAcked - baseAdded) });
      process.stderr.write(`  [${n}] base: acked ${baseAcked}, messages added ${baseAdded}\n`);
    }
    // Acknowledged appends must all be in the store: messages after = before + acked, unless a user
    // reached the history cap (50) or a request the client gave up on (timeout) was committed anyway.
    const check = await openStoreAt(storeUrl);
    const after = await check.stats();
    await check.close();
    const added = after.messages - before.messages;
    results.push({ users: n, store: STORE, daemonPeakRssMB: rss, loadSeconds: round(loadS, 1), ackedAppends: acked, messagesAdded: added, missing: Math.max(0, acked - added) });
    process.stderr.write(`  [${n}] daemon peak RSS ${rss.join(', ')} MB; acked ${acked}, messages added ${added}\n`);
  } finally {
    await cleanup();
    cleanups.delete(cleanup);
  }
}

console.log('');
for (const r of results) if (!r.chatmem && r.base) console.log(`users ${r.users}: base ${r.base}: acked ${r.ackedAppends}, messages added ${r.messagesAdded}, missing ${r.missing}`);
for (const r of results) if (!r.chatmem && !r.base) console.log(`users ${r.users}: daemon peak RSS ${r.daemonPeakRssMB.join(', ')} MB; load ${r.loadSeconds} s; acked ${r.ackedAppends}, messages added ${r.messagesAdded}, missing ${r.missing}`);
console.log(`store ${STORE}${DAEMONS > 1 ? ` (${DAEMONS} daemons, connections split between them)` : ''}; server CPU = CPU ms per 1,000 acked appends`);
console.log('users  round  load1 | chatmem rps  p99  max  fail  cpu (db) | noop rps  p99  cpu | redis rps  p99  max  fail  cpu (db) | chatmem/redis chatmem/noop');
for (const r of results) {
  if (!r.chatmem) continue;
  console.log(
    `${String(r.users).padStart(7)} ${String(r.round).padStart(3)} ${String(r.load1).padStart(7)} | ${String(r.chatmem.rps).padStart(8)} ${String(r.chatmem.p99).padStart(5)} ${String(r.chatmem.max).padStart(5)} ${String(r.chatmem.failed).padStart(4)} ${String(r.chatmem.serverCpuMsPerK).padStart(5)} (${r.chatmem.dbCpuMsPerK}) | ${String(r.noop.rps).padStart(7)} ${String(r.noop.p99).padStart(5)} ${String(r.noop.serverCpuMsPerK).padStart(5)} | ${String(r.redis.rps).padStart(8)} ${String(r.redis.p99).padStart(5)} ${String(r.redis.max).padStart(5)} ${String(r.redis.failed).padStart(4)} ${String(r.redis.serverCpuMsPerK).padStart(5)} (${r.redis.dbCpuMsPerK}) | ${String(r.chatmemVsRedis).padStart(6)} ${String(r.chatmemVsNoop).padStart(6)}`,
  );
}
if (BASE_DIST) {
  console.log('base = the tree in BENCH_HTTP_BASE_DIST, same store, same requests; cpu = server CPU ms per 1,000 acked appends');
  console.log('users  round | base rps   p99  cpu | chatmem rps   p99  cpu | chatmem cpu / base cpu');
  for (const r of results) {
    if (!r.chatmem || !r.base) continue;
    console.log(`${String(r.users).padStart(7)} ${String(r.round).padStart(3)} | ${String(r.base.rps).padStart(8)} ${String(r.base.p99).padStart(5)} ${String(r.base.serverCpuMsPerK).padStart(4)} | ${String(r.chatmem.rps).padStart(11)} ${String(r.chatmem.p99).padStart(5)} ${String(r.chatmem.serverCpuMsPerK).padStart(4)} | ${String(r.cpuVsBase).padStart(6)}`);
  }
}
console.log(`JSON ${JSON.stringify({ bench: 'http-load', store: STORE, daemons: DAEMONS, date: dateUtc, machine: machineInfo(), connections: CONNECTIONS, seconds: SECONDS, minimal: MINIMAL, results })}`);
