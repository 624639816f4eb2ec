// What a killed chatmem leaves in its backup directory is finished or removed by whichever starts
// next (a CLI read or the daemon); a recovery says truly whether an interrupted delete happened; and
// a store that cannot be parsed can still be listed, verified, diffed and restored over.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fsp, readFileSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeBackup } from '../../src/backup/create.js';
import type { BackupManifest } from '../../src/backup/manifest.js';
import { resolveConfig } from '../../src/config.js';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { serve } from '../../src/server/serve.js';
import { openStore } from '../../src/store/open.js';
import { cleanEnv, runCli, sandbox, type Sandbox } from '../cli/helpers.js';
import { ROOT, tempDir } from '../helpers/tmp.js';
import { ADMIN_TOKEN } from '../server/helpers.js';
import { loadFixture } from '../store/conformance.js';

const JOKO = '628161973069';
const ACTOR = { kind: 'os' as const, name: 'leftover-test' };

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  return r.pid ?? 999_999;
}

function readManifestFile(file: string): BackupManifest {
  return JSON.parse(readFileSync(file, 'utf8')) as BackupManifest;
}

/** The manifest as it is on disk between the claim and the verified mark (what a kill there leaves). */
function makePending(metaFile: string, pid: number): void {
  const m = readManifestFile(metaFile);
  writeFileSync(metaFile, JSON.stringify({ ...m, verifiedAt: null, writer: { pid, host: hostname() } }));
}

describe('leftovers of killed writers, finished by the next CLI read and by the daemon', () => {
  let sb: Sandbox;
  let live: ChildProcess;
  beforeAll(async () => {
    sb = await sandbox('json');
    live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 120000)'], { stdio: 'ignore' });
  });
  afterAll(async () => {
    live.kill('SIGKILL');
    await sb.cleanup();
  });

  async function setUp(): Promise<Record<string, string>> {
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await sb.json<{ backup: string }>(['backup']);
      ids.push(r.doc.backup);
    }
    const [orphan, pending, corrupt, livePending] = ids as [string, string, string, string];
    const dir = sb.backupDir;
    const dead = deadPid();
    const files = {
      deadTemp: `.memory_backup_20260101_000000.json.${dead}.abcdef01.tmp`,
      liveTemp: `.memory_backup_20260101_000000.json.${live.pid}.abcdef02.tmp`,
      deadStoreTemp: `.memory.json.${dead}.abcdef03.tmp`,
      liveStoreTemp: `.memory.json.${live.pid}.abcdef04.tmp`,
      orphan,
      pending,
      corrupt,
      livePending,
      claimOnly: 'memory_backup_20260105_000000',
    };
    writeFileSync(path.join(dir, files.deadTemp), '{\n"x":');
    writeFileSync(path.join(dir, files.liveTemp), '{\n"x":');
    writeFileSync(path.join(path.dirname(sb.storeFile), files.deadStoreTemp), '{');
    writeFileSync(path.join(path.dirname(sb.storeFile), files.liveStoreTemp), '{');
    // A prune killed between removing a backup and its manifest.
    await fsp.rm(path.join(dir, `${orphan}.json`));
    // A writer killed after linking the backup, before marking it verified: intact, and damaged.
    makePending(path.join(dir, `${pending}.meta.json`), dead);
    makePending(path.join(dir, `${corrupt}.meta.json`), dead);
    const text = readFileSync(path.join(dir, `${corrupt}.json`));
    text[text.length - 10] = text[text.length - 10]! ^ 0x01;
    writeFileSync(path.join(dir, `${corrupt}.json`), text);
    // A writer still at work: none of its files may be touched.
    makePending(path.join(dir, `${livePending}.meta.json`), live.pid ?? 0);
    // A writer killed right after claiming a name (manifest linked, backup not yet).
    writeFileSync(path.join(dir, `${files.claimOnly}.meta.json`), JSON.stringify({ ...readManifestFile(path.join(dir, `${pending}.meta.json`)), file: `${files.claimOnly}.json` }));
    return files;
  }

  function assertFinished(files: Record<string, string>): void {
    const dir = sb.backupDir;
    const has = (n: string) => existsSync(path.join(dir, n));
    const storeDir = path.dirname(sb.storeFile);
    expect(has(files.deadTemp!)).toBe(false);
    expect(has(files.liveTemp!)).toBe(true);
    expect(existsSync(path.join(storeDir, files.deadStoreTemp!))).toBe(false);
    expect(existsSync(path.join(storeDir, files.liveStoreTemp!))).toBe(true);
    expect(has(`${files.orphan}.meta.json`)).toBe(false);
    expect(has(`${files.claimOnly}.meta.json`)).toBe(false);
    const completed = readManifestFile(path.join(dir, `${files.pending}.meta.json`));
    expect(typeof completed.verifiedAt).toBe('string');
    expect(completed.writer).toBeUndefined();
    expect([has(`${files.corrupt}.json`), has(`${files.corrupt}.meta.json`)]).toEqual([false, false]);
    expect(readManifestFile(path.join(dir, `${files.livePending}.meta.json`))).toMatchObject({ verifiedAt: null, writer: { pid: live.pid } });
  }

  it('a CLI read command (backups) finishes them and says so', async () => {
    const files = await setUp();
    const r = await sb.run(['backups']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/left by an interrupted chatmem: removed [12] temp file\(s\); removed 2 manifest\(s\) without backup; completed memory_backup_\S+ \(verified\); removed memory_backup_\S+ \(written by a killed process, did not verify\)/);
    assertFinished(files);
    // (The JSON store removes its own dead temp copy when it opens, so the pass may count one or both.)
    // The live writer's backup is listed as pending, never as legacy; the completed one as verified.
    const list = await sb.json<{ backups: { id: string; state: string }[] }>(['backups']);
    expect(list.doc.backups.find((b) => b.id === files.livePending)?.state).toBe('pending');
    expect(list.doc.backups.find((b) => b.id === files.pending)?.state).toBe('verified');
    expect(list.doc.backups.some((b) => b.state === 'legacy')).toBe(false);
  });

  it('the daemon start finishes them too', async () => {
    await fsp.rm(sb.backupDir, { recursive: true, force: true });
    const files = await setUp();
    const config = await resolveConfig({ cwd: sb.dir, store: sb.storeUrl, env: {} });
    const server = await serve(config, { logger: false, handleSignals: false, port: 0, env: { CHATMEM_ADMIN_TOKEN: ADMIN_TOKEN }, log: () => undefined });
    try {
      const dir = sb.backupDir;
      const storeDir = path.dirname(sb.storeFile);
      expect(existsSync(path.join(dir, files.deadTemp!))).toBe(false);
      expect(existsSync(path.join(dir, files.liveTemp!))).toBe(true);
      expect(existsSync(path.join(storeDir, files.deadStoreTemp!))).toBe(false);
      expect(existsSync(path.join(storeDir, files.liveStoreTemp!))).toBe(true);
      expect(existsSync(path.join(dir, `${files.orphan}.meta.json`))).toBe(false);
      expect(existsSync(path.join(dir, `${files.claimOnly}.meta.json`))).toBe(false);
      expect(typeof readManifestFile(path.join(dir, `${files.pending}.meta.json`)).verifiedAt).toBe('string');
      expect(existsSync(path.join(dir, `${files.corrupt}.json`))).toBe(false);
      expect(readManifestFile(path.join(dir, `${files.livePending}.meta.json`)).verifiedAt).toBeNull();
    } finally {
      await server.close();
    }
  });
});

describe('SIGKILL during backup writes', () => {
  it('whatever point the kill hits, the next CLI start leaves only whole, verified backups', async () => {
    const { dir, cleanup } = await tempDir('chatmem-killbackup-');
    try {
      const storeFile = path.join(dir, 'data', 'storage', 'memory.db');
      const backupDir = path.join(dir, 'data', 'storage', 'backups');
      const store = await openStore(`sqlite:${storeFile}`);
      await store.exclusive('all', (ctx) => ctx.putMany(Object.values(loadFixture()).slice(0, 40)));
      await store.close();
      const env = cleanEnv({ CHATMEM_STORE: `sqlite:${storeFile}` });
      const seen = { temp: 0, pending: 0, orphan: 0, runs: 0, completedBackups: 0 };
      const RUNS = 12;
      for (let run = 0; run < RUNS; run++) {
        const child = spawn(process.execPath, [path.join(ROOT, 'test/fixtures/backup-loop.mjs'), `sqlite:${storeFile}`, backupDir, path.join(dir, 'audit.log')], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        let err = '';
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code)));
        await new Promise<void>((resolve, reject) => {
          child.stdout.on('data', (d: Buffer) => {
            out += d.toString();
            if (out.includes('ready\n')) resolve();
          });
          child.on('exit', () => reject(new Error(`backup loop ended before ready: ${err}`)));
        });
        // Spread over a few backup writes: each phase of a write gets hit in some run.
        await new Promise((r) => setTimeout(r, 5 + ((run + Math.random()) / RUNS) * 150));
        child.kill('SIGKILL');
        expect(await exited).toBe('SIGKILL');
        seen.runs++;
        seen.completedBackups += (out.match(/^backup \d+$/gm) ?? []).length;
        const names = existsSync(backupDir) ? await fsp.readdir(backupDir) : [];
        seen.temp += names.filter((n) => n.endsWith('.tmp')).length;
        for (const n of names.filter((x) => x.endsWith('.meta.json'))) {
          const base = n.slice(0, -'.meta.json'.length);
          if (!names.includes(`${base}.json`) && !names.includes(`${base}.json.gz`)) seen.orphan++;
          else if (readManifestFile(path.join(backupDir, n)).verifiedAt === null) seen.pending++;
        }

        const list = await runCli(['backups', '--json'], { cwd: dir, env });
        expect(list.code, list.stderr).toBe(0);
        const after = existsSync(backupDir) ? await fsp.readdir(backupDir) : [];
        expect(after.filter((n) => n.startsWith('.'))).toEqual([]);
        const data = after.filter((n) => !n.endsWith('.meta.json'));
        const metas = after.filter((n) => n.endsWith('.meta.json'));
        expect(metas.map((m) => m.replace('.meta.json', '')).sort()).toEqual(data.map((d) => d.replace(/\.json(\.gz)?$/, '')).sort());
        for (const m of metas) expect(readManifestFile(path.join(backupDir, m)).verifiedAt).not.toBeNull();
        const states = (JSON.parse(list.stdout) as { backups: { state: string }[] }).backups.map((b) => b.state);
        expect(states.every((s) => s === 'verified')).toBe(true);
      }
      const verify = await runCli(['verify', '--json'], { cwd: dir, env });
      expect(verify.code, verify.stdout).toBe(0);
      // Every acknowledged backup (printed by the child after writeBackup returned) is still there and verifies.
      const final = (JSON.parse(verify.stdout) as { results: { ok: boolean }[] }).results;
      expect(final.length).toBeGreaterThanOrEqual(seen.completedBackups);
      console.log(`backup kill loop: ${JSON.stringify(seen)}, ${final.length} backups verified at the end`);
      expect(seen.runs).toBe(RUNS);
    } finally {
      await cleanup();
    }
  }, 120_000);
});

describe('recovery says truly whether an interrupted delete happened', () => {
  for (const [label, deleteHappened] of [['applied, then the user wrote again', true], ['not applied, and the user wrote again', false]] as const) {
    it(label, async () => {
      const { dir, cleanup } = await tempDir('chatmem-applied-');
      const store = await openStore(`sqlite:${path.join(dir, 'memory.db')}`);
      try {
        const fixture = loadFixture();
        await store.exclusive('all', (ctx) => ctx.putMany([fixture[JOKO]!, ...Object.values(fixture).slice(0, 5)]));
        const backupDir = path.join(dir, 'backups');
        const audit = new AuditLog(path.join(dir, 'audit.log'));
        const ops = new Operations({ store, backupDir, audit, actor: ACTOR });
        // The steps of deleteUsers, stopped before the outcome is written (as a kill there leaves them).
        const op = await audit.begin('delete-users', ACTOR, { userIds: [JOKO] });
        await writeBackup(backupDir, [(await store.get(JOKO))!], { reason: 'delete-user', scope: [JOKO], source: store.url, auditOp: op.op });
        if (deleteHappened) await store.delete([JOKO]);
        await store.appendHistory(JOKO, { role: 'user', text: 'halo lagi' });
        expect(await store.get(JOKO)).not.toBeNull();
        const r = await ops.recover();
        expect(r.interrupted).toHaveLength(1);
        expect(r.interrupted[0]?.backup).toMatch(/^memory_backup_/);
        expect(r.interrupted[0]?.applied).toBe(deleteHappened);
        // A change the backup and the store prove is closed as done; otherwise it stays interrupted.
        const logged = (await ops.readAudit({ action: 'delete-users' })).find((e) => e.outcome === (deleteHappened ? 'done' : 'interrupted'));
        expect(logged, JSON.stringify(await ops.readAudit({ action: 'delete-users' }))).toBeDefined();
        if (!deleteHappened) expect(logged?.details).toMatchObject({ backupExists: true, applied: false });
      } finally {
        await store.close();
        await cleanup();
      }
    });
  }
});

describe('recovery says truly whether an interrupted clear happened', () => {
  for (const [label, clearHappened] of [['applied, then a user wrote again', true], ['not applied, and a user wrote again', false]] as const) {
    it(label, async () => {
      const { dir, cleanup } = await tempDir('chatmem-applied-');
      const store = await openStore(`sqlite:${path.join(dir, 'memory.db')}`);
      try {
        await store.exclusive('all', (ctx) => ctx.putMany(Object.values(loadFixture()).slice(0, 5)));
        const backupDir = path.join(dir, 'backups');
        const audit = new AuditLog(path.join(dir, 'audit.log'));
        const ops = new Operations({ store, backupDir, audit, actor: ACTOR });
        const op = await audit.begin('clear-all', ACTOR, {});
        await writeBackup(backupDir, { json: store.scanJson() }, { reason: 'clear-all', scope: 'full', source: store.url, auditOp: op.op });
        const someone = (await store.list({ limit: 1 })).items[0]!.user_id;
        if (clearHappened) await store.clear();
        await store.appendHistory(someone, { role: 'user', text: 'halo lagi' });
        expect(await store.count()).toBeGreaterThan(0);
        const r = await ops.recover();
        expect(r.interrupted.map((i) => [i.entry.action, i.applied])).toEqual([['clear-all', clearHappened]]);
      } finally {
        await store.close();
        await cleanup();
      }
    });
  }
});

describe('a store that cannot be parsed (E_STORE_PARSE): recovery through the CLI', () => {
  it('backups, verify and diff work; restore keeps the broken file aside (0600) and restores', async () => {
    const sb = await sandbox('json');
    try {
      const a = await sb.json<{ backup: string }>(['backup']);
      await sb.run(['delete', JOKO, '--yes']);
      const b = await sb.json<{ backup: string }>(['backup']);
      const broken = readFileSync(sb.storeFile).subarray(0, 5000);
      writeFileSync(sb.storeFile, broken);

      const users = await sb.run(['users']);
      expect([users.code, /E_STORE_PARSE/.test(users.stderr)]).toEqual([1, true]);
      const list = await sb.json<{ backups: unknown[] }>(['backups']);
      expect([list.code, list.doc.backups.length]).toEqual([0, 3]);
      const verify = await sb.run(['verify']);
      expect(verify.code).toBe(0);
      const diff = await sb.json<{ removed: string[] }>(['diff', a.doc.backup, b.doc.backup]);
      expect([diff.code, diff.doc.removed]).toEqual([0, [JOKO]]);
      const current = await sb.run(['diff', a.doc.backup]);
      expect([current.code, /E_STORE_PARSE/.test(current.stderr)]).toEqual([1, true]);
      // A restore of some users needs the current store: refused, the file untouched.
      const some = await sb.run(['restore', a.doc.backup, '--user', JOKO, '--yes']);
      expect([some.code, /E_STORE_PARSE/.test(some.stderr)]).toEqual([1, true]);
      expect(readFileSync(sb.storeFile).equals(broken)).toBe(true);

      const r = await sb.json<{ brokenStoreKeptAt: string; written: number }>(['restore', a.doc.backup, '--yes']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.doc.written).toBe(200);
      expect(r.stderr).toMatch(/cannot be read \(E_STORE_PARSE\)\. It will be kept aside/);
      const kept = r.doc.brokenStoreKeptAt;
      expect(path.dirname(kept)).toBe(path.dirname(sb.storeFile));
      expect(path.basename(kept)).toMatch(/^memory\.json\.broken-\d{8}T\d{6}Z$/);
      expect(readFileSync(kept).equals(broken)).toBe(true);
      expect(statSync(kept).mode & 0o777).toBe(0o600);
      const show = await sb.json<{ user: { name: string } }>(['show', JOKO]);
      expect([show.code, show.doc.user.name]).toEqual([0, 'Joko Santoso']);
      const audit = await sb.json<{ entries: { action: string; outcome: string }[] }>(['audit']);
      expect(audit.doc.entries.some((e) => e.action === 'restore' && e.outcome === 'done')).toBe(true);
    } finally {
      await sb.cleanup();
    }
  });
});
