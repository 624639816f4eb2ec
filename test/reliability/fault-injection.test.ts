// Injected file-system failures (EIO, ENOSPC, short writes) at every step of the durable write path
// of delete, clear and restore, on SQLite and JSON stores. The promise at each step: the operation is
// refused with a ChatmemError, the store is untouched, no half-written backup is left, and the earlier
// backups still verify. A failure after the change committed (the audit outcome) must not lose the
// backup of what changed. Each case checks that its fault fired.
// Clear and full restore take their backup in two phases (src/backup/two-phase.ts): verified parts are
// written and sealed before the change, the final backup after it. A failure in the parts refuses the
// operation as above; a failure in the final backup comes after the change committed, so the promise is
// that the operation still publishes a verified backup holding the before state (it retries), and
// leaves no parts behind.
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isTempName } from '../../src/fs-util.js';
import { defaultFsIo, resetFsIo, setFsIo } from '../../src/fsio.js';
import { writeBackup } from '../../src/backup/create.js';
import { parseBackupName } from '../../src/backup/format.js';
import { backupHoldsAny } from '../../src/backup/rewrite.js';
import { openBackup } from '../../src/backup/source.js';
import { serializeSeed } from '../../src/format/seed.js';
import { isChatmemError } from '../../src/errors.js';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/types.js';
import type { MemoryRecord } from '../../src/record.js';
import { tempDir } from '../helpers/tmp.js';
import { loadFixture } from '../store/conformance.js';
import { injectFault, listFiles, type FaultKind, type FaultRule } from './fs-faults.js';

const ACTOR = { kind: 'os' as const, name: 'fault-test' };

type Op = 'delete' | 'clear' | 'restore';

interface Step {
  name: string;
  rule: (backupDir: string, audit: string) => Omit<FaultRule, 'kind'>;
  kinds: FaultKind[];
  /** The failure comes after the store changed (the audit outcome). */
  afterChange?: boolean;
  /** In clear and full restore, this step belongs to the final backup, written after the change (two-phase). */
  finalBackup?: boolean;
  /** Only these operations take this step. */
  ops?: Op[];
}

const inDir = (dir: string) => (f: string) => path.dirname(f) === dir;
const backupTemp = (dir: string) => (f: string) => inDir(dir)(f) && isTempName(path.basename(f)) && !path.basename(f).includes('.meta.json');
const manifestTemp = (dir: string) => (f: string) => inDir(dir)(f) && isTempName(path.basename(f)) && path.basename(f).includes('.meta.json');
const partFile = (dir: string) => (f: string) => inDir(dir)(f) && path.basename(f).startsWith('.parts-') && !isTempName(path.basename(f));
const sealTemp = (dir: string) => (f: string) => inDir(dir)(f) && isTempName(path.basename(f)) && path.basename(f).includes('.sealed.');
const TWO_PHASE: Op[] = ['clear', 'restore'];

const STEPS: Step[] = [
  { name: 'backup temp file create', rule: (b) => ({ call: 'stream-open', match: backupTemp(b) }), kinds: ['EIO', 'ENOSPC'], finalBackup: true },
  { name: 'backup write', rule: (b) => ({ call: 'stream-write', match: backupTemp(b) }), kinds: ['EIO', 'short'], finalBackup: true },
  { name: 'backup fsync', rule: (b) => ({ call: 'sync', match: backupTemp(b) }), kinds: ['EIO'] },
  { name: 'pending manifest write', rule: (b) => ({ call: 'writeFile', match: manifestTemp(b) }), kinds: ['EIO', 'short'], finalBackup: true },
  { name: 'pending manifest fsync', rule: (b) => ({ call: 'sync', match: manifestTemp(b), nth: 1 }), kinds: ['EIO'], finalBackup: true },
  { name: 'pending manifest link (name claim)', rule: (b) => ({ call: 'link', match: manifestTemp(b) }), kinds: ['EIO', 'ENOSPC'], finalBackup: true },
  { name: 'backup link to its final name', rule: (b) => ({ call: 'link', match: backupTemp(b) }), kinds: ['EIO', 'ENOSPC'], finalBackup: true },
  { name: 'backup directory fsync', rule: (b) => ({ call: 'fsyncDir', match: (d) => d === b, nth: 1 }), kinds: ['EIO'] },
  { name: 'verified manifest temp create', rule: (b) => ({ call: 'open', match: (f, flags) => manifestTemp(b)(f) && flags === 'wx' }), kinds: ['EIO', 'ENOSPC'], finalBackup: true },
  { name: 'verified manifest write', rule: (b) => ({ call: 'writeAll', match: manifestTemp(b) }), kinds: ['EIO', 'short'], finalBackup: true },
  { name: 'verified manifest fsync', rule: (b) => ({ call: 'sync', match: manifestTemp(b), nth: 2 }), kinds: ['EIO'], finalBackup: true },
  { name: 'verified manifest rename', rule: (b) => ({ call: 'rename', match: manifestTemp(b) }), kinds: ['EIO'], finalBackup: true },
  { name: 'verified manifest directory fsync', rule: (b) => ({ call: 'fsyncDir', match: (d) => d === b, nth: 2 }), kinds: ['EIO'] },
  // The parts of a two-phase backup, all before the change.
  { name: 'backup part create', rule: (b) => ({ call: 'stream-open', match: partFile(b) }), kinds: ['EIO', 'ENOSPC'], ops: TWO_PHASE },
  { name: 'backup part write', rule: (b) => ({ call: 'stream-write', match: partFile(b) }), kinds: ['EIO', 'short'], ops: TWO_PHASE },
  { name: 'backup part fsync', rule: (b) => ({ call: 'sync', match: partFile(b) }), kinds: ['EIO'], ops: TWO_PHASE },
  { name: 'seal write', rule: (b) => ({ call: 'writeAll', match: sealTemp(b) }), kinds: ['EIO', 'short'], ops: TWO_PHASE },
  { name: 'seal fsync', rule: (b) => ({ call: 'sync', match: sealTemp(b) }), kinds: ['EIO'], ops: TWO_PHASE },
  { name: 'seal rename', rule: (b) => ({ call: 'rename', match: sealTemp(b) }), kinds: ['EIO'], ops: TWO_PHASE },
  // Parts manifest, parts manifest with the snapshot, seal: the third fsync of the directory.
  { name: 'seal directory fsync', rule: (b) => ({ call: 'fsyncDir', match: (d) => d === b, nth: 3 }), kinds: ['EIO'], ops: TWO_PHASE },
  { name: 'audit intent write', rule: (_b, a) => ({ call: 'writeSome', match: (f) => f === a, nth: 1 }), kinds: ['EIO', 'short'] },
  { name: 'audit intent fsync', rule: (_b, a) => ({ call: 'sync', match: (f) => f === a, nth: 1 }), kinds: ['EIO'] },
  { name: 'audit outcome write', rule: (_b, a) => ({ call: 'writeSome', match: (f) => f === a, nth: 2 }), kinds: ['EIO', 'short'], afterChange: true },
  { name: 'audit outcome fsync', rule: (_b, a) => ({ call: 'sync', match: (f) => f === a, nth: 2 }), kinds: ['EIO'], afterChange: true },
];

async function snapshot(store: Store): Promise<Map<string, string>> {
  const m = new Map<string, string>();
  for await (const r of store.scan()) m.set(r.user_id, JSON.stringify(r));
  return m;
}

interface Fixture {
  store: Store;
  ops: Operations;
  backupDir: string;
  audit: string;
  earlier: string;
  target: string;
  cleanup: () => Promise<void>;
}

async function setup(kind: 'sqlite' | 'json'): Promise<Fixture> {
  const t = await tempDir('chatmem-faults-');
  const dir = path.join(t.dir, 'storage');
  const store = await openStore(`${kind}:${path.join(dir, kind === 'sqlite' ? 'memory.db' : 'memory.json')}`);
  const fixture = loadFixture();
  const ids = Object.keys(fixture).slice(0, 12);
  await store.exclusive('all', (ctx) => ctx.putMany(ids.map((id) => fixture[id] as MemoryRecord)));
  const backupDir = path.join(dir, 'backups');
  const audit = path.join(dir, 'audit.log');
  const ops = new Operations({ store, backupDir, audit: new AuditLog(audit), actor: ACTOR });
  const earlier = (await ops.createBackup()).id;
  // Changed after the earlier backup, so a restore of it has work to do.
  for (const id of ids.slice(0, 3)) await store.appendHistory(id, { role: 'user', text: 'after the earlier backup' });
  // A fresh audit instance: its first append syncs the directory, as in a new process.
  const fresh = new Operations({ store, backupDir, audit: new AuditLog(audit), actor: ACTOR });
  return { store, ops: fresh, backupDir, audit, earlier, target: ids[5] as string, cleanup: async () => { await store.close(); await t.cleanup(); } };
}

function run(f: Fixture, op: Op): Promise<unknown> {
  if (op === 'delete') return f.ops.deleteUsers([f.target]);
  if (op === 'clear') return f.ops.clearAll();
  return f.ops.restore(f.earlier);
}

afterEach(() => resetFsIo());

for (const kind of ['sqlite', 'json'] as const) {
  for (const op of ['delete', 'clear', 'restore'] as const) {
    describe(`injected failures during ${op} on ${kind}`, () => {
      // Refused operations leave the store as it was, so those cases share one store (each compares
      // with the state it found); cases that change the store get their own.
      let shared: Fixture;
      beforeAll(async () => {
        shared = await setup(kind);
      });
      afterAll(async () => shared.cleanup());
      for (const step of STEPS) {
        if (step.ops && !step.ops.includes(op)) continue;
        const finalAfterChange = step.finalBackup === true && TWO_PHASE.includes(op);
        for (const fault of step.kinds) {
          it(`${step.name}: ${fault}`, async () => {
            const f = step.afterChange || finalAfterChange ? await setup(kind) : { ...shared, ops: new Operations({ store: shared.store, backupDir: shared.backupDir, audit: new AuditLog(shared.audit), actor: ACTOR }) };
            try {
              const before = await snapshot(f.store);
              const filesBefore = await listFiles(f.backupDir);
              const injected = injectFault({ ...step.rule(f.backupDir, f.audit), kind: fault });
              let outcome: { ok: true; value: unknown } | { ok: false; err: unknown };
              try {
                outcome = { ok: true, value: await run(f, op) };
              } catch (err) {
                outcome = { ok: false, err };
              } finally {
                injected.restore();
              }
              // A fault that never fired proves nothing about its step.
              expect(injected.hits(), 'the fault fired').toBe(1);
              const after = await snapshot(f.store);
              const verify = await f.ops.verifyBackups();
              // The earlier backup, and anything else written, verifies.
              for (const v of verify) expect(v, `backup ${v.id} verifies`).toMatchObject({ ok: true });
              expect(verify.map((v) => v.id)).toContain(f.earlier);

              if (finalAfterChange) {
                // The change committed with its pre-image sealed; the final backup's write failed once and
                // was retried: the operation answers, with its backup verified, and no part is left.
                expect(outcome.ok, outcome.ok ? '' : String((outcome as { err: unknown }).err)).toBe(true);
                expect(after).not.toEqual(before);
                expect((await listFiles(f.backupDir)).filter((n) => n.startsWith('.parts-') || isTempName(n))).toEqual([]);
              } else if (!step.afterChange) {
                expect(outcome.ok, 'the operation is refused').toBe(false);
                if (!outcome.ok) {
                  expect(isChatmemError(outcome.err), String(outcome.err)).toBe(true);
                  expect((outcome.err as { code: string }).code).toMatch(/^E_(BACKUP_WRITE|BACKUP_VERIFY|AUDIT_WRITE)$/);
                }
                expect(after, 'the store is untouched').toEqual(before);
                // No half-written backup, manifest or temp file stays behind.
                expect(await listFiles(f.backupDir)).toEqual(filesBefore);
                return;
              }
              // The change committed before the outcome could be audited: the operation either answers
              // with a warning or fails with E_AUDIT_WRITE; both ways the before state is in a verified backup.
              if (step.afterChange) {
                if (outcome.ok) expect(outcome.value).toHaveProperty('warnings');
                else expect(outcome.err).toMatchObject({ code: 'E_AUDIT_WRITE' });
              }
              expect(after).not.toEqual(before);
              const newer = verify.filter((v) => !filesBefore.includes(`${v.id}.json`));
              expect(newer).toHaveLength(1);
              const held = await f.ops.diff(newer[0]!.id, 'current');
              // Everything the operation changed or removed is in its backup as it was.
              const touched = [...held.removed, ...held.changed.map((c) => c.user_id)];
              for (const id of touched) {
                const r = (await f.ops.inspectBackup(newer[0]!.id, { user: id })).record;
                expect(r, `${id} in the backup`).toBeTruthy();
                expect(JSON.stringify(r), `${id} in the backup as before`).toBe(before.get(id));
              }
              expect(held.removed.length + held.changed.length).toBeGreaterThan(0);
            } finally {
              if (step.afterChange || finalAfterChange) await f.cleanup();
            }
          });
        }
      }
    });
  }
}

// Forget rewrites every backup that holds the user as a new verified file (src/backup/rewrite.ts), after
// the store's delete: forget destroys without a backup, by design, so a refused forget has already
// removed the user from the store, and the operator forgets again. The promise at each step of the
// rewrites: the forget is refused with a catalogue code or completes; everyone else in the store is
// untouched; every backup still verifies and is either the old file, byte for byte, or its rewrite
// without the user (a backup of the user alone: gone with its manifest), never neither; no temp file or
// intent is left; and a second forget completes the job.
describe('injected failures during forget (the backup rewrites)', () => {
  const name = (f: string) => path.basename(f);
  // The full chatmem backup (2026-11-*), the scoped one of the user alone (2026-01-01), the seed's full
  // copy (2025): their temp files by name.
  const chatmemTemp = (f: string) => isTempName(name(f)) && name(f).startsWith('.memory_backup_2026') && !f.includes('.meta.json') && !f.includes('.rewrite.json');
  const seedTemp = (f: string) => isTempName(name(f)) && name(f).startsWith('.memory_backup_2025');
  const intentTemp = (f: string) => isTempName(name(f)) && f.includes('.rewrite.json');
  const manifestTemp = (f: string) => isTempName(name(f)) && f.includes('.meta.json');
  // The forget's directory fsyncs of the backup directory, in order: the seed copy's rename, the seed's
  // per-user file removed, the scoped backup removed, the full one's intent, its rename, its manifest,
  // its intent removed (checked below).
  const DIR_SYNCS = 7;
  const FORGET_STEPS: { name: string; rule: (b: string) => Omit<FaultRule, 'kind'>; kinds: FaultKind[] }[] = [
    { name: 'rewrite temp create', rule: () => ({ call: 'stream-open', match: chatmemTemp }), kinds: ['EIO', 'ENOSPC'] },
    { name: 'rewrite write', rule: () => ({ call: 'stream-write', match: chatmemTemp }), kinds: ['EIO', 'short'] },
    { name: 'rewrite reopen for fsync', rule: () => ({ call: 'open', match: (f, flags) => chatmemTemp(f) && flags === 'r+' }), kinds: ['EIO'] },
    { name: 'rewrite fsync', rule: () => ({ call: 'sync', match: chatmemTemp }), kinds: ['EIO'] },
    { name: 'intent write', rule: () => ({ call: 'writeAll', match: intentTemp }), kinds: ['EIO', 'short'] },
    { name: 'intent fsync', rule: () => ({ call: 'sync', match: intentTemp }), kinds: ['EIO'] },
    { name: 'intent rename', rule: () => ({ call: 'rename', match: intentTemp }), kinds: ['EIO'] },
    { name: 'rename of the rewrite over the backup', rule: () => ({ call: 'rename', match: chatmemTemp }), kinds: ['EIO'] },
    { name: 'new manifest write', rule: () => ({ call: 'writeAll', match: manifestTemp }), kinds: ['EIO', 'short'] },
    { name: 'new manifest fsync', rule: () => ({ call: 'sync', match: manifestTemp }), kinds: ['EIO'] },
    { name: 'new manifest rename', rule: () => ({ call: 'rename', match: manifestTemp }), kinds: ['EIO'] },
    { name: 'seed copy temp create', rule: () => ({ call: 'open', match: (f, flags) => seedTemp(f) && flags === 'wx' }), kinds: ['EIO', 'ENOSPC'] },
    { name: 'seed copy write', rule: () => ({ call: 'writeAll', match: seedTemp }), kinds: ['EIO', 'short'] },
    { name: 'seed copy fsync', rule: () => ({ call: 'sync', match: seedTemp }), kinds: ['EIO'] },
    { name: 'seed copy rename', rule: () => ({ call: 'rename', match: seedTemp }), kinds: ['EIO'] },
    ...Array.from({ length: DIR_SYNCS }, (_, i) => ({
      name: `backup directory fsync ${i + 1} of ${DIR_SYNCS}`,
      rule: (b: string) => ({ call: 'fsyncDir' as const, match: (d: string) => d === b, nth: i + 1 }),
      kinds: ['EIO' as const],
    })),
  ];

  interface ForgetFixture extends Fixture {
    /** Backup file name -> bytes before the forget. */
    files: Map<string, Buffer>;
  }

  async function forgetSetup(): Promise<ForgetFixture> {
    const f = await setup('sqlite');
    const target = f.target;
    const record = (await f.store.get(target)) as MemoryRecord;
    const other = (await f.store.get(Object.keys(loadFixture())[0] as string)) as MemoryRecord;
    // A backup of the user alone (deleted whole), one of someone else (untouched), the seed's full copy
    // and its per-user file of the user (rewritten, deleted). The earlier full backup holds the user too.
    await writeBackup(f.backupDir, [record], { reason: 'delete-user', scope: [target], source: 's', now: () => new Date('2026-01-01T00:00:00Z') });
    await writeBackup(f.backupDir, [other], { reason: 'delete-user', scope: [other.user_id], source: 's', now: () => new Date('2026-01-02T00:00:00Z') });
    writeFileSync(path.join(f.backupDir, 'memory_backup_20250101_000000.json'), serializeSeed([[other.user_id, other], [target, record]]));
    writeFileSync(path.join(f.backupDir, `memory_backup_${target}_20251125_140002.json`), JSON.stringify({ user_id: target, record }));
    const files = new Map<string, Buffer>();
    for (const n of await listFiles(f.backupDir)) files.set(n, readFileSync(path.join(f.backupDir, n)));
    return { ...f, files };
  }

  async function holders(f: Fixture, user: string): Promise<string[]> {
    const out: string[] = [];
    for (const n of await listFiles(f.backupDir)) {
      if (!parseBackupName(n)) continue;
      if (await backupHoldsAny(await openBackup(f.backupDir, n), new Set([user]))) out.push(n);
    }
    return out;
  }

  it(`the fixture takes ${DIR_SYNCS} directory fsyncs and rewrites or deletes every backup of the user`, async () => {
    const f = await forgetSetup();
    try {
      let syncs = 0;
      const restore = setFsIo({ fsyncDir: async (d) => (d === f.backupDir && syncs++, defaultFsIo.fsyncDir(d)) });
      const r = await f.ops.forget([f.target]).finally(restore);
      expect(syncs).toBe(DIR_SYNCS);
      expect(r.backupsRewritten).toHaveLength(2);
      expect(r.filesDeleted).toHaveLength(2);
      expect(await holders(f, f.target)).toEqual([]);
    } finally {
      await f.cleanup();
    }
  });

  for (const step of FORGET_STEPS) {
    for (const fault of step.kinds) {
      it(`${step.name}: ${fault}`, async () => {
        const f = await forgetSetup();
        try {
          const before = await snapshot(f.store);
          expect(await holders(f, f.target)).toHaveLength(4);
          const injected = injectFault({ ...step.rule(f.backupDir), kind: fault });
          let outcome: { ok: true } | { ok: false; err: unknown };
          try {
            await f.ops.forget([f.target]);
            outcome = { ok: true };
          } catch (err) {
            outcome = { ok: false, err };
          } finally {
            injected.restore();
          }
          expect(injected.hits(), 'the fault fired').toBe(1);
          if (!outcome.ok) {
            expect(isChatmemError(outcome.err), String(outcome.err)).toBe(true);
            expect((outcome.err as { code: string }).code).toMatch(/^E_BACKUP_(WRITE|VERIFY)$/);
          }
          // Everyone else as before; the user gone (the delete comes first).
          const after = await snapshot(f.store);
          before.delete(f.target);
          expect(after).toEqual(before);
          // Every backup verifies and is the old file or its rewrite without the user.
          const verify = await f.ops.verifyBackups();
          for (const v of verify) expect(v, `backup ${v.id} verifies`).toMatchObject({ ok: true });
          const names = await listFiles(f.backupDir);
          expect(names.filter((n) => isTempName(n) || n.endsWith('.rewrite.json')), 'no temp file or intent left').toEqual([]);
          for (const [n, old] of f.files) {
            if (n.endsWith('.meta.json')) continue;
            const gone = !names.includes(n);
            if (gone) {
              // Only a backup of the user alone goes, and its manifest with it.
              expect(n.includes(f.target) || n.startsWith('memory_backup_20260101'), `${n} deleted`).toBe(true);
              expect(names).not.toContain(n.replace(/\.json$/, '.meta.json'));
              continue;
            }
            const now = readFileSync(path.join(f.backupDir, n));
            if (!now.equals(old)) expect(await backupHoldsAny(await openBackup(f.backupDir, n), new Set([f.target])), `${n} rewritten without the user`).toBe(false);
          }
          if (outcome.ok) expect(await holders(f, f.target)).toEqual([]);
          else {
            // The operator forgets again: done.
            await f.ops.forget([f.target]);
            expect(await holders(f, f.target)).toEqual([]);
            for (const v of await f.ops.verifyBackups()) expect(v, `backup ${v.id} verifies`).toMatchObject({ ok: true });
          }
        } finally {
          await f.cleanup();
        }
      });
    }
  }
});
