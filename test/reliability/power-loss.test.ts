// A power-loss model over the fsio seam: after every file-system step of delete, clear and restore,
// and right before the store changes, it computes what a power cut would leave (file data only as of
// its last fsync, directory entries only as of their directory's last fsync) and checks the order the
// promise needs: the backup's data is synced before its name is linked, the directory after; a
// manifest that says "verified" never survives without its backup; the store changes only once its
// backup (and the audit intent) would survive; the answer comes only once the verified manifest and
// the audit outcome would survive. Each fsync, skipped in turn, makes a check fail.
import { createHash } from 'node:crypto';
import { linkSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { writeBackup } from '../../src/backup/create.js';
import { parseBackupName } from '../../src/backup/format.js';
import { clearVerifyCache, verifySource } from '../../src/backup/integrity.js';
import { backupHoldsAny, finishRewrites } from '../../src/backup/rewrite.js';
import { openBackup } from '../../src/backup/source.js';
import { serializeSeed } from '../../src/format/seed.js';
import { isTempName } from '../../src/fs-util.js';
import { resetFsIo } from '../../src/fsio.js';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations, type OpsPoint } from '../../src/ops/operations.js';
import { openStore } from '../../src/store/open.js';
import type { ExclusiveContext, StagedRecords, Store } from '../../src/store/types.js';
import type { MemoryRecord } from '../../src/record.js';
import { tempDir } from '../helpers/tmp.js';
import { loadFixture } from '../store/conformance.js';
import { PowerLossModel } from './fs-faults.js';

const ACTOR = { kind: 'os' as const, name: 'power-loss-test' };
type Op = 'delete' | 'clear' | 'restore';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const isBackupName = (n: string) => /^memory_backup_\d{8}_\d{6}(_\d+)?\.json$/.test(n);

function parseJson(b: Buffer): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(b.toString('utf8'));
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

// Changes made inside exclusive sections run `before()` first: the check point is the change itself,
// wherever Operations makes it.
function instrument(store: Store, before: () => void): void {
  const exclusive = store.exclusive.bind(store);
  store.exclusive = <T>(scope: Parameters<Store['exclusive']>[0], fn: (ctx: ExclusiveContext) => Promise<T>): Promise<T> =>
    exclusive(scope, (ctx) => {
      const wrapped: ExclusiveContext = {
        ...ctx,
        getMany: (ids) => ctx.getMany(ids),
        scan: (o) => ctx.scan(o),
        scanJson: (o) => ctx.scanJson(o),
        count: () => ctx.count(),
        delete: (ids) => (before(), ctx.delete(ids)),
        clear: () => (before(), ctx.clear()),
        putMany: (records) => (before(), ctx.putMany(records)),
        replaceAll: (records) => (before(), ctx.replaceAll(records)),
        // A full restore's swap of the rows it staged before its section.
        ...(ctx.replaceStaged ? { replaceStaged: (staged: StagedRecords) => (before(), (ctx.replaceStaged as NonNullable<ExclusiveContext['replaceStaged']>)(staged)) } : {}),
      };
      return fn(wrapped);
    });
}

interface Skip {
  name: string;
  /** Fresh predicates per run (they count calls): which fsyncs the seam skips. */
  make: () => { sync?: (file: string) => boolean; fsyncDir?: (dir: string) => boolean };
  /** The check that must catch it. */
  caughtBy: RegExp;
}

async function runModel(kind: 'sqlite' | 'json', op: Op, skip?: Skip): Promise<{ violations: string[]; cuts: number; changeChecks: number; answerChecks: number }> {
  const t = await tempDir('chatmem-power-');
  const storage = path.join(t.dir, 'storage');
  const backupDir = path.join(storage, 'backups');
  const auditFile = path.join(storage, 'audit.log');
  const store = await openStore(`${kind}:${path.join(storage, kind === 'sqlite' ? 'memory.db' : 'memory.json')}`);
  try {
    const fixture = loadFixture();
    const ids = Object.keys(fixture).slice(0, 10);
    await store.exclusive('all', (ctx) => ctx.putMany(ids.map((id) => fixture[id] as MemoryRecord)));
    const earlier = (await new Operations({ store, backupDir, audit: new AuditLog(auditFile), actor: ACTOR }).createBackup()).id;
    await store.appendHistory(ids[0] as string, { role: 'user', text: 'after the earlier backup' });
    const namesAtStart = new Set(readdirSync(backupDir));

    const model = new PowerLossModel([backupDir, storage], skip?.make() ?? {});
    const violations: string[] = [];
    let cuts = 0;
    let changeChecks = 0;
    let answerChecks = 0;
    const auditLines = (outcome: string) =>
      (model.survivors(storage).get('audit.log')?.toString('utf8') ?? '').split('\n').filter((l) => l.includes(`"outcome":"${outcome}"`)).length;
    const startedAtStart = auditLines('started');
    const doneAtStart = auditLines('done');
    const newBackup = () => readdirSync(backupDir).filter((n) => isBackupName(n) && !namesAtStart.has(n));

    // At any cut: a manifest that survives parses, and one that says verified has its backup, whole.
    const checkAnyCut = (event: string) => {
      cuts++;
      const files = model.survivors(backupDir);
      for (const [name, data] of files) {
        if (!name.endsWith('.meta.json') || isTempName(name)) continue;
        const m = parseJson(data);
        if (!m) {
          violations.push(`any cut (${event}): manifest ${name} survives unreadable`);
          continue;
        }
        if (m.verifiedAt === null || m.verifiedAt === undefined) continue;
        const backup = files.get(String(m.file));
        if (!backup || sha(backup) !== m.sha256) violations.push(`any cut (${event}): verified manifest ${name} survives without its backup whole`);
      }
    };
    // Right before the store changes: the operation's backup would survive whole with a readable
    // manifest, and so would the audit intent.
    const checkChange = () => {
      changeChecks++;
      const files = model.survivors(backupDir);
      // Clear and full restore seal verified parts of their backup before the change (two-phase.ts):
      // then the parts manifest, every part it names and the seal would survive whole.
      const seal = readdirSync(backupDir).find((n) => /^\.parts-.*\.sealed$/.test(n));
      if (seal) {
        const op = seal.slice('.parts-'.length, -'.sealed'.length);
        const survives = (name: string, sha256?: string): boolean => {
          const data = files.get(name);
          if (!data) violations.push(`change: backup part ${name} would not survive a power cut (name not synced)`);
          else if (sha256 !== undefined && sha(data) !== sha256) violations.push(`change: backup part ${name} would not survive whole (data not synced)`);
          return data !== undefined;
        };
        if (survives(`.parts-${op}.json`)) {
          const m = parseJson(files.get(`.parts-${op}.json`) ?? Buffer.alloc(0)) as { snapshot?: { file: string; sha256: string }; deltas?: { file: string; sha256: string }[] } | null;
          if (!m?.snapshot) violations.push(`change: backup parts manifest of ${op} would not survive whole (unreadable or without its snapshot)`);
          for (const p of m?.snapshot ? [m.snapshot, ...(m.deltas ?? [])] : []) survives(p.file, p.sha256);
        }
        if (survives(seal)) {
          const data = files.get(seal) ?? Buffer.alloc(0);
          const nl = data.indexOf(10);
          const header = parseJson(data.subarray(0, Math.max(0, nl)));
          if (!header || header.sha256 !== sha(data.subarray(nl + 1))) violations.push(`change: backup part ${seal} would not survive whole (data not synced)`);
        }
        if (auditLines('started') <= startedAtStart) violations.push('change: the audit intent would not survive');
        return;
      }
      const [name] = newBackup();
      if (!name) return void violations.push('change: no backup written before the store changed');
      const data = files.get(name);
      const manifest = parseJson(files.get(name.replace(/\.json$/, '.meta.json')) ?? Buffer.alloc(0));
      if (!data) violations.push(`change: backup ${name} would not survive a power cut (name not synced)`);
      else if (!manifest || manifest.sha256 !== sha(data)) violations.push(`change: backup ${name} would not survive whole (data or manifest not synced)`);
      if (auditLines('started') <= startedAtStart) violations.push('change: the audit intent would not survive');
    };
    // When the operation answers: its verified manifest and its audit outcome would survive.
    const checkAnswer = () => {
      answerChecks++;
      const [name] = newBackup();
      const manifest = name ? parseJson(model.survivors(backupDir).get(name.replace(/\.json$/, '.meta.json')) ?? Buffer.alloc(0)) : null;
      if (!manifest || typeof manifest.verifiedAt !== 'string') violations.push('answer: the verified manifest would not survive');
      if (auditLines('done') <= doneAtStart) violations.push('answer: the audit outcome would not survive');
    };

    instrument(store, checkChange);
    const hooks = { at: async (point: OpsPoint) => void (point === 'outcome-written' && checkAnswer()) };
    const ops = new Operations({ store, backupDir, audit: new AuditLog(auditFile), actor: ACTOR, hooks });
    model.install(checkAnyCut);
    try {
      if (op === 'delete') await ops.deleteUsers([ids[3] as string]);
      else if (op === 'clear') await ops.clearAll();
      else await ops.restore(earlier);
    } finally {
      model.uninstall();
    }
    return { violations, cuts, changeChecks, answerChecks };
  } finally {
    await store.close();
    await t.cleanup();
  }
}

afterEach(() => resetFsIo());

const inBackups = (file: string) => path.basename(path.dirname(file)) === 'backups';
const isManifestTemp = (file: string) => inBackups(file) && file.includes('.meta.json.');
const isBackupTemp = (file: string) => inBackups(file) && isTempName(path.basename(file)) && !file.includes('.meta.json');

// Skips the nth call matching `match` (counted across files: each temp file has its own name).
function nthOf(n: number | 'all', match: (file: string) => boolean): () => (file: string) => boolean {
  return () => {
    let seen = 0;
    return (file) => match(file) && (n === 'all' || ++seen === n);
  };
}
const backupsDir = (d: string) => path.basename(d) === 'backups';
const auditLog = (f: string) => path.basename(f) === 'audit.log';

const SKIPS: Skip[] = [
  { name: 'backup data fsync before its link', make: () => ({ sync: nthOf('all', isBackupTemp)() }), caughtBy: /^change: backup .* whole/ },
  // The same gap seen from the manifest: a verified manifest would survive over a backup with no data.
  { name: 'backup data fsync (so its verified manifest outlives it)', make: () => ({ sync: nthOf('all', isBackupTemp)() }), caughtBy: /^any cut .*verified manifest .* without its backup whole/ },
  // Alone, the directory fsync after the link is covered by the verified manifest's directory fsync,
  // which comes before the store changes (the model shows it); without both, the backup's name is lost.
  { name: 'backup directory fsyncs (after the link and after the verified manifest)', make: () => ({ fsyncDir: nthOf('all', backupsDir)() }), caughtBy: /^change: backup .*name not synced/ },
  { name: 'pending manifest fsync before its link', make: () => ({ sync: nthOf(1, isManifestTemp)() }), caughtBy: /^any cut .* unreadable/ },
  { name: 'verified manifest fsync before its rename', make: () => ({ sync: nthOf(2, isManifestTemp)() }), caughtBy: /^any cut .* unreadable/ },
  // The directory fsyncs from the verified manifest's rename on (after the second manifest fsync of the
  // backup): for delete the one after the rename; a clear's removal of its parts fsyncs the directory too.
  {
    name: 'verified manifest directory fsync after its rename',
    make: () => {
      let manifestSyncs = 0;
      return {
        sync: (file: string) => {
          if (isManifestTemp(file)) manifestSyncs++;
          return false;
        },
        fsyncDir: (dir: string) => backupsDir(dir) && manifestSyncs >= 2,
      };
    },
    caughtBy: /^answer: the verified manifest/,
  },
  { name: 'audit intent fsync', make: () => ({ sync: nthOf(1, auditLog)() }), caughtBy: /^change: the audit intent/ },
  { name: 'audit outcome fsync', make: () => ({ sync: nthOf(2, auditLog)() }), caughtBy: /^answer: the audit outcome/ },
];

describe('power-loss model', () => {
  for (const kind of ['sqlite', 'json'] as const) {
    for (const op of ['delete', 'clear', 'restore'] as const) {
      it(`${op} on ${kind}: at every step a power cut leaves the promise kept`, async () => {
        const r = await runModel(kind, op);
        expect(r.violations).toEqual([]);
        // The checks ran: every seam step was a cut point, the change was checked, and so was the answer.
        expect(r.cuts).toBeGreaterThanOrEqual(10);
        expect(r.changeChecks).toBeGreaterThanOrEqual(1);
        expect(r.answerChecks).toBe(1);
      });
    }
  }

  for (const skip of SKIPS) {
    it(`without the ${skip.name}, the model catches it`, async () => {
      for (const op of ['delete', 'clear'] as const) {
        const r = await runModel('sqlite', op, skip);
        expect(r.violations.some((v) => skip.caughtBy.test(v)), `${op}: ${JSON.stringify(r.violations)}`).toBe(true);
      }
    });
  }
});

// Forget's rewrite of each backup (src/backup/rewrite.ts): at every step a power cut would leave each
// backup, once the start-up recovery has run over what survives (`finishRewrites`, the writer dead),
// either the old verified file or its verified rewrite, never neither and never lost; a backup of the
// user alone may be gone whole. When the forget answers, no surviving backup holds the user.
async function runForgetModel(skip?: Skip): Promise<{ violations: string[]; cuts: number }> {
  const t = await tempDir('chatmem-power-forget-');
  const storage = path.join(t.dir, 'storage');
  const backupDir = path.join(storage, 'backups');
  const cutDir = path.join(t.dir, 'cut');
  const auditFile = path.join(storage, 'audit.log');
  const store = await openStore(`sqlite:${path.join(storage, 'memory.db')}`);
  try {
    const fixture = loadFixture();
    const ids = Object.keys(fixture).slice(0, 10);
    const records = ids.map((id) => fixture[id] as MemoryRecord);
    await store.exclusive('all', (ctx) => ctx.putMany(records));
    // In the store's order, as a backup holds them.
    const sorted: MemoryRecord[] = [];
    for await (const r of store.scan()) sorted.push(r);
    const target = ids[3] as string;
    const ops = new Operations({ store, backupDir, audit: new AuditLog(auditFile), actor: ACTOR });
    await ops.createBackup();
    // A gzip full backup, a backup of the user alone (deleted whole) and the seed's full copy (no manifest).
    await writeBackup(backupDir, sorted, { reason: 'manual', scope: 'full', source: 's', gzip: true, now: () => new Date('2026-01-03T00:00:00Z') });
    await writeBackup(backupDir, [fixture[target] as MemoryRecord], { reason: 'delete-user', scope: [target], source: 's', now: () => new Date('2026-01-01T00:00:00Z') });
    const seedName = 'memory_backup_20250101_000000.json';
    writeFileSync(path.join(backupDir, seedName), serializeSeed(records.slice(0, 5).map((r) => [r.user_id, r])));
    const alone = readdirSync(backupDir).find((n) => n.startsWith('memory_backup_20260101_000000') && !n.endsWith('.meta.json')) as string;
    const originals = readdirSync(backupDir).filter((n) => parseBackupName(n) !== null);
    const seedOld = sha(readFileSync(path.join(backupDir, seedName)));
    const seedSeen = new Set<string>();
    // The model keys durable data by inode number: a removed backup's number, reused by a later temp
    // file, would give the removal's unsynced entry that file's data. Extra links keep the numbers taken.
    mkdirSync(path.join(t.dir, 'keep'));
    for (const n of readdirSync(backupDir)) linkSync(path.join(backupDir, n), path.join(t.dir, 'keep', n));

    const model = new PowerLossModel([backupDir, storage], skip?.make() ?? {});
    const violations: string[] = [];
    let cuts = 0;
    const check = async (event: string, answered: boolean) => {
      cuts++;
      rmSync(cutDir, { recursive: true, force: true });
      mkdirSync(cutDir, { mode: 0o700 });
      for (const [name, data] of model.survivors(backupDir)) writeFileSync(path.join(cutDir, name), data);
      await finishRewrites(cutDir, () => false);
      clearVerifyCache();
      const present = readdirSync(cutDir);
      for (const name of originals) {
        if (!present.includes(name)) {
          if (name !== alone) violations.push(`cut (${event}): backup ${name} lost`);
          continue;
        }
        const src = await openBackup(cutDir, name);
        if (name === seedName) seedSeen.add(sha(readFileSync(path.join(cutDir, name))));
        else if (!(await verifySource(src)).ok) violations.push(`cut (${event}): backup ${name} would not verify after recovery`);
        const holds = await backupHoldsAny(src, new Set([target])).catch(() => {
          violations.push(`cut (${event}): backup ${name} unreadable`);
          return false;
        });
        if (answered && holds) violations.push(`answer: backup ${name} would come back holding the user`);
      }
    };
    model.install((event) => check(event, false));
    try {
      await ops.forget([target]);
      await check('answer', true);
    } finally {
      model.uninstall();
    }
    // The seed copy (no manifest) was, at every cut, the old file or the final rewrite.
    const seedNew = sha(readFileSync(path.join(backupDir, seedName)));
    for (const s of seedSeen) if (s !== seedOld && s !== seedNew) violations.push(`cut: seed copy ${seedName} neither the old file nor its rewrite`);
    return { violations, cuts };
  } finally {
    await store.close();
    await t.cleanup();
  }
}

const FORGET_SKIPS: Skip[] = [
  { name: "rewrite's data fsync before its rename", make: () => ({ sync: nthOf('all', (f) => isBackupTemp(f) && !f.includes('.rewrite.json') && path.basename(f).startsWith('.memory_backup_2026'))() }), caughtBy: /would not verify after recovery/ },
  { name: "seed copy's data fsync before its rename", make: () => ({ sync: nthOf('all', (f) => isBackupTemp(f) && path.basename(f).startsWith('.memory_backup_2025'))() }), caughtBy: /seed copy .* neither/ },
  { name: 'intent fsync before the rename', make: () => ({ sync: nthOf('all', (f) => isBackupTemp(f) && f.includes('.rewrite.json'))() }), caughtBy: /would not verify after recovery/ },
  { name: "new manifest's fsync", make: () => ({ sync: nthOf('all', isManifestTemp)() }), caughtBy: /would not verify after recovery/ },
  { name: 'backup directory fsyncs', make: () => ({ fsyncDir: nthOf('all', backupsDir)() }), caughtBy: /^answer: .* holding the user/ },
];

describe('power-loss model: forget', () => {
  it('at every step a power cut leaves each backup old or rewritten, verified after recovery', async () => {
    const r = await runForgetModel();
    expect(r.violations).toEqual([]);
    expect(r.cuts).toBeGreaterThanOrEqual(20);
  });
  for (const skip of FORGET_SKIPS) {
    it(`without the ${skip.name}, the model catches it`, async () => {
      const r = await runForgetModel(skip);
      expect(r.violations.some((v) => skip.caughtBy.test(v)), JSON.stringify(r.violations)).toBe(true);
    });
  }
});
