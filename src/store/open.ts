import { StoreError } from '../errors.js';
import { createStore, type StoreOptions } from './store.js';
import { parseStoreUrl, type ParsedStoreUrl } from './url.js';
import type { Store, StoreDriver } from './types.js';

export interface OpenStoreOptions extends StoreOptions {
  cwd?: string;
}

/** Opens the driver named by a store URL (`sqlite:PATH`, `json:PATH`, `postgres://…`). */
export async function openDriver(url: string | ParsedStoreUrl, cwd?: string, options: { readOnly?: boolean } = {}): Promise<StoreDriver> {
  const parsed = typeof url === 'string' ? parseStoreUrl(url, cwd) : url;
  switch (parsed.kind) {
    case 'sqlite': {
      const { SqliteDriver } = await import('./sqlite/index.js');
      return SqliteDriver.open(parsed.file ?? '', options);
    }
    case 'json': {
      const { JsonFileDriver } = await import('./json-file.js');
      return JsonFileDriver.open(parsed.file ?? '');
    }
    case 'postgres': {
      const { PostgresDriver } = await import('./postgres/index.js');
      return PostgresDriver.connect({ connectionString: parsed.connectionString ?? '' });
    }
    default:
      throw new StoreError('E_STORE_URL', `unsupported store kind ${String(parsed.kind)}`);
  }
}

/** Opens a {@link Store} from its URL. */
export async function openStore(url: string | ParsedStoreUrl, options: OpenStoreOptions = {}): Promise<Store> {
  return createStore(await openDriver(url, options.cwd, { readOnly: options.readOnly }), options);
}
