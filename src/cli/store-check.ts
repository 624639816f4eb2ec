import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { ResolvedConfig } from '../config.js';
import { errnoCode, StoreError } from '../errors.js';
import { didYouMean } from '../suggest.js';

const SOURCE: Record<ResolvedConfig['storeSource'], string> = {
  flag: 'from --store',
  env: 'from CHATMEM_STORE',
  config: 'from the config file',
  default: 'the default store',
  daemon: 'the store of the daemon started with `chatmem start`',
};

/** Whether the configured store exists: its file for SQLite and JSON; PostgreSQL always counts as existing. */
export async function storeExists(config: ResolvedConfig): Promise<boolean> {
  if (!config.store.file) return true;
  try {
    await fsp.stat(config.store.file);
    return true;
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT' && errnoCode(err) !== 'ENOTDIR') {
      throw new StoreError('E_STORE_OPEN', `cannot check ${config.store.file}: ${(err as Error).message}`, { cause: err });
    }
  }
  // A JSON store killed between moving its file aside and linking the new one in has only the moved copy
  // (`.memory.json.<pid>.<hex>.prev`); opening the store puts it back, so the store does exist.
  if (config.store.kind !== 'json') return false;
  const base = path.basename(config.store.file);
  const names = await fsp.readdir(path.dirname(config.store.file)).catch(() => [] as string[]);
  return names.some((n) => n.startsWith(`.${base}.`) && n.endsWith('.prev'));
}

/**
 * Refuses a command that must not create the store when its file does not exist: a typo such as
 * `--store json:memroy.json` would otherwise show an empty store and exit 0. Names the path, where
 * the URL came from, and a similarly named file in the same directory.
 *
 * @throws StoreError `E_STORE_NOT_FOUND`.
 */
export async function assertStoreExists(config: ResolvedConfig): Promise<void> {
  if (await storeExists(config)) return;
  const file = config.store.file ?? '';
  const dir = path.dirname(file);
  const rel = (p: string): string => {
    const r = path.relative(config.cwd, p);
    return r && !r.startsWith('..') ? r : p;
  };
  let names: string[] | null = null;
  try {
    names = (await fsp.readdir(dir)).filter((n) => !/\.(owner|meta\.json|log)$|-(wal|shm|journal)$/.test(n));
  } catch {
    names = null;
  }
  const guess = names ? didYouMean(path.basename(file), names) : null;
  const where = names === null ? `; the directory ${rel(dir)} does not exist either` : '';
  const hint = guess
    ? ` (did you mean ${JSON.stringify(`${config.store.kind}:${rel(path.join(dir, guess))}`)}?)`
    : config.storeSource === 'default'
      ? '. Start the daemon (`chatmem start`) or import the seed\'s memory.json (`chatmem import data/storage/memory.json`) to create it, or name the store with --store'
      : '';
  throw new StoreError(
    'E_STORE_NOT_FOUND',
    `no store at ${file} (${config.store.kind}, ${SOURCE[config.storeSource]})${where}; this command does not create one${hint}`,
    { details: { file, source: config.storeSource, ...(guess ? { didYouMean: path.join(dir, guess) } : {}) } },
  );
}
