// HTTP append load, side by side: the chatmem daemon (built dist, SQLite store of N seed-shaped users),
// the same route answered by a no-op Fastify handler, and a Redis-backed peer (RPUSH + LTRIM 50 + HSET per
// message, its own redis-server with appendfsync always). One autocannon load generator drives all three,
// interleaved A B C A B C, so that the shared machine's load hits each one alike: compare ratios per round.
// Knobs: BENCH_HTTP_USERS (10000,100000), BENCH_HTTP_SECONDS (10), BENCH_HTTP_ROUNDS (2),
// BENCH_CONCURRENCY (64), BENCH_HTTP_MINIMAL (0: 1 sends `Prefer: return=minimal` to chatmem),
// BENCH_HTTP_PROFILE (a directory: the daemon runs with --cpu-prof and writes its profile there on exit),
// BENCH_HTTP_KEEP (a directory: the N-user SQLite store and Redis AOF are built there once, marked
// `ready-N`, and reused by later runs instead of being loaded again; appends of earlier runs stay in them).
import { spawn } from 'node:child_process';
import { promises as fsp, openSync } from 'node:fs';
import { createServer } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import { chatMessage, envInt, envInts, loadUsers, machineInfo, makeRecord, openStoreAt, rmDir, rng, round, tmpDir, userId } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const USERS = envInts('BENCH_HTTP_USERS', [10_000, 100_000]);
const SECONDS = envInt('BENCH_HTTP_SECONDS', 10);
const ROUNDS = envInt('BENCH_HTTP_ROUNDS', 2);
const CONNECTIONS = envInt('BENCH_CONCURRENCY', 64);
const MINIMAL = envInt('BENCH_HTTP_MINIMAL', 0) === 1;
const KEEP = process.env.BENCH_HTTP_KEEP ? path.resolve(process.env.BENCH_HTTP_KEEP) : null;

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
        if (child.exitCode !== null) return resolve();
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

const results = [];
const dateUtc = new Date().toISOString();
process.stderr.write(`http-load: ${CONNECTIONS} connections, ${SECONDS} s per run, ${ROUNDS} rounds, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}\n`);
for (const n of USERS) {
  const dir = await tmpDir('http');
  const procs = [];
  try {
    // With BENCH_HTTP_KEEP the stores live there (built once, reused); otherwise in the temp dir.
    const base = KEEP ? path.join(KEEP, String(n)) : dir;
    const ready = path.join(base, 'ready');
    const reuse = KEEP !== null && (await fsp.stat(ready).then(() => true, () => false));
    const storeFile = path.join(base, 'data', 'memory.db');
    const redisDir = path.join(base, 'redis');
    let loadS = 0;
    if (!reuse) {
      if (KEEP) await rmDir(base);
      const store = await openStoreAt(`sqlite:${storeFile}`);
      loadS = await loadUsers(store, n, { label: `load ${n}` });
      await store.close();
    }
    const [pDaemon, pNoop, pPeer, pRedis] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    await fsp.mkdir(redisDir, { recursive: true });
    procs.push(start('redis-server', ['--port', String(pRedis), '--bind', '127.0.0.1', '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--dir', redisDir]));
    await waitFor(async () => {
      const r = new Redis({ port: pRedis, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
      r.on('error', () => undefined);
      try {
        await r.connect();
        return (await r.ping()) === 'PONG';
      } finally {
        r.disconnect();
      }
    }, 'redis-server', 600_000);
    const tR = performance.now();
    if (!reuse) {
      await loadRedis(pRedis, n);
      if (KEEP) await fsp.writeFile(ready, `${new Date().toISOString()}\n`);
    }
    process.stderr.write(`  [${n}] ${reuse ? `reusing ${base}` : `sqlite load ${loadS.toFixed(1)} s, redis load ${((performance.now() - tR) / 1000).toFixed(1)} s`}\n`);
    const log = openSync(path.join(dir, 'daemon.log'), 'a');
    const profile = process.env.BENCH_HTTP_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(process.env.BENCH_HTTP_PROFILE)}`] : [];
    const daemon = start(process.execPath, [...profile, path.join(here, '..', 'dist/cli/bin.js'), 'serve'], {
      cwd: dir,
      env: { ...process.env, CHATMEM_STORE: `sqlite:${storeFile}`, CHATMEM_PORT: String(pDaemon), CHATMEM_DATA_DIR: path.join(dir, 'data') },
      stdio: ['ignore', log, 'pipe'],
    });
    procs.push(daemon);
    procs.push(start(process.execPath, [path.join(here, 'http-peers.mjs'), 'noop', String(pNoop)]));
    procs.push(start(process.execPath, [path.join(here, 'http-peers.mjs'), 'redis', String(pPeer), String(pRedis)]));
    for (const p of [pDaemon, pNoop, pPeer]) {
      await waitFor(async () => (await globalThis.fetch(`http://127.0.0.1:${p}/v1/users/${userId(0)}/history`, { method: 'OPTIONS' })).status > 0, `port ${p}`);
    }
    const targets = [
      ['chatmem', `http://127.0.0.1:${pDaemon}`, MINIMAL ? { prefer: 'return=minimal' } : {}],
      ['noop', `http://127.0.0.1:${pNoop}`, {}],
      ['redis', `http://127.0.0.1:${pPeer}`, {}],
    ];
    for (let round_ = 1; round_ <= ROUNDS; round_++) {
      const row = { users: n, round: round_, load1: round(os.loadavg()[0], 2) };
      for (const [name, url, headers] of targets) {
        row[name] = summary(await drive(url, n, round_ * 7 + name.length, headers));
        process.stderr.write(`  [${n} r${round_}] ${name.padEnd(8)} ${JSON.stringify(row[name])}\n`);
      }
      row.chatmemVsRedis = round(row.chatmem.rps / row.redis.rps, 2);
      row.chatmemVsNoop = round(row.chatmem.rps / row.noop.rps, 2);
      results.push(row);
    }
    const rss = await fsp.readFile(`/proc/${daemon.child.pid}/status`, 'utf8').then((s) => Number(/VmHWM:\s+(\d+)/.exec(s)?.[1] ?? 0) * 1024, () => null);
    results.push({ users: n, daemonPeakRssMB: rss === null ? null : round(rss / 1024 / 1024, 0) });
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
    await rmDir(dir);
  }
}

console.log('');
console.log('users  round  load1 | chatmem rps  p99  max  fail | noop rps  p99 | redis rps  p99  max  fail | chatmem/redis chatmem/noop');
for (const r of results) {
  if (!r.chatmem) continue;
  console.log(
    `${String(r.users).padStart(7)} ${String(r.round).padStart(3)} ${String(r.load1).padStart(7)} | ${String(r.chatmem.rps).padStart(8)} ${String(r.chatmem.p99).padStart(5)} ${String(r.chatmem.max).padStart(5)} ${String(r.chatmem.failed).padStart(4)} | ${String(r.noop.rps).padStart(7)} ${String(r.noop.p99).padStart(5)} | ${String(r.redis.rps).padStart(8)} ${String(r.redis.p99).padStart(5)} ${String(r.redis.max).padStart(5)} ${String(r.redis.failed).padStart(4)} | ${String(r.chatmemVsRedis).padStart(6)} ${String(r.chatmemVsNoop).padStart(6)}`,
  );
}
console.log(`JSON ${JSON.stringify({ bench: 'http-load', date: dateUtc, machine: machineInfo(), connections: CONNECTIONS, seconds: SECONDS, minimal: MINIMAL, results })}`);
