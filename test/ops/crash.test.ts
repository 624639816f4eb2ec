import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/types.js';
import type { MemoryRecord } from '../../src/record.js';
import { ROOT, tempDir } from '../helpers/tmp.js';
import { fixtureRecords, runChild, same, snapshot, type State } from '../helpers/crash.js';

const USERS = 1500;
const TARGET = 'user_0750';

async function runCrashOp(args: string[], killAfterMs: number | null): Promise<{ killed: boolean; ms: number | null }> {
  const r = await runChild([path.join(ROOT, 'test/fixtures/crash-op.mjs'), ...args], { killAfterMs, readyMarker: 'ready\n' });
  if (r.killed) return { killed: true, ms: null };
  if (r.code !== 0) throw new Error(`child failed (${r.code}): ${r.stderr}`);
  const m = /done (\d+)/.exec(r.stdout);
  return { killed: false, ms: m ? Number(m[1]) : null };
}

interface Setup {
  dir: string;
  url: string;
  file: string;
  backupDir: string;
  audit: string;
  before: State;
  restoreFrom: string;
}

/** Each run starts from a pristine copy of the store and an empty backup dir (bar the restore source). */
async function makeSetup(kind: 'sqlite' | 'json'): Promise<Setup & { cleanup: () => Promise<void>; reset: () => void }> {
  const t = await tempDir('chatmem-crash-');
  const ext = kind === 'sqlite' ? 'db' : 'json';
  const pristine = path.join(t.dir, `pristine.${ext}`);
  const file = path.join(t.dir, `memory.${ext}`);
  const backupDir = path.join(t.dir, 'backups');
  const sourceDir = path.join(t.dir, 'source-backups');
  const audit = path.join(t.dir, 'audit.log');
  const store = await openStore(`${kind}:${pristine}`);
  // One bulk write: the JSON driver rewrites its whole file per write.
  const records = fixtureRecords(USERS);
  await store.exclusive('all', (ctx) => ctx.putMany(records));
  // The restore source: the store as it was, then the store changes, so a restore has work to do.
  const ops = new Operations({ store, backupDir: sourceDir, audit: new AuditLog(path.join(t.dir, 'setup-audit.log')), actor: { kind: 'os', name: 'setup' } });
  const src = await ops.createBackup();
  const changed = records.filter((_, i) => i % 7 === 0).map((r) => ({ ...r, last_answer: 'changed after the backup' }));
  await store.exclusive('all', (ctx) => ctx.putMany(changed));
  const before = await snapshot(store);
  await store.close();
  const reset = () => {
    rmSync(file, { force: true });
    rmSync(`${file}-wal`, { force: true });
    rmSync(`${file}-shm`, { force: true });
    rmSync(backupDir, { recursive: true, force: true });
    rmSync(audit, { force: true });
    copyFileSync(pristine, file);
    // The restore source lives in the backup dir the operation uses.
    mkdirSync(backupDir, { recursive: true, mode: 0o700 });
    copyFileSync(src.file, path.join(backupDir, path.basename(src.file)));
    copyFileSync(src.file.replace(/\.json$/, '.meta.json'), path.join(backupDir, path.basename(src.file).replace(/\.json$/, '.meta.json')));
  };
  return { dir: t.dir, url: `${kind}:${file}`, file, backupDir, audit, before, restoreFrom: src.id, cleanup: t.cleanup, reset };
}

async function backups(s: Setup, store: Store): Promise<{ ops: Operations; verified: Map<string, Record<string, MemoryRecord>>; interrupted: number }> {
  const ops = new Operations({ store, backupDir: s.backupDir, audit: new AuditLog(s.audit), actor: { kind: 'os', name: 'checker' } });
  const { interrupted } = await ops.recover();
  const verified = new Map<string, Record<string, MemoryRecord>>();
  for (const v of await ops.verifyBackups()) {
    if (v.ok && !v.legacy && v.id !== s.restoreFrom) {
      verified.set(v.id, JSON.parse(readFileSync(path.join(s.backupDir, `${v.id}.json`), 'utf8')) as Record<string, MemoryRecord>);
    }
  }
  return { ops, verified, interrupted: interrupted.length };
}

for (const [kind, runs] of [['sqlite', 42], ['json', 18]] as const) {
  describe(`crash safety on ${kind}: SIGKILL at random points of delete, clear and restore`, () => {
    let s: Awaited<ReturnType<typeof makeSetup>>;
    let target: State;
    beforeAll(async () => {
      s = await makeSetup(kind);
      s.reset();
      const store = await openStore(s.url);
      await new Operations({ store, backupDir: s.backupDir, audit: new AuditLog(s.audit), actor: { kind: 'os', name: 'x' } }).restore(s.restoreFrom);
      target = await snapshot(store);
      await store.close();
    });
    afterAll(async () => s.cleanup());

    for (const op of ['delete', 'clear', 'restore'] as const) {
      it(`${op}: always the before or the after state, and the before state is in a verified backup`, async () => {
        const arg = op === 'delete' ? TARGET : op === 'restore' ? s.restoreFrom : '';
        s.reset();
        const full = await runCrashOp([s.url, s.backupDir, s.audit, op, arg], null);
        // Stratified random kill times over 1.6x the measured duration: every phase is hit, and some runs finish.
        const span = Math.max(20, (full.ms ?? 50) * 1.6);
        const n = Math.ceil(runs / 3);
        const outcomes = { before: 0, after: 0, midOperation: 0 };
        // Coverage must be shown, not assumed: if the stratified runs missed a phase (a loaded machine
        // shifts the timing), up to n more runs aim at it, bounded in time.
        const started = Date.now();
        for (let run = 0; run < 2 * n; run++) {
          const covered = outcomes.before > 0 && outcomes.after > 0 && outcomes.midOperation > 0;
          if (run >= n && (covered || Date.now() - started > 90_000)) break;
          const killAt =
            run < n ? ((run + Math.random()) / n) * span : outcomes.after === 0 ? span * (1 + Math.random()) : Math.random() * (full.ms ?? span);
          s.reset();
          await runCrashOp([s.url, s.backupDir, s.audit, op, arg], killAt);
          const store = await openStore(s.url);
          try {
            const now = await snapshot(store);
            const after =
              op === 'delete' ? new Map([...s.before].filter(([k]) => k !== TARGET)) : op === 'clear' ? new Map<string, string>() : target;
            const { verified, interrupted } = await backups(s, store);
            // An intent without an outcome: this kill landed inside the operation.
            if (interrupted > 0) outcomes.midOperation++;
            if (same(now, s.before)) {
              outcomes.before++;
            } else {
              expect(same(now, after), `run ${run}: neither before nor after`).toBe(true);
              outcomes.after++;
              // The after state must come with a verified backup holding the before state of what changed.
              const holds = [...verified.values()].some((b) =>
                op === 'delete' ? JSON.stringify(b[TARGET]) === s.before.get(TARGET) : same(new Map(Object.entries(b).map(([k, v]) => [k, JSON.stringify(v)])), s.before),
              );
              expect(holds, `run ${run}: after state without a verified backup of the before state`).toBe(true);
            }
          } finally {
            await store.close();
          }
        }
        // Up to 2n child processes, the extra ones bounded to 90 s; a loaded 2-core machine needs the room.
        // The loop saw both states and at least one kill inside the operation; without that it proved nothing.
        expect(outcomes.before, JSON.stringify(outcomes)).toBeGreaterThan(0);
        expect(outcomes.after, JSON.stringify(outcomes)).toBeGreaterThan(0);
        expect(outcomes.midOperation, JSON.stringify(outcomes)).toBeGreaterThan(0);
      }, 300_000);
    }
  });
}
