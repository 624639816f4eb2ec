import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { promises as fsp } from 'node:fs';
import { finished } from 'node:stream/promises';
import { createGzip, type Gzip } from 'node:zlib';
import { BackupError, RecordError } from '../errors.js';
import { FILE_MODE } from '../fs-util.js';
import { io } from '../fsio.js';
import { stringifyJson } from '../json-safe.js';
import { compareIds } from '../record.js';
import type { JsonByteBatch } from '../store/types.js';

/**
 * A value that is already the `JSON.stringify` text of a record (as the SQL stores keep it), written
 * as is: a backup then skips a parse and a stringify per user.
 */
export class RawJson {
  constructor(readonly text: string) {}
}

/** `[user_id, JSON text]` pairs (a store's `scanJson`) as entries that are written without re-serialising. */
export async function* rawEntries(pairs: AsyncIterable<[string, string]>): AsyncGenerator<[string, RawJson]> {
  for await (const [id, text] of pairs) yield [id, new RawJson(text)];
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
function waitForEvent(emitter: NodeJS.EventEmitter, events: string[], also?: Promise<void>, failOn: string[] = [], failure: () => unknown = prematureClose): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const done = (err?: unknown): void => {
      if (settled) return;
      settled = true;
      for (const e of events) emitter.removeListener(e, ok);
      for (const e of failOn) emitter.removeListener(e, closed);
      emitter.removeListener('error', fail);
      if (err === undefined) resolve();
      else reject(err);
    };
    const ok = (): void => done();
    const fail = (err: unknown): void => done(err ?? new Error('stream error'));
    const closed = (): void => done(failure());
    for (const e of events) emitter.on(e, ok);
    for (const e of failOn) emitter.on(e, closed);
    emitter.on('error', fail);
    also?.then(ok, fail);
  });
}

// Node's own code for a stream that ended before its data did (stream.finished uses it).
function prematureClose(): Error {
  return Object.assign(new Error('the output closed before the backup was written'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
}

// Writes buffers to `out` in order, honouring backpressure, and reports the first stream error.
class Sink {
  private readonly out: NodeJS.WritableStream;
  private error: unknown = undefined;
  private last: Promise<void> = Promise.resolve();
  /** The last write's callback has not come yet. */
  private inFlight = false;
  private readonly onError = (err: unknown): void => {
    this.error ??= err;
  };
  private closeEmitted = false;
  private readonly onClose = (): void => {
    this.closeEmitted = true;
  };

  constructor(out: NodeJS.WritableStream) {
    this.out = out;
    out.on('error', this.onError);
    out.once('close', this.onClose);
  }

  check(): void {
    if (this.error !== undefined) throw this.error;
  }

  // Hands `buf` to the stream; false when the caller should wait (drain) before the next. Synchronous,
  // for gzip output arriving in 'data' events.
  write0(buf: Buffer): boolean {
    let resolveDone!: () => void;
    let rejectDone!: (err: unknown) => void;
    this.last = new Promise<void>((res, rej) => {
      resolveDone = res;
      rejectDone = rej;
    });
    // Nobody may be awaiting yet; the error is also captured by onError and rethrown from check().
    this.last.catch(() => undefined);
    this.inFlight = true;
    return this.out.write(buf, (err) => {
      this.inFlight = false;
      if (err) {
        this.onError(err);
        rejectDone(err);
      } else resolveDone();
    });
  }

  // Waits for 'drain'; the last write's callback also counts, since a flushed stream may never emit it.
  // A stream destroyed meanwhile (a closed socket or response) may never call that callback back: its
  // 'close' fails the wait (the gzip path hung on it), and one already destroyed fails it at once.
  async drain(): Promise<void> {
    await this.settled(['drain']);
  }

  // Resolves once every byte handed over so far has been accepted by the underlying resource.
  async flushed(): Promise<void> {
    if (this.inFlight) await this.settled([]);
    await this.last;
    this.check();
  }

  private async settled(events: string[]): Promise<void> {
    const failure = (): unknown => (this.out as { errored?: unknown }).errored ?? this.error ?? prematureClose();
    if ((this.out as { destroyed?: boolean }).destroyed === true) throw failure();
    await waitForEvent(this.out, events, this.last, ['close'], failure);
  }

  dispose(): void {
    this.out.removeListener('close', this.onClose);
    // A stream destroyed with an error emits it a tick later: this listener stays until its 'close' (which
    // follows the error), or that error would reach the process as uncaught once the writer has rejected.
    // When 'close' has come already (a failed write usually closes the stream before the writer's
    // rejection gets here), a listener for it would never run and both would stay on the dead stream.
    if ((this.out as { destroyed?: boolean }).destroyed === true && !this.closeEmitted) this.out.once('close', () => this.out.removeListener('error', this.onError));
    else this.out.removeListener('error', this.onError);
  }
}

// The hash, count and (optional) gzip of a backup's bytes on their way to `out`. A plain write is
// pipelined: the next batch is built while the previous one is being written (the wait for the
// stream comes before the next write, not after each one), so reading and writing overlap.
class BackupOut {
  private readonly hash = createHash('sha256');
  private readonly sink: Sink;
  private readonly gz: Gzip | undefined;
  private gzError: unknown = undefined;
  private pending: Promise<void> | null = null;
  bytes = 0;

  constructor(out: NodeJS.WritableStream, gzip: boolean) {
    this.sink = new Sink(out);
    this.gz = gzip ? createGzip() : undefined;
    const gz = this.gz;
    if (gz) {
      gz.on('error', (err: unknown) => {
        this.gzError ??= err;
      });
      gz.on('data', (chunk: Buffer) => {
        if (!this.sink.write0(chunk)) {
          gz.pause();
          void this.sink.drain().then(
            () => gz.resume(),
            (err: unknown) => gz.destroy(err instanceof Error ? err : new Error(String(err))),
          );
        }
      });
    }
  }

  private checkGz(z: Gzip): void {
    this.sink.check();
    if (this.gzError !== undefined) throw this.gzError;
    if (z.destroyed) throw new Error('gzip stream closed early');
  }

  async emit(buf: Buffer): Promise<void> {
    this.hash.update(buf);
    this.bytes += buf.length;
    const gz = this.gz;
    if (gz) {
      this.checkGz(gz);
      // A destroyed stream never emits 'drain' or 'close' again: check before waiting.
      if (!gz.write(buf) && !gz.destroyed) await waitForEvent(gz, ['drain', 'close']);
      this.checkGz(gz);
      return;
    }
    if (this.pending) {
      const p = this.pending;
      this.pending = null;
      await p;
    }
    this.sink.check();
    if (!this.sink.write0(buf)) {
      this.pending = this.sink.drain();
      // Awaited before the next write or in finish(); an error is also kept by the sink.
      this.pending.catch(() => undefined);
    }
  }

  async finish(): Promise<{ sha256: string; bytes: number }> {
    if (this.pending) await this.pending;
    const gz = this.gz;
    if (gz) {
      this.checkGz(gz);
      gz.end();
      await waitForEvent(gz, ['end', 'close']);
      if (this.gzError !== undefined) throw this.gzError;
    }
    await this.sink.flushed();
    return { sha256: this.hash.digest('hex'), bytes: this.bytes };
  }

  destroy(): void {
    this.gz?.destroy();
  }

  dispose(): void {
    this.sink.dispose();
  }
}

function orderError(prev: string, key: string): BackupError {
  return new BackupError(
    'E_BACKUP_ORDER',
    `backup entries out of order: ${JSON.stringify(key)} after ${JSON.stringify(prev)}${key === prev ? ' (duplicate)' : ''}`,
    { details: { previous: prev, key } },
  );
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
  return withBackupOut(out, opts.gzip === true, async (w) => {
    let users = 0;
    let batch = '{\n';
    let prev: string | undefined;
    for await (const [key, value] of entries) {
      if (prev !== undefined && compareIds(prev, key) >= 0) throw orderError(prev, key);
      batch += (prev === undefined ? '' : ',\n') + entryLine(key, value);
      prev = key;
      users++;
      if (batch.length >= BATCH_BYTES) {
        await w.emit(Buffer.from(batch, 'utf8'));
        opts.onProgress?.(users);
        batch = '';
      }
    }
    batch += prev === undefined ? '}\n' : '\n}\n';
    await w.emit(Buffer.from(batch, 'utf8'));
    opts.onProgress?.(users);
    return users;
  });
}

const COMMA_NL = 0x2c0a;

/**
 * `writeBackupStream` for a store's byte batches (`scanJson(...).jsonBatches()`): the same bytes, each
 * batch's lines built straight into one buffer from the stored UTF-8 JSON, with no string per record.
 * Same order check, hash, count, gzip, backpressure and progress.
 */
export async function writeBackupBatches(
  batches: AsyncIterable<JsonByteBatch>,
  out: NodeJS.WritableStream,
  opts: { gzip?: boolean; onProgress?: (written: number) => void } = {},
): Promise<{ sha256: string; users: number; bytes: number }> {
  return withBackupOut(out, opts.gzip === true, async (w) => {
    let users = 0;
    let prev: string | undefined;
    let head = true;
    for await (const b of batches) {
      const keys: string[] = new Array<string>(b.ids.length);
      let size = head ? 2 : 0;
      for (let i = 0; i < b.ids.length; i++) {
        const id = b.ids[i] as string;
        if (prev !== undefined && compareIds(prev, id) >= 0) throw orderError(prev, id);
        prev = id;
        const k = JSON.stringify(id);
        keys[i] = k;
        // ",\n" before every line but the very first; '"id"' ':' data.
        size += 2 + Buffer.byteLength(k, 'utf8') + 1 + (b.data[i] as Buffer).length;
      }
      if (b.ids.length === 0) continue;
      if (head) size -= 2;
      const buf = Buffer.allocUnsafe(size);
      let off = 0;
      for (let i = 0; i < b.ids.length; i++) {
        if (head) {
          off = buf.write('{\n', off, 'latin1');
          head = false;
        } else off = buf.writeUInt16BE(COMMA_NL, off);
        off += buf.write(keys[i] as string, off, 'utf8');
        buf[off++] = 0x3a;
        off += (b.data[i] as Buffer).copy(buf, off);
      }
      users += b.ids.length;
      await w.emit(off === size ? buf : buf.subarray(0, off));
      opts.onProgress?.(users);
    }
    await w.emit(Buffer.from(head ? '{\n}\n' : '\n}\n', 'latin1'));
    opts.onProgress?.(users);
    return users;
  });
}

/** Runs one writer's `body` (which returns the entries written) on a BackupOut: finished on success, destroyed on failure, always disposed. */
async function withBackupOut(
  out: NodeJS.WritableStream,
  gzip: boolean,
  body: (w: BackupOut) => Promise<number>,
): Promise<{ sha256: string; users: number; bytes: number }> {
  const w = new BackupOut(out, gzip);
  try {
    const users = await body(w);
    const { sha256, bytes } = await w.finish();
    return { sha256, users, bytes };
  } catch (err) {
    w.destroy();
    throw err;
  } finally {
    w.dispose();
  }
}

/**
 * Creates `file` (exclusive, mode 0600) through the io seam, lets `write` fill its stream, ends it and
 * fsyncs it: when this resolves, every byte is on disk. Any failure destroys the stream, removes the
 * file and rethrows. The caller then links or renames the file into place and fsyncs the directory.
 */
export async function writeStreamDurably<T>(file: string, write: (out: NodeJS.WritableStream) => Promise<T>): Promise<T> {
  const out = io.createWriteStream(file, { flags: 'wx', mode: FILE_MODE });
  // A late ENOSPC/EIO can surface after the writer's own listener is gone: keep one for the whole life.
  out.on('error', () => undefined);
  // Set once this call has created the file: a name that already existed (EEXIST) is someone else's
  // file, and the clean-up below must not remove it.
  let created = false;
  try {
    await once(out, 'open');
    created = true;
    let result: T;
    try {
      result = await write(out);
      out.end();
      await finished(out);
    } catch (err) {
      out.destroy();
      throw err;
    }
    const fh = await io.open(file, 'r+');
    try {
      await io.sync(fh, file);
    } finally {
      await io.close(fh, file);
    }
    return result;
  } catch (err) {
    if (created) await fsp.rm(file, { force: true }).catch(() => undefined);
    throw err;
  }
}
