import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BackupError } from '../errors.js';
import { FILE_MODE, fsyncDir, tempNameFor } from '../fs-util.js';
import { manifestName } from '../backup/format.js';
import { digestBackupFile } from '../format/line-reader.js';
import { readManifest, writeManifest, type BackupManifest } from '../backup/manifest.js';
import { decrypt, encrypt, parseIdentities, parseRecipient } from './age.js';
import { OffsiteError, S3Client } from './s3.js';

/** Where off-site copies go and how to reach it. */
export interface OffsiteConfig {
  /** `s3://BUCKET/PREFIX`. */
  url: string;
  /** `CHATMEM_S3_ENDPOINT`; default AWS's regional endpoint. */
  endpoint?: string;
  region?: string;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /** age X25519 recipients (`age1…`): when given, copies are encrypted before they leave the machine. */
  recipients?: string[];
  /** age identity file, needed to read encrypted copies back. */
  identityFile?: string;
  timeoutMs?: number;
}

/** What the off-site side holds of one backup (listed only once its manifest, uploaded last, is there). */
export interface RemoteBackup {
  fileName: string;
  objectKey: string;
  encrypted: boolean;
  size: number;
  manifest: (BackupManifest & { offsite?: OffsiteStamp }) | null;
}

interface OffsiteStamp {
  /** SHA-256 of the object as stored (after gzip and encryption). */
  objectSha256: string;
  objectBytes: number;
  encrypted: boolean;
  uploadedAt: string;
}

export function parseOffsiteUrl(url: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url.trim());
  if (!m) throw new OffsiteError('E_OFFSITE_CONFIG', `the off-site target must look like s3://BUCKET/PREFIX, got ${JSON.stringify(url)}`);
  const prefix = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  return { bucket: m[1] ?? '', prefix: prefix === '' ? '' : `${prefix}/` };
}

/** The config from `offsite` (a URL) and the standard AWS environment. */
export function offsiteFromEnv(url: string, env: NodeJS.ProcessEnv, extra: { recipients?: string[]; identityFile?: string } = {}): OffsiteConfig {
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  if (!accessKeyId || !secretAccessKey) throw new OffsiteError('E_OFFSITE_CONFIG', `off-site target ${url} needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment`);
  return { url, endpoint: env.CHATMEM_S3_ENDPOINT, region: env.AWS_REGION ?? env.AWS_DEFAULT_REGION, accessKeyId, secretAccessKey, sessionToken: env.AWS_SESSION_TOKEN, ...extra };
}

async function fileDigests(file: string): Promise<{ sha256: string; md5: string; size: number }> {
  const sha = createHash('sha256');
  const md5 = createHash('md5');
  let size = 0;
  for await (const c of createReadStream(file)) {
    sha.update(c as Buffer);
    md5.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { sha256: sha.digest('hex'), md5: md5.digest('hex'), size };
}

/**
 * Copies of verified backups in S3-compatible storage. The backup object goes first and is checked (the
 * service verifies the signed SHA-256 and MD5 of the bytes it receives, then HEAD must show the same size
 * and ETag); its manifest goes last and is what makes it a listed backup, so a half-finished upload is never
 * listed. Encrypted copies use the age format and keep the manifest encrypted too (it lists user ids).
 */
export class OffsiteTarget {
  readonly client: S3Client;
  readonly bucket: string;
  readonly prefix: string;
  private readonly recipients: Buffer[];

  constructor(readonly config: OffsiteConfig) {
    const { bucket, prefix } = parseOffsiteUrl(config.url);
    this.bucket = bucket;
    this.prefix = prefix;
    const region = config.region ?? 'us-east-1';
    this.client = new S3Client({
      endpoint: config.endpoint ?? `https://s3.${region}.amazonaws.com`,
      region,
      accessKeyId: config.accessKeyId,
      secretAccessKey: config.secretAccessKey,
      sessionToken: config.sessionToken,
      bucket,
      timeoutMs: config.timeoutMs,
    });
    this.recipients = (config.recipients ?? []).map(parseRecipient);
  }

  get encrypted(): boolean {
    return this.recipients.length > 0;
  }

  /** The target as shown to operators: no credentials in it. */
  get display(): string {
    return `s3://${this.bucket}/${this.prefix}`;
  }

  private objectKey(fileName: string, encrypted = this.encrypted): string {
    return `${this.prefix}${fileName}${encrypted ? '.age' : ''}`;
  }

  private manifestKey(fileName: string, encrypted = this.encrypted): string {
    return `${this.prefix}${manifestName(fileName)}${encrypted ? '.age' : ''}`;
  }

  private async identities(): Promise<Buffer[]> {
    if (!this.config.identityFile) throw new OffsiteError('E_OFFSITE_KEY', 'this off-site copy is encrypted: give the age identity file (offsiteIdentity in the config, or CHATMEM_OFFSITE_IDENTITY)');
    let text: string;
    try {
      text = await fsp.readFile(this.config.identityFile, 'utf8');
    } catch (err) {
      throw new OffsiteError('E_OFFSITE_KEY', `cannot read the age identity file ${this.config.identityFile}: ${(err as Error).message}`, { cause: err });
    }
    return parseIdentities(text);
  }

  /** Uploads one local, verified backup and its manifest. Idempotent: a copy already there is kept. */
  async upload(backupDir: string, fileName: string): Promise<RemoteBackup> {
    const manifest = await readManifest(backupDir, fileName);
    if (!manifest) throw new BackupError('E_BACKUP_MANIFEST', `${fileName} has no manifest: only verified chatmem backups go off-site`);
    const local = path.join(backupDir, fileName);
    // The local file must still be what was verified when it was written: never ship a damaged copy.
    const check = await digestBackupFile(local, { gzip: manifest.gzip, lineFormat: true });
    if (check.sha256 !== manifest.sha256 || check.users !== manifest.users) {
      throw new BackupError('E_BACKUP_VERIFY', `${fileName} no longer matches its manifest; it was not uploaded`);
    }
    // An id is unique in one backup directory, not across machines or after a local copy is lost: never
    // overwrite a different backup that holds the name off-site.
    if (await this.client.head(this.manifestKey(fileName))) {
      const remote = await this.readRemoteManifest(fileName, this.encrypted).catch(() => null);
      if (remote && remote.sha256 !== manifest.sha256) {
        throw new OffsiteError('E_OFFSITE_VERIFY', `a different backup named ${fileName} is already in ${this.display} (sha256 ${remote.sha256.slice(0, 16)}…); it is kept and this one is not uploaded`);
      }
    }
    let source = local;
    let temp: string | null = null;
    try {
      if (this.encrypted) {
        temp = tempNameFor(path.join(backupDir, `${fileName}.age`));
        await pipeline(Readable.from(encrypt(this.recipients, createReadStream(local))), createWriteStream(temp, { mode: FILE_MODE, flags: 'wx' }));
        source = temp;
      }
      const d = await fileDigests(source);
      const key = this.objectKey(fileName);
      const existing = await this.client.head(key);
      if (!existing || existing.size !== d.size || (!this.encrypted && existing.etag !== d.md5)) {
        await this.client.putFile(key, source, d.size, d);
        const head = await this.client.head(key);
        if (!head || head.size !== d.size || head.etag !== d.md5) {
          throw new OffsiteError('E_OFFSITE_VERIFY', `the off-site copy of ${fileName} does not match what was sent (size ${head?.size}, etag ${head?.etag})`);
        }
      }
      const stamped = { ...manifest, offsite: { objectSha256: d.sha256, objectBytes: d.size, encrypted: this.encrypted, uploadedAt: new Date().toISOString() } };
      await this.putManifest(fileName, stamped);
      return { fileName, objectKey: key, encrypted: this.encrypted, size: d.size, manifest: stamped };
    } finally {
      if (temp) await fsp.rm(temp, { force: true });
    }
  }

  private async putManifest(fileName: string, manifest: object): Promise<void> {
    const text = Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`);
    if (!this.encrypted) return this.client.putBytes(this.manifestKey(fileName), text, 'application/json');
    const chunks: Buffer[] = [];
    for await (const c of encrypt(this.recipients, Readable.from([text]))) chunks.push(c);
    await this.client.putBytes(this.manifestKey(fileName), Buffer.concat(chunks));
  }

  /**
   * Backups held off-site, newest name first. Encrypted manifests are read only when an identity file is
   * configured; without it the names (which carry the date) are listed and `manifest` is null.
   */
  async list(): Promise<RemoteBackup[]> {
    const objects = await this.client.list(this.prefix);
    const byKey = new Map(objects.map((o) => [o.key, o]));
    const out: RemoteBackup[] = [];
    for (const o of objects) {
      const rel = o.key.slice(this.prefix.length);
      const m = /^(.+)\.meta\.json(\.age)?$/.exec(rel);
      if (!m || rel.includes('/')) continue;
      const encrypted = m[2] !== undefined;
      const base = m[1] ?? '';
      const fileName = [`${base}.json`, `${base}.json.gz`].find((f) => byKey.has(this.objectKey(f, encrypted)));
      if (!fileName) continue;
      const obj = byKey.get(this.objectKey(fileName, encrypted));
      let manifest: RemoteBackup['manifest'] = null;
      if (!encrypted || this.config.identityFile) manifest = await this.readRemoteManifest(fileName, encrypted).catch(() => null);
      out.push({ fileName, objectKey: this.objectKey(fileName, encrypted), encrypted, size: obj?.size ?? 0, manifest });
    }
    return out.sort((a, b) => (a.fileName < b.fileName ? 1 : a.fileName > b.fileName ? -1 : 0));
  }

  private async readRemoteManifest(fileName: string, encrypted: boolean): Promise<RemoteBackup['manifest']> {
    const res = await this.client.get(this.manifestKey(fileName, encrypted));
    const source: AsyncIterable<Buffer> = encrypted ? decrypt(await this.identities(), res as AsyncIterable<Buffer>) : (res as AsyncIterable<Buffer>);
    const chunks: Buffer[] = [];
    for await (const c of source) chunks.push(c);
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as RemoteBackup['manifest'];
  }

  /**
   * Brings an off-site backup into the local backup directory (decrypted), verified against its manifest
   * (SHA-256 and count of the content), then writes the local manifest. Nothing appears locally unless it
   * verified.
   */
  async download(fileName: string, backupDir: string): Promise<string> {
    const remote = (await this.list()).find((r) => r.fileName === fileName);
    if (!remote) throw new OffsiteError('E_OFFSITE_NOT_FOUND', `no off-site backup ${fileName} in ${this.display}`);
    const manifest = remote.manifest ?? (await this.readRemoteManifest(fileName, remote.encrypted));
    if (!manifest) throw new OffsiteError('E_OFFSITE_NOT_FOUND', `the off-site manifest of ${fileName} cannot be read`);
    const target = path.join(backupDir, fileName);
    const temp = tempNameFor(target);
    try {
      const res = await this.client.get(remote.objectKey);
      const body: AsyncIterable<Buffer> = remote.encrypted ? decrypt(await this.identities(), res as AsyncIterable<Buffer>) : (res as AsyncIterable<Buffer>);
      await pipeline(Readable.from(body), createWriteStream(temp, { mode: FILE_MODE, flags: 'wx' }));
      const fh = await fsp.open(temp, 'r+');
      await fh.sync();
      await fh.close();
      const check = await digestBackupFile(temp, { gzip: manifest.gzip, lineFormat: true });
      if (check.sha256 !== manifest.sha256 || check.users !== manifest.users) {
        throw new BackupError('E_BACKUP_VERIFY', `the off-site copy of ${fileName} does not match its manifest (sha256 or user count); it was not restored`);
      }
      // link() never replaces: a local file of that name (however it got there) wins and is left alone.
      await fsp.link(temp, target);
      const { offsite: _stamp, ...local } = manifest as BackupManifest & { offsite?: unknown };
      await writeManifest(backupDir, local as BackupManifest);
      await fsyncDir(backupDir);
      return target;
    } finally {
      await fsp.rm(temp, { force: true });
    }
  }

  /** Bytes `start..end` (inclusive) of a plain off-site backup: one user of a sorted backup costs a few reads. */
  async readRange(fileName: string, start: number, end: number): Promise<Buffer> {
    if (this.encrypted) throw new OffsiteError('E_OFFSITE_REQUEST', 'ranged reads need a plain (unencrypted) copy');
    const chunks: Buffer[] = [];
    for await (const c of await this.client.get(this.objectKey(fileName, false), { start, end })) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  /** Removes a backup off-site: the manifest first, so it stops being listed before its object goes. */
  async remove(fileName: string): Promise<void> {
    for (const enc of [true, false]) {
      await this.client.delete(this.manifestKey(fileName, enc));
      await this.client.delete(this.objectKey(fileName, enc));
    }
  }
}
