// Shared helpers of the chatmem benchmarks: record generator, store loading, timing and reporting.
// Plain ESM over the compiled library in ../dist (run `npm run build` first).
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setInterval, clearInterval } from 'node:timers';
import { randomBytes } from 'node:crypto';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '..');
export const FIXTURE = process.env.BENCH_FIXTURE ?? fileURLToPath(new URL('../test/fixtures/seed-format/memory.json', import.meta.url));

/** Integer from the environment, with a default. */
export function envInt(name, def) {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v.replace(/_/g, ''));
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name} must be a non-negative number, got ${v}`);
  return Math.floor(n);
}

/** Comma-separated integers from the environment. */
export function envInts(name, def) {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  return v.split(',').map((s) => Number(s.trim().replace(/_/g, ''))).filter((n) => Number.isFinite(n) && n > 0);
}

// ---------------------------------------------------------------------------------------------
// Deterministic PRNG (mulberry32) so runs are comparable.
export function rng(seed = 12345) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------------------------------------
// Records. Templates are the seed fixture's records; each generated user gets a new id, a new
// session token, 10–18 history messages (Indonesian text with emoji, taken from the fixture's
// conversations) and fresh timestamps. Nested objects (flags values, slots) are shared between
// records: drivers only serialise them.

let templates = null;
let messagePool = null;

function loadTemplates() {
  if (templates) return;
  const seed = JSON.parse(readFileSync(FIXTURE, 'utf8'));
  templates = Object.values(seed);
  const texts = new Set();
  messagePool = [];
  for (const t of templates) {
    for (const h of t.history) {
      const key = `${h.role}\u0000${h.text}`;
      if (texts.has(key)) continue;
      texts.add(key);
      messagePool.push({ role: h.role, text: h.text, meta: h.meta });
    }
  }
}

/**
 * User id of the i-th generated user: Indonesian-style phone numbers, all 12 digits, so string
 * order equals index order (lets the loader insert in key order).
 */
export function userId(i) {
  return `62${8100000000 + i * 97}`;
}

const BASE_TIME = Date.UTC(2025, 10, 1, 0, 0, 0);

function iso(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** The i-th generated record (~1.5–2 KB of JSON). */
export function makeRecord(i) {
  loadTemplates();
  const t = templates[i % templates.length];
  const n = 10 + ((i * 7919) % 9); // 10..18 messages
  const start = BASE_TIME + (i % 20000) * 60_000;
  const history = new Array(n);
  // Take the template's own conversation first, then continue from the shared pool.
  let p = (i * 31) % messagePool.length;
  for (let k = 0; k < n; k++) {
    const src = k < t.history.length ? t.history[k] : messagePool[p++ % messagePool.length];
    const e = { role: k % 2 === 0 ? 'user' : 'bot', text: src.text, ts: iso(start + k * 47_000) };
    if (src.meta) e.meta = src.meta;
    history[k] = e;
  }
  const last = history[n - 1];
  return {
    user_id: userId(i),
    session_token: (i * 2654435761 >>> 0).toString(16).padStart(8, '0') + (i * 40503 >>> 0).toString(16).padStart(8, '0'),
    name: t.name,
    gender: t.gender,
    is_company: t.is_company,
    product: t.product,
    serial: t.serial,
    address: t.address,
    summary_context: t.summary_context,
    history,
    last_answer: history.findLast((h) => h.role === 'user')?.text ?? null,
    flags: { ...t.flags, last_activity: last.ts },
    slots: t.slots,
    created_at: iso(start - 30_000),
    updated_at: last.ts,
  };
}

const CHAT_TEXTS = [
  'halo kak, eac saya bunyi terus 🙏',
  'sudah saya cek MCB nya kak, masih mati 😢',
  'alamat saya di Jl. Gatot Subroto No 12, Bandung',
  'kapan teknisinya bisa datang kak? 🙂',
  'ada bau gosong dari unit, aman gak ya?',
  'terima kasih banyak kak 👍',
  'filternya sudah saya bersihkan tapi masih berisik',
  'oke kak, saya tunggu kabarnya ya 😊',
];

/** A realistic message to append (alternating user/bot). */
export function chatMessage(k) {
  return { role: k % 3 === 2 ? 'bot' : 'user', text: `${CHAT_TEXTS[k % CHAT_TEXTS.length]} (#${k})` };
}

/** Average serialised size of generated records, in bytes. */
export function averageRecordBytes(sample = 2000) {
  let total = 0;
  for (let i = 0; i < sample; i++) total += Buffer.byteLength(JSON.stringify(makeRecord(i)));
  return total / sample;
}

// ---------------------------------------------------------------------------------------------
// Stores.

export async function tmpDir(tag) {
  return fsp.mkdtemp(path.join(os.tmpdir(), `chatmem-bench-${tag}-`));
}

export async function rmDir(dir) {
  await fsp.rm(dir, { recursive: true, force: true });
}

/** Disk usage of the files under `dir`, in bytes. */
export async function dirBytes(dir) {
  let total = 0;
  for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await dirBytes(p);
    else total += (await fsp.stat(p)).size;
  }
  return total;
}

/** Free bytes of the file system holding `dir`. */
export async function freeBytes(dir) {
  const s = await fsp.statfs(dir);
  return s.bavail * s.bsize;
}

/**
 * Loads users 0..n-1 into `store` through `exclusive('all', ctx => ctx.putMany(batch))`, batches of
 * `batch`, in key order. Not a measurement; prints progress to stderr.
 */
export async function loadUsers(store, n, { batch = 1000, label = 'load' } = {}) {
  const t0 = performance.now();
  let lastLog = t0;
  await store.exclusive('all', async (ctx) => {
    for (let i = 0; i < n; i += batch) {
      const records = [];
      for (let j = i; j < Math.min(n, i + batch); j++) records.push(makeRecord(j));
      await ctx.putMany(records);
      const now = performance.now();
      if (now - lastLog > 10_000) {
        lastLog = now;
        process.stderr.write(`  [${label}] ${Math.min(n, i + batch)}/${n} users, ${((now - t0) / 1000).toFixed(0)} s\n`);
      }
    }
  });
  return (performance.now() - t0) / 1000;
}

/**
 * Loads users 0..n-1 into an empty `store` the way a full restore does (`replaceAll` of one stream in
 * key order): staged, then indexed in one set-based pass. Much faster than `loadUsers` for big stores.
 * Returns seconds.
 */
export async function restoreUsers(store, n, { label = 'restore' } = {}) {
  const t0 = performance.now();
  let lastLog = t0;
  await store.exclusive('all', (ctx) =>
    ctx.replaceAll(
      (async function* () {
        for (let i = 0; i < n; i++) {
          yield makeRecord(i);
          if (i % 10_000 === 0 && performance.now() - lastLog > 10_000) {
            lastLog = performance.now();
            process.stderr.write(`  [${label}] staged ${i}/${n} users, ${((lastLog - t0) / 1000).toFixed(0)} s\n`);
          }
        }
      })(),
    ),
  );
  return (performance.now() - t0) / 1000;
}

/** Opens a store through the library's URL opener. */
export async function openStoreAt(url) {
  const { openStore } = await import('../dist/store/open.js');
  return openStore(url);
}

/**
 * Wraps `store` in place so a bench can see which code path the library took: counts calls of
 * `scan()` / `scanJson()` (on the store and on exclusive-section contexts) and records the
 * [start, end] performance.now() span of each exclusive-section `clear()` (the DELETE). Returns the
 * live counters.
 */
export function instrumentStore(store) {
  const seen = { scan: 0, scanJson: 0, ctxScan: 0, ctxScanJson: 0, clears: [] };
  const { scan, scanJson, exclusive } = store;
  store.scan = (...a) => (seen.scan++, scan.apply(store, a));
  store.scanJson = (...a) => (seen.scanJson++, scanJson.apply(store, a));
  store.exclusive = (scope, fn) =>
    exclusive.call(store, scope, (ctx) =>
      fn(
        // Object.create keeps the context's other methods (own or prototype ones) working unchanged.
        Object.assign(Object.create(ctx), {
          scan: (...a) => (seen.ctxScan++, ctx.scan(...a)),
          scanJson: (...a) => (seen.ctxScanJson++, ctx.scanJson(...a)),
          clear: async (...a) => {
            const t0 = performance.now();
            try {
              return await ctx.clear(...a);
            } finally {
              seen.clears.push([t0, performance.now()]);
            }
          },
        }),
      ),
    );
  return seen;
}

/** Operations over `store` with a bench audit log and backup dir under `dir`. */
export async function makeOps(store, dir) {
  const { Operations } = await import('../dist/ops/operations.js');
  const { AuditLog } = await import('../dist/ops/audit.js');
  return new Operations({
    store,
    backupDir: path.join(dir, 'backups'),
    audit: new AuditLog(path.join(dir, 'audit.jsonl')),
    actor: { kind: 'os', name: 'bench' },
  });
}

// ---------------------------------------------------------------------------------------------
// Timing and statistics.

export function ms(t0) {
  return performance.now() - t0;
}

export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

/** {n, min, p50, p90, p99, max, mean} of a list of milliseconds, rounded. */
export function latencyStats(values) {
  const s = Float64Array.from(values).sort();
  const r = (x) => Math.round(x * 1000) / 1000;
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : NaN;
  return { n: s.length, min: r(s[0] ?? NaN), p50: r(percentile(s, 50)), p90: r(percentile(s, 90)), p99: r(percentile(s, 99)), max: r(s[s.length - 1] ?? NaN), mean: r(mean) };
}

/** Samples process RSS every `everyMs`; `stop()` returns the peak in bytes. */
export function rssSampler(everyMs = 50) {
  let peak = process.memoryUsage().rss;
  const timer = setInterval(() => {
    const rss = process.memoryUsage().rss;
    if (rss > peak) peak = rss;
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      const rss = process.memoryUsage().rss;
      return Math.max(peak, rss);
    },
  };
}

/** VmHWM (peak resident set size) of this process from /proc/self/status, in bytes, or null. */
export function vmHwm() {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

export const MB = 1024 * 1024;

export function round(x, digits = 1) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/**
 * Runs appends to random users [0, users) with `concurrency` callers in flight, for `seconds`
 * (or until `maxOps`). Each caller awaits its append before starting the next. Returns throughput
 * and latency stats.
 */
export async function runAppends(store, { users, concurrency = 1, seconds = 10, maxOps = Infinity, seed = 1 }) {
  const rand = rng(seed);
  const lat = [];
  let ops = 0;
  let errors = 0;
  let firstError = null;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  const worker = async () => {
    while (performance.now() < deadline && ops < maxOps) {
      const k = ops++;
      const id = userId(Math.floor(rand() * users));
      const s = performance.now();
      try {
        await store.appendHistory(id, chatMessage(k));
        lat.push(performance.now() - s);
      } catch (err) {
        errors++;
        firstError ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  if (firstError) process.stderr.write(`  append error: ${firstError.message}\n`);
  return { ops: lat.length, errors, seconds: round(elapsed, 2), perSec: round(lat.length / elapsed, 1), latencyMs: latencyStats(lat) };
}

// ---------------------------------------------------------------------------------------------
// Reporting: one line per measurement, then a JSON summary line.

export class Reporter {
  constructor(bench) {
    this.bench = bench;
    this.results = [];
  }

  /** Prints `name: k=v …` and records it for the summary. */
  add(name, fields) {
    this.results.push({ name, ...fields });
    const parts = Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'object' && v !== null ? JSON.stringify(v) : v}`);
    console.log(`${this.bench} | ${name}: ${parts.join(' ')}`);
  }

  note(text) {
    console.log(`${this.bench} | # ${text}`);
  }

  summary(extra = {}) {
    console.log(`JSON ${JSON.stringify({ bench: this.bench, ...extra, results: this.results })}`);
  }
}

export function machineInfo() {
  const cpu = os.cpus()[0]?.model ?? 'unknown';
  return { node: process.version, cpu, cores: os.cpus().length, memGiB: round(os.totalmem() / 1024 ** 3, 1), platform: `${os.type()} ${os.release()}`, tmp: os.tmpdir() };
}

export function randomHex(n) {
  return randomBytes(n).toString('hex');
}

/** CPU seconds (user + system) process `pid` has used so far, from /proc; 0 once it is gone. */
export async function procCpuSeconds(pid) {
  try {
    const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // fields 14 and 15, utime and stime, in USER_HZ (100 on Linux x86-64)
  } catch {
    return 0;
  }
}
