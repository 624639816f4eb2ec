// Bench: the store core's `scan` over the JSON file store, side by side: the driver's own scan (its
// records are in memory, parsed) against `scan` derived from `scanJson` (stringify, then parse), which is
// what the core does for a driver without `scan`. Decides whether the JSON driver keeps its fast path.
// BENCH_SCAN_USERS users (default 20000), BENCH_SCAN_REPEAT passes each (default 5), alternating.
import * as path from 'node:path';
import { writeFileSync } from 'node:fs';
import { envInt, machineInfo, makeRecord, Reporter, rmDir, round, tmpDir } from './lib.mjs';

const users = envInt('BENCH_SCAN_USERS', 20_000);
const repeat = envInt('BENCH_SCAN_REPEAT', 5);
const rep = new Reporter('scan-path');
const { JsonFileDriver } = await import('../dist/store/json-file.js');
const { createStore } = await import('../dist/store/store.js');
const { parseScan } = await import('../dist/store/types.js');
const { serializeSeed } = await import('../dist/format/seed.js');
const dir = await tmpDir('scan-path');
const file = path.join(dir, 'memory.json');
// Written as the seed would: loading through the store is not what is measured.
writeFileSync(file, serializeSeed(Array.from({ length: users }, (_, i) => { const r = makeRecord(i); return [r.user_id, r]; })), { mode: 0o600 });
const driver = await JsonFileDriver.open(file);
const store = createStore(driver);

async function pass(records) {
  const t0 = performance.now();
  let n = 0;
  for await (const r of records) n += r.history.length >= 0 ? 1 : 0;
  if (n !== users) throw new Error(`scanned ${n} of ${users}`);
  return performance.now() - t0;
}

const times = { driverScan: [], derivedFromScanJson: [] };
for (let i = 0; i < repeat; i++) {
  times.driverScan.push(await pass(driver.scan()));
  times.derivedFromScanJson.push(await pass(parseScan(driver.scanJson())));
}
const best = (xs) => round(Math.min(...xs), 0);
rep.note(`${users} users, JSON file store, best of ${repeat} passes each, ms`);
rep.add('driver scan (fast path, kept)', { ms: best(times.driverScan), usersPerSec: Math.round(users / (Math.min(...times.driverScan) / 1000)) });
rep.add('scan derived from scanJson', { ms: best(times.derivedFromScanJson), usersPerSec: Math.round(users / (Math.min(...times.derivedFromScanJson) / 1000)) });
rep.summary({ machine: machineInfo(), users, repeat });
await store.close();
await rmDir(dir);
