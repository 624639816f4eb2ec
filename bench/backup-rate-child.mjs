// Helper of backup-rate.mjs (not a bench on its own): one Operations.createBackup of STORE_URL with the
// library built in DIST (this tree's dist, or a baseline's built aside), in a fresh process, so its
// peak RSS is the backup's alone.
//
//   node bench/backup-rate-child.mjs DIST STORE_URL OUT_DIR [gzip]
//
// Prints one JSON line: wall time, the backup's facts, peak RSS (sampled every 50 ms, and VmHWM), and
// the wall time of the durable-write steps seen through the io seam (src/fsio.ts): every fsync, and
// the gap between the last directory fsync and the next io call (the verification re-read).
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { rssSampler, vmHwm } from './lib.mjs';

const [dist, url, dir, mode] = process.argv.slice(2);
if (!dist || !url || !dir) {
  console.error('usage: node bench/backup-rate-child.mjs DIST STORE_URL OUT_DIR [gzip]');
  process.exit(2);
}
const lib = (p) => import(pathToFileURL(path.join(path.resolve(dist), p)).href);
const { openStore } = await lib('store/open.js');
const { Operations } = await lib('ops/operations.js');
const { AuditLog } = await lib('ops/audit.js');
const { setFsIo, io } = await lib('fsio.js');

// Timeline of the io calls: [name, start ms, end ms, file].
const events = [];
const timed = (name, f, fileArg) => async (...a) => {
  const t0 = performance.now();
  try {
    return await f(...a);
  } finally {
    events.push([name, t0, performance.now(), String(a[fileArg] ?? '')]);
  }
};
const orig = { ...io };
setFsIo({
  sync: timed('sync', orig.sync, 1),
  fsyncDir: timed('fsyncDir', orig.fsyncDir, 0),
  open: timed('open', orig.open, 0),
  writeFile: timed('writeFile', orig.writeFile, 0),
  link: timed('link', orig.link, 0),
  rename: timed('rename', orig.rename, 0),
  createWriteStream: (...a) => {
    events.push(['createWriteStream', performance.now(), performance.now(), String(a[0])]);
    return orig.createWriteStream(...a);
  },
});

const store = await openStore(url);
const ops = new Operations({
  store,
  backupDir: path.join(dir, 'backups'),
  audit: new AuditLog(path.join(dir, 'audit.jsonl')),
  actor: { kind: 'os', name: 'bench' },
});
const rssBefore = process.memoryUsage().rss;
const sampler = rssSampler(50);
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const result = await ops.createBackup({ gzip: mode === 'gzip' });
const t1 = performance.now();
const cpu = process.cpuUsage(cpu0);
const sampledPeak = sampler.stop();
await store.close();

events.sort((a, b) => a[1] - b[1]);
const backupDir = path.join(dir, 'backups');
const syncMs = events.filter((e) => e[0] === 'sync' || e[0] === 'fsyncDir').reduce((s, e) => s + e[2] - e[1], 0);
// The data file's fsync: a sync of a backup file that is not a manifest.
const isData = (f) => path.dirname(f) === backupDir && /memory_backup_/.test(f) && !/\.meta\.json/.test(f);
const firstSync = events.find((e) => e[0] === 'sync' && isData(e[3]));
const start = events.find((e) => e[0] === 'createWriteStream' && isData(e[3]));
const lastDir = firstSync ? events.find((e) => e[0] === 'fsyncDir' && e[3] === backupDir && e[1] >= firstSync[2]) : undefined;
const afterDir = lastDir ? events.find((e) => e[1] >= lastDir[2] && e !== lastDir) : undefined;
console.log(
  JSON.stringify({
    wallMs: t1 - t0,
    // CPU of the backup (all threads of the process): less sensitive to the machine's load than the wall time.
    cpuMs: (cpu.user + cpu.system) / 1000,
    id: result.id,
    file: result.file,
    users: result.manifest.users,
    bytes: result.manifest.bytes,
    sha256: result.manifest.sha256,
    rssBefore,
    peakRss: Math.max(sampledPeak, vmHwm()),
    // Scan + write until the data file's first fsync starts.
    writeMs: firstSync ? firstSync[1] - t0 : null,
    syncMs,
    dataSyncMs: firstSync ? firstSync[2] - firstSync[1] : null,
    beforeWriteMs: start ? start[1] - t0 : null,
    // From the end of the first directory fsync (the name is claimed) to the next io call: the re-read.
    verifyMs: lastDir && afterDir ? afterDir[1] - lastDir[2] : null,
  }),
);
