// Fast checks of src/store/sqlite/checkpointer.ts's promises, for mutation testing: a checkpoint copies
// the WAL's frames into the database file (a copy of that file alone holds the rows), calls made while
// one runs share it, a failed checkpoint or a worker that cannot start is an error for the caller, and
// close lets a running checkpoint finish and releases the worker's connection. Real SQLite files.
import Database from 'better-sqlite3';
import { copyFileSync, existsSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Checkpointer } from '../../src/store/sqlite/checkpointer.js';
import { tempDir } from '../helpers/tmp.js';

let root: { dir: string; cleanup: () => Promise<void> };
let seq = 0;
beforeAll(async () => {
  root = await tempDir('chatmem-ckpt-');
});
afterAll(async () => {
  await root.cleanup();
});

/** A WAL database with auto-checkpoints off and `rows` rows committed: they are in the WAL only. */
function walDb(rows: number): { file: string; db: Database.Database } {
  const file = path.join(root.dir, `db-${++seq}.db`);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('wal_autocheckpoint = 0');
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)');
  const ins = db.prepare('INSERT INTO t (v) VALUES (?)');
  for (let i = 0; i < rows; i++) ins.run(`row ${i} ${'x'.repeat(200)}`);
  return { file, db };
}

/** Rows of the database file alone (its WAL left behind): what a checkpoint has copied in. */
function rowsInFileAlone(file: string): number {
  const copy = `${file}.copy-${++seq}`;
  copyFileSync(file, copy);
  const db = new Database(copy);
  try {
    const hasTable = db.prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 't'").get() as { n: number };
    return hasTable.n === 0 ? 0 : (db.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n;
  } finally {
    db.close();
  }
}

describe('Checkpointer: WAL checkpoints of a bulk build in a worker', () => {
  it('copies every committed frame into the database file, and reports how many', async () => {
    const { file, db } = walDb(300);
    const c = new Checkpointer(file);
    try {
      expect(rowsInFileAlone(file)).toBe(0);
      const r = await c.checkpoint();
      expect(r.log).toBeGreaterThan(0);
      expect(r.checkpointed).toBe(r.log);
      expect(rowsInFileAlone(file)).toBe(300);
      // Later commits go to the WAL again, and the next checkpoint copies them too.
      db.prepare('INSERT INTO t (v) VALUES (?)').run('one more');
      const again = await c.checkpoint();
      expect(again.checkpointed).toBe(again.log);
      expect(rowsInFileAlone(file)).toBe(301);
    } finally {
      await c.close();
      db.close();
    }
  });

  it('answers calls made while one runs with that same checkpoint, and is busy only while it runs', async () => {
    const { file, db } = walDb(50);
    const c = new Checkpointer(file);
    try {
      expect(c.busy).toBe(false);
      const a = c.checkpoint();
      expect(c.busy).toBe(true);
      const b = c.checkpoint();
      expect(b).toBe(a);
      const r = await a;
      expect(r.checkpointed).toBe(r.log);
      expect(c.busy).toBe(false);
      // A call after it ended is a new checkpoint.
      const d = c.checkpoint();
      expect(d).not.toBe(a);
      await d;
    } finally {
      await c.close();
      db.close();
    }
  });

  it('reports -1 frames for a database not in WAL mode', async () => {
    const file = path.join(root.dir, `db-${++seq}.db`);
    const db = new Database(file);
    db.exec('CREATE TABLE t (v TEXT)');
    const c = new Checkpointer(file);
    try {
      expect(await c.checkpoint()).toEqual({ log: -1, checkpointed: -1 });
    } finally {
      await c.close();
      db.close();
    }
  });

  it('a checkpoint that fails is an error for its caller, and the worker answers the next one', async () => {
    const file = path.join(root.dir, `db-${++seq}.db`);
    writeFileSync(file, 'not a database, but long enough to be read as a header by SQLite '.repeat(4));
    const c = new Checkpointer(file);
    try {
      await expect(c.checkpoint()).rejects.toThrow(/not a database/);
      expect(c.busy).toBe(false);
      await expect(c.checkpoint()).rejects.toThrow(/not a database/);
    } finally {
      await c.close();
    }
  });

  it('a worker that cannot open the database fails the checkpoint instead of leaving it waiting', async () => {
    const c = new Checkpointer(path.join(root.dir, 'missing', 'none.db'));
    // The worker's own error, not only "stopped": what went wrong reaches the build.
    await expect(c.checkpoint()).rejects.toThrow(/directory does not exist|unable to open/i);
    // Already stopped: close does not wait for an exit that came before, and a later request is refused.
    await c.close();
    await expect(c.checkpoint()).rejects.toThrow('the checkpoint worker stopped');
  });

  it('close lets a running checkpoint finish, then releases the connection (the WAL goes with the last one)', async () => {
    const { file, db } = walDb(200);
    const c = new Checkpointer(file);
    const running = c.checkpoint();
    await c.close();
    const r = await running;
    expect(r.checkpointed).toBe(r.log);
    expect(rowsInFileAlone(file)).toBe(200);
    // With the worker's connection closed, the main one is the last: closing it removes the WAL.
    db.close();
    expect(existsSync(`${file}-wal`)).toBe(false);
    // Once closed, a checkpoint is refused at once rather than left waiting; closing again is a no-op.
    await expect(c.checkpoint()).rejects.toThrow('the checkpoint worker stopped');
    await c.close();
  });
});
