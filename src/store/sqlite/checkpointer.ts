import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/*
 * WAL checkpoints of a bulk build, on a connection of their own in a worker thread. A full restore's
 * build writes the whole store again into the WAL (~0.5 GB at 100k users); with SQLite's auto-
 * checkpoint, every ~4 MB of it was copied into the database file and fsynced inside whichever commit
 * crossed the mark, on the event loop: a build chunk or a chat append. The build turns auto-checkpoints
 * off on the main connection and asks this worker for PASSIVE checkpoints instead (they never wait for
 * writers, nor writers for them), then one last one before turning them on again, so the first commit
 * after the build does not inherit the whole backlog.
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
    // Not unref'd: a build awaiting its last checkpoint in a process with nothing else to wait for
    // (the CLI's restore, test/ops/crash.test.ts's child) exited with code 13 in the middle of it.
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
      // Stryker disable next-line StringLiteral: equivalent; the worker takes any message but 'close' as a checkpoint request.
      this.worker.postMessage('checkpoint');
    }).finally(() => {
      this.running = null;
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
    // Idle (the running checkpoint was awaited): the worker closes its connection and exits.
    this.worker.postMessage('close');
    await new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
  }
}
