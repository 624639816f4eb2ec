import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/*
 * WAL checkpoints on a connection of their own in a worker thread. The store turns SQLite's auto-
 * checkpoint off on its connection: it copied ~4 MB of WAL into the database file and fsynced it inside
 * whichever commit crossed the mark, on the event loop (a chat append, a chunk of the indexer, a
 * restore's build chunk). The store asks this worker instead as the WAL grows (WAL_WATCH_MS in
 * driver.ts), and a full restore's build, which writes the whole store again (~0.5 GB of WAL at 100k
 * users), as it goes and once at its end. PASSIVE checkpoints never wait for writers, nor writers for
 * them.
 */
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.sqlite);
const db = new Database(workerData.file, { fileMustExist: true });
db.pragma('busy_timeout = 10000');
parentPort.on('message', (m) => {
  if (m === 'close') { db.close(); parentPort.close(); return; }
  try {
    const [r] = db.pragma('wal_checkpoint(PASSIVE)');
    parentPort.postMessage({ ok: true, log: r.log, checkpointed: r.checkpointed });
  } catch (err) {
    parentPort.postMessage({ ok: false, error: String(err && err.message) });
  }
});
`;

const STOPPED = 'the checkpoint worker stopped';

export interface CheckpointResult {
  /** Frames in the WAL, and how many of them are in the database file now (-1, -1: not in WAL mode). */
  log: number;
  checkpointed: number;
}

export class Checkpointer {
  private readonly worker: Worker;
  private waiting: ((r: CheckpointResult | Error) => void)[] = [];
  private running: Promise<CheckpointResult> | null = null;
  /** The worker has exited: a request posted now would never be answered. */
  private stopped = false;

  constructor(file: string) {
    const sqlite = createRequire(import.meta.url).resolve('better-sqlite3');
    this.worker = new Worker(WORKER, { eval: true, workerData: { file, sqlite } });
    this.worker.on('message', (m: ({ ok: true } & CheckpointResult) | { ok: false; error: string }) => {
      const done = this.waiting.shift();
      // Stryker disable next-line OptionalChaining: equivalent; the worker answers only requests, each of which pushed its `done` first.
      done?.(m.ok ? { log: m.log, checkpointed: m.checkpointed } : new Error(m.error));
    });
    this.worker.on('error', (err) => {
      for (const done of this.waiting.splice(0)) done(err);
    });
    this.worker.on('exit', () => {
      this.stopped = true;
      for (const done of this.waiting.splice(0)) done(new Error(STOPPED));
    });
  }

  /** A PASSIVE checkpoint in the worker; while one runs, the same one is answered. */
  checkpoint(): Promise<CheckpointResult> {
    this.running ??= new Promise<CheckpointResult>((resolve, reject) => {
      // Posted to a worker that exited (after close, or after it failed), a request waited forever.
      if (this.stopped) {
        reject(new Error(STOPPED));
        return;
      }
      this.waiting.push((r) => (r instanceof Error ? reject(r) : resolve(r)));
      // A running checkpoint keeps the process alive, an idle worker does not (every writing process
      // has one): a build awaiting its last checkpoint in a process with nothing else to wait for (the
      // CLI's restore, test/ops/crash.test.ts's child) exited with code 13 in the middle of it while
      // the worker was unref'd; test/store/sqlite-wal.test.ts hangs if an idle one is not.
      this.worker.ref();
      // Stryker disable next-line StringLiteral: equivalent; the worker takes any message but 'close' as a checkpoint request.
      this.worker.postMessage('checkpoint');
    }).finally(() => {
      this.running = null;
      this.worker.unref();
    });
    return this.running;
  }

  /** True while a checkpoint runs. */
  get busy(): boolean {
    return this.running !== null;
  }

  async close(): Promise<void> {
    await this.running?.catch(() => undefined);
    // A worker that already stopped emits no 'exit' again.
    if (this.stopped) return;
    // Idle (the running checkpoint was awaited): the worker closes its connection and exits; the
    // wait for it keeps the process alive.
    this.worker.ref();
    this.worker.postMessage('close');
    await new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
  }
}
