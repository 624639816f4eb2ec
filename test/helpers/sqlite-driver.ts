import * as path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll } from 'vitest';
import { newRecord, type MemoryRecord } from '../../src/record.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { tempDir } from './tmp.js';

export const T0 = '2026-01-01T00:00:00.000Z';
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A record whose messages are `words` (one word each, so each is found only through its message). */
export function rec(id: string, words: string[], extra: Partial<MemoryRecord> = {}): MemoryRecord {
  return { ...newRecord(id, T0), history: words.map((w, i) => ({ role: 'user', text: w, ts: T0, id: `${id}-${i}` })), ...extra };
}

/**
 * One temp directory for the test file (made before its tests, removed after); returns a function that
 * names a new database path in a directory of its own, so each test's driver starts from nothing.
 */
export function freshFiles(prefix: string): () => string {
  let root: { dir: string; cleanup: () => Promise<void> } | undefined;
  let seq = 0;
  beforeAll(async () => {
    root = await tempDir(prefix);
  });
  afterAll(async () => {
    await root?.cleanup();
  });
  return () => {
    if (!root) throw new Error('freshFiles: called outside a test');
    return path.join(root.dir, `s${++seq}`, 'memory.db');
  };
}

/** The stored JSON's bytes, users and messages, counted from a scan: what stats must say. */
export async function counted(d: SqliteDriver): Promise<{ users: number; messages: number; bytes: number }> {
  const t = { users: 0, messages: 0, bytes: 0 };
  for await (const [, json] of d.scanJson()) {
    t.users++;
    t.messages += (JSON.parse(json) as MemoryRecord).history.length;
    t.bytes += Buffer.byteLength(json);
  }
  return t;
}

/** A store at `file` as this version makes it, then marked as written by a newer schema (99). */
export async function newerSchemaStore(file: string): Promise<void> {
  const d = await SqliteDriver.open(file);
  await d.close();
  const raw = new Database(file);
  raw.pragma('user_version = 99');
  raw.close();
}
