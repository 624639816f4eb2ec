// Runs every chatmem bench in sequence, each in its own Node process (same environment), and
// prints their lines as they come. Needs a build: `npm run build && node bench/run-all.mjs`.
//
//   append.mjs     bench 1 at 10k and 100k users (SQLite) and the JSON-file driver
//   probes.mjs     what is still open in the SQLite schema (disk per user, the clear's DELETE with the
//                  totals triggers, what the triggers cost an append), at 100k users
//   big-store.mjs  benches 1 (1M point), 2, 3, 4, 6 and 5 (the clear) on one 1M-user store
//
// Quick run:  BENCH_USERS=20000 BENCH_APPEND_USERS=10000 BENCH_SECONDS=2 BENCH_JSON_SECONDS=5 BENCH_PROBE_USERS=20000 BENCH_PROBE_SECONDS=1 node bench/run-all.mjs
// Full run:   node bench/run-all.mjs   (1M-user store; about 10–15 minutes on 2 cores)
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const benches = ['append.mjs', 'probes.mjs', 'big-store.mjs'];

function run(script) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(here, script)], { stdio: 'inherit', env: process.env });
    child.on('close', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}

const t0 = performance.now();
let failed = 0;
for (const b of benches) {
  const s = performance.now();
  console.log(`=== ${b}`);
  const code = await run(b);
  console.log(`=== ${b} finished in ${((performance.now() - s) / 1000).toFixed(1)} s${code === 0 ? '' : ` (exit ${code})`}`);
  if (code !== 0) failed++;
}
console.log(`=== all benches finished in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
process.exitCode = failed > 0 ? 1 : 0;
