import * as path from 'node:path';
import { describe } from 'vitest';
import { JsonFileDriver } from '../../src/store/json-file.js';
import { PostgresDriver } from '../../src/store/postgres.js';
import { SqliteDriver } from '../../src/store/sqlite.js';
import { createStore, type StoreOptions } from '../../src/store/store.js';
import type { Store } from '../../src/store/types.js';
import { createSchema, describePg, PG_URL } from './pg.js';

/** Opens a fresh store of one backend in `dir` (PostgreSQL: its own schema, dropped when the store closes). */
export type OpenTestStore = (dir: string) => Promise<Store>;

/**
 * The three backends as the ops suites run them: name, opener, and the `describe` to use (PostgreSQL's
 * skips with a warning when the server is unreachable, and fails under CI).
 */
export function testStores(options: StoreOptions = {}): [string, OpenTestStore, typeof describe][] {
  return [
    ['sqlite', async (dir) => createStore(await SqliteDriver.open(path.join(dir, 'memory.db')), options), describe],
    ['json-file', async (dir) => createStore(await JsonFileDriver.open(path.join(dir, 'memory.json')), options), describe],
    [
      'postgres',
      async () => {
        const { schema, drop } = await createSchema();
        const store = createStore(await PostgresDriver.connect({ connectionString: PG_URL, schema }), options);
        const close = store.close.bind(store);
        return Object.assign(store, { close: async () => { await close(); await drop(); } });
      },
      describePg as unknown as typeof describe,
    ],
  ];
}
