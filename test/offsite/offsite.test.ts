import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openContext, type Context } from '../../src/context.js';
import { resolveConfig } from '../../src/config.js';
import { decrypt, encrypt, generateIdentity, parseIdentities, parseRecipient } from '../../src/offsite/age.js';
import { signV4 } from '../../src/offsite/s3.js';
import { OffsiteTarget, parseOffsiteUrl, type OffsiteConfig } from '../../src/offsite/target.js';
import { dyingRelay, S3_KEY, S3_SECRET, startS3 } from '../helpers/s3.js';
import { FIXTURES, tempDir } from '../helpers/tmp.js';

const hasAge = spawnSync('age', ['--version']).status === 0;
if (!hasAge && process.env.CI) throw new Error('the age tool is required under CI (.ci/run installs it) to check the encryption format');

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of it) out.push(c);
  return Buffer.concat(out);
}

describe('age encryption', () => {
  it('round-trips any length, including empty and exact multiples of the 64 KiB chunk', async () => {
    const { identity, recipient } = generateIdentity();
    for (const n of [0, 1, 65535, 65536, 65537, 3 * 65536, 200_001]) {
      const plain = Buffer.alloc(n, n % 251);
      const sealed = await collect(encrypt([parseRecipient(recipient)], Readable.from([plain])));
      expect(sealed.subarray(0, 22).toString()).toBe('age-encryption.org/v1\n');
      expect((await collect(decrypt(parseIdentities(identity), Readable.from([sealed])))).equals(plain)).toBe(true);
    }
  });

  it('refuses a wrong identity, a flipped byte and a truncated file', async () => {
    const a = generateIdentity();
    const b = generateIdentity();
    const sealed = await collect(encrypt([parseRecipient(a.recipient)], Readable.from([Buffer.alloc(100_000, 7)])));
    await expect(collect(decrypt(parseIdentities(b.identity), Readable.from([sealed])))).rejects.toMatchObject({ code: 'E_OFFSITE_DECRYPT' });
    const flipped = Buffer.from(sealed);
    flipped[flipped.length - 100] = (flipped[flipped.length - 100] ?? 0) ^ 1;
    await expect(collect(decrypt(parseIdentities(a.identity), Readable.from([flipped])))).rejects.toMatchObject({ code: 'E_OFFSITE_DECRYPT' });
    await expect(collect(decrypt(parseIdentities(a.identity), Readable.from([sealed.subarray(0, sealed.length - 17)])))).rejects.toMatchObject({ code: 'E_OFFSITE_DECRYPT' });
    expect(() => parseRecipient('age1notakey')).toThrow(/age1/);
  });

  it.skipIf(!hasAge)('is the real age format: the age tool reads ours and we read its', async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const keyFile = path.join(dir, 'key.txt');
      expect(spawnSync('age-keygen', ['-o', keyFile]).status).toBe(0);
      const keyText = await fsp.readFile(keyFile, 'utf8');
      const recipient = /age1[0-9a-z]+/.exec(keyText)?.[0] ?? '';
      const plain = Buffer.from('{\n"62811":{"name":"Budi"}\n}\n'.repeat(5000));
      await fsp.writeFile(path.join(dir, 'ours.age'), await collect(encrypt([parseRecipient(recipient)], Readable.from([plain]))));
      const theirs = spawnSync('age', ['-d', '-i', keyFile, path.join(dir, 'ours.age')], { maxBuffer: 1 << 26 });
      expect(theirs.status).toBe(0);
      expect(theirs.stdout.equals(plain)).toBe(true);
      const sealed = spawnSync('age', ['-r', recipient], { input: plain, maxBuffer: 1 << 26 });
      expect(sealed.status).toBe(0);
      expect((await collect(decrypt(parseIdentities(keyText), Readable.from([sealed.stdout])))).equals(plain)).toBe(true);
    } finally {
      await cleanup();
    }
  });
});

describe('SigV4 signing', () => {
  // The two examples of AWS's "Signature Calculations for the Authorization Header" page for S3.
  const EMPTY = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
  const base = { payloadHash: EMPTY, date: new Date('2013-05-24T00:00:00Z'), region: 'us-east-1', service: 's3', accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' };
  it("matches AWS's GET Object example", () => {
    const h = signV4({ ...base, method: 'GET', path: '/test.txt', query: {}, headers: { host: 'examplebucket.s3.amazonaws.com', range: 'bytes=0-9', 'x-amz-content-sha256': EMPTY } });
    expect(h.authorization).toBe('AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41');
  });
  it("matches AWS's list objects example (query string)", () => {
    const h = signV4({ ...base, method: 'GET', path: '/', query: { 'max-keys': '2', prefix: 'J' }, headers: { host: 'examplebucket.s3.amazonaws.com', 'x-amz-content-sha256': EMPTY } });
    expect(h.authorization).toMatch(/Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7$/);
  });
});

describe('off-site copies on S3 (s3rver)', () => {
  let s3: Awaited<ReturnType<typeof startS3>>;
  let ctx: Context;
  let dir: string;
  let cleanup: () => Promise<void>;
  let config: OffsiteConfig;
  let seq = 0;

  beforeAll(async () => {
    s3 = await startS3();
  });
  afterAll(async () => {
    await s3.close();
  });
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir());
    const resolved = await resolveConfig({ cwd: dir, store: `sqlite:${path.join(dir, 'memory.db')}`, env: {} });
    ctx = await openContext(resolved, { role: 'daemon' });
    await ctx.ops.importFile(path.join(FIXTURES, 'memory.json'));
    config = { url: `s3://chatmem-test/run${seq++}/backups`, endpoint: s3.endpoint, region: 'us-east-1', accessKeyId: S3_KEY, secretAccessKey: S3_SECRET };
  });
  afterEach(async () => {
    await ctx.close();
    await cleanup();
  });

  const emptyDir = async () => {
    const d = path.join(dir, `fresh-${Math.random().toString(36).slice(2)}`);
    await fsp.mkdir(d, { mode: 0o700 });
    return d;
  };

  it('uploads a verified backup, lists it from a fresh machine, and brings it back verified', async () => {
    const b = await ctx.ops.createBackup();
    const target = new OffsiteTarget(config);
    const up = await target.upload(ctx.config.backupDir, b.file.split('/').pop()!);
    expect(up.manifest?.sha256).toBe(b.manifest.sha256);
    // Another machine: a new target object and an empty backup directory.
    const other = new OffsiteTarget({ ...config });
    const listed = await other.list();
    expect(listed.map((r) => r.fileName)).toEqual([path.basename(b.file)]);
    expect(listed[0]?.manifest?.users).toBe(200);
    const fresh = await emptyDir();
    const local = await other.download(path.basename(b.file), fresh);
    expect(await fsp.readFile(local, 'utf8')).toBe(await fsp.readFile(b.file, 'utf8'));
    expect((await fsp.stat(local)).mode & 0o777).toBe(0o600);
    const manifest = JSON.parse(await fsp.readFile(path.join(fresh, path.basename(b.file).replace(/\.json$/, '.meta.json')), 'utf8')) as { sha256: string };
    expect(manifest.sha256).toBe(b.manifest.sha256);
    // Uploading again is a no-op that keeps the copy.
    await target.upload(ctx.config.backupDir, path.basename(b.file));
    expect((await other.list()).length).toBe(1);
  });

  it('encrypts copies with age: nothing readable off-site, restore needs the identity', async () => {
    const { identity, recipient } = generateIdentity();
    const idFile = path.join(dir, 'offsite.key');
    await fsp.writeFile(idFile, `# test identity\n${identity}\n`, { mode: 0o600 });
    const b = await ctx.ops.createBackup();
    const name = path.basename(b.file);
    await new OffsiteTarget({ ...config, recipients: [recipient] }).upload(ctx.config.backupDir, name);
    const raw = new OffsiteTarget(config);
    const objects = await raw.client.list(raw.prefix);
    expect(objects.map((o) => o.key.split('/').pop()).sort()).toEqual([`${name}.age`, `${name.replace(/\.json$/, '.meta.json')}.age`]);
    const someUser = (await ctx.store.list({ limit: 1 })).items[0]!.user_id;
    for (const o of objects) {
      const text = await raw.client.getText(o.key);
      expect(text.startsWith('age-encryption.org/v1')).toBe(true);
      expect(text).not.toContain(someUser);
      expect(text).not.toContain('chatmem-backup');
    }
    const noKey = new OffsiteTarget({ ...config, recipients: [recipient] });
    expect((await noKey.list())[0]?.manifest).toBeNull();
    await expect(noKey.download(name, await emptyDir())).rejects.toMatchObject({ code: 'E_OFFSITE_KEY' });
    const withKey = new OffsiteTarget({ ...config, identityFile: idFile });
    expect((await withKey.list())[0]?.manifest?.users).toBe(200);
    const local = await withKey.download(name, await emptyDir());
    expect(await fsp.readFile(local, 'utf8')).toBe(await fsp.readFile(b.file, 'utf8'));
  });

  it('a tampered off-site copy is refused and nothing appears locally', async () => {
    const b = await ctx.ops.createBackup();
    const name = path.basename(b.file);
    const target = new OffsiteTarget(config);
    await target.upload(ctx.config.backupDir, name);
    const text = await fsp.readFile(b.file, 'utf8');
    const bad = path.join(dir, 'bad.json');
    await fsp.writeFile(bad, text.replace('Budi', 'Bud1'));
    const d = await fsp.stat(bad);
    const { createHash } = await import('node:crypto');
    const body = await fsp.readFile(bad);
    await target.client.putFile(`${target.prefix}${name}`, bad, d.size, { sha256: createHash('sha256').update(body).digest('hex'), md5: createHash('md5').update(body).digest('hex') });
    const fresh = await emptyDir();
    await expect(target.download(name, fresh)).rejects.toMatchObject({ code: 'E_BACKUP_VERIFY' });
    expect(await fsp.readdir(fresh)).toEqual([]);
  });

  it('removes the manifest first, then the object', async () => {
    const b = await ctx.ops.createBackup();
    const target = new OffsiteTarget(config);
    await target.upload(ctx.config.backupDir, path.basename(b.file));
    await target.remove(path.basename(b.file));
    expect(await target.list()).toEqual([]);
    expect(await target.client.list(target.prefix)).toEqual([]);
  });

  it('wrong credentials, a wrong bucket and a dead endpoint fail with codes; local backups are untouched', async () => {
    const b = await ctx.ops.createBackup();
    const name = path.basename(b.file);
    const before = await fsp.readFile(b.file);
    // s3rver checks the key id but not SigV4 signatures; the signing itself is checked against AWS's examples below.
    await expect(new OffsiteTarget({ ...config, accessKeyId: 'WRONG' }).upload(ctx.config.backupDir, name)).rejects.toMatchObject({ code: 'E_OFFSITE_AUTH' });
    await expect(new OffsiteTarget({ ...config, accessKeyId: 'NOBODY' }).list()).rejects.toMatchObject({ code: 'E_OFFSITE_AUTH' });
    await expect(new OffsiteTarget({ ...config, url: 's3://no-such-bucket/x' }).upload(ctx.config.backupDir, name)).rejects.toMatchObject({ code: 'E_OFFSITE_BUCKET' });
    await expect(new OffsiteTarget({ ...config, endpoint: 'http://127.0.0.1:9' }).list()).rejects.toMatchObject({ code: 'E_OFFSITE_UNREACHABLE' });
    expect(() => parseOffsiteUrl('https://bucket/x')).toThrow(/s3:\/\/BUCKET/);
    expect((await fsp.readFile(b.file)).equals(before)).toBe(true);
    expect((await ctx.ops.verifyBackups(b.id))[0]?.ok).toBe(true);
  });

  it('an endpoint that dies mid-upload fails the upload, and no half-uploaded backup is ever listed', async () => {
    const b = await ctx.ops.createBackup();
    const name = path.basename(b.file);
    const port = Number(new URL(s3.endpoint).port);
    const relay = await dyingRelay(port, 100_000);
    try {
      await expect(new OffsiteTarget({ ...config, endpoint: relay.endpoint, timeoutMs: 5000 }).upload(ctx.config.backupDir, name)).rejects.toMatchObject({ code: 'E_OFFSITE_UNREACHABLE' });
    } finally {
      await relay.close();
    }
    const target = new OffsiteTarget(config);
    expect(await target.list()).toEqual([]);
    // A retry through the healthy endpoint completes it.
    await target.upload(ctx.config.backupDir, name);
    expect((await target.list()).map((r) => r.fileName)).toEqual([name]);
  });

  it('reads one byte range of a plain copy', async () => {
    const b = await ctx.ops.createBackup();
    const name = path.basename(b.file);
    const target = new OffsiteTarget(config);
    await target.upload(ctx.config.backupDir, name);
    const local = await fsp.readFile(b.file);
    expect((await target.readRange(name, 1000, 1999)).equals(local.subarray(1000, 2000))).toBe(true);
  });
});
