// Full backup rate against the disk, side by side in one run (issue 12: "≥ 50% of the dd rate for the
// same byte count, RSS ≤ 150 MB").
//
// Builds (once) or reuses a cached N-user SQLite store of seed-shaped records, then runs, interleaved
// over BENCH_BACKUP_ROUNDS rounds (the order rotates each round):
//   dd    `dd if=/dev/zero bs=1M iflag=count_bytes count=<bytes of the backup> conv=fdatasync` into the
//         same directory (same file system)
//   this  Operations.createBackup with this tree's dist, in a fresh process (bench/backup-rate-child.mjs)
//   base  the same with BENCH_BACKUP_BASE (a baseline's dist built aside), when given
// and reports MB/s, the ratio to the dd run of the same round, peak RSS, and the write / fsync /
// verification wall time seen through the io seam. With BENCH_BACKUP_PROFILE=1, one more backup per
// tree runs under --cpu-prof (not timed in the table) and its CPU is split into: reading rows
// (scanJson, SQLite), JSON work, hashing, writing, the verification re-read, GC, other.
//
// Env: BENCH_BACKUP_USERS (1000000), BENCH_BACKUP_CACHE (a temp dir; e.g. /work/big/backup, kept),
// BENCH_BACKUP_BASE (dist dir), BENCH_BACKUP_THIS (dist dir; default ../dist), BENCH_BACKUP_ROUNDS (2), BENCH_BACKUP_PROFILE (1), BENCH_BACKUP_GZIP (0).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, promises as fsp, readFileSync, readdirSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { envInt, machineInfo, makeRecord, MB, openStoreAt, Reporter, round } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const users = envInt('BENCH_BACKUP_USERS', 1_000_000);
const rounds = Math.max(1, envInt('BENCH_BACKUP_ROUNDS', 2));
const profile = envInt('BENCH_BACKUP_PROFILE', 1) === 1;
const gzip = envInt('BENCH_BACKUP_GZIP', 0) === 1;
const CACHE = process.env.BENCH_BACKUP_CACHE ?? (await fsp.mkdtemp(path.join(os.tmpdir(), 'chatmem-backup-rate-')));
const BASE = process.env.BENCH_BACKUP_BASE ? path.resolve(process.env.BENCH_BACKUP_BASE) : null;
const THIS = process.env.BENCH_BACKUP_THIS ? path.resolve(process.env.BENCH_BACKUP_THIS) : path.join(here, '..', 'dist');
const rep = new Reporter('backup-rate');

const loadavg = () => os.loadavg().map((x) => round(x, 2));

async function cachedStore(n) {
  const dir = path.join(CACHE, `store-${n}`);
  if (!existsSync(path.join(dir, 'ready.json'))) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = path.join(dir, 'memory.db');
    // The library creates the schema; the rows go straight into `users` (the totals triggers run), in key
    // order. The search index stays empty: a backup reads `users` only, and building the FTS index of 1M
    // users took over 30 minutes on this loaded machine (restoreUsers, 2026-11-30).
    await (await openStoreAt(`sqlite:${file}`)).close();
    const t0 = performance.now();
    const db = new Database(file);
    const insert = db.prepare(
      'INSERT INTO users (user_id, data, name, product, created_at, updated_at, messages, search_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    );
    const load = db.transaction((from, to) => {
      for (let i = from; i < to; i++) {
        const r = makeRecord(i);
        insert.run(r.user_id, JSON.stringify(r), r.name, r.product, r.created_at, r.updated_at, r.history.length, '');
      }
    });
    for (let i = 0; i < n; i += 10_000) {
      load(i, Math.min(n, i + 10_000));
      if (i % 100_000 === 0) process.stderr.write(`  [load] ${i}/${n} users, ${round((performance.now() - t0) / 1000, 0)} s\n`);
    }
    db.close();
    const s = (performance.now() - t0) / 1000;
    await fsp.writeFile(path.join(dir, 'ready.json'), JSON.stringify({ users: n, buildSeconds: s }));
    rep.note(`built the ${n}-user store in ${round(s, 0)} s (not measured)`);
  }
  return `sqlite:${path.join(dir, 'memory.db')}`;
}

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve({ out, err }) : reject(new Error(`${cmd} exited with ${code}: ${err}${out}`))));
  });
}

async function backupOnce(dist, url, tag, nodeArgs = []) {
  const dir = path.join(CACHE, `run-${tag}`);
  await fsp.rm(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const load = loadavg();
  const { out } = await run(process.execPath, [...nodeArgs, path.join(here, 'backup-rate-child.mjs'), dist, url, dir, gzip ? 'gzip' : '']);
  const r = JSON.parse(out.trim().split('\n').pop());
  await fsp.rm(path.join(dir, 'backups'), { recursive: true, force: true });
  return { ...r, load, dir };
}

async function ddOnce(bytes) {
  const file = path.join(CACHE, 'dd.tmp');
  await fsp.rm(file, { force: true });
  const load = loadavg();
  const t0 = performance.now();
  const r = spawnSync('dd', ['if=/dev/zero', `of=${file}`, 'bs=1M', 'iflag=count_bytes', `count=${bytes}`, 'conv=fdatasync'], { encoding: 'utf8' });
  const wallMs = performance.now() - t0;
  await fsp.rm(file, { force: true });
  if (r.status !== 0) throw new Error(`dd failed: ${r.stderr}`);
  // "… bytes (…) copied, 2.345 s, 812 MB/s"
  const m = /copied, ([\d.]+) s/.exec(r.stderr);
  return { wallMs, ddSeconds: m ? Number(m[1]) : null, load };
}

// CPU profile split by where the time goes: the first matching rule from the leaf upwards.
function splitProfile(file) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const cats = {};
  let total = 0;
  const classify = (id) => {
    const leaf = byId.get(id).callFrame;
    if (leaf.functionName === '(idle)' || leaf.functionName === '(program)') return 'idle (fsync, I/O waits)';
    if (leaf.functionName === '(garbage collector)') return 'GC';
    const stack = [];
    for (let n = id; n !== undefined; n = parent.get(n)) stack.push(byId.get(n).callFrame);
    if (stack.some((f) => /digestBackupFile|verifyWritten|checkBackupFile/.test(f.functionName))) return 'verification re-read';
    if (/^(update|digest)$/.test(leaf.functionName) || /Hash/.test(leaf.functionName)) return 'hashing';
    if (/^(parse|stringify)$/.test(leaf.functionName) || /stringifyJson|entryLine|RawJson/.test(leaf.functionName)) return 'JSON work';
    if (stack.some((f) => /scanJson|scanBytes|scanBatches|scanRows|iterate/.test(f.functionName) && /sqlite|better-sqlite3|driver/.test(f.url))) return 'reading rows (scanJson)';
    if (/^(write|writev|writeOrBuffer|_write|writeGeneric|from|byteLength|concat|copy|allocUnsafe)$/.test(leaf.functionName) || stack.some((f) => /Sink|emit$|writeBackupStream|writeLines|flush/.test(f.functionName))) return 'writing (lines, buffers, write calls)';
    return 'other';
  };
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = prof.timeDeltas[i] ?? 0;
    total += dt;
    const c = classify(prof.samples[i]);
    cats[c] = (cats[c] ?? 0) + dt;
  }
  return Object.fromEntries(Object.entries(cats).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, { ms: round(v / 1000, 0), pct: round((100 * v) / total, 1) }]));
}

const url = await cachedStore(users);
rep.note(`store ${url}; rounds ${rounds}; base ${BASE ?? '(none)'}; ${JSON.stringify(machineInfo())}`);
const trees = [['this', THIS], ...(BASE ? [['base', BASE]] : [])];
const rows = [];
let bytes = null;
for (let r = 0; r < rounds; r++) {
  const kinds = ['this', 'dd', ...(BASE ? ['base'] : [])];
  // Rotate the order each round; the first round starts with `this`, which gives the byte count for dd.
  const order = r === 0 ? kinds : kinds.map((_, i) => kinds[(i + r) % kinds.length]);
  const round0 = {};
  for (const kind of order) {
    if (kind === 'dd') {
      const d = await ddOnce(bytes);
      round0.dd = d;
      const mbps = bytes / MB / (d.wallMs / 1000);
      rows.push({ round: r + 1, kind, seconds: round(d.wallMs / 1000, 2), mbps: round(mbps, 0), ddReported: d.ddSeconds, load: d.load[0] });
      rep.note(`round ${r + 1} dd: ${round(d.wallMs / 1000, 2)} s, ${round(mbps, 0)} MB/s (dd says ${d.ddSeconds} s), load ${d.load.join(' ')}`);
      continue;
    }
    const dist = kind === 'this' ? THIS : BASE;
    const b = await backupOnce(dist, url, kind);
    bytes ??= b.bytes;
    round0[kind] = b;
    const mbps = b.bytes / MB / (b.wallMs / 1000);
    rows.push({
      round: r + 1,
      kind,
      seconds: round(b.wallMs / 1000, 2),
      mbps: round(mbps, 0),
      users: b.users,
      bytes: b.bytes,
      peakRssMb: round(b.peakRss / MB, 1),
      cpuS: round(b.cpuMs / 1000, 2),
      writeS: b.writeMs === null ? null : round(b.writeMs / 1000, 2),
      dataFsyncS: b.dataSyncMs === null ? null : round(b.dataSyncMs / 1000, 2),
      verifyS: b.verifyMs === null ? null : round(b.verifyMs / 1000, 2),
      load: b.load[0],
      sha256: b.sha256,
    });
    rep.note(`round ${r + 1} ${kind}: ${round(b.wallMs / 1000, 2)} s, ${round(mbps, 0)} MB/s, CPU ${round(b.cpuMs / 1000, 2)} s, peak RSS ${round(b.peakRss / MB, 1)} MB, write ${round(b.writeMs / 1000, 2)} s, data fsync ${round(b.dataSyncMs / 1000, 2)} s, verify ${round((b.verifyMs ?? 0) / 1000, 2)} s, load ${b.load.join(' ')}`);
  }
  for (const kind of ['this', 'base']) {
    const row = rows.find((x) => x.round === r + 1 && x.kind === kind);
    const dd = rows.find((x) => x.round === r + 1 && x.kind === 'dd');
    if (row && dd) row.ratioToDd = round(row.mbps / dd.mbps, 2);
  }
}
const shas = new Set(rows.filter((x) => x.sha256).map((x) => x.sha256));
rep.note(`all backups identical: ${shas.size === 1} (${[...shas].map((s) => s.slice(0, 12)).join(', ')})`);

console.log('\n| round | run | s | MB/s | ratio to dd | CPU s | peak RSS MB | scan+write s | data fsync s | verify s | load1 |');
console.log('|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const x of rows) {
  console.log(`| ${x.round} | ${x.kind} | ${x.seconds} | ${x.mbps} | ${x.ratioToDd ?? ''} | ${x.cpuS ?? ''} | ${x.peakRssMb ?? ''} | ${x.writeS ?? ''} | ${x.dataFsyncS ?? ''} | ${x.verifyS ?? ''} | ${x.load} |`);
}

const profiles = {};
if (profile) {
  for (const [kind, dist] of trees) {
    const profDir = path.join(CACHE, `prof-${kind}`);
    await fsp.rm(profDir, { recursive: true, force: true });
    const b = await backupOnce(dist, url, `prof-${kind}`, ['--cpu-prof', '--cpu-prof-dir', profDir]);
    const f = readdirSync(profDir).find((n) => n.endsWith('.cpuprofile'));
    profiles[kind] = { seconds: round(b.wallMs / 1000, 2), split: splitProfile(path.join(profDir, f)), file: path.join(profDir, f) };
    console.log(`\nCPU profile, ${kind} (${profiles[kind].seconds} s under --cpu-prof): ${profiles[kind].file}`);
    for (const [k, v] of Object.entries(profiles[kind].split)) console.log(`  ${String(v.pct).padStart(5)}%  ${String(v.ms).padStart(6)} ms  ${k}`);
  }
}

rep.summary({ users, gzip, rows, profiles, loadavg: loadavg() });
