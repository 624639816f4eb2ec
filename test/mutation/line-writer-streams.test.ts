import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { BackupError } from '../../src/errors.js';
import { writeBackupBatches, writeBackupStream } from '../../src/format/line-writer.js';
import type { JsonByteBatch } from '../../src/store/types.js';

/**
 * The backup writers' stream handling beyond line-format.test.ts: outputs that report errors in
 * the older ways (an 'error' event with no write failing, an 'error' with no argument, no
 * auto-destroy), outputs that fail while the writer waits on its source rather than on them,
 * backpressure through gzip with data that does not compress, listeners left behind on a dead
 * output, and the plain writer's own order check and batch boundary.
 *
 * A broken wait hangs: every wait below is raced against 2 s, so a mutant that breaks one fails
 * its test quickly instead of costing StrykerJS's timeout.
 */
const HUNG = 'still waiting after 2 s' as const;

async function settle<T>(p: Promise<T>): Promise<{ ok: T } | { err: unknown } | typeof HUNG> {
  return Promise.race([p.then((ok) => ({ ok }), (err: unknown) => ({ err })), sleep(2000).then(() => HUNG)]);
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  const r = await settle(p);
  if (r === HUNG) throw new Error(HUNG);
  if ('ok' in r) throw new Error('resolved; a rejection was expected');
  return r.err;
}

async function* iterate<T>(items: T[]): AsyncGenerator<T> {
  for (const i of items) yield i;
}

/** Records of `size` random base64 bytes: gzip cannot shrink them much, so its output keeps pace with its input. */
const noise = (count: number, size: number): [string, unknown][] =>
  Array.from({ length: count }, (_, i) => [`u${String(i).padStart(6, '0')}`, { i, pad: randomBytes(size).toString('base64') }] as [string, unknown]);

type Write = (entries: AsyncIterable<[string, unknown]>, out: Writable, gzip: boolean) => Promise<{ sha256: string; users: number; bytes: number }>;

const writers: Record<string, Write> = {
  entries: (entries, out, gzip) => writeBackupStream(entries, out, { gzip }),
  batches: (entries, out, gzip) => {
    async function* chunks(): AsyncGenerator<JsonByteBatch> {
      let ids: string[] = [];
      let data: Buffer[] = [];
      for await (const [id, v] of entries) {
        ids.push(id);
        data.push(Buffer.from(JSON.stringify(v)));
        if (ids.length === 50) {
          yield { ids, data } as JsonByteBatch;
          ids = [];
          data = [];
        }
      }
      yield { ids, data } as JsonByteBatch;
    }
    return writeBackupBatches(chunks(), out, { gzip });
  },
};

const enospc = (): Error => Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });

describe('outputs that report failure the old ways', { timeout: 10_000 }, () => {
  for (const [name, write] of Object.entries(writers)) {
    for (const gzip of [false, true]) {
      it(`${name}, gzip ${gzip}: an 'error' event fails the backup even though every write was called back`, async () => {
        let calls = 0;
        const out = new Writable({
          autoDestroy: false,
          write(_chunk: Buffer, _enc, cb) {
            if (++calls === 2) process.nextTick(() => out.emit('error', enospc()));
            cb();
          },
        });
        expect(await rejection(write(iterate(noise(1000, 300)), out, gzip))).toMatchObject({ code: 'ENOSPC' });
      });

      it(`${name}, gzip ${gzip}: an 'error' with no argument while the writer waits for the output rejects ("stream error")`, async () => {
        let calls = 0;
        const out = new Writable({
          autoDestroy: false,
          highWaterMark: 1024,
          write(_chunk: Buffer, _enc, cb) {
            // The third write is never called back: only the error can end the wait.
            if (++calls === 3) setTimeout(() => out.emit('error'), 5);
            else if (calls < 3) setTimeout(cb, 0);
          },
        });
        const err = await rejection(write(iterate(noise(2000, 300)), out, gzip));
        expect((err as Error).message).toBe('stream error');
      });
    }
  }
});

describe('outputs that fail while the writer waits on its source (gzip)', { timeout: 10_000 }, () => {
  for (const [name, write] of Object.entries(writers)) {
    for (const how of ['closed', 'ENOSPC'] as const) {
      it(`${name}: an output ${how} between two reads of the source, gzip output still on its way, rejects with that failure`, async () => {
        // Slow enough that gzip's last output is still being written when the source pauses.
        let received = 0;
        const out = new Writable({
          highWaterMark: 1024,
          write(_chunk: Buffer, _enc, cb) {
            received++;
            setTimeout(cb, 20);
          },
        });
        // Checked below: the failure must come while gzip output was still pending, or the test proves nothing.
        let pendingAtFailure = -1;
        async function* slowSource(): AsyncGenerator<[string, unknown]> {
          const all = noise(1200, 300);
          yield* all.slice(0, 600);
          // The store is slow to answer; meanwhile the output dies.
          await sleep(5);
          pendingAtFailure = out.writableLength;
          if (how === 'closed') out.destroy();
          else out.destroy(enospc());
          await sleep(50);
          yield* all.slice(600);
        }
        const err = await rejection(write(slowSource(), out, true));
        expect(received).toBeGreaterThan(2);
        expect(pendingAtFailure).toBeGreaterThan(0);
        expect(err).toMatchObject(how === 'closed' ? { code: 'ERR_STREAM_PREMATURE_CLOSE', message: 'the output closed before the backup was written' } : { code: 'ENOSPC' });
      });
    }
  }
});

describe('gzip backpressure with data that does not compress', { timeout: 10_000 }, () => {
  for (const [name, write] of Object.entries(writers)) {
    it(`${name}: the output never holds much, and the source is read only as fast as the output takes it`, async () => {
      let maxBuffered = 0;
      let received = 0;
      const chunks: Buffer[] = [];
      const out = new Writable({
        highWaterMark: 1024,
        write(chunk: Buffer, _enc, cb) {
          maxBuffered = Math.max(maxBuffered, out.writableLength);
          chunks.push(Buffer.from(chunk));
          received += chunk.length;
          setTimeout(cb, 0);
        },
      });
      const entries = noise(3000, 300);
      let receivedWhenReadAll = -1;
      async function* source(): AsyncGenerator<[string, unknown]> {
        yield* entries;
        receivedWhenReadAll = received;
      }
      const r = await settle(write(source(), out, true));
      if (r === HUNG || !('ok' in r)) throw new Error(`the write did not succeed: ${r === HUNG ? r : String(r.err)}`);
      const total = Buffer.concat(chunks);
      expect(JSON.parse(gunzipSync(total).toString('utf8'))).toEqual(Object.fromEntries(entries));
      expect(total.length).toBeGreaterThan(800 * 1024);
      // gzip's 16 KB chunks against a 1 KB high-water mark: one chunk beyond it at most.
      expect(maxBuffered).toBeLessThan(64 * 1024);
      // The writer's 64 KB batch, gzip's buffers and the output's: a few hundred KB in flight at most.
      expect(receivedWhenReadAll).toBeGreaterThan(total.length - 400 * 1024);
    });
  }
});

describe('no listener is left on an output that failed', { timeout: 10_000 }, () => {
  for (const [name, write] of Object.entries(writers)) {
    for (const gzip of [false, true]) {
      for (const how of ['destroy', 'callback', 'closed'] as const) {
        it(`${name}, gzip ${gzip}: an output ${how} mid-write keeps no 'error' or 'close' listener of the writer's once closed`, async () => {
          let calls = 0;
          const out = new Writable({
            highWaterMark: 1024,
            write(_chunk: Buffer, _enc, cb) {
              if (++calls === 3) {
                if (how === 'destroy') out.destroy(enospc());
                else if (how === 'callback') cb(enospc());
                else setTimeout(() => out.destroy(), 5);
                return;
              }
              setTimeout(cb, 0);
            },
          });
          await rejection(write(iterate(noise(2000, 300)), out, gzip));
          if (!out.closed) await once(out, 'close');
          await sleep(10);
          expect([out.listenerCount('error'), out.listenerCount('close'), out.listenerCount('drain')]).toEqual([0, 0, 0]);
        });
      }
    }
  }
});

describe('writeBackupStream: order and batch size', { timeout: 10_000 }, () => {
  const collector = (): Writable => new Writable({ write: (_c, _e, cb) => cb() });

  it('refuses an entry out of order, naming both, and a duplicate as such, writing nothing more', async () => {
    const err = await rejection(writeBackupStream(iterate<[string, unknown]>([['b', 1], ['a', 2]]), collector()));
    expect(err).toBeInstanceOf(BackupError);
    expect(err).toMatchObject({ code: 'E_BACKUP_ORDER', details: { previous: 'b', key: 'a' } });
    const dup = await rejection(writeBackupStream(iterate<[string, unknown]>([['a', 1], ['b', 2], ['b', 3]]), collector()));
    expect((dup as Error).message).toBe('backup entries out of order: "b" after "b" (duplicate)');
  });

  it('sends a batch as soon as it reaches 64 KB exactly', async () => {
    // "{\n" + '"a":' + a JSON string of 65,528 x's in quotes = 65,536 bytes: the first batch is full.
    const entries: [string, unknown][] = [['a', 'x'.repeat(65_528)], ['b', 1]];
    const progress: number[] = [];
    await writeBackupStream(iterate(entries), collector(), { onProgress: (u) => progress.push(u) });
    expect(progress).toEqual([1, 2]);
  });
});

describe('outputs closed around the last write (gzip)', { timeout: 10_000 }, () => {
  for (const [name, write] of Object.entries(writers)) {
    // A socket that goes away with the last compressed chunk unconfirmed: its 'close' has come and gone
    // before the writer waits for that chunk, so only the check of `destroyed` can end the wait.
    it(`${name}: an output destroyed with the last chunk never confirmed rejects instead of waiting forever`, async () => {
      const entries = noise(300, 300);
      const chunks: Buffer[] = [];
      const out = new Writable({
        write(chunk: Buffer, _enc, cb) {
          chunks.push(Buffer.from(chunk));
          // gzip's last chunk is the one that completes the stream: not confirmed, and the output goes.
          if (gunzipped(chunks) !== null) process.nextTick(() => out.destroy());
          else cb();
        },
      });
      const err = await rejection(write(iterate(entries), out, true));
      expect(err).toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
    });

    // The opposite: every byte confirmed, then the output closed before the writer looks again. The
    // backup is whole; the writer resolves with its hash.
    it(`${name}: an output that confirmed every byte and then closed still counts as written`, async () => {
      const entries = noise(300, 300);
      const chunks: Buffer[] = [];
      const out = new Writable({
        write(chunk: Buffer, _enc, cb) {
          chunks.push(Buffer.from(chunk));
          cb();
          process.nextTick(() => {
            // Only once gzip has sent its end: earlier chunks are followed by more.
            if (gunzipped(chunks) !== null) out.destroy();
          });
        },
      });
      const r = await settle(write(iterate(entries), out, true));
      if (r === HUNG || !('ok' in r)) throw new Error(`the write did not succeed: ${r === HUNG ? r : String((r as { err: unknown }).err)}`);
      expect(out.destroyed).toBe(true);
      const text = gunzipped(chunks);
      expect(JSON.parse(text ?? '')).toEqual(Object.fromEntries(entries));
      expect(r.ok.users).toBe(300);
    });
  }
});

/** The text of complete gzip output, or null while it is not complete yet. */
function gunzipped(chunks: Buffer[]): string | null {
  try {
    return gunzipSync(Buffer.concat(chunks)).toString('utf8');
  } catch {
    return null;
  }
}

describe('no listener is left on an output that took everything', { timeout: 10_000 }, () => {
  for (const [name, write] of Object.entries(writers)) {
    for (const gzip of [false, true]) {
      it(`${name}, gzip ${gzip}: after a write with backpressure, no 'error', 'close' or 'drain' listener of the writer's stays`, async () => {
        const out = new Writable({
          highWaterMark: 1024,
          write(_chunk: Buffer, _enc, cb) {
            setTimeout(cb, 0);
          },
        });
        const r = await settle(write(iterate(noise(500, 300)), out, gzip));
        expect(r !== HUNG && 'ok' in r).toBe(true);
        expect([out.listenerCount('error'), out.listenerCount('close'), out.listenerCount('drain')]).toEqual([0, 0, 0]);
      });
    }
  }
});
