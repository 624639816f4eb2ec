import * as path from 'node:path';
import { describe } from 'vitest';
import { JsonFileDriver } from '../../src/store/json-file.js';
import { PostgresDriver } from '../../src/store/postgres/index.js';
import { SqliteDriver } from '../../src/store/sqlite/index.js';
import { createStore, type StoreOptions } from '../../src/store/store.js';
import type { Store, StoreDriver } from '../../src/store/types.js';
import { createSchema, describePg, PG_URL, urlWithSchema } from './pg.js';
import { tempDir } from './tmp.js';

// The one registry of test stores: the conformance suite, the driver files, and the ops, server and
// CLI suites all take their backends from here.

/** A place for a store under test. `open` may be called again after `close` to test persistence. */
export interface StoreHarness {
  open(options?: StoreOptions): Promise<Store>;
  /** A URL another process can open (crash tests), when the backend supports it. */
  url?: string;
  cleanup(): Promise<void>;
}

export type TestStoreName = 'sqlite' | 'json-file' | 'postgres';

export interface TestStoreEntry {
  name: TestStoreName;
  /** The `describe` to use: PostgreSQL's skips with a warning when the server is unreachable, and fails under CI. */
  describe: typeof describe;
  /** A fresh store place: file stores in `dir` when given (left there by cleanup), else in a temp dir of their own. */
  harness(dir?: string): Promise<StoreHarness>;
}

/** The file stores: URL scheme and file name, as the daemon and the CLI are configured with them. */
const FILE_STORES = {
  sqlite: { file: 'memory.db', open: (file: string): Promise<StoreDriver> => SqliteDriver.open(file) },
  json: { file: 'memory.json', open: (file: string): Promise<StoreDriver> => JsonFileDriver.open(file) },
} as const;

export type FileStoreKind = keyof typeof FILE_STORES;

/** The URL of a file store of `kind` in `dir` (`sqlite:<dir>/memory.db`, `json:<dir>/memory.json`). */
export function fileStoreUrl(kind: FileStoreKind, dir: string): string {
  return `${kind}:${path.join(dir, FILE_STORES[kind].file)}`;
}

async function fileHarness(kind: FileStoreKind, dir?: string): Promise<StoreHarness> {
  const t = dir === undefined ? await tempDir() : null;
  const file = path.join(t ? path.join(t.dir, 'storage') : (dir as string), FILE_STORES[kind].file);
  return {
    url: `${kind}:${file}`,
    open: async (options) => createStore(await FILE_STORES[kind].open(file), options),
    cleanup: t ? t.cleanup : async () => undefined,
  };
}

/** A fresh schema per harness; `open` connects a new driver (a new pool) to it; cleanup drops it. */
async function pgHarness(): Promise<StoreHarness> {
  const { schema, drop } = await createSchema();
  return {
    url: urlWithSchema(schema),
    open: async (options) => createStore(await PostgresDriver.connect({ connectionString: PG_URL, schema }), options),
    cleanup: drop,
  };
}

export const TEST_STORES: readonly TestStoreEntry[] = [
  { name: 'sqlite', describe, harness: (dir) => fileHarness('sqlite', dir) },
  { name: 'json-file', describe, harness: (dir) => fileHarness('json', dir) },
  { name: 'postgres', describe: describePg as unknown as typeof describe, harness: () => pgHarness() },
];

/** The registry's entry for one backend. */
export function testStoreEntry(name: TestStoreName): TestStoreEntry {
  const entry = TEST_STORES.find((e) => e.name === name);
  if (!entry) throw new Error(`no test store ${name}`);
  return entry;
}

/** Opens a fresh store of one backend in `dir` (PostgreSQL: its own schema, dropped when the store closes). */
export type OpenTestStore = (dir: string) => Promise<Store>;

/** The backends as the ops suites run them: name, opener (the store's close also cleans up), and the `describe` to use. */
export function testStores(options: StoreOptions = {}): [string, OpenTestStore, typeof describe][] {
  return TEST_STORES.map((entry) => [
    entry.name,
    async (dir) => {
      const h = await entry.harness(dir);
      const store = await h.open(options);
      const close = store.close.bind(store);
      return Object.assign(store, { close: async () => { await close(); await h.cleanup(); } });
    },
    entry.describe,
  ]);
}
