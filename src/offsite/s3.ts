import { createHash, createHmac } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { Readable } from 'node:stream';
import { ChatmemError } from '../errors.js';

/** Off-site storage failures (`E_OFFSITE_*`). */
export class OffsiteError extends ChatmemError {}

export interface S3Options {
  /** `http(s)://host:port` of an S3-compatible service; path-style addressing is used. */
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  bucket: string;
  /** Per request, ms (default 60 000): a dead endpoint must not hang an upload forever. */
  timeoutMs?: number;
}

export interface S3Object {
  key: string;
  size: number;
  etag: string;
  lastModified: Date;
}

const sha256hex = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');
const hmac = (key: Buffer | string, data: string): Buffer => createHmac('sha256', key).update(data).digest();

/** RFC 3986 encoding as SigV4 wants it (S3 keys keep their slashes in the path). */
function enc(s: string, keepSlash = false): string {
  return encodeURIComponent(s)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(keepSlash ? /%2F/g : /(?!)/g, '/');
}

function unescapeXml(s: string): string {
  return s.replace(/&(lt|gt|amp|quot|apos|#\d+|#x[0-9a-f]+);/gi, (m, e: string) => {
    const map: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
    if (map[e] !== undefined) return map[e];
    return String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
  });
}

/**
 * AWS Signature Version 4 for one request: the headers to send, `authorization` and `x-amz-date` added.
 * Exported for its test against AWS's published example.
 */
export function signV4(r: {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string>;
  payloadHash: string;
  date: Date;
  region: string;
  service: string;
  accessKeyId: string;
  secretAccessKey: string;
}): Record<string, string> {
  const amzDate = r.date.toISOString().replace(/[-:]|\.\d{3}/g, '');
  const day = amzDate.slice(0, 8);
  const all: Record<string, string> = { ...r.headers, 'x-amz-date': amzDate };
  const lower = Object.fromEntries(Object.entries(all).map(([k, v]) => [k.toLowerCase(), v]));
  const names = Object.keys(lower).sort();
  const canonicalHeaders = names.map((n) => `${n}:${String(lower[n]).trim()}\n`).join('');
  const canonicalQuery = Object.keys(r.query)
    .sort()
    .map((k) => `${enc(k)}=${enc(r.query[k] ?? '')}`)
    .join('&');
  const canonical = [r.method, enc(r.path, true), canonicalQuery, canonicalHeaders, names.join(';'), r.payloadHash].join('\n');
  const scope = `${day}/${r.region}/${r.service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256hex(canonical)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${r.secretAccessKey}`, day), r.region), r.service), 'aws4_request');
  const signature = createHmac('sha256', key).update(toSign).digest('hex');
  return { ...all, authorization: `AWS4-HMAC-SHA256 Credential=${r.accessKeyId}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}` };
}

const tag = (xml: string, name: string): string | undefined => new RegExp(`<${name}>([\\s\\S]*?)</${name}>`).exec(xml)?.[1];

/**
 * A small S3 client: signed (SigV4) PUT from a file, GET (optionally a byte range), HEAD, LIST v2 and
 * DELETE, over node:http. Chosen over the AWS SDK because SDK v3 releases after January 2027 need Node 22,
 * and chatmem needs six calls, not the SDK's hundreds of modules.
 */
export class S3Client {
  private readonly base: URL;

  constructor(readonly options: S3Options) {
    try {
      this.base = new URL(options.endpoint);
    } catch (err) {
      throw new OffsiteError('E_OFFSITE_CONFIG', `CHATMEM_S3_ENDPOINT is not a URL: ${JSON.stringify(options.endpoint)}`, { cause: err });
    }
    if (this.base.protocol !== 'http:' && this.base.protocol !== 'https:') throw new OffsiteError('E_OFFSITE_CONFIG', `the S3 endpoint must be http(s)://, got ${options.endpoint}`);
  }

  private where(): string {
    return `${this.base.host}/${this.options.bucket}`;
  }

  private sign(method: string, path: string, query: Record<string, string>, headers: Record<string, string>, payloadHash: string): Record<string, string> {
    const extra: Record<string, string> = { ...headers, host: this.base.host, 'x-amz-content-sha256': payloadHash };
    if (this.options.sessionToken) extra['x-amz-security-token'] = this.options.sessionToken;
    return signV4({ method, path, query, headers: extra, payloadHash, date: new Date(), region: this.options.region, service: 's3', accessKeyId: this.options.accessKeyId, secretAccessKey: this.options.secretAccessKey });
  }

  /** One signed request; resolves with the response (body unread) or rejects with an OffsiteError. */
  private request(
    method: string,
    key: string | null,
    opts: { query?: Record<string, string>; headers?: Record<string, string>; body?: () => Readable; payloadHash?: string } = {},
  ): Promise<http.IncomingMessage> {
    const path = `/${this.options.bucket}${key === null ? '' : `/${key}`}`;
    const query = opts.query ?? {};
    const headers = this.sign(method, path, query, opts.headers ?? {}, opts.payloadHash ?? sha256hex(''));
    const qs = Object.keys(query).map((k) => `${enc(k)}=${enc(query[k] ?? '')}`).join('&');
    const lib = this.base.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = lib.request(
        { method, hostname: this.base.hostname, port: this.base.port || undefined, path: enc(path, true) + (qs ? `?${qs}` : ''), headers, timeout: this.options.timeoutMs ?? 60_000 },
        resolve,
      );
      req.on('timeout', () => req.destroy(new OffsiteError('E_OFFSITE_UNREACHABLE', `${method} ${this.where()}: no answer within ${this.options.timeoutMs ?? 60_000} ms`)));
      req.on('error', (err) =>
        reject(err instanceof OffsiteError ? err : new OffsiteError('E_OFFSITE_UNREACHABLE', `cannot reach the off-site store at ${this.base.host}: ${err.message}`, { cause: err })),
      );
      if (opts.body) {
        const body = opts.body();
        body.on('error', (err) => req.destroy(err));
        body.pipe(req);
      } else req.end();
    });
  }

  private async fail(res: http.IncomingMessage, what: string): Promise<never> {
    const text = await readText(res).catch(() => '');
    const code = tag(text, 'Code') ?? `HTTP ${res.statusCode}`;
    const message = tag(text, 'Message') ?? '';
    const ours =
      code === 'NoSuchBucket'
        ? 'E_OFFSITE_BUCKET'
        : ['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'ExpiredToken', 'InvalidToken'].includes(code) || res.statusCode === 403
          ? 'E_OFFSITE_AUTH'
          : code === 'NoSuchKey' || res.statusCode === 404
            ? 'E_OFFSITE_NOT_FOUND'
            : 'E_OFFSITE_REQUEST';
    const hint = ours === 'E_OFFSITE_AUTH' ? ' (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)' : ours === 'E_OFFSITE_BUCKET' ? ` (bucket ${JSON.stringify(this.options.bucket)} does not exist)` : '';
    throw new OffsiteError(ours, `${what} on ${this.where()} failed: ${code}${message ? `: ${message}` : ''}${hint}`, { details: { status: res.statusCode, s3Code: code } });
  }

  /** Uploads a file; `sha256`/`md5` are the file's (hex), so the service checks the bytes it received. */
  async putFile(key: string, file: string, size: number, digests: { sha256: string; md5: string }): Promise<void> {
    const res = await this.request('PUT', key, {
      headers: { 'content-length': String(size), 'content-md5': Buffer.from(digests.md5, 'hex').toString('base64'), 'content-type': 'application/octet-stream' },
      payloadHash: digests.sha256,
      body: () => createReadStream(file),
    });
    if (res.statusCode !== 200) return this.fail(res, `PUT ${key}`);
    res.resume();
  }

  async putBytes(key: string, body: Buffer, contentType = 'application/octet-stream'): Promise<void> {
    const res = await this.request('PUT', key, {
      headers: { 'content-length': String(body.length), 'content-type': contentType },
      payloadHash: sha256hex(body),
      body: () => Readable.from([body]),
    });
    if (res.statusCode !== 200) return this.fail(res, `PUT ${key}`);
    res.resume();
  }

  /** The object's body as a stream; `range` is inclusive, as HTTP's. */
  async get(key: string, range?: { start: number; end: number }): Promise<http.IncomingMessage> {
    const res = await this.request('GET', key, range ? { headers: { range: `bytes=${range.start}-${range.end}` } } : {});
    if (res.statusCode !== 200 && res.statusCode !== 206) return this.fail(res, `GET ${key}`);
    return res;
  }

  async getText(key: string): Promise<string> {
    return readText(await this.get(key));
  }

  async head(key: string): Promise<{ size: number; etag: string } | null> {
    const res = await this.request('HEAD', key);
    res.resume();
    if (res.statusCode === 404) return null;
    if (res.statusCode !== 200) return this.fail(res, `HEAD ${key}`);
    return { size: Number(res.headers['content-length'] ?? -1), etag: String(res.headers.etag ?? '').replace(/"/g, '') };
  }

  async list(prefix: string): Promise<S3Object[]> {
    const out: S3Object[] = [];
    let token: string | undefined;
    do {
      const query: Record<string, string> = { 'list-type': '2', prefix };
      if (token) query['continuation-token'] = token;
      const res = await this.request('GET', null, { query });
      if (res.statusCode !== 200) return this.fail(res, `LIST ${prefix}`);
      const xml = await readText(res);
      for (const m of xml.matchAll(/<Contents>([\s\S]*?)<\/Contents>/g)) {
        const c = m[1] ?? '';
        out.push({
          key: unescapeXml(tag(c, 'Key') ?? ''),
          size: Number(tag(c, 'Size') ?? 0),
          etag: unescapeXml(tag(c, 'ETag') ?? '').replace(/"/g, ''),
          lastModified: new Date(tag(c, 'LastModified') ?? 0),
        });
      }
      token = tag(xml, 'IsTruncated') === 'true' ? unescapeXml(tag(xml, 'NextContinuationToken') ?? '') : undefined;
    } while (token);
    return out;
  }

  async delete(key: string): Promise<void> {
    const res = await this.request('DELETE', key);
    if (res.statusCode !== 204 && res.statusCode !== 200 && res.statusCode !== 404) return this.fail(res, `DELETE ${key}`);
    res.resume();
  }
}

async function readText(res: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
