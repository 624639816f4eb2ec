// Helper of big-store.mjs (not a bench on its own): runs Operations.createBackup in a fresh process
// so its peak RSS is the backup's alone, not the loader's.
//
//   node bench/child-backup.mjs STORE_URL OPS_DIR [gzip]
//
// Prints one JSON line: wall time, backup facts, peak RSS sampled every 50 ms and VmHWM, and how
// many times createBackup called store.scan() / store.scanJson().
import { instrumentStore, makeOps, openStoreAt, rssSampler, vmHwm } from './lib.mjs';

const [url, dir, mode] = process.argv.slice(2);
if (!url || !dir) {
  console.error('usage: node bench/child-backup.mjs STORE_URL OPS_DIR [gzip]');
  process.exit(2);
}
const gzip = mode === 'gzip';

const rssBeforeOpen = process.memoryUsage().rss;
const store = await openStoreAt(url);
// Shows which path createBackup took: scanJson (stored text written as is) or scan (parse + stringify).
const seen = instrumentStore(store);
const ops = await makeOps(store, dir);
const rssBefore = process.memoryUsage().rss;
const sampler = rssSampler(50);
const t0 = performance.now();
const result = await ops.createBackup({ gzip });
const wallMs = performance.now() - t0;
const sampledPeak = sampler.stop();
await store.close();
console.log(
  JSON.stringify({
    gzip,
    wallMs,
    id: result.id,
    file: result.file,
    users: result.manifest.users,
    bytes: result.manifest.bytes,
    sha256: result.manifest.sha256,
    rssBeforeOpen,
    rssBefore,
    sampledPeakRss: sampledPeak,
    vmHwm: vmHwm(),
    scanCalls: seen.scan,
    scanJsonCalls: seen.scanJson,
  }),
);
