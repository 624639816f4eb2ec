import { existsSync } from 'node:fs';
import * as path from 'node:path';
import type { ResolvedConfig } from './config.js';
import { ensurePrivateDir } from './fs-util.js';
import { AuditLog, currentOsActor, type Actor } from './ops/audit.js';
import { StoreError } from './errors.js';
import { Operations, type BrokenStore } from './ops/operations.js';
import { openStore } from './store/open.js';
import { acquireOwner, type OwnerLock } from './store/owner.js';
import type { Store } from './store/types.js';
import { OffsiteService, type OffsiteLog } from './offsite/service.js';

/** An open store with its guarded operations, as the CLI and the daemon use them. */
export interface Context {
  config: ResolvedConfig;
  store: Store;
  ops: Operations;
  audit: AuditLog;
  /** Off-site copies and their uploader, when `offsite` is configured. */
  offsite: OffsiteService | null;
  close(): Promise<void>;
}

export interface OpenContextOptions {
  /** Read-only: no owner claim, every write refused. */
  readOnly?: boolean;
  role?: 'daemon' | 'cli';
  /** The daemon's API address, recorded in the owner file so the CLI can find it. */
  api?: string;
  actor?: Actor;
  /**
   * A file store that cannot be parsed still opens (the CLI): backups can be listed, verified and
   * diffed, and a whole-store restore replaces it; everything that reads the store gets its error.
   */
  tolerateBrokenStore?: boolean;
  /** Where the off-site uploader reports (CLI: stderr notes; daemon: its log). */
  offsiteLog?: OffsiteLog;
}

/** A store whose file could not be parsed: every use throws the parse error (which says to restore a backup). */
function brokenStore(kind: Store['kind'], url: string, error: StoreError): Store {
  const fail = (): never => {
    throw error;
  };
  // Every method of the Store interface, listed so that a new one fails typecheck here rather than work silently.
  const methods: Record<Exclude<keyof Store, 'kind' | 'url' | 'historyCap' | 'close'>, () => never> = {
    get: fail, put: fail, patch: fail, appendHistory: fail, appendHistoryMany: fail, ensure: fail, refreshSessionToken: fail, addContext: fail, fillSlots: fail, setFlag: fail, clearFlag: fail, setSlot: fail, delete: fail, clear: fail,
    count: fail, list: fail, scan: fail, scanJson: fail, stats: fail, search: fail, exclusive: fail, isLeader: fail, trackWrites: fail, stage: fail,
  };
  return { kind, url, historyCap: 0, ...methods, close: async () => undefined };
}

/**
 * Opens the configured store. A writer claims a file store (SQLite, JSON) for this process first,
 * so two processes never write it at once; PostgreSQL relies on its own locks.
 */
export async function openContext(config: ResolvedConfig, options: OpenContextOptions = {}): Promise<Context> {
  let owner: OwnerLock | null = null;
  if (config.store.file && !options.readOnly) {
    await ensurePrivateDir(path.dirname(config.store.file));
    owner = await acquireOwner(config.store.file, { role: options.role ?? 'cli', api: options.api });
  }
  const open = () => openStore(config.store, { historyCap: config.historyCap, readOnly: options.readOnly });
  let store: Store;
  let broken: BrokenStore | undefined;
  try {
    store = await open();
  } catch (err) {
    const file = config.store.file;
    if (options.tolerateBrokenStore && file && err instanceof StoreError && err.code === 'E_STORE_PARSE') {
      store = brokenStore(config.store.kind, config.store.display, err);
      broken = { file, error: err, reopen: open };
    } else {
      await owner?.release();
      throw err;
    }
  }
  const audit = new AuditLog(config.auditLog);
  let offsite: OffsiteService | null = null;
  try {
    // The daemon retries an upload until it succeeds; the CLI tries a few times before it exits.
    if (config.offsite) offsite = new OffsiteService(config.offsite.target(), config.backupDir, { log: options.offsiteLog, ...(options.role === 'daemon' ? {} : { maxAttempts: 3, baseDelayMs: 500 }) });
  } catch (err) {
    await store.close().catch(() => undefined);
    await owner?.release();
    throw err;
  }
  const ops = new Operations({ store, backupDir: config.backupDir, audit, actor: options.actor ?? currentOsActor(), legacyTimezone: config.legacyTimezone, brokenStore: broken, offsite: offsite ?? undefined, dataDir: config.dataDir });
  return {
    config,
    store,
    ops,
    audit,
    offsite,
    close: async () => {
      try {
        // The CLI uploads before it exits (a failure is a warning); the daemon's queue is picked up at its next start.
        if (options.role === 'daemon') offsite?.close();
        else await offsite?.idle();
        // ops.store: a restore over a broken store swaps in the store it wrote.
        await ops.store.close();
      } finally {
        await owner?.release();
      }
    },
  };
}

/**
 * When the default store is used but a seed `data/storage/memory.json` sits beside it, the operator
 * most likely meant that file: say so, and how to import it or point at it.
 */
export function seedHint(config: ResolvedConfig): string | null {
  if (config.storeSource !== 'default' || !config.store.file) return null;
  const seed = path.join(path.dirname(config.store.file), 'memory.json');
  if (!existsSync(seed)) return null;
  const rel = path.relative(config.cwd, seed) || seed;
  return `note: using the default store ${config.store.display}, but a seed memory file exists at ${rel}. ` +
    `Import it with \`chatmem import ${rel}\`, or use it in place with \`--store json:${rel}\`.`;
}
