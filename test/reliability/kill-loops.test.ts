/**
 * SIGKILL loops of the CLI and the daemon during every guarded operation and during appends.
 * After each kill: restart (the daemon's start, or the start-up recovery the CLI runs), then check
 * that the store is the before or the after state of the interrupted operation, that every
 * acknowledged append survives (in the store, or in a verified backup a destructive operation wrote),
 * that every backup verifies and that no temp file is left.
 *
 * CI runs ~21 kills. `npm run soak` (CHATMEM_SOAK=1) runs 200+ and a 60 s load with periodic
 * backups, prunes and one clear, and prints the totals.
 */
import { appendFileSync, copyFileSync, cpSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeBackup } from '../../src/backup/create.js';
import { resolveConfig, type ResolvedConfig } from '../../src/config.js';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { parseRecord, type MemoryRecord } from '../../src/record.js';
import { startDaemon, stopDaemon } from '../../src/server/process.js';
import { openStore } from '../../src/store/open.js';
import { isProcessAlive } from '../../src/store/owner.js';
import { ensureBuilt, BIN } from '../cli/helpers.js';
import { fixtureRecords, runChild, same, snapshot, type State } from '../helpers/crash.js';
import { tempDir } from '../helpers/tmp.js';
import { tempFilesUnder } from './helpers.js';

const SOAK = process.env.CHATMEM_SOAK === '1';
const USERS = 600;
const HOT = 30;
/** Appends per hot user stay under the history cap (50), so none is dropped by the cap. */
const PER_USER = 45;
const TARGET = 'user_0300';
const ADMIN = 'kill-loop-admin-token-0123456789abcdef';

type Kind = 'sqlite' | 'json';
type Op = 'delete' | 'clear' | 'restore' | 'merge' | 'backup' | 'prune' | 'import' | 'append';
const CLI_OPS: Op[] = ['delete', 'clear', 'restore', 'merge', 'backup', 'prune', 'import'];
const DAEMON_OPS: Op[] = [...CLI_OPS, 'append'];

const hotId = (i: number) => `hot_${String(i).padStart(3, '0')}`;
const isHot = (id: string) => id.startsWith('hot_');
const cold = (s: State): State => new Map([...s].filter(([k]) => !isHot(k)));
const overlay = (base: State, top: State): State => {
  const m = new Map(base);
  for (const [k, v] of top) m.set(k, v);
  return m;
};

interface Fixture {
  kind: Kind;
  dir: string;
  pristineStore: string;
  pristineBackups: string;
  importFile: string;
  sourceId: string;
  /** Ids of the backups present before each run (the source and the old ones prune removes). */
  preexisting: Set<string>;
  before: State;
  after: Record<Exclude<Op, 'backup' | 'prune' | 'append'>, State>;
}

function stateOfFile(file: string): State {
  const obj = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  return new Map(Object.entries(obj).map(([k, v]) => [k, JSON.stringify(v)]));
}

async function makeFixture(kind: Kind, root: string): Promise<Fixture> {
  const dir = path.join(root, kind);
  mkdirSync(dir, { recursive: true });
  const pristineStore = path.join(dir, `pristine.${kind === 'sqlite' ? 'db' : 'json'}`);
  const pristineBackups = path.join(dir, 'pristine-backups');
  const store = await openStore(`${kind}:${pristineStore}`);
  const records = [...fixtureRecords(USERS), ...fixtureRecords(HOT, hotId)].map((r) => parseRecord(r.user_id, { ...r, history: r.history.slice(0, 2) }));
  await store.exclusive('all', (ctx) => ctx.putMany(records));
  const ops = new Operations({ store, backupDir: pristineBackups, audit: new AuditLog(path.join(dir, 'setup-audit.log')), actor: { kind: 'os', name: 'setup' } });
  // Old backups for prune to remove (dated last year), then the restore source.
  for (let i = 0; i < 3; i++) {
    await writeBackup(pristineBackups, [records[i] as MemoryRecord], { reason: 'manual', scope: 'full', source: 'test', now: () => new Date(Date.UTC(2025, 0, 1 + i)) });
  }
  const src = await ops.createBackup();
  // After the source: some users change and some are added, so replace, merge and "before" all differ.
  const changed = records.filter((_, i) => i % 7 === 0).map((r) => ({ ...r, last_answer: 'changed after the backup' }));
  const extra = fixtureRecords(100, (i) => `extra_${String(i).padStart(3, '0')}`);
  await store.exclusive('all', (ctx) => ctx.putMany([...changed, ...extra]));
  const before = await snapshot(store);
  await store.close();

  // The import: 250 users it overwrites and 1,250 new ones, past the old batch size of 1,000.
  const imported: Record<string, MemoryRecord> = {};
  for (const r of fixtureRecords(250, (i) => `user_${String(i * 2).padStart(4, '0')}`)) imported[r.user_id] = parseRecord(r.user_id, { ...r, summary_context: ['imported'] });
  for (const r of fixtureRecords(1250, (i) => `imp_${String(i).padStart(5, '0')}`)) imported[r.user_id] = parseRecord(r.user_id, r);
  const importFile = path.join(dir, 'import.json');
  writeFileSync(importFile, JSON.stringify(imported));

  const srcState = stateOfFile(src.file);
  const after = {
    delete: new Map([...before].filter(([k]) => k !== TARGET)),
    clear: new Map<string, string>(),
    restore: srcState,
    merge: overlay(before, srcState),
    import: overlay(before, stateOfFile(importFile)),
  };
  const preexisting = new Set(readdirSync(pristineBackups).filter((n) => !n.endsWith('.meta.json')).map((n) => n.replace(/\.json$/, '')));
  return { kind, dir, pristineStore, pristineBackups, importFile, sourceId: src.id, preexisting, before, after };
}

/** One run's files: a fresh copy of the store and the backups, its own audit log. */
interface RunDir {
  cwd: string;
  storeUrl: string;
  storeFile: string;
  backupDir: string;
  audit: string;
  env: NodeJS.ProcessEnv;
  config: ResolvedConfig;
}

async function resetRun(f: Fixture): Promise<RunDir> {
  const cwd = path.join(f.dir, 'run');
  rmSync(cwd, { recursive: true, force: true });
  const storeDir = path.join(cwd, 'data');
  mkdirSync(storeDir, { recursive: true, mode: 0o700 });
  const storeFile = path.join(storeDir, path.basename(f.pristineStore).replace('pristine', 'memory'));
  copyFileSync(f.pristineStore, storeFile);
  const backupDir = path.join(storeDir, 'backups');
  cpSync(f.pristineBackups, backupDir, { recursive: true });
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CHATMEM_') && k !== 'NO_COLOR') env[k] = v;
  const storeUrl = `${f.kind}:${storeFile}`;
  Object.assign(env, { CHATMEM_STORE: storeUrl, CHATMEM_BACKUP_DIR: backupDir, CHATMEM_AUDIT_LOG: path.join(storeDir, 'audit.log'), CHATMEM_ADMIN_TOKEN: ADMIN, CHATMEM_DATA_DIR: storeDir });
  const config = await resolveConfig({ cwd, env });
  return { cwd, storeUrl, storeFile, backupDir, audit: path.join(storeDir, 'audit.log'), env, config };
}

function cliArgs(f: Fixture, op: Op): string[] {
  switch (op) {
    case 'delete': return ['delete', TARGET, '--yes'];
    case 'clear': return ['clear', '--yes'];
    case 'restore': return ['restore', f.sourceId, '--yes'];
    case 'merge': return ['restore', f.sourceId, '--merge', '--yes'];
    case 'backup': return ['backup'];
    case 'prune': return ['prune', '--keep-last', '1', '--yes'];
    case 'import': return ['import', f.importFile, '--yes'];
    case 'append': throw new Error('the CLI does not append');
  }
}

function httpCall(f: Fixture, op: Op): { method: string; path: string; body?: unknown } | null {
  switch (op) {
    case 'delete': return { method: 'POST', path: '/v1/admin/delete', body: { users: [TARGET] } };
    case 'clear': return { method: 'POST', path: '/v1/admin/clear', body: { confirm: 'YES' } };
    case 'restore': return { method: 'POST', path: '/v1/admin/restore', body: { backup: f.sourceId } };
    case 'merge': return { method: 'POST', path: '/v1/admin/restore', body: { backup: f.sourceId, mode: 'merge' } };
    case 'backup': return { method: 'POST', path: '/v1/admin/backups', body: {} };
    case 'prune': return { method: 'POST', path: '/v1/admin/prune', body: { policy: { last: 1 } } };
    case 'import': return { method: 'POST', path: '/v1/admin/import', body: { file: f.importFile } };
    case 'append': return null;
  }
}

async function call(api: string, c: { method: string; path: string; body?: unknown }): Promise<{ status: number; body: unknown }> {
  const res = await fetch(api + c.path, {
    method: c.method,
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: c.body === undefined ? undefined : JSON.stringify(c.body),
    signal: AbortSignal.timeout(60_000),
  });
  return { status: res.status, body: (await res.json()) as unknown };
}

/** Appends to the hot users until stopped or the daemon dies; returns what was acknowledged. */
function appender(api: string, tag: string, workers = 3): { stop: () => Promise<[string, string][]> } {
  const acked: [string, string][] = [];
  let stopped = false;
  let n = 0;
  const loop = async () => {
    while (!stopped && n < HOT * PER_USER) {
      const i = n++;
      const user = hotId(i % HOT);
      const text = `${tag}-${i}`;
      try {
        const res = await fetch(`${api}/v1/users/${user}/history`, {
          method: 'POST',
          headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
          body: JSON.stringify({ role: 'user', text }),
          signal: AbortSignal.timeout(30_000),
        });
        await res.arrayBuffer();
        if (res.status === 201) acked.push([user, text]);
      } catch {
        return; // the daemon is gone
      }
    }
  };
  const loops = Array.from({ length: workers }, () => loop());
  return {
    stop: async () => {
      stopped = true;
      await Promise.all(loops);
      return acked;
    },
  };
}

interface Totals {
  runs: number;
  killed: number;
  before: number;
  after: number;
  acked: number;
  lost: number;
}
const totals: Totals = { runs: 0, killed: 0, before: 0, after: 0, acked: 0, lost: 0 };

/** Restart happened; now check every promise on the files as left. */
async function check(f: Fixture, r: RunDir, op: Op, acked: [string, string][], label: string, restartedByDaemon: boolean): Promise<'before' | 'after'> {
  const store = await openStore(r.storeUrl);
  try {
    const ops = new Operations({ store, backupDir: r.backupDir, audit: new AuditLog(r.audit), actor: { kind: 'os', name: 'checker' } });
    // After a daemon restart this finds nothing left to do; after a CLI kill it is the start-up
    // recovery the next CLI write runs.
    const recovered = await ops.recover();
    if (restartedByDaemon) expect(recovered.interrupted, `${label}: an operation left open after restart`).toEqual([]);
    expect(await new AuditLog(r.audit).unfinished(), `${label}: audit entries left open`).toEqual([]);
    expect(tempFilesUnder(path.dirname(r.storeFile)), `${label}: temp files left`).toEqual([]);
    const verified = await ops.verifyBackups();
    for (const v of verified) expect(v.ok, `${label}: backup ${v.id} does not verify: ${v.error?.message ?? ''}`).toBe(true);
    const fresh = new Map<string, State>();
    for (const v of verified) if (!f.preexisting.has(v.id)) fresh.set(v.id, stateOfFile(path.join(r.backupDir, `${v.id}.json`)));

    const now = await snapshot(store);
    const expectedAfter = op === 'backup' || op === 'prune' || op === 'append' ? f.before : f.after[op];
    let outcome: 'before' | 'after';
    if (same(cold(now), cold(f.before))) outcome = 'before';
    else {
      expect(same(cold(now), cold(expectedAfter)), `${label}: the store is neither the before nor the after state (${cold(now).size} cold users)`).toBe(true);
      outcome = 'after';
      // What a destructive operation changed is in a verified backup it wrote first.
      const changedIds = [...cold(f.before).keys()].filter((k) => cold(now).get(k) !== f.before.get(k));
      for (const id of changedIds) {
        const held = [...fresh.values()].some((b) => b.get(id) === f.before.get(id));
        expect(held, `${label}: ${id} changed without a verified backup of its before state`).toBe(true);
      }
    }
    if (op === 'prune') {
      // Prune never removes the newest backup, and a killed prune removes whole backups only.
      expect(verified.some((v) => v.id === f.sourceId), `${label}: prune removed the newest backup`).toBe(true);
    }
    // Every acknowledged append: in the store, or in a verified backup written during the run.
    let lost = 0;
    for (const [user, text] of acked) {
      const has = (json: string | undefined) => json !== undefined && (JSON.parse(json) as MemoryRecord).history.some((h) => h.text === text);
      if (has(now.get(user))) continue;
      if ([...fresh.values()].some((b) => has(b.get(user)))) continue;
      lost++;
    }
    totals.acked += acked.length;
    totals.lost += lost;
    expect(lost, `${label}: ${lost} of ${acked.length} acknowledged appends lost`).toBe(0);
    return outcome;
  } finally {
    await store.close();
  }
}

function count(outcome: 'before' | 'after', killed: boolean): void {
  totals.runs++;
  if (killed) totals.killed++;
  totals[outcome]++;
  // The soak runs long: its progress goes to a file as it happens (vitest prints at the end).
  if (process.env.CHATMEM_SOAK_LOG) appendFileSync(process.env.CHATMEM_SOAK_LOG, `${new Date().toISOString()} ${JSON.stringify(totals)}\n`);
}

/**
 * Stratified random kill points over `stretch` times the measured duration: every phase is hit, some
 * runs finish. The daemon's operations run slower under the appends than when measured alone.
 */
function killPoint(run: number, runs: number, spanMs: number, stretch = 1.3): number {
  return ((run + Math.random()) / runs) * spanMs * stretch;
}

const root = await tempDir('chatmem-kill-');
const fixtures = new Map<Kind, Fixture>();
async function fixture(kind: Kind): Promise<Fixture> {
  let f = fixtures.get(kind);
  if (!f) {
    f = await makeFixture(kind, root.dir);
    fixtures.set(kind, f);
  }
  return f;
}

/** Every daemon started, so none outlives a failed test. */
const daemonPids = new Set<number>();
const REPEAT = SOAK ? 10 : 1;

/**
 * How long a whole CLI run of `op` takes, kill points being spread over it. The soak measures each
 * operation; CI measures one import per store kind and uses it for all.
 */
const cliSpans = new Map<string, number>();
async function cliSpan(f: Fixture, op: Op): Promise<number> {
  const key = SOAK ? `${f.kind}:${op}` : f.kind;
  let ms = cliSpans.get(key);
  if (ms === undefined) {
    const r = await resetRun(f);
    const full = await runChild([BIN, ...cliArgs(f, SOAK ? op : 'import')], { killAfterMs: null, env: r.env, cwd: r.cwd });
    expect(full.code, full.stderr).toBe(0);
    ms = full.ms;
    cliSpans.set(key, ms);
  }
  return ms;
}

/** Each operation's duration in one daemon without appends (the order leaves each something to do). */
const spansOf = new Map<Kind, Map<Op, number>>();
async function daemonSpans(f: Fixture): Promise<Map<Op, number>> {
  let spans = spansOf.get(f.kind);
  if (spans) return spans;
  spans = new Map();
  const r = await resetRun(f);
  const d = await startDaemon(r.config, { bin: BIN, port: 0, env: r.env, log: () => undefined });
  daemonPids.add(d.pid);
  try {
    // Prune after the restores: it removes the restore source once a newer backup exists.
    for (const op of ['merge', 'import', 'restore', 'backup', 'prune', 'delete', 'clear'] as const) {
      const c = httpCall(f, op);
      if (!c) continue;
      const t0 = performance.now();
      const res = await call(d.api, c);
      expect(res.status, JSON.stringify(res.body)).toBeLessThan(300);
      spans.set(op, Math.max(50, performance.now() - t0));
    }
  } finally {
    await stopDaemon(r.config);
    daemonPids.delete(d.pid);
  }
  spansOf.set(f.kind, spans);
  return spans;
}

beforeAll(async () => {
  await ensureBuilt();
}, 120_000);
afterAll(async () => {
  for (const pid of daemonPids) if (isProcessAlive(pid)) process.kill(pid, 'SIGKILL');
  console.log(`kill loops: ${totals.runs} runs (${totals.killed} killed; ${totals.before} before, ${totals.after} after), ${totals.acked} acknowledged appends, lost ${totals.lost}`);
  await root.cleanup();
});

describe('SIGKILL loops of the CLI', () => {
  for (const kind of ['sqlite', 'json'] as const) {
    for (const op of CLI_OPS) {
      it(`${kind}: chatmem ${op}`, async () => {
        const f = await fixture(kind);
        const span = await cliSpan(f, op);
        const runs = REPEAT;
        for (let run = 0; run < runs; run++) {
          const r = await resetRun(f);
          const res = await runChild([BIN, ...cliArgs(f, op)], { killAfterMs: killPoint(run, runs, span), env: r.env, cwd: r.cwd });
          if (!res.killed) expect(res.code, res.stderr).toBe(0);
          count(await check(f, r, op, [], `cli ${kind} ${op} run ${run}`, false), res.killed);
        }
      }, 120_000 * REPEAT);
    }
  }
});

describe('SIGKILL loops of the daemon, with appends running', () => {
  const kinds: Kind[] = ['sqlite'];
  for (const kind of kinds) {
    for (const op of DAEMON_OPS) {
      it(`${kind}: daemon killed during ${op}`, async () => {
        const f = await fixture(kind);
        const runs = REPEAT;
        const c = httpCall(f, op);
        const span = (await daemonSpans(f)).get(op) ?? 400;
        for (let run = 0; run < runs; run++) {
          const r = await resetRun(f);
          const d = await startDaemon(r.config, { bin: BIN, port: 0, env: r.env, log: () => undefined });
          daemonPids.add(d.pid);
          const load = appender(d.api, `${op}${run}`);
          // Some appends first, so there is acknowledged data for the operation to back up.
          await new Promise((res) => setTimeout(res, 150));
          const answer = c ? call(d.api, c).catch(() => null) : Promise.resolve(null);
          await new Promise((res) => setTimeout(res, killPoint(run, runs, span, 2.5)));
          const alive = isProcessAlive(d.pid);
          process.kill(d.pid, 'SIGKILL');
          daemonPids.delete(d.pid);
          const acked = await load.stop();
          await answer;
          // Restart: the daemon's start-up recovery runs, then it stops cleanly for the check.
          const d2 = await startDaemon(r.config, { bin: BIN, port: 0, env: r.env, log: () => undefined });
          daemonPids.add(d2.pid);
          await stopDaemon(r.config);
          daemonPids.delete(d2.pid);
          count(await check(f, r, op, acked, `daemon ${kind} ${op} run ${run}`, true), alive);
        }
      }, 120_000 * REPEAT);
    }
  }
});

describe.skipIf(!SOAK)('soak: 60 s of appends with periodic backups, prunes and one clear', () => {
  it('loses no acknowledged append', async () => {
    const f = await fixture('sqlite');
    const r = await resetRun(f);
    const d = await startDaemon(r.config, { bin: BIN, port: 0, env: r.env, log: () => undefined });
    daemonPids.add(d.pid);
    const acked: [string, string][] = [];
    let stopped = false;
    let n = 0;
    // Many users, so no user passes the history cap in 60 s.
    const loop = async () => {
      while (!stopped) {
        const i = n++;
        const user = `load_${String(i % 5000).padStart(4, '0')}`;
        const text = `load-${i}`;
        const res = await fetch(`${d.api}/v1/users/${user}/history`, {
          method: 'POST',
          headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
          body: JSON.stringify({ role: 'user', text }),
        });
        await res.arrayBuffer();
        if (res.status === 201) acked.push([user, text]);
      }
    };
    const loops = Array.from({ length: 4 }, () => loop());
    const admin: string[] = [];
    for (let s = 5; s <= 60; s += 5) {
      await new Promise((res) => setTimeout(res, 5000));
      admin.push(`backup ${(await call(d.api, { method: 'POST', path: '/v1/admin/backups', body: {} })).status === 201 ? 200 : 'failed'}`);
      if (s % 15 === 0) admin.push(`prune ${(await call(d.api, { method: 'POST', path: '/v1/admin/prune', body: { policy: { last: 8 } } })).status}`);
      if (s === 30) admin.push(`clear ${(await call(d.api, { method: 'POST', path: '/v1/admin/clear', body: { confirm: 'YES' } })).status}`);
    }
    stopped = true;
    await Promise.all(loops);
    await stopDaemon(r.config);
    daemonPids.delete(d.pid);
    expect(admin.every((a) => a.endsWith(' 200')), admin.join(', ')).toBe(true);
    const store = await openStore(r.storeUrl);
    try {
      const ops = new Operations({ store, backupDir: r.backupDir, audit: new AuditLog(r.audit), actor: { kind: 'os', name: 'checker' } });
      const backups = new Map<string, State>();
      for (const v of await ops.verifyBackups()) {
        expect(v.ok).toBe(true);
        backups.set(v.id, stateOfFile(path.join(r.backupDir, `${v.id}.json`)));
      }
      const now = await snapshot(store);
      let lost = 0;
      for (const [user, text] of acked) {
        const has = (json: string | undefined) => json !== undefined && (JSON.parse(json) as MemoryRecord).history.some((h) => h.text === text);
        if (!has(now.get(user)) && ![...backups.values()].some((b) => has(b.get(user)))) lost++;
      }
      totals.acked += acked.length;
      totals.lost += lost;
      console.log(`soak load: ${acked.length} acknowledged appends in 60 s, ${admin.length} admin operations, lost ${lost}`);
      expect(lost).toBe(0);
    } finally {
      await store.close();
    }
  }, 240_000);
});
