import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config.js';
import { openContext } from '../../src/context.js';
import { generateIdentity } from '../../src/offsite/age.js';
import { OffsiteTarget } from '../../src/offsite/target.js';
import { adminTokenFile } from '../../src/server/daemon-info.js';
import { serve } from '../../src/server/serve.js';
import { cleanEnv, sandbox, type Sandbox } from '../cli/helpers.js';
import { dyingRelay, S3_KEY, S3_SECRET, startS3 } from '../helpers/s3.js';

let s3: Awaited<ReturnType<typeof startS3>>;
let seq = 0;
const sandboxes: Sandbox[] = [];

beforeAll(async () => {
  s3 = await startS3();
});
afterAll(async () => {
  for (const sb of sandboxes) await sb.cleanup();
  await s3.close();
});

function newPrefix(): string {
  return `s3://chatmem-test/wired${seq++}-${process.pid}`;
}

function offsiteEnv(sb: Sandbox, url: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return cleanEnv({ CHATMEM_STORE: sb.storeUrl, CHATMEM_OFFSITE: url, CHATMEM_S3_ENDPOINT: s3.endpoint, AWS_ACCESS_KEY_ID: S3_KEY, AWS_SECRET_ACCESS_KEY: S3_SECRET, AWS_REGION: 'us-east-1', ...extra });
}

function target(url: string, extra: { identityFile?: string } = {}): OffsiteTarget {
  return new OffsiteTarget({ url, endpoint: s3.endpoint, region: 'us-east-1', accessKeyId: S3_KEY, secretAccessKey: S3_SECRET, ...extra });
}

async function box(empty = false): Promise<Sandbox> {
  const sb = await sandbox('sqlite', { empty });
  sandboxes.push(sb);
  return sb;
}

/** Polls `check` until it returns true, bounded by count and time (a loaded 2-core machine is slow, not stuck). */
async function eventually(check: () => Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  for (let i = 0; i < 600 && Date.now() < end; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

interface ListedBackup {
  id: string;
  location?: string;
  users: number | null;
}

describe('off-site copies wired into the product (s3rver)', () => {
  it('the CLI uploads a manual backup before it exits; `backups` shows local, off-site and both', async () => {
    const sb = await box();
    const url = newPrefix();
    const env = offsiteEnv(sb, url);
    const first = await sb.json<{ backup: string }>(['backup'], { env });
    expect(first.code).toBe(0);
    expect((await target(url).list()).map((r) => r.fileName)).toEqual([`${first.doc.backup}.json`]);

    // Made without the off-site target: local only.
    const localOnly = await sb.json<{ backup: string }>(['backup']);
    // Progress goes to stderr (notes are left out of --json runs).
    const shown = await sb.run(['backup'], { env });
    expect(shown.stderr).toMatch(/off-site: uploaded memory_backup_\S+\.json to s3:\/\/chatmem-test\//);
    // Uploaded, then its local copy lost: off-site only.
    const lost = await sb.json<{ backup: string }>(['backup'], { env });
    await fsp.rm(path.join(sb.backupDir, `${lost.doc.backup}.json`));
    await fsp.rm(path.join(sb.backupDir, `${lost.doc.backup}.meta.json`));
    const listed = await sb.json<{ backups: ListedBackup[] }>(['backups'], { env });
    const where = Object.fromEntries(listed.doc.backups.map((b) => [b.id, b.location]));
    expect(where).toMatchObject({ [first.doc.backup]: 'both', [localOnly.doc.backup]: 'local', [lost.doc.backup]: 'offsite' });
    expect(listed.doc.backups.find((b) => b.id === lost.doc.backup)?.users).toBe(200);
    const table = await sb.run(['backups'], { env });
    expect(table.stdout).toMatch(/WHERE/);
    expect(table.stdout).toMatch(new RegExp(`${lost.doc.backup}\\s.*offsite`));
    // Without the target, the list is the local one, unmarked.
    const plain = await sb.json<{ backups: ListedBackup[] }>(['backups']);
    expect(plain.doc.backups.map((b) => b.id)).not.toContain(lost.doc.backup);
  });

  it('wrong bucket or credentials: the backup succeeds, the upload is a warning with a code; local stays intact', async () => {
    const sb = await box();
    const badBucket = offsiteEnv(sb, 's3://no-such-bucket/x');
    const r = await sb.json<{ backup: string }>(['backup'], { env: badBucket });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('E_OFFSITE_BUCKET');
    expect((await sb.json<{ ok: boolean }>(['verify', r.doc.backup])).doc.ok).toBe(true);
    const badKey = offsiteEnv(sb, newPrefix(), { AWS_ACCESS_KEY_ID: 'NOBODY' });
    const listed = await sb.run(['backups'], { env: badKey });
    expect(listed.code).toBe(0);
    expect(listed.stderr).toContain('E_OFFSITE_AUTH');
    expect(listed.stdout).toContain(r.doc.backup);
    // `offsite sync` is about the upload itself: there the failure is the command's failure, with its code.
    const sync = await sb.run(['offsite', 'sync'], { env: badBucket });
    expect(sync.code).toBe(2);
    expect(sync.stderr).toContain('E_OFFSITE_BUCKET');
    const noCreds = await sb.run(['backup'], { env: cleanEnv({ CHATMEM_STORE: sb.storeUrl, CHATMEM_OFFSITE: 's3://b1/x' }) });
    expect(noCreds.code).toBe(2);
    expect(noCreds.stderr).toContain('E_OFFSITE_CONFIG');
  });

  it('forget replaces the off-site copies of the backups it rewrote: the person is gone off-site too', async () => {
    const sb = await box();
    const url = newPrefix();
    const env = offsiteEnv(sb, url);
    const made = await sb.json<{ backup: string }>(['backup'], { env });
    expect(made.code).toBe(0);
    const users = await sb.json<{ users: { user_id: string }[] }>(['users'], { env });
    const victim = users.doc.users[0]!.user_id;
    const key = (await target(url).list()).find((r) => r.fileName === `${made.doc.backup}.json`)!.objectKey;
    expect(await target(url).client.getText(key)).toContain(JSON.stringify(victim));
    const forgot = await sb.run(['forget', victim, '--yes'], { env });
    expect(forgot.code, forgot.stderr).toBe(0);
    await eventually(async () => {
      const now = (await target(url).list()).find((r) => r.fileName === `${made.doc.backup}.json`);
      return now !== undefined && !(await target(url).client.getText(now.objectKey)).includes(JSON.stringify(victim));
    }, 'the rewritten copy off-site');
    const copy = (await target(url).list()).find((r) => r.fileName === `${made.doc.backup}.json`)!;
    expect(copy.manifest?.users).toBe(199);
  });

  it('`offsite sync` uploads what is missing and names what is off-site only', async () => {
    const sb = await box();
    const url = newPrefix();
    const env = offsiteEnv(sb, url);
    const a = await sb.json<{ backup: string }>(['backup']);
    const b = await sb.json<{ backup: string }>(['backup', '--gzip']);
    const c = await sb.json<{ backup: string }>(['backup'], { env });
    await fsp.rm(path.join(sb.backupDir, `${c.doc.backup}.json`));
    await fsp.rm(path.join(sb.backupDir, `${c.doc.backup}.meta.json`));
    const sync = await sb.json<{ uploaded: string[]; offsiteOnly: string[] }>(['offsite', 'sync'], { env });
    expect(sync.code).toBe(0);
    expect(sync.doc.uploaded.sort()).toEqual([`${a.doc.backup}.json`, `${b.doc.backup}.json.gz`].sort());
    expect(sync.doc.offsiteOnly).toEqual([`${c.doc.backup}.json`]);
    expect((await target(url).list()).map((r) => r.fileName).sort()).toEqual([`${a.doc.backup}.json`, `${b.doc.backup}.json.gz`, `${c.doc.backup}.json`].sort());
    const again = await sb.json<{ uploaded: string[] }>(['offsite', 'sync'], { env });
    expect(again.doc.uploaded).toEqual([]);
  });

  for (const encrypted of [false, true]) {
    it(`a fresh machine with only off-site copies lists, diffs and restores (whole store, one user)${encrypted ? ', encrypted' : ''}`, async () => {
      const origin = await box();
      const url = newPrefix();
      const keys = generateIdentity();
      const idFile = path.join(origin.dir, 'offsite.key');
      await fsp.writeFile(idFile, `${keys.identity}\n`, { mode: 0o600 });
      const encEnv = (sb: Sandbox, withKey: boolean) => offsiteEnv(sb, url, withKey ? { CHATMEM_OFFSITE_IDENTITY: idFile } : {});
      const configFor = async (sb: Sandbox) => {
        if (encrypted) await fsp.writeFile(path.join(sb.dir, 'chatmem.config.json'), JSON.stringify({ offsiteRecipients: [keys.recipient] }));
      };
      await configFor(origin);
      const made = await origin.json<{ backup: string }>(['backup'], { env: encEnv(origin, false) });
      expect(made.code).toBe(0);
      const objects = await target(url).client.list(`wired${url.split('wired')[1]}/`);
      expect(objects.every((o) => o.key.endsWith('.age'))).toBe(encrypted);
      const someUser = JSON.parse((await origin.run(['users', '--json', '--limit', '1'])).stdout) as { users: { user_id: string }[] };
      const user = someUser.users[0]?.user_id ?? '';
      expect(user).not.toBe('');

      // Machine 1: list, then restore one user.
      const one = await box(true);
      await configFor(one);
      const listed = await one.json<{ backups: ListedBackup[] }>(['backups'], { env: encEnv(one, true) });
      expect(listed.doc.backups).toEqual([expect.objectContaining({ id: made.doc.backup, location: 'offsite', users: 200 })]);
      if (encrypted) {
        const noKey = await one.run(['restore', made.doc.backup, '--user', user, '--yes'], { env: encEnv(one, false) });
        expect(noKey.code).toBe(2);
        expect(noKey.stderr).toContain('E_OFFSITE_KEY');
        expect(await one.backupFiles()).toEqual([]);
      }
      const r1 = await one.run(['restore', made.doc.backup, '--user', user, '--yes'], { env: encEnv(one, true) });
      expect(r1.code, r1.stderr + r1.stdout).toBe(0);
      const stats1 = JSON.parse((await one.run(['stats', '--json'])).stdout) as { users: number };
      expect(stats1.users).toBe(1);
      expect(JSON.parse((await one.run(['show', user, '--json'])).stdout)).toEqual(JSON.parse((await origin.run(['show', user, '--json'])).stdout));

      // Its fetched copy lost again: diff fetches it once more.
      await fsp.rm(path.join(one.backupDir, `${made.doc.backup}.json`));
      await fsp.rm(path.join(one.backupDir, `${made.doc.backup}.meta.json`));
      const d = await one.json<{ removed: string[]; unchanged: number }>(['diff', made.doc.backup, 'current'], { env: encEnv(one, true) });
      expect(d.code, d.stderr).toBe(0);
      expect(d.doc.removed).toHaveLength(199);
      expect(d.doc.unchanged).toBe(1);

      // Machine 2: verify, then restore everything.
      const two = await box(true);
      await configFor(two);
      const v = await two.json<{ ok: boolean; results: { users: number }[] }>(['verify', made.doc.backup], { env: encEnv(two, true) });
      expect(v.code, v.stderr).toBe(0);
      expect(v.doc.results[0]?.users).toBe(200);
      const all = await two.run(['restore', made.doc.backup, '--yes'], { env: encEnv(two, true) });
      expect(all.code, all.stderr).toBe(0);
      const stats2 = JSON.parse((await two.run(['stats', '--json'])).stdout) as { users: number };
      expect(stats2.users).toBe(200);
      // The fetched copy is now local (plain), verified, and listed as both.
      const after = await two.json<{ backups: ListedBackup[] }>(['backups'], { env: encEnv(two, true) });
      expect(after.doc.backups.find((b) => b.id === made.doc.backup)?.location).toBe('both');
      expect((await fsp.readFile(path.join(two.backupDir, `${made.doc.backup}.json`))).equals(await fsp.readFile(path.join(origin.backupDir, `${made.doc.backup}.json`)))).toBe(true);
    });
  }

  it('prune applies to both places; off-site-only backups take part in the plan', async () => {
    const sb = await box();
    const url = newPrefix();
    const env = offsiteEnv(sb, url);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await sb.json<{ backup: string }>(['backup'], { env })).doc.backup);
    // A fourth is local only; the oldest exists off-site only.
    ids.push((await sb.json<{ backup: string }>(['backup'])).doc.backup);
    await fsp.rm(path.join(sb.backupDir, `${ids[0]}.json`));
    await fsp.rm(path.join(sb.backupDir, `${ids[0]}.meta.json`));
    const plan = await sb.json<{ remove: { id: string }[] }>(['prune', '--keep-last', '1', '--dry-run'], { env });
    expect(plan.doc.remove.map((r) => r.id).sort()).toEqual(ids.slice(0, 3).sort());
    const r = await sb.json<{ removed: string[] }>(['prune', '--keep-last', '1', '--yes'], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.doc.removed.sort()).toEqual(ids.slice(0, 3).sort());
    expect(await target(url).list()).toEqual([]);
    expect(await sb.backupFiles()).toEqual([`${ids[3]}.json`]);
  });

  it('the daemon copies the backup written before a delete made through the API, and /metrics shows lag and failures', async () => {
    const sb = await box();
    const url = newPrefix();
    const config = await resolveConfig({ cwd: sb.dir, env: offsiteEnv(sb, url) });
    const server = await serve(config, { logger: false, handleSignals: false, port: 0, env: {} });
    try {
      const token = (await fsp.readFile(adminTokenFile(config), 'utf8')).trim();
      const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
      const users = (await (await fetch(`${server.url}/v1/admin/users?limit=1`, { headers })).json()) as { items: { user_id: string }[] };
      const res = await fetch(`${server.url}/v1/admin/delete`, { method: 'POST', headers, body: JSON.stringify({ users: [users.items[0]?.user_id] }) });
      expect(res.status).toBe(200);
      const { backup } = (await res.json()) as { backup: string };
      await eventually(async () => (await target(url).list()).some((r) => r.fileName === `${backup}.json`), 'the pre-delete backup off-site');
      const listed = (await (await fetch(`${server.url}/v1/admin/backups`, { headers })).json()) as { backups: ListedBackup[] };
      expect(listed.backups.find((b) => b.id === backup)?.location).toBe('both');
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      expect(metrics).toMatch(/^chatmem_offsite_upload_lag_seconds 0$/m);
      expect(metrics).toMatch(/^chatmem_offsite_upload_failures_total 0$/m);
      expect(metrics).toMatch(/^chatmem_offsite_uploads_total 1$/m);
      // The local copy lost: the daemon restores the deleted user from the off-site copy, fetched on demand.
      await fsp.rm(path.join(config.backupDir, `${backup}.json`));
      await fsp.rm(path.join(config.backupDir, `${backup}.meta.json`));
      const gone = users.items[0]?.user_id ?? '';
      expect((await fetch(`${server.url}/v1/admin/users/${encodeURIComponent(gone)}`, { headers })).status).toBe(404);
      const restored = await fetch(`${server.url}/v1/admin/restore`, { method: 'POST', headers, body: JSON.stringify({ backup }) });
      expect(restored.status).toBe(200);
      expect((await fetch(`${server.url}/v1/admin/users/${encodeURIComponent(gone)}`, { headers })).status).toBe(200);
    } finally {
      await server.close();
    }

    // Same store, an endpoint that does not answer: the backup still succeeds; lag and failures grow.
    const dead = await resolveConfig({ cwd: sb.dir, env: offsiteEnv(sb, url, { CHATMEM_S3_ENDPOINT: 'http://127.0.0.1:9' }) });
    const down = await serve(dead, { logger: false, handleSignals: false, port: 0, env: {} });
    try {
      const token = (await fsp.readFile(adminTokenFile(dead), 'utf8')).trim();
      const res = await fetch(`${down.url}/v1/admin/backups`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
      expect(res.status).toBe(201);
      let text = '';
      await eventually(async () => {
        text = await (await fetch(`${down.url}/metrics`)).text();
        return /^chatmem_offsite_upload_failures_total [1-9]/m.test(text);
      }, 'a failed upload in /metrics');
      expect(Number(/^chatmem_offsite_upload_lag_seconds (\S+)$/m.exec(text)?.[1])).toBeGreaterThanOrEqual(0);
      expect(text).toMatch(/^chatmem_offsite_pending_backups 1$/m);
      await eventually(async () => Number(/^chatmem_offsite_upload_lag_seconds (\S+)$/m.exec(await (await fetch(`${down.url}/metrics`)).text())?.[1]) > 0.5, 'lag growing');
    } finally {
      await down.close();
    }
    // The next daemon with a working endpoint uploads at start what the stopped one could not.
    const local = (await fsp.readdir(sb.backupDir)).filter((n) => !n.endsWith('.meta.json')).sort();
    expect((await target(url).list()).map((r) => r.fileName).sort()).not.toEqual(local);
    const again = await serve(config, { logger: false, handleSignals: false, port: 0, env: {} });
    try {
      await eventually(async () => JSON.stringify((await target(url).list()).map((r) => r.fileName).sort()) === JSON.stringify(local), 'the start-up sync');
    } finally {
      await again.close();
    }
  });

  it('never overwrites a different backup that holds the same name off-site', async () => {
    const sb = await box();
    const url = newPrefix();
    const a = await sb.json<{ backup: string; sha256: string }>(['backup'], { env: offsiteEnv(sb, url) });
    const users = JSON.parse((await sb.run(['users', '--json', '--limit', '1'])).stdout) as { users: { user_id: string }[] };
    expect((await sb.run(['delete', users.users[0]?.user_id ?? '', '--yes'])).code).toBe(0);
    const b = await sb.json<{ backup: string; sha256: string }>(['backup']);
    expect(b.doc.sha256).not.toBe(a.doc.sha256);
    // A lost local copy whose name another backup took again (same second after the loss, or another machine).
    await fsp.rm(path.join(sb.backupDir, `${a.doc.backup}.meta.json`));
    await fsp.rename(path.join(sb.backupDir, `${b.doc.backup}.json`), path.join(sb.backupDir, `${a.doc.backup}.json`));
    const m = JSON.parse(await fsp.readFile(path.join(sb.backupDir, `${b.doc.backup}.meta.json`), 'utf8')) as Record<string, unknown>;
    await fsp.writeFile(path.join(sb.backupDir, `${a.doc.backup}.meta.json`), JSON.stringify({ ...m, file: `${a.doc.backup}.json` }));
    await expect(target(url).upload(sb.backupDir, `${a.doc.backup}.json`)).rejects.toMatchObject({ code: 'E_OFFSITE_VERIFY' });
    const kept = (await target(url).list()).find((r) => r.fileName === `${a.doc.backup}.json`);
    expect(kept?.manifest?.sha256).toBe(a.doc.sha256);
  });

  it('an endpoint that dies mid-upload and comes back: the retry completes the copy', async () => {
    const sb = await box();
    const url = newPrefix();
    const relay = await dyingRelay(Number(new URL(s3.endpoint).port), 100_000);
    const config = await resolveConfig({ cwd: sb.dir, env: offsiteEnv(sb, url, { CHATMEM_S3_ENDPOINT: relay.endpoint }) });
    const ctx = await openContext(config, { role: 'daemon' });
    try {
      const offsite = ctx.offsite;
      if (!offsite) throw new Error('no off-site service');
      const b = await ctx.ops.createBackup();
      expect((await ctx.ops.verifyBackups(b.id))[0]?.ok).toBe(true);
      await eventually(async () => offsite.failures >= 1, 'a failed attempt');
      expect(await target(url).list()).toEqual([]);
      expect(offsite.pending().map((p) => p.fileName)).toEqual([path.basename(b.file)]);
      relay.heal();
      await eventually(async () => offsite.pending().length === 0, 'the retry', 60_000);
      expect(offsite.uploaded).toBe(1);
      const fresh = path.join(sb.dir, 'fresh');
      await fsp.mkdir(fresh, { mode: 0o700 });
      await target(url).download(path.basename(b.file), fresh);
      expect((await fsp.readFile(path.join(fresh, path.basename(b.file)))).equals(await fsp.readFile(b.file))).toBe(true);
    } finally {
      await ctx.close();
      await relay.close();
    }
  });
});
