// CPU time per append, all threads of the process, through the library (no HTTP): what an append costs
// when the machine's cores are the limit. Each tree runs in its own child process, alternating A B A B.
// Usage: node bench/append-cpu.mjs [BASELINE_DIST]  (the baseline is another tree's built dist, e.g. a
// copy of main's; without it only this tree runs). Knobs: BENCH_CPU_USERS (10000), BENCH_CPU_APPENDS
// (20000), BENCH_CONCURRENCY (64), BENCH_CPU_ROUNDS (2), BENCH_CPU_HISTORY (0: messages per user first).
// Columns: CPU per append while the appends run (with whatever background work runs meanwhile: the
// full-text indexer of schema 4), then up to the end of close() (which applies the index work still
// queued, and checkpoints): the whole cost of an append. With BENCH_CPU_HELD=1 this tree also runs with
// its background indexer held back ("indexer held"): the hot path alone while the appends run, and
// the whole queue applied in one go by close(). BENCH_CPU_DELAYS=300,1000 adds runs of this tree with
// the indexer starting that many ms after a commit (the default is 100). BENCH_CPU_NOCKPT=1 adds a run
// with wal_autocheckpoint = 0 (close() then checkpoints the whole WAL: "incl. close" holds it).
// "written KB/append": bytes the process passed to write(2) (WAL frames and checkpoints), from
// /proc/self/io: it does not depend on the machine's load, only on how the commits grouped.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chatMessage, envInt, machineInfo, makeRecord, rng, round, userId } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const USERS = envInt('BENCH_CPU_USERS', 10_000);
const APPENDS = envInt('BENCH_CPU_APPENDS', 20_000);
const CONCURRENCY = envInt('BENCH_CONCURRENCY', 64);
const ROUNDS = envInt('BENCH_CPU_ROUNDS', 2);
// Messages per user before the appends (0: the seed-shaped 10–18). At the cap (50), every append drops
// the oldest message, and its search document leaves the index: a bot's steady state.
const HISTORY = envInt('BENCH_CPU_HISTORY', 0);

if (process.argv[2] === '--child') {
  const { openStore } = await import(path.join(process.argv[3], 'store/open.js'));
  // 'held': the background indexer held back; 'delay=N': it starts N ms after a commit.
  const mode = process.argv[4] ?? '';
  // 'nockpt': no automatic WAL checkpoint during the appends (the WAL grows; close checkpoints it).
  const indexDelayMs = mode === 'held' ? 1e9 : mode.startsWith('delay=') ? Number(mode.slice(6)) : mode === 'nockpt' ? 100 : null;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'chatmem-cpu-'));
  try {
    const file = path.join(dir, 'memory.db');
    let store;
    if (indexDelayMs !== null) {
      const { SqliteDriver } = await import(path.join(process.argv[3], 'store/sqlite/index.js'));
      const { createStore } = await import(path.join(process.argv[3], 'store/store.js'));
      const driver = await SqliteDriver.open(file, { indexDelayMs });
      // The connection is private to the driver; a bench reaches it to switch the checkpoints off.
      if (mode === 'nockpt') driver.db.pragma('wal_autocheckpoint = 0');
      store = createStore(driver);
    } else store = await openStore(`sqlite:${file}`);
    for (let i = 0; i < USERS; i += 1000) {
      const batch = Array.from({ length: Math.min(1000, USERS - i) }, (_, j) => {
        const r = makeRecord(i + j);
        for (let m = 0; r.history.length < HISTORY; m++) r.history.push({ ...chatMessage(m), ts: r.history.at(-1).ts });
        return r;
      });
      await store.exclusive('all', (ctx) => ctx.putMany(batch));
    }
    const rand = rng(7);
    let k = 0;
    // Bytes this process handed to write(2) (WAL frames, checkpoints): unlike CPU time, it does not
    // depend on what else the machine runs, only on how the commits grouped.
    const wchar = () => Number(/^wchar: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))?.[1] ?? NaN);
    const w0 = wchar();
    const cpu0 = process.cpuUsage();
    const elu0 = performance.eventLoopUtilization();
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (k < APPENDS) await store.appendHistory(userId(Math.floor(rand() * USERS)), chatMessage(k++));
      }),
    );
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const elu = performance.eventLoopUtilization(elu0);
    const cpuClose0 = process.cpuUsage();
    await store.close();
    const cpuClose = process.cpuUsage(cpuClose0);
    const written = wchar() - w0;
    const us = (c) => c.user + c.system;
    console.log(
      JSON.stringify({
        cpuUsPerAppend: round(us(cpu) / APPENDS, 1),
        withCloseUsPerAppend: round((us(cpu) + us(cpuClose)) / APPENDS, 1),
        closeMs: round(us(cpuClose) / 1000, 1),
        eventLoopBusyUsPerAppend: round((elu.active * 1000) / APPENDS, 1),
        appendsPerS: Math.round((APPENDS / ms) * 1000),
        writtenKbPerAppend: round(written / 1024 / APPENDS, 2),
      }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
} else {
  const trees = [['this tree', path.join(here, '..', 'dist')]];
  if (process.env.BENCH_CPU_HELD === '1') trees.push(['indexer held', path.join(here, '..', 'dist'), 'held']);
  // BENCH_CPU_DELAYS=500,1000: this tree again with the indexer starting that many ms after a commit.
  for (const d of (process.env.BENCH_CPU_DELAYS ?? '').split(',').filter(Boolean)) trees.push([`delay ${d} ms`, path.join(here, '..', 'dist'), `delay=${d}`]);
  // BENCH_CPU_NOCKPT=1: this tree again without automatic checkpoints: the difference is their cost.
  if (process.env.BENCH_CPU_NOCKPT === '1') trees.push(['no checkpoint', path.join(here, '..', 'dist'), 'nockpt']);
  if (process.argv[2]) trees.unshift(['baseline', path.resolve(process.argv[2])]);
  const results = [];
  for (let r = 1; r <= ROUNDS; r++) {
    for (const [name, dist, mode = ''] of trees) {
      const load1 = round(os.loadavg()[0], 2);
      const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--child', dist, mode], { encoding: 'utf8' });
      const row = { tree: name, round: r, load1, ...JSON.parse(out.trim().split('\n').at(-1)) };
      results.push(row);
      process.stderr.write(`  ${JSON.stringify(row)}\n`);
    }
  }
  console.log('tree          round  load1 | cpu µs/append  incl. close  close ms  event-loop busy µs/append  appends/s  written KB/append');
  for (const r of results)
    console.log(
      `${r.tree.padEnd(13)} ${String(r.round).padStart(5)} ${String(r.load1).padStart(6)} | ${String(r.cpuUsPerAppend).padStart(13)} ${String(r.withCloseUsPerAppend ?? '').padStart(12)} ${String(r.closeMs ?? '').padStart(9)} ${String(r.eventLoopBusyUsPerAppend).padStart(26)} ${String(r.appendsPerS).padStart(10)} ${String(r.writtenKbPerAppend ?? '').padStart(18)}`,
    );
  console.log(`JSON ${JSON.stringify({ bench: 'append-cpu', date: new Date().toISOString(), machine: machineInfo(), users: USERS, appends: APPENDS, concurrency: CONCURRENCY, results })}`);
}
