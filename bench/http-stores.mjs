// Loading N seed-shaped users into the three servers of bench/http-load.mjs fast enough for 1M users,
// with an optional cache directory (BENCH_HTTP_CACHE) reused across runs:
// - SQLite: the store is built once by a full restore (`replaceAll`: staged, then indexed in one
//   set-based pass) and kept closed in the cache; a run copies the file.
// - Redis: the peer's data is loaded once into a redis-server with `appendfsync no`, rewritten into one
//   AOF base (an RDB preamble), and the AOF directory is kept; a run copies it and starts its own
//   redis-server on it with `appendfsync always`.
// - PostgreSQL: the driver's own row values (`rowValues`) are written once as a COPY text file; a run
//   creates the schema through the library, drops the trigram index, COPYs the file in through psql,
//   and builds the index again in one pass (row-by-row GIN maintenance is what made the upsert load slow).
// Cache entries are named by user count, the store's schema version, and a hash of the record generator
// and the fixture, so a change to either builds new ones instead of reusing stale data.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import pg from 'pg';
import { FIXTURE, makeRecord, openStoreAt, restoreUsers, rmDir, userId } from './lib.mjs';

const exists = (p) => fsp.access(p).then(() => true, () => false);
const seconds = (t0) => (performance.now() - t0) / 1000;

/** Hash of what decides the loaded data: the generator's code and the fixture it draws from. */
export function generatorKey() {
  const h = createHash('sha256');
  h.update(makeRecord.toString()).update(userId.toString()).update(readFileSync(FIXTURE));
  return h.digest('hex').slice(0, 10);
}

/**
 * Copies a file and fsyncs the copy. Without the fsync the kernel still holds the copy's gigabytes as
 * dirty pages, and the first fsync of the file by the server under test (SQLite's first WAL checkpoint)
 * writes them all back: at 1M users the daemon then answered nothing for a whole 10 s round
 * (2026-11-30, 7.2 GB store copied just before; 1.6 s of its CPU in that round: it was waiting on the disk).
 */
async function copySynced(from, to) {
  await fsp.copyFile(from, to);
  const fh = await fsp.open(to, 'r+');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Copies every file of `from` into `to` (one level: an AOF directory), synced. */
async function copyDir(from, to) {
  await fsp.mkdir(to, { recursive: true, mode: 0o700 });
  for (const e of await fsp.readdir(from)) await copySynced(path.join(from, e), path.join(to, e));
}

/**
 * Puts a closed SQLite store of users 0..n-1 at `storeFile`. With `cache`, built there once and copied.
 * Returns { buildS (null when the cache had it), copyS }.
 */
export async function prepareSqlite(storeFile, n, cache, log) {
  await fsp.mkdir(path.dirname(storeFile), { recursive: true, mode: 0o700 });
  const build = async (file) => {
    const store = await openStoreAt(`sqlite:${file}`);
    const s = await restoreUsers(store, n, { label: `sqlite ${n}` });
    await store.close();
    return s;
  };
  if (!cache) return { buildS: await build(storeFile), copyS: 0 };
  const { SCHEMA_VERSION } = await import('../dist/store/sqlite/schema.js');
  const cached = path.join(cache, `sqlite-${n}-s${SCHEMA_VERSION}-${generatorKey()}.db`);
  let buildS = null;
  if (!(await exists(cached))) {
    const tmp = path.join(cache, `building-sqlite-${process.pid}`);
    await rmDir(tmp);
    try {
      buildS = await build(path.join(tmp, 'memory.db'));
      await fsp.rename(path.join(tmp, 'memory.db'), cached);
    } finally {
      await rmDir(tmp);
    }
    log(`  [${n}] sqlite store built in ${buildS.toFixed(1)} s, cached as ${cached}`);
  }
  const t0 = performance.now();
  await copySynced(cached, storeFile);
  return { buildS, copyS: seconds(t0) };
}

/** One Redis command in the protocol's own encoding (RESP), as `redis-cli --pipe` takes it. */
function resp(args) {
  let out = `*${args.length}\r\n`;
  for (const a of args) out += `$${Buffer.byteLength(a)}\r\n${a}\r\n`;
  return out;
}

/**
 * Loads each user's history into Redis as the peer keeps it, so both sides start from the same data.
 * The commands are written as RESP into `redis-cli --pipe` (Redis's mass-insert path): through
 * ioredis pipelines, 1M users loaded at ~300 users/s on this shared machine.
 */
export async function loadRedis(port, n) {
  const cli = spawn('redis-cli', ['-h', '127.0.0.1', '-p', String(port), '--pipe'], { stdio: ['pipe', 'pipe', 'inherit'] });
  let reply = '';
  cli.stdout.on('data', (d) => (reply = (reply + d.toString()).slice(-2000)));
  const exited = once(cli, 'exit');
  let chunk = '';
  for (let i = 0; i < n; i++) {
    const r = makeRecord(i);
    chunk += resp(['RPUSH', `h:${r.user_id}`, ...r.history.map((h) => JSON.stringify(h))]);
    chunk += resp(['HSET', `u:${r.user_id}`, 'updated_at', r.updated_at, 'last_answer', r.last_answer ?? '']);
    if (chunk.length > 1 << 20) {
      if (!cli.stdin.write(chunk)) await once(cli.stdin, 'drain');
      chunk = '';
    }
  }
  cli.stdin.end(chunk);
  const [code] = await exited;
  // redis-cli --pipe ends with "errors: 0, replies: N".
  if (code !== 0 || !/errors: 0,/.test(reply)) throw new Error(`redis-cli --pipe failed (${code}): ${reply}`);
}

async function redisInfo(redis, key) {
  const info = await redis.info('persistence');
  return new RegExp(`^${key}:(\\S+)`, 'm').exec(info)?.[1];
}

/**
 * Fills `redisDir` (the --dir of the peer's redis-server) with users 0..n-1. Without `cache`, returns
 * null and the caller loads the running server with loadRedis. With it: builds the AOF directory in the
 * cache once (server started by `startRedis(dir, extraArgs)`), copies it into `redisDir`; returns
 * { buildS, copyS }.
 */
export async function prepareRedisDir(redisDir, n, cache, startRedis, log) {
  await fsp.mkdir(redisDir, { recursive: true, mode: 0o700 });
  if (!cache) return null;
  const cached = path.join(cache, `redis-${n}-${generatorKey()}`);
  let buildS = null;
  if (!(await exists(cached))) {
    const tmp = path.join(cache, `building-redis-${process.pid}`);
    await rmDir(tmp);
    await fsp.mkdir(tmp, { recursive: true, mode: 0o700 });
    const t0 = performance.now();
    // fsync off while loading: the load is not what is measured; the rewrite below writes one base file.
    const { port, stop } = await startRedis(tmp, ['--appendfsync', 'no']);
    try {
      await loadRedis(port, n);
      const r = new Redis({ port, host: '127.0.0.1' });
      const idle = async () => {
        for (;;) {
          if ((await redisInfo(r, 'aof_rewrite_in_progress')) === '0' && (await redisInfo(r, 'aof_rewrite_scheduled')) === '0') return;
          await new Promise((res) => setTimeout(res, 500));
        }
      };
      // Redis may have started a rewrite of its own during the load (its auto-rewrite at 100% growth):
      // BGREWRITEAOF then fails with "already in progress". Ours runs after it, so it holds every key.
      for (;;) {
        await idle();
        try {
          await r.bgrewriteaof();
          break;
        } catch (err) {
          if (!/already in progress/.test(String(err?.message))) throw err;
        }
      }
      await new Promise((res) => setTimeout(res, 500));
      await idle();
      await r.quit();
    } finally {
      await stop();
    }
    await fsp.rename(path.join(tmp, 'appendonlydir'), cached);
    await rmDir(tmp);
    buildS = seconds(t0);
    log(`  [${n}] redis AOF built in ${buildS.toFixed(1)} s, cached as ${cached}`);
  }
  const t0 = performance.now();
  await copyDir(cached, path.join(redisDir, 'appendonlydir'));
  return { buildS, copyS: seconds(t0) };
}

/** COPY text format: backslash, tab, newline and carriage return escaped; null as \N. */
function copyField(v) {
  if (v === null) return '\\N';
  const s = String(v);
  return /[\\\t\n\r]/.test(s) ? s.replace(/\\/g, '\\\\').replace(/\t/g, '\\t').replace(/\n/g, '\\n').replace(/\r/g, '\\r') : s;
}

async function writeCopyFile(file, n) {
  const { rowValues } = await import('../dist/store/postgres/sql.js');
  const out = createWriteStream(file, { mode: 0o600 });
  let chunk = '';
  for (let i = 0; i < n; i++) {
    chunk += `${rowValues(makeRecord(i)).map(copyField).join('\t')}\n`;
    if (chunk.length > 1 << 20) {
      if (!out.write(chunk)) await once(out, 'drain');
      chunk = '';
    }
  }
  out.end(chunk);
  await once(out, 'finish');
}

/**
 * The COPY text file of users 0..n-1 in `dir` (written unless there). Exported so that the file can be
 * written ahead of a run: `node -e "import('./bench/http-stores.mjs').then((m) => m.pgCopyFile(1e6, dir))"`.
 */
export async function pgCopyFile(n, dir, log = () => undefined) {
  const { POSTGRES_SCHEMA_VERSION } = await import('../dist/store/postgres/migrations.js');
  const file = path.join(dir, `pg-${n}-v${POSTGRES_SCHEMA_VERSION}-${generatorKey()}.tsv`);
  let fileS = null;
  if (!(await exists(file))) {
    const t0 = performance.now();
    const tmp = `${file}.${process.pid}.tmp`;
    await writeCopyFile(tmp, n);
    await fsp.rename(tmp, file);
    fileS = seconds(t0);
    log(`  [${n}] COPY file written in ${fileS.toFixed(1)} s: ${file}`);
  }
  return { file, fileS };
}

/**
 * Loads users 0..n-1 into the PostgreSQL store at `storeUrl` (an empty schema): the library creates
 * the table and its indexes, the trigram index is dropped, the rows are COPYed in by psql (`pgUrl`:
 * libpq does not read URL-encoded `options`; the table name is qualified) from a file
 * of the driver's own row values (cached when `cache` is set, else written into `tmpDir`), and the
 * index is built again. Returns { fileS (null when cached), copyS, indexS }.
 */
export async function preparePostgres(admin, schema, pgUrl, storeUrl, n, cache, tmpDir, log) {
  const store = await openStoreAt(storeUrl);
  await store.close();
  const { rows: tables } = await admin.query("SELECT table_name FROM information_schema.columns WHERE table_schema = $1 AND column_name = 'search_text'", [schema]);
  if (tables.length !== 1) throw new Error(`expected one users table in ${schema}, found ${tables.length}`);
  const table = `${schema}.${tables[0].table_name}`;
  const { file, fileS } = await pgCopyFile(n, cache ?? tmpDir, log);
  const { rows: indexes } = await admin.query("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 AND indexdef ILIKE '%gin%'", [schema, tables[0].table_name]);
  for (const ix of indexes) await admin.query(`DROP INDEX ${schema}.${ix.indexname}`);
  const t1 = performance.now();
  const psql = spawn('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', pgUrl, '-c', `\\copy ${table} FROM STDIN`], { stdio: ['pipe', 'inherit', 'inherit'] });
  // A psql that fails to connect closes its stdin: its exit code reports it, not an EPIPE.
  psql.stdin.on('error', () => undefined);
  createReadStream(file).pipe(psql.stdin);
  const [code] = await once(psql, 'exit');
  if (code !== 0) throw new Error(`psql \\copy exited ${code}`);
  const copyS = seconds(t1);
  const t2 = performance.now();
  await admin.query("SET maintenance_work_mem = '512MB'");
  for (const ix of indexes) await admin.query(ix.indexdef);
  await admin.query(`ANALYZE ${table}`);
  const indexS = seconds(t2);
  if (!cache) await fsp.rm(file, { force: true });
  log(`  [${n}] postgres: COPY ${copyS.toFixed(1)} s, trigram index ${indexS.toFixed(1)} s`);
  return { fileS, copyS, indexS };
}

/**
 * With a cache: the loaded PostgreSQL store is kept as a database of its own on the server (named by
 * user count, schema version and generator key; built once by preparePostgres into schema
 * `chatmem_bench_http`), and each run gets a fresh copy of it by `CREATE DATABASE … TEMPLATE …
 * STRATEGY FILE_COPY` (a file copy, no COPY or index build per run). `admin` is connected to another
 * database of the server. Returns the run database's name and URL (search_path set), and timings.
 */
export async function clonePostgresDb(admin, pgUrl, n, cache, log) {
  const { POSTGRES_SCHEMA_VERSION } = await import('../dist/store/postgres/migrations.js');
  const schema = 'chatmem_bench_http';
  const cached = `chatmem_bench_http_${n}_v${POSTGRES_SCHEMA_VERSION}_${generatorKey()}`;
  const urlFor = (db, options = true) => {
    const u = new URL(pgUrl);
    u.pathname = `/${db}`;
    if (options) u.searchParams.set('options', `-c search_path=${schema}`);
    return u.toString();
  };
  let built = null;
  if ((await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [cached])).rowCount === 0) {
    const building = `${cached}_b${process.pid}`;
    await admin.query(`CREATE DATABASE ${building}`);
    try {
      const c = new pg.Client({ connectionString: urlFor(building) });
      await c.connect();
      try {
        await c.query(`CREATE SCHEMA ${schema}`);
        built = await preparePostgres(c, schema, urlFor(building, false), urlFor(building), n, cache, cache, log);
      } finally {
        await c.end();
      }
      await admin.query(`ALTER DATABASE ${building} RENAME TO ${cached}`);
      log(`  [${n}] postgres store cached as database ${cached}`);
    } catch (err) {
      await admin.query(`DROP DATABASE IF EXISTS ${building} WITH (FORCE)`);
      throw err;
    }
  }
  const db = `chatmem_bench_http_run_${process.pid}_${n}`;
  const t0 = performance.now();
  await admin.query(`CREATE DATABASE ${db} TEMPLATE ${cached} STRATEGY FILE_COPY`);
  return { db, url: urlFor(db), schema, built, cloneS: seconds(t0) };
}
