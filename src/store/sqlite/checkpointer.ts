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

export interface CheckpointResult {
  /** Frames in the WAL, and how many of them are in the database file now (-1, -1: not in WAL mode). */
  log: number;
  checkpointed: number;
}

export class Checkpointer {
  private readonly worker: Worker;
  private waiting: ((r: CheckpointResult | Error) => void)[] = [];
  private running: Promise<CheckpointResult> | null = null;

  constructor(file: string) {
    const sqlite = createRequire(import.meta.url).resolve('better-sqlite3');
    this.worker = new Worker(WORKER, { eval: true, workerData: { file, sqlite } });
    this.worker.on('message', (m: { ok: boolean; log?: number; checkpointed?: number; error?: string }) => {
      const done = this.waiting.shift();
      done?.(m.ok ? { log: m.log ?? -1, checkpointed: m.checkpointed ?? -1 } : new Error(m.error ?? 'checkpoint failed'));
    });
    this.worker.on('error', (err) => {
      for (const done of this.waiting.splice(0)) done(err);
    });
    this.worker.on('exit', () => {
      for (const done of this.waiting.splice(0)) done(new Error('the checkpoint worker stopped'));
    });
  }

  /** A PASSIVE checkpoint in the worker; while one runs, the same one is answered. */
  checkpoint(): Promise<CheckpointResult> {
    this.running ??= new Promise<CheckpointResult>((resolve, reject) => {
      this.waiting.push((r) => (r instanceof Error ? reject(r) : resolve(r)));
      // A running checkpoint keeps the process alive, an idle worker does not (every writing process
      // has one): a build awaiting its last checkpoint in a process with nothing else to wait for (the
      // CLI's restore, test/ops/crash.test.ts's child) exited with code 13 in the middle of it while
      // the worker was unref'd; test/store/sqlite-wal.test.ts hangs if an idle one is not.
      this.worker.ref();
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
    this.worker.ref();
    this.worker.postMessage('close');
    await new Promise<void>((resolve) => {
      this.worker.once('exit', () => resolve());
      // A worker that already stopped emits no 'exit' again.
      setTimeout(resolve, 1000).unref();
    });
  }
}
