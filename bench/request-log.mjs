// Request-log cost, side by side in one run: the daemon's app (built dist, SQLite store, pino writing to a
// file as `chatmem start` does) answering the same bot read through app.inject (no sockets, so the log's
// share of each request is not hidden behind the network), with server.logSample 1 (every request: the
// baseline, today's default), 20, and the logger off. Interleaved per round, in a rotating order, so the
// shared machine's load hits each one alike. Knobs: BENCH_LOG_REQUESTS (20000 per variant and round), BENCH_LOG_ROUNDS (3).
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { envInt, machineInfo, rmDir, round, tmpDir } from './lib.mjs';
import { resolveConfig } from '../dist/config.js';
import { openContext } from '../dist/context.js';
import { buildApp } from '../dist/server/app.js';

const REQUESTS = envInt('BENCH_LOG_REQUESTS', 10_000);
const ROUNDS = envInt('BENCH_LOG_ROUNDS', 6);
const ADMIN = 'bench-request-log-admin-token-000';
const VARIANTS = [
  { name: 'logSample 1 (baseline)', sample: 1, log: true },
  { name: 'logSample 20', sample: 20, log: true },
  { name: 'logger off', sample: 1, log: false },
];

const dir = await tmpDir('chatmem-bench-reqlog-');
try {
  const config = await resolveConfig({ cwd: dir, store: `sqlite:${path.join(dir, 'memory.db')}`, env: {} });
  const ctx = await openContext(config, { role: 'daemon' });
  await ctx.store.put('6281234567890', { name: 'Siti', flags: { asked_name: true } });
  const apps = [];
  for (const v of VARIANTS) {
    const file = path.join(dir, `${v.sample}-${v.log}.log`);
    const app = await buildApp({ ctx, adminToken: ADMIN, logSample: v.sample, logger: v.log ? { level: 'info', file } : false });
    await app.ready();
    apps.push({ ...v, app, file, us: [] });
  }
  console.log(`request log cost: ${REQUESTS} x GET /v1/users/:id/flags/:key per variant and round, ${ROUNDS} rounds; ${JSON.stringify(machineInfo())}`);
  for (let r = 1; r <= ROUNDS; r++) {
    for (const a of [...apps.slice((r - 1) % apps.length), ...apps.slice(0, (r - 1) % apps.length)]) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < REQUESTS; i++) {
        const res = await a.app.inject({ method: 'GET', url: '/v1/users/6281234567890/flags/asked_name', headers: { host: '127.0.0.1' } });
        if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
      }
      a.us.push(Number(process.hrtime.bigint() - t0) / 1000 / REQUESTS);
    }
    console.log(`round ${r} (load ${os.loadavg()[0].toFixed(1)}): ` + apps.map((a) => `${a.name} ${round(a.us.at(-1), 1)} µs/req`).join(', '));
  }
  for (const a of apps) await a.app.close();
  await ctx.close();
  // pino's file destination flushes after close.
  await new Promise((r) => setTimeout(r, 2000));
  const base = apps[0];
  const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  console.log('\n| variant | µs/request (median of rounds) | vs baseline | log lines | log bytes/request |');
  console.log('|---|---:|---:|---:|---:|');
  for (const a of apps) {
    const text = a.log ? await fsp.readFile(a.file, 'utf8') : '';
    const lines = text.split('\n').filter((l) => l.includes('"msg":"request"')).length;
    const bytes = Buffer.byteLength(text) / (REQUESTS * ROUNDS);
    console.log(`| ${a.name} | ${round(median(a.us), 1)} | ${round(median(a.us) / median(base.us), 2)} | ${lines} | ${round(bytes, 1)} |`);
  }
  console.log('JSON ' + JSON.stringify({ requests: REQUESTS, rounds: ROUNDS, variants: apps.map((a) => ({ name: a.name, us: a.us.map((x) => round(x, 1)) })) }));
} finally {
  await rmDir(dir);
}
