// Benches 1 (1M point), 2–6 on one big SQLite store, built once (loading is not measured).
//
//   1. append throughput at BENCH_USERS: sequential and BENCH_CONCURRENCY (64) in flight
//   2. delete one user with its backup (Operations.deleteUsers) at BENCH_USERS vs BENCH_SMALL_USERS
//   3. full backup (Operations.createBackup), plain and gzip, in a child process: time, MB/s, peak RSS,
//      and which scan it used (store.scanJson: the stored JSON text written as is); then its two parts
//      alone: store.scanJson() and the verification re-read (digestBackupFile lineFormat)
//   4. selective restore of one user (Operations.restore(id, {users})) and inspectBackup(id, {user}),
//      vs a full streaming scan of the same backup (inspectBackup(id) without a user)
//   6. open time of the store, and stats() / count() / list() / get() latency; the event-loop stall and
//      the write latency while stats() / count() run (once, and every 10 ms for 3 s) with 4 writers
//      appending; the running totals against a full recount
//   5. (last) clearAll() while BENCH_CLEAR_WRITERS (8) writers append: the clear's time and phases
//      (backup, manifest, DELETE, audit) and the write latency distribution while it runs
//
// Env: BENCH_USERS (default 1000000), BENCH_SMALL_USERS (10000), BENCH_SECONDS (10, per append run),
// BENCH_CONCURRENCY (64), BENCH_REPEAT (5, deletes/restores per size), BENCH_CLEAR_WRITERS (8),
// BENCH_GZIP (1: also time a gzip backup), BENCH_KEEP (1: keep the temp dir).
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import {
  chatMessage,
  dirBytes,
  envInt,
  freeBytes,
  latencyStats,
  loadUsers,
  machineInfo,
  makeOps,
  MB,
  openStoreAt,
  Reporter,
  rmDir,
  rng,
  round,
  rssSampler,
  runAppends,
  tmpDir,
  userId,
  instrumentStore,
} from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
let users = envInt('BENCH_USERS', 1_000_000);
const smallUsers = envInt('BENCH_SMALL_USERS', 10_000);
const seconds = envInt('BENCH_SECONDS', 10);
const concurrency = envInt('BENCH_CONCURRENCY', 64);
const repeat = Math.max(1, envInt('BENCH_REPEAT', 5));
const clearWriters = envInt('BENCH_CLEAR_WRITERS', 8);
const doGzip = envInt('BENCH_GZIP', 1) === 1;
const keep = envInt('BENCH_KEEP', 0) === 1;

const rep = new Reporter('big-store');
const rand = rng(4242);
const tStart = performance.now();

// Disk: the store takes ~5 KB per user on disk (record JSON + search text + B-tree overflow pages),
// and this script writes two full backups (~2 KB per user each) plus a gzip one.
const PER_USER_DISK = 12 * 1024;
const root = await tmpDir('big');
const free = await freeBytes(root);
const requested = users;
if (users * PER_USER_DISK > free * 0.8) {
  users = Math.max(smallUsers, Math.floor((free * 0.8) / PER_USER_DISK / 10_000) * 10_000);
  rep.note(`only ${round(free / 1024 ** 3)} GiB free under ${root}: scaled BENCH_USERS from ${requested} down to ${users}`);
}
rep.note(`users=${users} small=${smallUsers} free disk ${round(free / 1024 ** 3)} GiB, dir ${root}`);

const pick = (n, avoid) => {
  for (;;) {
    const i = Math.floor(rand() * n);
    if (!avoid.has(i)) return i;
  }
};

async function sqliteAt(dir) {
  const url = `sqlite:${path.join(dir, 'memory.db')}`;
  return { url, store: await openStoreAt(url) };
}

function runChild(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(here, 'child-backup.mjs'), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`child-backup exited with ${code}: ${out}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()));
      } catch (err) {
        reject(err);
      }
    });
  });
}

const bigDir = path.join(root, 'big');
const smallDir = path.join(root, 'small');
let big;
let small;
try {
  // ---- build (not measured) ----
  big = await sqliteAt(bigDir);
  const loadS = await loadUsers(big.store, users, { label: `sqlite ${users}` });
  const dbBytes = await dirBytes(bigDir);
  rep.note(`built ${users}-user store in ${round(loadS)} s (not measured): ${round(dbBytes / MB)} MB on disk, ${round(dbBytes / users)} B/user`);
  small = await sqliteAt(smallDir);
  await loadUsers(small.store, smallUsers, { label: `sqlite ${smallUsers}` });

  // ---- 1. appends at the big size ----
  const seq = await runAppends(big.store, { users, concurrency: 1, seconds, seed: 11 });
  rep.add(`1 append sqlite users=${users} sequential`, { users, inFlight: 1, msgsPerSec: seq.perSec, ops: seq.ops, seconds: seq.seconds, latencyMs: seq.latencyMs, errors: seq.errors });
  const conc = await runAppends(big.store, { users, concurrency, seconds, seed: 12 });
  rep.add(`1 append sqlite users=${users} concurrent`, { users, inFlight: concurrency, msgsPerSec: conc.perSec, ops: conc.ops, seconds: conc.seconds, latencyMs: conc.latencyMs, errors: conc.errors });

  // ---- 2. delete one user, backup included ----
  const deleted = new Set();
  let bigOps = await makeOps(big.store, bigDir);
  const smallOps = await makeOps(small.store, smallDir);
  const deleteAt = async (ops, n, label) => {
    const times = [];
    const avoid = label === 'big' ? deleted : new Set();
    for (let k = 0; k < repeat; k++) {
      const i = pick(n, avoid);
      avoid.add(i);
      const t0 = performance.now();
      const r = await ops.deleteUsers([userId(i)]);
      times.push(performance.now() - t0);
      if (r.deleted !== 1) throw new Error(`deleteUsers deleted ${r.deleted}`);
    }
    return latencyStats(times);
  };
  const delSmall = await deleteAt(smallOps, smallUsers, 'small');
  rep.add(`2 deleteUsers(1 user) users=${smallUsers}`, { users: smallUsers, runs: repeat, wallMs: delSmall });
  const delBig = await deleteAt(bigOps, users, 'big');
  rep.add(`2 deleteUsers(1 user) users=${users}`, { users, runs: repeat, wallMs: delBig });
  rep.add('2 deleteUsers ratio big/small (median)', { ratio: round(delBig.p50 / delSmall.p50, 2), storeRatio: round(users / smallUsers, 0) });

  // ---- 3. full backup in a child process (the parent idles meanwhile) ----
  const plain = await runChild([big.url, bigDir]);
  rep.add(`3 createBackup users=${plain.users}`, {
    users: plain.users,
    seconds: round(plain.wallMs / 1000, 2),
    mb: round(plain.bytes / MB),
    mbPerSec: round(plain.bytes / MB / (plain.wallMs / 1000)),
    peakRssMb: round(Math.max(plain.sampledPeakRss, plain.vmHwm ?? 0) / MB),
    sampledPeakRssMb: round(plain.sampledPeakRss / MB),
    vmHwmMb: round((plain.vmHwm ?? 0) / MB),
    rssAfterOpenMb: round(plain.rssBefore / MB),
    scanJsonCalls: plain.scanJsonCalls,
    scanCalls: plain.scanCalls,
  });
  if (plain.scanJsonCalls < 1 || plain.scanCalls > 0) rep.note(`createBackup did not take the scanJson path (scanJson ${plain.scanJsonCalls}, scan ${plain.scanCalls})`);
  let gz = null;
  if (doGzip) {
    gz = await runChild([big.url, bigDir, 'gzip']);
    const gzBytes = (await import('node:fs')).statSync(gz.file).size;
    rep.add(`3 createBackup gzip users=${gz.users}`, {
      users: gz.users,
      seconds: round(gz.wallMs / 1000, 2),
      mb: round(gz.bytes / MB),
      gzMb: round(gzBytes / MB),
      mbPerSec: round(gz.bytes / MB / (gz.wallMs / 1000)),
      peakRssMb: round(Math.max(gz.sampledPeakRss, gz.vmHwm ?? 0) / MB),
      sampledPeakRssMb: round(gz.sampledPeakRss / MB),
      vmHwmMb: round((gz.vmHwm ?? 0) / MB),
      scanJsonCalls: gz.scanJsonCalls,
      scanCalls: gz.scanCalls,
    });
  }
  // Where the backup's time goes: the raw store scan alone (what createBackup reads: [user_id, stored
  // JSON text], no parse), and the verification re-read alone (what writeBackup runs: SHA-256 + line count).
  {
    let n = 0;
    let chars = 0;
    const t0 = performance.now();
    for await (const [, text] of big.store.scanJson()) {
      n++;
      chars += text.length;
    }
    const scanMs = performance.now() - t0;
    rep.add('3 breakdown: store.scanJson() alone', { users: n, seconds: round(scanMs / 1000, 2), mbPerSec: round(plain.bytes / MB / (scanMs / 1000)), chars });
    const { digestBackupFile } = await import('../dist/format/line-reader.js');
    const t1 = performance.now();
    const d = await digestBackupFile(plain.file, { lineFormat: true });
    const digestMs = performance.now() - t1;
    rep.add('3 breakdown: verify re-read (digestBackupFile lineFormat: SHA-256 + line count) alone', {
      users: d.users,
      seconds: round(digestMs / 1000, 2),
      mbPerSec: round(d.bytes / MB / (digestMs / 1000)),
      matchesManifest: d.sha256 === plain.sha256 && d.users === plain.users && d.bytes === plain.bytes,
    });
  }

  // ---- 4. selective restore and inspect of one user from the full backup ----
  {
    const times = [];
    const inspectTimes = [];
    for (let k = 0; k < repeat; k++) {
      const i = pick(users, deleted);
      const u = userId(i);
      const t0 = performance.now();
      const ins = await bigOps.inspectBackup(plain.id, { user: u });
      inspectTimes.push(performance.now() - t0);
      if (!ins.record || ins.record.user_id !== u) throw new Error(`inspectBackup did not find ${u}`);
      const t1 = performance.now();
      const r = await bigOps.restore(plain.id, { users: [u] });
      times.push(performance.now() - t1);
      if (r.written !== 1) throw new Error(`restore wrote ${r.written}`);
    }
    rep.add(`4 inspectBackup(id,{user}) users=${users}`, { runs: repeat, wallMs: latencyStats(inspectTimes) });
    rep.add(`4 restore(id,{users:[u]}) users=${users}`, { runs: repeat, wallMs: latencyStats(times) });
    const t2 = performance.now();
    const full = await bigOps.inspectBackup(plain.id);
    const fullMs = performance.now() - t2;
    rep.add(`4 full streaming scan: inspectBackup(id) users=${full.users}`, { seconds: round(fullMs / 1000, 2), mbPerSec: round(plain.bytes / MB / (fullMs / 1000)) });
    if (gz) {
      // The same selective restore from the gzip backup: no binary search there, the file is streamed.
      const u = userId(pick(users, deleted));
      const t3 = performance.now();
      const r = await bigOps.restore(gz.id, { users: [u] });
      const gzMs = performance.now() - t3;
      rep.add(`4 restore(gzipId,{users:[u]}) (streaming path) users=${users}`, { seconds: round(gzMs / 1000, 2), written: r.written });
    }
  }

  // ---- 6. open time and read-side latencies ----
  {
    const t0 = performance.now();
    await big.store.close();
    const closeMs = performance.now() - t0;
    const t1 = performance.now();
    big = await sqliteAt(bigDir);
    const openMs = performance.now() - t1;
    rep.add(`6 open sqlite users=${users}`, { openMs: round(openMs, 2), closeMs: round(closeMs, 2), note: 'page cache warm' });
    bigOps = await makeOps(big.store, bigDir);
    const time = async (fn, runs) => {
      const t = [];
      let v;
      for (let k = 0; k < runs; k++) {
        const s = performance.now();
        v = await fn(k);
        t.push(performance.now() - s);
      }
      return { v, stats: latencyStats(t) };
    };
    const first = await time(() => big.store.count(), 1);
    // This morning's count() and stats() read the whole table, which also warmed the OS page cache for
    // the list / get / search timings below; the O(1) versions no longer do. Read the table once here
    // (the old stats() query, on a second read-only connection) so those timings stay comparable: after
    // the backups and the backup scans of benches 3–4 the store is partly out of the page cache.
    {
      const ro = new Database(path.join(bigDir, 'memory.db'), { readonly: true });
      try {
        const t0 = performance.now();
        ro.prepare('SELECT COUNT(*) AS users, SUM(messages) AS messages, SUM(length(CAST(data AS BLOB))) AS bytes, MAX(updated_at) AS last FROM users').get();
        rep.add(`6 warm-up: full-table read (this morning's stats() query) users=${users}`, { ms: round(performance.now() - t0, 0) });
      } finally {
        ro.close();
      }
    }
    rep.add(`6 count() first after open users=${users}`, { wallMs: first.stats.max, value: first.v });
    const c = await time(() => big.store.count(), 1000);
    rep.add(`6 count() users=${users}`, { runs: 1000, wallMs: c.stats, value: c.v });
    const s = await time(() => big.store.stats(), 1000);
    rep.add(`6 stats() users=${users}`, { runs: 1000, wallMs: s.stats, value: s.v });
    const l1 = await time(() => big.store.list({ limit: 100 }), 20);
    rep.add(`6 list({limit:100}) first page users=${users}`, { runs: 20, wallMs: l1.stats });
    const cursors = Array.from({ length: 20 }, () => userId(Math.floor(rand() * users)));
    const l2 = await time((k) => big.store.list({ cursor: cursors[k], limit: 100 }), 20);
    rep.add(`6 list({cursor,limit:100}) random page users=${users}`, { runs: 20, wallMs: l2.stats });
    const g = await time(() => big.store.get(userId(Math.floor(rand() * users))), 1000);
    rep.add(`6 get(id) users=${users}`, { runs: 1000, wallMs: g.stats });
    // better-sqlite3 is synchronous: a slow query stalls the event loop, i.e. every chat request, for its
    // whole duration. Show it with 4 writers appending: the writes overlapping the call(s) against the
    // writes of a baseline window of the same length just before, and the event-loop delay in both.
    //   repeatMs = 0: one call (as this morning's bench). Event-loop max over [t0 - 300 ms, t1 + 300 ms],
    //     baseline over the 1 s before that.
    //   repeatMs > 0: call fn every gapMs for repeatMs (a /metrics scrape 1000× more often than the daemon's).
    const stallDuring = async (fn, { repeatMs = 0, gapMs = 10 } = {}) => {
      const lat = [];
      let stop = false;
      const wr = rng(7);
      const writer = async () => {
        for (let k = 0; !stop; k++) {
          const st = performance.now();
          await big.store.appendHistory(userId(Math.floor(wr() * users)), chatMessage(k));
          lat.push([st, performance.now()]);
        }
      };
      const baseMs = Math.max(1000, repeatMs);
      const ws = Array.from({ length: 4 }, writer);
      await sleep(500); // writers warm up
      const loopBefore = monitorEventLoopDelay({ resolution: 10 });
      const b0 = performance.now();
      loopBefore.enable();
      await sleep(baseMs);
      loopBefore.disable();
      const loop = monitorEventLoopDelay({ resolution: 10 });
      loop.enable();
      await sleep(300);
      const calls = [];
      let v;
      const t0 = performance.now();
      do {
        const cs = performance.now();
        v = await fn();
        calls.push(performance.now() - cs);
        if (repeatMs > 0) await sleep(gapMs);
      } while (repeatMs > 0 && performance.now() - t0 < repeatMs);
      const t1 = performance.now();
      await sleep(300);
      loop.disable();
      stop = true;
      await Promise.all(ws);
      const during = lat.filter(([st, e]) => st < t1 && e > t0).map(([st, e]) => e - st);
      const before = lat.filter(([st, e]) => st >= b0 && e < t0 - 300).map(([st, e]) => e - st);
      const dStats = latencyStats(during);
      const bStats = latencyStats(before);
      return {
        v,
        calls: calls.length,
        callMs: calls.length === 1 ? round(calls[0], 3) : latencyStats(calls),
        eventLoopMaxDelayMs: round(loop.max / 1e6, 1),
        eventLoopMaxDelayMsBaseline: round(loopBefore.max / 1e6, 1),
        writeMaxMsDuring: round(Math.max(0, ...during), 1),
        writeP99MsDuring: dStats.p99,
        writesDuring: during.length,
        writeP99MsBefore: bStats.p99,
        writeMaxMsBefore: bStats.max,
        writesBefore: before.length,
      };
    };
    for (const [label, fn, opts] of [
      ['count()', () => big.store.count(), {}],
      ['stats()', () => big.store.stats(), {}],
      ['count() every 10 ms for 3 s', () => big.store.count(), { repeatMs: 3000 }],
      ['stats() every 10 ms for 3 s', () => big.store.stats(), { repeatMs: 3000 }],
      ['search(absent term) (full scan, for reference)', () => big.store.search('kata-yang-tidak-ada', { limit: 10 }), {}],
    ]) {
      const { v: _v, ...r } = await stallDuring(fn, opts);
      rep.add(`6 ${label} with 4 writers users=${users}`, r);
    }
    // The running totals against a full recount (this morning's stats() query), on a second read-only
    // connection once the writers have stopped: the triggers have to agree after every append, delete
    // and restore above. The recount's time is what stats() cost before the totals.
    {
      const now = await big.store.stats();
      const ro = new Database(path.join(bigDir, 'memory.db'), { readonly: true });
      try {
        const t0 = performance.now();
        const row = ro
          .prepare('SELECT COUNT(*) AS users, SUM(messages) AS messages, SUM(length(CAST(data AS BLOB))) AS bytes, MAX(updated_at) AS last FROM users')
          .get();
        const recountMs = performance.now() - t0;
        const agrees = row.users === now.users && row.messages === now.messages && row.bytes === now.bytes && row.last === now.lastUpdate;
        rep.add(`6 totals vs full recount users=${users}`, { agrees, totals: now, recount: row, recountMs: round(recountMs, 0) });
        if (!agrees) rep.note('running totals DISAGREE with a full recount');
      } finally {
        ro.close();
      }
    }
  }

  // ---- 5. clearAll while writers append ----
  {
    const before = await big.store.count();
    // Which scan the clear's backup used, and when its DELETE ran (ctx.clear() inside the section).
    const seen = instrumentStore(big.store);
    const lat = []; // [startMs, endMs]
    let stop = false;
    let errors = 0;
    let k = 0;
    const wrand = rng(99);
    const writer = async () => {
      while (!stop) {
        const id = userId(Math.floor(wrand() * users));
        const s = performance.now();
        try {
          await big.store.appendHistory(id, chatMessage(k++));
        } catch {
          errors++;
        }
        lat.push([s, performance.now()]);
      }
    };
    const sampler = rssSampler(50);
    const writers = Array.from({ length: clearWriters }, writer);
    await sleep(2000);
    const c0 = performance.now();
    const res = await bigOps.clearAll();
    const c1 = performance.now();
    await sleep(2000);
    stop = true;
    await Promise.all(writers);
    const peak = sampler.stop();
    const baseline = lat.filter(([, e]) => e < c0).map(([s, e]) => e - s);
    const during = lat.filter(([s, e]) => s < c1 && e > c0).map(([s, e]) => e - s);
    const after = lat.filter(([s]) => s >= c1).map(([s, e]) => e - s);
    // Phases from the backup's manifest: writeBackup start (created_at) and verification end (verifiedAt).
    const { readManifest } = await import('../dist/backup/manifest.js');
    const m = await readManifest(path.join(bigDir, 'backups'), path.basename(res.backupFile));
    const epoch0 = performance.timeOrigin;
    const created = Date.parse(m.created_at) - epoch0;
    const verified = Date.parse(m.verifiedAt) - epoch0;
    const [d0, d1] = seen.clears[0] ?? [NaN, NaN];
    rep.add(`5 clearAll users=${before} with ${clearWriters} writers`, {
      usersCleared: res.deleted,
      clearSeconds: round((c1 - c0) / 1000, 2),
      phaseBeforeBackupMs: round(created - c0, 0),
      phaseBackupWriteAndVerifyMs: round(verified - created, 0),
      phaseManifestDeleteAuditMs: round(c1 - verified, 0),
      ofWhichManifestMs: round(d0 - verified, 0),
      ofWhichDeleteMs: round(d1 - d0, 0),
      ofWhichReleaseAndAuditMs: round(c1 - d1, 0),
      backupScan: { ctxScanJson: seen.ctxScanJson, ctxScan: seen.ctxScan, scanJson: seen.scanJson, scan: seen.scan },
      backupMb: round(m.bytes / MB),
      writeErrors: errors,
      processPeakRssMb: round(peak / MB),
    });
    rep.add('5 write latency before the clear', { wallMs: latencyStats(baseline) });
    rep.add('5 write latency of writes overlapping the clear', { wallMs: latencyStats(during), waitedOver100ms: during.filter((x) => x > 100).length });
    rep.add('5 write latency over the whole run (before+during+after)', { wallMs: latencyStats(lat.map(([s, e]) => e - s)) });
    rep.add('5 write latency after the clear', { wallMs: latencyStats(after) });
  }
} finally {
  await big?.store.close().catch(() => undefined);
  await small?.store.close().catch(() => undefined);
  if (keep) rep.note(`kept ${root}`);
  else await rmDir(root);
}

rep.summary({
  machine: machineInfo(),
  config: { users, requestedUsers: requested, smallUsers, seconds, concurrency, repeat, clearWriters, gzip: doGzip },
  wallSeconds: round((performance.now() - tStart) / 1000),
});
