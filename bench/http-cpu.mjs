// The daemon's CPU per HTTP append outside the storage driver: the real app (buildApp, its plugins, hooks,
// route checks, the store core's validation and the request log, as `chatmem serve` builds it) over an
// in-memory driver, so that what is left is the HTTP layer and the core. One autocannon load generator in
// this process; each app in a child process, whose CPU (user + system, from /proc) is divided by the
// appends it answered. With BENCH_HTTP_BASE_DIST (another tree's built dist, e.g. a copy of main's) both
// trees run, interleaved A B A B, so the machine's load hits each alike.
// Knobs: BENCH_HTTP_USERS (10000), BENCH_HTTP_SECONDS (8), BENCH_HTTP_ROUNDS (3), BENCH_CONCURRENCY (64),
// BENCH_HTTP_MINIMAL (1: `Prefer: return=minimal`; 0: the whole record back), BENCH_HTTP_LOG_SAMPLE
// (server.logSample, default 1: one log line per request, as the default config), BENCH_HTTP_LOGGER (0: no
// logger at all, to see what logging costs), BENCH_HTTP_PROFILE (a
// directory: each child runs with --cpu-prof and writes its profile there).
// Usage: node bench/http-cpu.mjs
import { spawn } from 'node:child_process';
import { promises as fsp, openSync } from 'node:fs';
import { createServer } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import autocannon from 'autocannon';
import { chatMessage, envInt, machineInfo, makeRecord, rmDir, rng, round, tmpDir, userId, procCpuSeconds as cpuSeconds } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const USERS = envInt('BENCH_HTTP_USERS', 10_000);
const SECONDS = envInt('BENCH_HTTP_SECONDS', 8);
const ROUNDS = envInt('BENCH_HTTP_ROUNDS', 3);
const CONNECTIONS = envInt('BENCH_CONCURRENCY', 64);
const MINIMAL = envInt('BENCH_HTTP_MINIMAL', 1) === 1;
const LOG_SAMPLE = envInt('BENCH_HTTP_LOG_SAMPLE', 1);
const LOGGER = envInt('BENCH_HTTP_LOGGER', 1) === 1;
const ADMIN_TOKEN = 'bench-admin-token-0123456789abcdef';

if (process.argv[2] === '--child') {
  // The app of `dist` (argv[3]) on 127.0.0.1:argv[4], its store's data in memory.
  const [dist, port, dir] = process.argv.slice(3);
  const imp = (p) => import(pathToFileURL(path.join(dist, p)).href);
  const [{ resolveConfig }, { openContext }, { buildApp }, { createStore }] = await Promise.all([imp('config.js'), imp('context.js'), imp('server/app.js'), imp('store/store.js')]);
  const config = await resolveConfig({ cwd: dir, store: `sqlite:${path.join(dir, 'data', 'memory.db')}`, env: {} });
  const ctx = await openContext(config, { role: 'daemon' });
  // Records are kept as JSON text, as the real drivers keep rows: each read parses, each write serialises.
  const rows = new Map();
  for (let i = 0; i < USERS; i++) {
    const r = makeRecord(i);
    rows.set(r.user_id, JSON.stringify(r));
  }
  const read = (id) => {
    const t = rows.get(id);
    return t === undefined ? null : JSON.parse(t);
  };
  const driver = {
    kind: 'sqlite',
    url: 'memory:',
    get: async (id) => read(id),
    update: async (id, fn) => {
      const next = fn(read(id));
      rows.set(id, JSON.stringify(next));
      return next;
    },
    count: async () => rows.size,
    list: async () => [],
    scanJson: async function* () {},
    stats: async () => ({ users: rows.size, messages: 0, bytes: 0, lastUpdate: null }),
    search: async () => [],
    exclusive: async () => {
      throw new Error('not in this bench');
    },
    close: async () => undefined,
  };
  const app = await buildApp({ ctx: { ...ctx, store: createStore(driver) }, adminToken: ADMIN_TOKEN, apiToken: null, logger: LOGGER, logSample: LOG_SAMPLE });
  await app.listen({ host: '127.0.0.1', port: Number(port) });
  process.stderr.write('ready\n');
  process.on('SIGTERM', () => void app.close().then(() => ctx.close()).then(() => process.exit(0)));
} else {
  const trees = [['this tree', path.join(here, '..', 'dist')]];
  if (process.env.BENCH_HTTP_BASE_DIST) trees.unshift(['baseline', path.resolve(process.env.BENCH_HTTP_BASE_DIST)]);
  const profile = process.env.BENCH_HTTP_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(process.env.BENCH_HTTP_PROFILE)}`] : [];
  const dir = await tmpDir('http-cpu');
  const children = [];
  try {
    const servers = [];
    for (const [i, [name, dist]] of trees.entries()) {
      const port = await new Promise((resolve, reject) => {
        const probe = createServer();
        probe.listen(0, '127.0.0.1', () => {
          const { port: p } = probe.address();
          probe.close(() => resolve(p));
        });
        probe.on('error', reject);
      });
      const cdir = path.join(dir, `t${i}`);
      await fsp.mkdir(cdir, { recursive: true });
      // The request log goes to a file, as `chatmem start` sends it.
      const log = openSync(path.join(cdir, 'daemon.log'), 'a');
      const child = spawn(process.execPath, [...profile, fileURLToPath(import.meta.url), '--child', dist, String(port), cdir], { stdio: ['ignore', log, 'pipe'] });
      children.push(child);
      await new Promise((resolve, reject) => {
        let err = '';
        child.stderr.on('data', (d) => {
          err += d;
          if (err.includes('ready')) resolve();
        });
        child.once('exit', (code) => reject(new Error(`${name} exited (${code}): ${err}`)));
      });
      servers.push({ name, url: `http://127.0.0.1:${port}`, pid: child.pid });
    }
    const results = [];
    // Round 0 warms each app up (the JIT, the pools) and is not reported.
    for (let r = 0; r <= ROUNDS; r++) {
      for (const s of servers) {
        const rand = rng(r * 11);
        let k = 0;
        const load1 = round(os.loadavg()[0], 2);
        const cpu0 = await cpuSeconds(s.pid);
        const res = await new Promise((resolve, reject) =>
          autocannon(
            {
              url: s.url,
              connections: CONNECTIONS,
              duration: r === 0 ? Math.min(3, SECONDS) : SECONDS,
              requests: [
                {
                  method: 'POST',
                  setupRequest: (req) => ({
                    ...req,
                    path: `/v1/users/${userId(Math.floor(rand() * USERS))}/history`,
                    headers: { 'content-type': 'application/json', ...(MINIMAL ? { prefer: 'return=minimal' } : {}) },
                    body: JSON.stringify(chatMessage(k++)),
                  }),
                },
              ],
            },
            (err, out) => (err ? reject(err) : resolve(out)),
          ),
        );
        const cpu = (await cpuSeconds(s.pid)) - cpu0;
        if (r === 0) continue;
        const row = { tree: s.name, round: r, load1, rps: round(res.requests.average, 0), ok: res['2xx'], failed: res.errors + res.timeouts + res.non2xx, p99: res.latency.p99, cpuUsPerAppend: round((cpu * 1e6) / Math.max(1, res['2xx']), 1) };
        results.push(row);
        process.stderr.write(`  ${JSON.stringify(row)}\n`);
      }
    }
    console.log(`http-cpu: in-memory driver, ${USERS} users, ${CONNECTIONS} connections, ${SECONDS} s per run, minimal ${MINIMAL}, logSample ${LOG_SAMPLE}`);
    console.log('tree        round  load1 | cpu µs/append   appends/s   p99  fail');
    for (const r of results) console.log(`${r.tree.padEnd(11)} ${String(r.round).padStart(5)} ${String(r.load1).padStart(6)} | ${String(r.cpuUsPerAppend).padStart(13)} ${String(r.rps).padStart(11)} ${String(r.p99).padStart(5)} ${String(r.failed).padStart(5)}`);
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    for (const [name] of trees) console.log(`median ${name}: ${median(results.filter((r) => r.tree === name).map((r) => r.cpuUsPerAppend))} µs/append`);
    console.log(`JSON ${JSON.stringify({ bench: 'http-cpu', date: new Date().toISOString(), machine: machineInfo(), users: USERS, connections: CONNECTIONS, seconds: SECONDS, minimal: MINIMAL, logSample: LOG_SAMPLE, results })}`);
  } finally {
    await Promise.all(
      children.map(
        (c) =>
          new Promise((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            c.once('exit', resolve);
            c.kill('SIGTERM');
          }),
      ),
    );
    await rmDir(dir);
  }
}
