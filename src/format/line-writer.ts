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

/**
 * Creates `file` (exclusive, mode 0600) through the io seam, lets `write` fill its stream, ends it and
 * fsyncs it: when this resolves, every byte is on disk. Any failure destroys the stream, removes the
 * file and rethrows. The caller then links or renames the file into place and fsyncs the directory.
 */
export async function writeStreamDurably<T>(file: string, write: (out: NodeJS.WritableStream) => Promise<T>): Promise<T> {
  const out = io.createWriteStream(file, { flags: 'wx', mode: FILE_MODE });
  // A late ENOSPC/EIO can surface after the writer's own listener is gone: keep one for the whole life.
  out.on('error', () => undefined);
  try {
    await once(out, 'open');
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
    await fsp.rm(file, { force: true }).catch(() => undefined);
    throw err;
  }
}
