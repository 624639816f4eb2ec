import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../src/config.js';
import { openContext } from '../../src/context.js';
import { OffsiteTarget } from '../../src/offsite/target.js';
import { cleanEnv, sandbox, type Sandbox } from '../cli/helpers.js';
import { dyingRelay, S3_KEY, S3_SECRET, startS3 } from '../helpers/s3.js';

let s3: Awaited<ReturnType<typeof startS3>>;
let sb: Sandbox;

beforeAll(async () => {
  s3 = await startS3();
  sb = await sandbox('sqlite');
});
afterAll(async () => {
  await sb.cleanup();
  await s3.close();
});

describe('off-site copies through an endpoint that keeps dying', () => {
  it('every backup written while uploads die mid-way is off-site and verifies once the endpoint is back; none is listed half-done', async () => {
    const url = `s3://chatmem-test/reliability-${process.pid}`;
    // Dies after 100 kB of every request: each backup (about 200 kB) fails mid-body; manifests alone would pass.
    const relay = await dyingRelay(Number(new URL(s3.endpoint).port), 100_000);
    const env = cleanEnv({ CHATMEM_STORE: sb.storeUrl, CHATMEM_OFFSITE: url, CHATMEM_S3_ENDPOINT: relay.endpoint, AWS_ACCESS_KEY_ID: S3_KEY, AWS_SECRET_ACCESS_KEY: S3_SECRET });
    const ctx = await openContext(await resolveConfig({ cwd: sb.dir, env }), { role: 'daemon' });
    const direct = new OffsiteTarget({ url, endpoint: s3.endpoint, region: 'us-east-1', accessKeyId: S3_KEY, secretAccessKey: S3_SECRET });
    const files: string[] = [];
    try {
      const offsite = ctx.offsite;
      if (!offsite) throw new Error('no off-site service');
      const users = (await ctx.store.list({ limit: 6 })).items.map((u) => u.user_id);
      // Five guarded operations, each acknowledged only after its local verified backup.
      files.push((await ctx.ops.createBackup()).file);
      for (const u of users.slice(0, 3)) files.push((await ctx.ops.deleteUsers([u], { fullBackup: true })).backupFile);
      files.push((await ctx.ops.createBackup({ reason: 'scheduled' })).file);
      for (const f of files) expect((await ctx.ops.verifyBackups(path.basename(f)))[0]?.ok).toBe(true);
      const end = Date.now() + 30_000;
      while (offsite.failures < files.length && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
      expect(offsite.failures).toBeGreaterThanOrEqual(files.length);
      expect(await direct.list()).toEqual([]);
      expect(offsite.lagSeconds()).toBeGreaterThan(0);
      relay.heal();
      const end2 = Date.now() + 90_000;
      while (offsite.pending().length > 0 && Date.now() < end2) await new Promise((r) => setTimeout(r, 200));
      expect(offsite.pending()).toEqual([]);
      expect(offsite.lagSeconds()).toBe(0);
    } finally {
      await ctx.close();
      await relay.close();
    }
    const listed = await direct.list();
    expect(listed.map((r) => r.fileName).sort()).toEqual(files.map((f) => path.basename(f)).sort());
    const fresh = path.join(sb.dir, 'fresh');
    await fsp.mkdir(fresh, { mode: 0o700 });
    for (const f of files) {
      await direct.download(path.basename(f), fresh);
      expect((await fsp.readFile(path.join(fresh, path.basename(f)))).equals(await fsp.readFile(f))).toBe(true);
    }
  }, 180_000);
});
