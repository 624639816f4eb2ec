// Every command that reads backups, against every way a backup file can be damaged or replaced.
// Each cell says exactly what must happen: refused with a code and the store byte-for-byte unchanged,
// or reported as damaged while the good backup beside it still works.
import { execFileSync } from 'node:child_process';
import { promises as fsp, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeBackup } from '../../src/backup/create.js';
import { clearVerifyCache } from '../../src/backup/integrity.js';
import { resolveConfig } from '../../src/config.js';
import { openContext, type Context } from '../../src/context.js';
import { AuditLog } from '../../src/ops/audit.js';
import { Operations } from '../../src/ops/operations.js';
import { buildApp } from '../../src/server/app.js';
import { serve } from '../../src/server/serve.js';
import { serializeSeed } from '../../src/format/seed.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/types.js';
import { cleanEnv, runCli } from '../cli/helpers.js';
import { tempDir } from '../helpers/tmp.js';
import { ADMIN_TOKEN, http } from '../server/helpers.js';
import { loadFixture } from '../store/conformance.js';

const ACTOR = { kind: 'os' as const, name: 'corrupt-test' };
const USERS = Object.entries(loadFixture()).slice(0, 30);
const JOKO = '628161973069';
const OLD = 'memory_backup_20260101_100000';
const GOOD = 'memory_backup_20260102_100000';
const BAD = 'memory_backup_20260103_100000';

type Corruption =
  | 'flip'
  | 'truncated'
  | 'falseSha'
  | 'falseCount'
  | 'badManifest'
  | 'manifestOnly'
  | 'backupOnly'
  | 'symlinkFile'
  | 'symlinkManifest'
  | 'symlinkDir'
  | 'fifo'
  | 'directory';

const CORRUPTIONS: Corruption[] = ['flip', 'truncated', 'falseSha', 'falseCount', 'badManifest', 'manifestOnly', 'backupOnly', 'symlinkFile', 'symlinkManifest', 'symlinkDir', 'fifo', 'directory'];

interface World {
  dir: string;
  storeFile: string;
  backupDir: string;
  auditLog: string;
  outside: string;
  cleanup(): Promise<void>;
}

/** A JSON store of 30 users and three full backups (the newest also holds JOKO), then `c` applied to the newest. */
async function makeWorld(c: Corruption): Promise<World> {
  const { dir, cleanup } = await tempDir('chatmem-corrupt-');
  const storeDir = path.join(dir, 'data', 'storage');
  await fsp.mkdir(storeDir, { recursive: true });
  const storeFile = path.join(storeDir, 'memory.json');
  const backupDir = path.join(storeDir, 'backups');
  writeFileSync(storeFile, serializeSeed(USERS));
  const store = await openStore(`json:${storeFile}`);
  try {
    for (const [day, id] of [['01', OLD], ['02', GOOD], ['03', BAD]] as const) {
      const b = await writeBackup(backupDir, store.scan(), { reason: 'scheduled', scope: 'full', source: store.url, now: () => new Date(`2026-01-${day}T10:00:00Z`) });
      expect(b.id).toBe(id);
    }
    // The store moves on, so restoring any backup would change it.
    await store.setFlag(JOKO, 'active_intent', 'changed-after-backups');
  } finally {
    await store.close();
  }
  const outside = path.join(dir, 'outside');
  await fsp.mkdir(outside);
  const data = path.join(backupDir, `${BAD}.json`);
  const meta = path.join(backupDir, `${BAD}.meta.json`);
  const manifest = JSON.parse(readFileSync(meta, 'utf8')) as Record<string, unknown>;
  const text = readFileSync(data);
  switch (c) {
    case 'flip': {
      // One letter inside a name, past the middle: still valid JSON and a valid record, so only the checksum can tell.
      const m = /"name":"[A-Za-z]/g;
      const s = text.toString('latin1');
      let at = -1;
      for (let r = m.exec(s); r; r = m.exec(s)) if (r.index > s.length / 2) { at = r.index + r[0].length - 1; break; }
      expect(at).toBeGreaterThan(0);
      text[at] = text[at]! ^ 0x20;
      writeFileSync(data, text);
      break;
    }
    case 'truncated':
      writeFileSync(data, text.subarray(0, Math.floor(text.length / 2)));
      break;
    case 'falseSha':
      writeFileSync(meta, JSON.stringify({ ...manifest, sha256: 'ab'.repeat(32) }));
      break;
    case 'falseCount':
      writeFileSync(meta, JSON.stringify({ ...manifest, users: (manifest.users as number) + 1 }));
      break;
    case 'badManifest':
      writeFileSync(meta, '{"format": "chatmem-backup", "file": ');
      break;
    case 'manifestOnly':
      await fsp.rm(data);
      break;
    case 'backupOnly':
      await fsp.rm(meta);
      break;
    case 'symlinkFile': {
      // The outside file is a perfect copy: only refusing the link itself keeps it out.
      const target = path.join(outside, 'evil.json');
      writeFileSync(target, text);
      await fsp.rm(data);
      await fsp.symlink(target, data);
      break;
    }
    case 'symlinkManifest': {
      // A manifest outside the directory could vouch for anything: a link to it is not read.
      const target = path.join(outside, 'evil.meta.json');
      writeFileSync(target, JSON.stringify(manifest));
      await fsp.rm(meta);
      await fsp.symlink(target, meta);
      break;
    }
    case 'symlinkDir':
      await fsp.rm(data);
      await fsp.symlink(outside, data);
      break;
    case 'fifo':
      await fsp.rm(data);
      execFileSync('mkfifo', ['-m', '600', data]);
      break;
    case 'directory':
      await fsp.rm(data);
      await fsp.mkdir(data);
      break;
  }
  clearVerifyCache();
  return { dir, storeFile, backupDir, auditLog: path.join(storeDir, 'audit.log'), outside, cleanup };
}

function opsFor(w: World, store: Store): Operations {
  return new Operations({ store, backupDir: w.backupDir, audit: new AuditLog(w.auditLog), actor: ACTOR });
}

/** What each corruption must give, for the paths that refuse (null: the path works). */
const REFUSAL: Record<Corruption, string | null> = {
  flip: 'E_BACKUP_VERIFY',
  truncated: 'E_BACKUP_VERIFY',
  falseSha: 'E_BACKUP_VERIFY',
  falseCount: 'E_BACKUP_VERIFY',
  badManifest: 'E_BACKUP_MANIFEST',
  manifestOnly: 'E_BACKUP_NOT_FOUND',
  backupOnly: null,
  symlinkFile: 'E_BACKUP_NOT_REGULAR',
  symlinkManifest: 'E_BACKUP_MANIFEST',
  symlinkDir: 'E_BACKUP_NOT_REGULAR',
  fifo: 'E_BACKUP_NOT_REGULAR',
  directory: 'E_BACKUP_NOT_REGULAR',
};

/** The listing's word for the newest entry (cheap facts only: size, manifest, file type), or absent. */
const LISTED: Record<Corruption, [string, string | undefined] | 'absent'> = {
  // A flipped byte or a false checksum cannot be seen without hashing; `verify` and every reader see it.
  flip: ['verified', undefined],
  truncated: ['damaged', 'E_BACKUP_VERIFY'],
  falseSha: ['verified', undefined],
  falseCount: ['verified', undefined],
  badManifest: ['damaged', 'E_BACKUP_MANIFEST'],
  manifestOnly: 'absent',
  backupOnly: ['legacy', undefined],
  symlinkFile: ['refused', 'E_BACKUP_NOT_REGULAR'],
  symlinkManifest: ['damaged', 'E_BACKUP_MANIFEST'],
  symlinkDir: ['refused', 'E_BACKUP_NOT_REGULAR'],
  fifo: ['refused', 'E_BACKUP_NOT_REGULAR'],
  directory: ['refused', 'E_BACKUP_NOT_REGULAR'],
};

describe.each(CORRUPTIONS)('backup damaged by %s', (c) => {
  let w: World;
  let store: Store;
  let ops: Operations;
  let storeBytes: Buffer;

  beforeAll(async () => {
    w = await makeWorld(c);
    store = await openStore(`json:${w.storeFile}`);
    ops = opsFor(w, store);
    storeBytes = readFileSync(w.storeFile);
  });
  afterAll(async () => {
    await store.close();
    await w.cleanup();
  });

  const unchanged = (): void => {
    expect(readFileSync(w.storeFile).equals(storeBytes)).toBe(true);
  };

  it('list: the entry is shown as what it is; the good backups are still listed', async () => {
    const list = await ops.listBackups();
    expect(list.filter((b) => b.id !== BAD).map((b) => [b.id, b.state])).toEqual([[GOOD, 'verified'], [OLD, 'verified']]);
    const bad = list.find((b) => b.id === BAD);
    const want = LISTED[c];
    if (want === 'absent') expect(bad).toBeUndefined();
    else expect([bad?.state, bad?.problem?.code]).toEqual(want);
  });

  it('show: reports the verification; never follows a link', async () => {
    const code = REFUSAL[c];
    if (code === 'E_BACKUP_NOT_FOUND' || code === 'E_BACKUP_NOT_REGULAR') {
      await expect(ops.inspectBackup(BAD)).rejects.toMatchObject({ code });
      return;
    }
    const info = await ops.inspectBackup(BAD, { user: JOKO });
    if (code === null) expect(info.verification).toMatchObject({ ok: true, legacy: true, users: 30 });
    else {
      expect(info.verification).toMatchObject({ ok: false, error: { code } });
      // A record from a file that failed its check is not shown as the backup's.
      expect(info.record).toBeUndefined();
    }
  });

  it('verify ID and verify-all: the entry fails with its code, the others pass', async () => {
    const code = REFUSAL[c];
    if (code === 'E_BACKUP_NOT_FOUND') await expect(ops.verifyBackups(BAD)).rejects.toMatchObject({ code });
    else {
      const [one] = await ops.verifyBackups(BAD);
      if (code === null) expect(one).toMatchObject({ ok: true, legacy: true, users: 30 });
      else expect(one).toMatchObject({ ok: false, error: { code } });
    }
    const all = await ops.verifyBackups();
    expect(all.filter((r) => r.id !== BAD).map((r) => [r.id, r.ok])).toEqual([[GOOD, true], [OLD, true]]);
    const bad = all.find((r) => r.id === BAD);
    if (code === 'E_BACKUP_NOT_FOUND') expect(bad).toBeUndefined();
    else expect(bad?.error?.code ?? null).toBe(code);
  });

  it('diff: refused with the code (a legacy file may be diffed); a good backup still diffs', async () => {
    const code = REFUSAL[c];
    if (code === null) expect((await ops.diff(BAD, 'current')).changed.map((x) => x.user_id)).toEqual([JOKO]);
    else await expect(ops.diff(BAD, 'current')).rejects.toMatchObject({ code });
    expect((await ops.diff(GOOD, 'current')).changed.map((x) => x.user_id)).toEqual([JOKO]);
  });

  it.each([
    ['restore full', {}],
    ['restore --user', { users: [JOKO] }],
    ['restore --merge', { mode: 'merge' as const }],
  ])('%s: refused with the code, store byte-for-byte unchanged, no backup written', async (_name, options) => {
    const before = (await fsp.readdir(w.backupDir)).sort();
    const code = REFUSAL[c] ?? 'E_BACKUP_UNVERIFIED';
    await expect(ops.restore(BAD, options)).rejects.toMatchObject({ code });
    unchanged();
    expect((await fsp.readdir(w.backupDir)).sort()).toEqual(before);
  });

  it('import of the backup file: refused with the code, store unchanged (a file without manifest imports as a seed file)', async () => {
    const file = path.join(w.backupDir, `${BAD}.json`);
    const code = c === 'manifestOnly' ? 'E_NOT_FOUND' : REFUSAL[c];
    if (code === null) {
      const r = await ops.importFile(file);
      expect(r).toMatchObject({ imported: 30, overwritten: 30 });
      // Put the store back for the cells after this one.
      await ops.restore(GOOD);
      await store.setFlag(JOKO, 'active_intent', 'changed-after-backups');
      storeBytes = readFileSync(w.storeFile);
      return;
    }
    await expect(ops.importFile(file)).rejects.toMatchObject({ code });
    unchanged();
  });

  it('prune --keep-last 1: never removes or counts the damaged entry, says so, removes only a good old one', async () => {
    const badFiles = (await fsp.readdir(w.backupDir)).filter((n) => n.startsWith(BAD)).sort();
    const plan = await ops.prune({ last: 1 }, { dryRun: true });
    const code = REFUSAL[c];
    if (code === null) {
      // A legacy file that parses is an ordinary (dated) backup to the policy (the import cell above made newer ones).
      expect([...plan.keep, ...plan.remove].filter((k) => k.id === BAD)).toHaveLength(1);
      expect(plan.damaged).toEqual([]);
      return;
    }
    if (code === 'E_BACKUP_NOT_FOUND') expect(plan.damaged).toEqual([]);
    else {
      expect(plan.damaged.map((d) => [d.id, d.code])).toEqual([[BAD, code]]);
      expect(plan.keep.find((k) => k.id === BAD)?.reasons.join()).toMatch(/damaged .*not counted, never removed/);
    }
    const r = await ops.prune({ last: 1 });
    expect(r.removed).toEqual([OLD]);
    expect(r.keep.map((k) => k.id)).toContain(GOOD);
    expect((await fsp.readdir(w.backupDir)).filter((n) => n.startsWith(BAD)).sort()).toEqual(badFiles);
  });

  it('recover (daemon start) with an interrupted operation pending: goes on, reports it', async () => {
    await ops.audit.begin('delete-users', ACTOR, { userIds: [JOKO] });
    const r = await ops.recover();
    expect(r.interrupted).toHaveLength(1);
    expect(r.interrupted[0]).toMatchObject({ backup: null, applied: false });
    // A manifest without backup is an orphan (a killed prune): removed; everything else stays.
    if (c === 'manifestOnly') expect(r.leftovers.removedOrphans).toEqual([`${BAD}.meta.json`]);
    else expect(r.leftovers.removedOrphans).toEqual([]);
    unchanged();
  });
});

describe('all the damage at once', () => {
  let w: World;
  beforeAll(async () => {
    // One directory holding every kind of damage under its own name, beside the good backups.
    w = await makeWorld('flip');
    const src = path.join(w.backupDir, `${GOOD}.json`);
    const srcMeta = JSON.parse(readFileSync(path.join(w.backupDir, `${GOOD}.meta.json`), 'utf8')) as Record<string, unknown>;
    let n = 4;
    const next = (): string => `memory_backup_202601${String(n++).padStart(2, '0')}_100000`;
    const copy = (id: string, manifest: Record<string, unknown> | string | null): void => {
      writeFileSync(path.join(w.backupDir, `${id}.json`), readFileSync(src));
      if (manifest !== null) writeFileSync(path.join(w.backupDir, `${id}.meta.json`), typeof manifest === 'string' ? manifest : JSON.stringify({ ...manifest, file: `${id}.json` }));
    };
    copy(next(), { ...srcMeta, sha256: 'cd'.repeat(32) });
    copy(next(), '{broken');
    writeFileSync(path.join(w.backupDir, `${next()}.meta.json`), JSON.stringify(srcMeta));
    await fsp.symlink(path.join(w.outside), path.join(w.backupDir, `${next()}.json`));
    execFileSync('mkfifo', ['-m', '600', path.join(w.backupDir, `${next()}.json`)]);
    await fsp.mkdir(path.join(w.backupDir, `${next()}.json`));
  });
  afterAll(async () => {
    await w.cleanup();
  });

  it('the CLI lists, verifies and refuses, and the daemon starts with an interrupted operation pending', async () => {
    const env = cleanEnv({ CHATMEM_STORE: `json:${w.storeFile}` });
    const list = await runCli(['backups', '--json'], { cwd: w.dir, env });
    expect(list.code).toBe(0);
    const states = (JSON.parse(list.stdout) as { backups: { id: string; state: string }[] }).backups.map((b) => b.state).sort();
    expect(states).toEqual(['damaged', 'refused', 'refused', 'refused', 'verified', 'verified', 'verified', 'verified'].sort());
    const human = await runCli(['backups'], { cwd: w.dir, env });
    expect(human.stderr).toMatch(/4 entries are damaged or refused and will not be restored/);

    const verify = await runCli(['verify', '--json'], { cwd: w.dir, env });
    expect(verify.code).toBe(1);
    const results = (JSON.parse(verify.stdout) as { results: { id: string; ok: boolean; error?: { code: string } }[] }).results;
    expect(results.filter((r) => r.ok).map((r) => r.id).sort()).toEqual([OLD, GOOD].sort());
    expect(results.filter((r) => !r.ok).map((r) => r.error?.code).sort()).toEqual(
      ['E_BACKUP_VERIFY', 'E_BACKUP_VERIFY', 'E_BACKUP_MANIFEST', 'E_BACKUP_NOT_REGULAR', 'E_BACKUP_NOT_REGULAR', 'E_BACKUP_NOT_REGULAR'].sort(),
    );

    const before = readFileSync(w.storeFile);
    const refused = await runCli(['restore', BAD, '--yes'], { cwd: w.dir, env });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/E_BACKUP_VERIFY/);
    const show = await runCli(['backups', 'show', BAD], { cwd: w.dir, env });
    expect(show.code).toBe(1);
    expect(show.stdout).toMatch(/Checked\s+FAILED E_BACKUP_VERIFY/);
    const link = await runCli(['restore', 'memory_backup_20260107_100000', '--yes'], { cwd: w.dir, env });
    expect([link.code, /E_BACKUP_NOT_REGULAR/.test(link.stderr)]).toEqual([1, true]);
    expect(readFileSync(w.storeFile).equals(before)).toBe(true);
    const good = await runCli(['restore', GOOD, '--yes', '--json'], { cwd: w.dir, env });
    expect(good.code).toBe(0);

    // The daemon: an interrupted delete is pending, every kind of damage is present; it must start.
    const audit = new AuditLog(w.auditLog);
    await audit.begin('delete-users', ACTOR, { userIds: [JOKO] });
    const config = await resolveConfig({ cwd: w.dir, store: `json:${w.storeFile}`, env: {} });
    const lines: string[] = [];
    const server = await serve(config, { logger: false, handleSignals: false, port: 0, env: { CHATMEM_ADMIN_TOKEN: ADMIN_TOKEN }, log: (l) => lines.push(l) });
    try {
      expect(lines.join('\n')).toMatch(/interrupted operation delete-users .*: backup missing, change not applied/);
      const token = ADMIN_TOKEN;
      const listed = await http<{ backups: { state: string }[] }>(server.url, 'GET', '/v1/admin/backups', { token });
      expect(listed.status).toBe(200);
      // The eight above and the backup the CLI's restore of GOOD wrote first.
      expect(listed.body.backups).toHaveLength(9);
      const all = await http<{ ok: boolean; results: unknown[] }>(server.url, 'POST', '/v1/admin/verify', { token });
      expect([all.status, all.body.ok, all.body.results.length]).toEqual([200, false, 9]);
      const r = await http<{ error: { code: string } }>(server.url, 'POST', '/v1/admin/restore', { token, json: { backup: 'memory_backup_20260107_100000' } });
      expect([r.status, r.body.error.code]).toEqual([422, 'E_BACKUP_NOT_REGULAR']);
      const flip = await http<{ error: { code: string } }>(server.url, 'POST', '/v1/admin/restore', { token, json: { backup: BAD, users: [JOKO] } });
      expect([flip.status, flip.body.error.code]).toEqual([422, 'E_BACKUP_VERIFY']);
    } finally {
      await server.close();
    }
  });
});

describe('legacy backups need explicit acceptance', () => {
  it('API: 409 E_BACKUP_UNVERIFIED, then allowUnverified restores; CLI: the question names it, --yes accepts', async () => {
    const w = await makeWorld('backupOnly');
    let ctx: Context | null = null;
    try {
      const config = await resolveConfig({ cwd: w.dir, store: `json:${w.storeFile}`, env: {} });
      ctx = await openContext(config, { role: 'daemon' });
      const app = await buildApp({ ctx, adminToken: ADMIN_TOKEN, apiToken: null, logger: false });
      await app.listen({ host: '127.0.0.1', port: 0 });
      const addr = app.server.address();
      const url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
      try {
        const no = await http<{ error: { code: string } }>(url, 'POST', '/v1/admin/restore', { token: ADMIN_TOKEN, json: { backup: BAD } });
        expect([no.status, no.body.error.code]).toEqual([409, 'E_BACKUP_UNVERIFIED']);
        expect((await ctx.store.get(JOKO))?.flags.active_intent).toBe('changed-after-backups');
        const dry = await http(url, 'POST', '/v1/admin/restore', { token: ADMIN_TOKEN, json: { backup: BAD, dryRun: true } });
        expect(dry.status).toBe(200);
        const yes = await http(url, 'POST', '/v1/admin/restore', { token: ADMIN_TOKEN, json: { backup: BAD, allowUnverified: true } });
        expect(yes.status).toBe(200);
        expect((await ctx.store.get(JOKO))?.flags.active_intent).not.toBe('changed-after-backups');
      } finally {
        await app.close();
      }
    } finally {
      await ctx?.close();
    }
    try {
      const env = cleanEnv({ CHATMEM_STORE: `json:${w.storeFile}` });
      const s = await openStore(`json:${w.storeFile}`);
      await s.setFlag(JOKO, 'active_intent', 'changed-again');
      await s.close();
      const asked = await runCli(['restore', BAD], { cwd: w.dir, env, isTTY: true, input: ['n'] });
      expect(asked.code).toBe(2);
      expect(asked.stderr).toMatch(/Restore memory_backup_20260103_100000 \(unverified legacy backup: no manifest, no checksum\)\? \[y\/N\]/);
      const yes = await runCli(['restore', BAD, '--yes'], { cwd: w.dir, env });
      expect(yes.code).toBe(0);
      expect(yes.stderr).toMatch(/unverified legacy backup.*y \(--yes\)/);
    } finally {
      await w.cleanup();
    }
  });
});

describe('the undo of a delete verifies its backup', () => {
  it('a flipped byte in the delete\'s backup refuses the undo; the good one restores the user', async () => {
    const w = await makeWorld('backupOnly');
    const store = await openStore(`json:${w.storeFile}`);
    try {
      const ops = opsFor(w, store);
      const del = await ops.deleteUsers([JOKO]);
      const file = del.backupFile;
      const original = readFileSync(file);
      const flipped = Buffer.from(original);
      const at = flipped.indexOf('"name":"') + 8;
      flipped[at] = flipped[at]! ^ 0x20;
      writeFileSync(file, flipped);
      const bytes = readFileSync(w.storeFile);
      await expect(ops.restore(del.backup)).rejects.toMatchObject({ code: 'E_BACKUP_VERIFY' });
      expect(readFileSync(w.storeFile).equals(bytes)).toBe(true);
      writeFileSync(file, original);
      await ops.restore(del.backup);
      expect(await store.get(JOKO)).not.toBeNull();
    } finally {
      await store.close();
      await w.cleanup();
    }
  });
});
