// What the JSON store's mutation tests share: records in the seed's shape, the file read back as
// data, fresh store directories under one temp root per test file, and a store opened with its
// outside-change reports and warnings collected.
import { mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { serializeSeed } from '../../src/format/seed.js';
import { defaultFsIo, type FsIo } from '../../src/fsio.js';
import { JsonFileDriver, type OutsideChange } from '../../src/store/json-file.js';
import { createStore } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { tempDir } from './tmp.js';

export type FileData = Record<string, Record<string, unknown>>;
export const readData = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as FileData;
export const T0 = '2026-01-01T00:00:00.000Z';

export function rec(id: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { user_id: id, name: id.toUpperCase(), created_at: T0, updated_at: T0, history: [], ...extra };
}

/**
 * One temp root for the calling test file (made before its tests, removed after). `freshPath()` is a
 * new name under it, not created; `freshFile(seed)` is `memory.json` in a new private directory,
 * written from `seed` when given.
 */
export function jsonFileRoot(prefix: string): { freshPath: () => string; freshFile: (seed?: [string, unknown][]) => string } {
  let root = '';
  let cleanup: () => Promise<void> = async () => undefined;
  let n = 0;
  beforeAll(async () => {
    ({ dir: root, cleanup } = await tempDir(prefix));
  });
  afterAll(async () => {
    await cleanup();
  });
  const freshPath = (): string => path.join(root, `d${n++}`);
  const freshFile = (seed?: [string, unknown][]): string => {
    const dir = freshPath();
    mkdirSync(dir, { mode: 0o700 });
    const file = path.join(dir, 'memory.json');
    if (seed) writeFileSync(file, serializeSeed(seed), { mode: 0o600 });
    return file;
  };
  return { freshPath, freshFile };
}

export interface OpenedJson {
  driver: JsonFileDriver;
  store: Store;
  changes: { change: OutsideChange; message: string }[];
  warnings: string[];
}

export async function openJson(file: string): Promise<OpenedJson> {
  const changes: OpenedJson['changes'] = [];
  const warnings: string[] = [];
  const driver = await JsonFileDriver.open(file, { onOutsideChange: (change, message) => changes.push({ change, message }), warn: (m) => warnings.push(m) });
  return { driver, store: createStore(driver), changes, warnings };
}

// Moves each outside write's mtime on by one more millisecond, so no two look the same.
let tick = 0;

/** json.dump over the file: same inode, new content, mtime moved on so it is seen whatever the clock tick. */
export function writeInPlace(file: string, text: string): void {
  writeFileSync(file, text);
  const later = new Date(Date.now() + 5_000 + tick++);
  utimesSync(file, later, later);
}

/** Whether a path is one of the store's temp files (each write goes to a `.tmp` file, then is renamed). */
export const isTmp = (p: string): boolean => p.endsWith('.tmp');

/** A `writeAll` for `setFsIo`: a disk too full for any temp-file write holding `marker` (ENOSPC), `onRefuse` called each time. */
export function refuseWritesHolding(marker: string, onRefuse: () => void): FsIo['writeAll'] {
  return async (fh, f, data) => {
    if (isTmp(f) && String(data).includes(marker)) {
      onRefuse();
      throw Object.assign(new Error('ENOSPC: injected'), { code: 'ENOSPC' });
    }
    return defaultFsIo.writeAll(fh, f, data);
  };
}
