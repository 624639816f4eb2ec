import { createHash } from 'node:crypto';
import { constants as fsc, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { createGunzip, createGzip, type Gzip } from 'node:zlib';
import { BackupError, RecordError } from '../errors.js';
import { stringifyJson } from '../json-safe.js';
import { readJsonEntries } from './json-entries.js';

export const BACKUP_PREFIX = 'memory_backup_';

const FULL_NAME_RE = /^memory_backup_(\d{8})_(\d{6})(?:_([1-9]\d*))?\.json(\.gz)?$/;
const USER_NAME_RE = /^memory_backup_(.+)_(\d{8})_(\d{6})\.json$/;

/**
 * Compare user ids in UTF-8 byte order (= Unicode code point order), the order SQLite BINARY and
 * Postgres COLLATE "C" use. JS `<` compares UTF-16 units and differs for astral chars.
 */
export function compareIds(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Code units only disagree with code points when one side is a surrogate: surrogates
    // (astral chars) must sort above U+E000..U+FFFF, so shift the ranges past each other.
    if (x >= 0xd800) x += x < 0xe000 ? 0x2000 : -0x800;
    if (y >= 0xd800) y += y < 0xe000 ? 0x2000 : -0x800;
    return x - y;
  }
  return a.length - b.length;
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

/** 'memory_backup_YYYYMMDD_HHMMSS' (UTC), plus `_${seq}` when seq > 0. */
export function backupBaseName(date: Date, seq: number): string {
  const stamp =
    pad(date.getUTCFullYear(), 4) +
    pad(date.getUTCMonth() + 1, 2) +
    pad(date.getUTCDate(), 2) +
    '_' +
    pad(date.getUTCHours(), 2) +
    pad(date.getUTCMinutes(), 2) +
    pad(date.getUTCSeconds(), 2);
  return `${BACKUP_PREFIX}${stamp}${seq > 0 ? `_${seq}` : ''}`;
}

function stampToDate(ymd: string, hms: string): Date | null {
  const y = Number(ymd.slice(0, 4));
  const mo = Number(ymd.slice(4, 6));
  const d = Number(ymd.slice(6, 8));
  const h = Number(hms.slice(0, 2));
  const mi = Number(hms.slice(2, 4));
  const s = Number(hms.slice(4, 6));
  const date = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  // Date.UTC rolls 20251332 over into the next year; a name like that carries no real time.
  const ok =
    date.getUTCFullYear() === y &&
    date.getUTCMonth() === mo - 1 &&
    date.getUTCDate() === d &&
    date.getUTCHours() === h &&
    date.getUTCMinutes() === mi &&
    date.getUTCSeconds() === s;
  return ok ? date : null;
}

/** What a backup file name says about the backup. */
export interface BackupName {
  /** The file name without `.json` / `.json.gz`. */
  id: string;
  /** The UTC time in the name, or null when its digits are not a real date. */
  createdAt: Date | null;
  gzip: boolean;
  /** 'full': a whole-store backup; 'user': the seed system's one-user reset file. */
  kind: 'full' | 'user';
}

/**
 * Recognises `memory_backup_YYYYMMDD_HHMMSS[_N].json[.gz]` (kind 'full') and the seed's per-user
 * `memory_backup_<uid>_YYYYMMDD_HHMMSS.json` (kind 'user'). Returns null for manifests
 * (`*.meta.json`), temp files and anything else.
 */
export function parseBackupName(name: string): BackupName | null {
  if (name.endsWith('.meta.json') || /[/\\\0]/.test(name)) return null;
  const full = FULL_NAME_RE.exec(name);
  if (full) {
    const gzip = full[4] !== undefined;
    return {
      id: name.slice(0, name.length - (gzip ? '.json.gz'.length : '.json'.length)),
      createdAt: stampToDate(full[1]!, full[2]!),
      gzip,
      kind: 'full',
    };
  }
  const user = USER_NAME_RE.exec(name);
  if (user) {
    return { id: name.slice(0, -'.json'.length), createdAt: stampToDate(user[2]!, user[3]!), gzip: false, kind: 'user' };
  }
  return null;
}

/** The manifest beside a backup: 'memory_backup_..._N.meta.json' for '..._N.json' or '..._N.json.gz'. */
export function manifestName(backupFileName: string): string {
  return `${backupFileName.replace(/\.json(\.gz)?$/, '')}.meta.json`;
}

/**
 * Resolve an operator-supplied backup id (with or without .json/.json.gz, or a bare file name) to a
 * file INSIDE dir. Rejects path separators, '..', NUL, absolute paths, anything parseBackupName
 * rejects, with BackupError code 'E_BACKUP_ID'. An id without extension means the `.json` file.
 * Returns { id, fileName, file (absolute path), gzip }. Does not check existence.
 */
export function resolveBackupId(dir: string, id: string): { id: string; fileName: string; file: string; gzip: boolean } {
  const reject = (why: string): never => {
    throw new BackupError('E_BACKUP_ID', `invalid backup id ${JSON.stringify(id)}: ${why}`, { details: { id } });
  };
  if (id.length === 0) reject('empty');
  if (id.includes('\0')) reject('contains NUL');
  if (id.includes('/') || id.includes('\\') || path.isAbsolute(id)) reject('must be a name, not a path');
  if (id.includes('..')) reject("contains '..'");
  const fileName = /\.json(\.gz)?$/.test(id) ? id : `${id}.json`;
  const parsed = parseBackupName(fileName);
  if (parsed === null) return reject(`not a backup name (expected ${BACKUP_PREFIX}YYYYMMDD_HHMMSS[_N])`);
  const root = path.resolve(dir);
  const file = path.join(root, fileName);
  if (path.dirname(file) !== root) reject('resolves outside the backup directory');
  return { id: parsed.id, fileName, file, gzip: parsed.gzip };
}

/**
 * A value that is already the `JSON.stringify` text of a record (as the SQL stores keep it), written
 * as is: a backup then skips a parse and a stringify per user.
 */
export class RawJson {
  constructor(readonly text: string) {}
}

/** One entry line of the chatmem format: JSON.stringify(key) + ':' + JSON.stringify(value) (no trailing comma). */
export function entryLine(key: string, value: unknown): string {
  if (value instanceof RawJson) return `${JSON.stringify(key)}:${value.text}`;
  let json: string | undefined;
  let cause: unknown;
  try {
    json = stringifyJson(value) as string | undefined;
  } catch (err) {
    cause = err;
  }
  // `"k":undefined` would make the whole backup unreadable; refuse the record instead.
  if (json === undefined) {
    throw new RecordError('E_RECORD', `the record of ${JSON.stringify(key)} is not JSON-serialisable`, {
      cause,
      details: { userId: key },
    });
  }
  return `${JSON.stringify(key)}:${json}`;
}

// Lines are batched into writes of about this many bytes: one write per line costs more than the copy.
const BATCH_BYTES = 64 * 1024;

// Resolves on the first of `events` (or when `also` resolves), rejects on 'error' (or when `also`
// rejects), and always removes its listeners: events.once would leave one behind per lost race.
function waitForEvent(emitter: NodeJS.EventEmitter, events: string[], also?: Promise<void>): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const done = (err?: unknown): void => {
      if (settled) return;
      settled = true;
      for (const e of events) emitter.removeListener(e, ok);
      emitter.removeListener('error', fail);
      if (err === undefined) resolve();
      else reject(err);
    };
    const ok = (): void => done();
    const fail = (err: unknown): void => done(err ?? new Error('stream error'));
    for (const e of events) emitter.on(e, ok);
    emitter.on('error', fail);
    also?.then(ok, fail);
  });
}

// Writes buffers to `out` in order, honouring backpressure, and reports the first stream error.
class Sink {
  private readonly out: NodeJS.WritableStream;
  private error: unknown = undefined;
  private last: Promise<void> = Promise.resolve();
  private readonly onError = (err: unknown): void => {
    this.error ??= err;
  };

  constructor(out: NodeJS.WritableStream) {
    this.out = out;
    out.on('error', this.onError);
  }

  check(): void {
    if (this.error !== undefined) throw this.error;
  }

  // Hands `buf` to the stream; resolves when the stream can take more.
  async write(buf: Buffer): Promise<void> {
    this.check();
    const ok = this.write0(buf);
    if (!ok) await this.drain();
    this.check();
  }

  // Synchronous part of write, for gzip output arriving in 'data' events.
  write0(buf: Buffer): boolean {
    let resolveDone!: () => void;
    let rejectDone!: (err: unknown) => void;
    this.last = new Promise<void>((res, rej) => {
      resolveDone = res;
      rejectDone = rej;
    });
    // Nobody may be awaiting yet; the error is also captured by onError and rethrown from check().
    this.last.catch(() => undefined);
    return this.out.write(buf, (err) => {
      if (err) {
        this.onError(err);
        rejectDone(err);
      } else resolveDone();
    });
  }

  // Waits for 'drain'; the last write's callback also counts, since a flushed stream may never emit it.
  async drain(): Promise<void> {
    await waitForEvent(this.out, ['drain'], this.last);
  }

  // Resolves once every byte handed over so far has been accepted by the underlying resource.
  async flushed(): Promise<void> {
    await this.last;
    this.check();
  }

  dispose(): void {
    this.out.removeListener('error', this.onError);
  }
}

/**
 * Writes the chatmem line format to `out`: "{\n", one `entryLine` per line separated by ",\n", then
 * "\n}\n" ("{\n}\n" when empty). Entries must arrive in compareIds order; an out-of-order or
 * duplicate key throws BackupError 'E_BACKUP_ORDER' and nothing more is written. Hashes (SHA-256,
 * hex) and counts the uncompressed JSON bytes; with `gzip` the JSON text is compressed on the way
 * out. Respects backpressure. Does not end `out`: the caller ends it, then fsyncs. Resolves when
 * every byte has been accepted by `out`. `onProgress` receives the number of entries written so far.
 */
export async function writeBackupStream(
  entries: AsyncIterable<[string, unknown]>,
  out: NodeJS.WritableStream,
  opts: { gzip?: boolean; onProgress?: (written: number) => void } = {},
): Promise<{ sha256: string; users: number; bytes: number }> {
  const hash = createHash('sha256');
  const sink = new Sink(out);
  const gz = opts.gzip === true ? createGzip() : undefined;
  let gzError: unknown = undefined;
  const checkGz = (z: Gzip): void => {
    sink.check();
    if (gzError !== undefined) throw gzError;
    if (z.destroyed) throw new Error('gzip stream closed early');
  };
  if (gz) {
    gz.on('error', (err: unknown) => {
      gzError ??= err;
    });
    gz.on('data', (chunk: Buffer) => {
      if (!sink.write0(chunk)) {
        gz.pause();
        void sink.drain().then(
          () => gz.resume(),
          (err: unknown) => gz.destroy(err instanceof Error ? err : new Error(String(err))),
        );
      }
    });
  }

  let bytes = 0;
  let users = 0;
  const emit = async (text: string): Promise<void> => {
    const buf = Buffer.from(text, 'utf8');
    hash.update(buf);
    bytes += buf.length;
    if (gz) {
      checkGz(gz);
      // A destroyed stream never emits 'drain' or 'close' again: check before waiting.
      if (!gz.write(buf) && !gz.destroyed) await waitForEvent(gz, ['drain', 'close']);
      checkGz(gz);
    } else {
      await sink.write(buf);
    }
    opts.onProgress?.(users);
  };

  try {
    let batch = '{\n';
    let prev: string | undefined;
    for await (const [key, value] of entries) {
      if (prev !== undefined && compareIds(prev, key) >= 0) {
        throw new BackupError(
          'E_BACKUP_ORDER',
          `backup entries out of order: ${JSON.stringify(key)} after ${JSON.stringify(prev)}${key === prev ? ' (duplicate)' : ''}`,
          { details: { previous: prev, key } },
        );
      }
      batch += (prev === undefined ? '' : ',\n') + entryLine(key, value);
      prev = key;
      users++;
      if (batch.length >= BATCH_BYTES) {
        await emit(batch);
        batch = '';
      }
    }
    batch += prev === undefined ? '}\n' : '\n}\n';
    await emit(batch);
    if (gz) {
      checkGz(gz);
      gz.end();
      await waitForEvent(gz, ['end', 'close']);
      if (gzError !== undefined) throw gzError;
    }
    await sink.flushed();
  } catch (err) {
    gz?.destroy();
    throw err;
  } finally {
    sink.dispose();
  }
  return { sha256: hash.digest('hex'), users, bytes };
}

/** Hash + count an existing backup file (uncompressed content) in one streaming pass. */
export async function digestBackupFile(
  file: string,
  opts: { gzip?: boolean; lineFormat?: boolean } = {},
): Promise<{ sha256: string; bytes: number; users: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  let users = 0;
  if (opts.lineFormat) {
    // For a file whose hash is about to be compared with the one recorded when it was written, counting
    // lines is exact (one user per line between "{" and "}") and far cheaper than parsing every record.
    let lines = 0;
    // Never through a symlink, and never blocking on a FIFO swapped in for the file.
    const source = (await fsp.open(file, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK)).createReadStream();
    const stream = opts.gzip ? source.pipe(createGunzip()) : source;
    source.on('error', (err) => stream.destroy(err));
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      hash.update(chunk);
      bytes += chunk.length;
      for (let i = chunk.indexOf(0x0a); i !== -1; i = chunk.indexOf(0x0a, i + 1)) lines++;
    }
    return { sha256: hash.digest('hex'), bytes, users: Math.max(0, lines - 2) };
  }
  const onChunk = (chunk: Buffer): void => {
    hash.update(chunk);
    bytes += chunk.length;
  };
  for await (const _entry of readJsonEntries(file, { gzip: opts.gzip === true, onChunk })) users++;
  return { sha256: hash.digest('hex'), bytes, users };
}

const READ_BLOCK = 16 * 1024;
const NL = 0x0a;

function formatError(file: string, why: string): BackupError {
  return new BackupError('E_BACKUP_FORMAT', `${file}: not in chatmem line format (${why})`, { details: { file } });
}

// Byte offset of the first '\n' at or after `from` (or `limit` when there is none before it).
async function findNewline(fh: fsp.FileHandle, from: number, limit: number): Promise<number> {
  const buf = Buffer.allocUnsafe(READ_BLOCK);
  for (let pos = from; pos < limit; ) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(READ_BLOCK, limit - pos), pos);
    if (bytesRead === 0) break;
    const nl = buf.subarray(0, bytesRead).indexOf(NL);
    if (nl !== -1) return pos + nl;
    pos += bytesRead;
  }
  return limit;
}

// The bytes of the line starting at `start`, without its '\n', and where the next line starts.
async function readLine(fh: fsp.FileHandle, start: number, limit: number): Promise<{ line: Buffer; next: number }> {
  const parts: Buffer[] = [];
  for (let pos = start; pos < limit; ) {
    const buf = Buffer.allocUnsafe(Math.min(READ_BLOCK, limit - pos));
    const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
    if (bytesRead === 0) break;
    const nl = buf.subarray(0, bytesRead).indexOf(NL);
    if (nl !== -1) {
      parts.push(buf.subarray(0, nl));
      return { line: Buffer.concat(parts), next: pos + nl + 1 };
    }
    parts.push(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return { line: Buffer.concat(parts), next: limit };
}

function isWsByte(b: number | undefined): boolean {
  return b === 0x20 || b === NL || b === 0x0d || b === 0x09;
}

// End (exclusive) of the JSON string starting at line[0], or -1.
function keyEnd(line: Buffer): number {
  if (line[0] !== 0x22) return -1;
  let esc = false;
  for (let i = 1; i < line.length; i++) {
    const b = line[i]!;
    if (esc) esc = false;
    else if (b === 0x5c) esc = true;
    else if (b === 0x22) return i + 1;
  }
  return -1;
}

/**
 * Find one user's record in an uncompressed chatmem line-format file without parsing the whole file:
 * a binary search over byte offsets, O(log n) small reads. Returns undefined when absent. Throws
 * BackupError 'E_BACKUP_FORMAT' when the file is not in line format, so the caller can fall back
 * to readJsonEntries.
 */
export async function findInLineBackup(file: string, userId: string): Promise<unknown | undefined> {
  const fh = await fsp.open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const head = Buffer.alloc(Math.min(size, 3));
    await fh.read(head, 0, head.length, 0);
    if (head[0] !== 0x7b || head[1] !== NL) throw formatError(file, "first line is not '{'");

    // The last line is '}' and starts right after a '\n'; entries live in [2, end).
    const tailLen = Math.min(size, 64);
    const tail = Buffer.alloc(tailLen);
    await fh.read(tail, 0, tailLen, size - tailLen);
    let t = tailLen - 1;
    while (t >= 0 && (tail[t] === NL || tail[t] === 0x20 || tail[t] === 0x0d || tail[t] === 0x09)) t--;
    const closeAt = size - tailLen + t;
    if (t < 1 || tail[t] !== 0x7d || tail[t - 1] !== NL || closeAt < 2) throw formatError(file, "last line is not '}'");
    const end = closeAt;

    let lo = 2;
    let hi = end;
    while (lo < hi) {
      const mid = lo + Math.floor((hi - lo) / 2);
      let start = mid === lo ? lo : (await findNewline(fh, mid - 1, hi)) + 1;
      // No line starts in [mid, hi): the candidates left begin at lo.
      if (start >= hi) start = lo;
      const { line, next } = await readLine(fh, start, end);
      const last = next >= end;
      const ke = keyEnd(line);
      // Our writer puts ':' right after the key and ',' at the end of every line but the last, and
      // every line holds one whole value. Checking all of it on each probed line (O(log n) lines)
      // keeps a pretty-printed or indent=0 file that happens to start with "{\n\"" from being
      // misread as entries, e.g. returning a nested "name" field as a user.
      if (ke === -1 || line[ke] !== 0x3a || isWsByte(line[ke + 1]) || (line[line.length - 1] === 0x2c) === last) {
        throw formatError(file, `malformed entry line at byte ${start}`);
      }
      let key: string;
      let value: unknown;
      try {
        key = JSON.parse(line.toString('utf8', 0, ke)) as string;
        value = JSON.parse(line.toString('utf8', ke + 1, last ? line.length : line.length - 1)) as unknown;
      } catch (err) {
        throw new BackupError('E_BACKUP_FORMAT', `${file}: not in chatmem line format (bad entry line at byte ${start})`, {
          cause: err,
          details: { file, position: start },
        });
      }
      const cmp = compareIds(userId, key);
      if (cmp === 0) return value;
      if (cmp < 0) hi = start;
      else lo = next;
    }
    return undefined;
  } finally {
    await fh.close();
  }
}

/**
 * True when the file starts with "{\n" followed by a line that starts with '"' or is '}', i.e.
 * looks like the chatmem line format (cheap sniff of the first 4 KB).
 */
export async function isLineFormat(file: string): Promise<boolean> {
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.alloc(4096);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const head = buf.subarray(0, bytesRead);
    if (head[0] !== 0x7b || head[1] !== NL) return false;
    if (head[2] === 0x7d) return head.length === 3 || head[3] === NL;
    if (head[2] !== 0x22) return false;
    const ke = keyEnd(head.subarray(2));
    // A key longer than the sniff window is still plausible; a visible key must be followed by ':'
    // and no space, as JSON.stringify writes it (json.dump(indent=0) writes ': ').
    if (ke === -1 || 2 + ke >= head.length) return true;
    return head[2 + ke] === 0x3a && (3 + ke >= head.length || !isWsByte(head[3 + ke]));
  } finally {
    await fh.close();
  }
}
