import type { ResolvedConfig } from '../config.js';
import { openContext } from '../context.js';
import { LocalAdmin, type Admin, type ProgressFn } from '../ops/admin.js';
import { findDaemon, loadAdminToken } from '../server/daemon-info.js';
import { CLIError } from './errors.js';
import type { Output } from './output.js';

/** An {@link Admin} opened for one command, and how to let go of it. */
export interface AdminHandle {
  admin: Admin;
  /** 'local', or the daemon's base URL. */
  via: string;
  close(): Promise<void>;
}

/**
 * Opens the admin a command runs against. A daemon serving the same store is preferred: it owns the
 * store (a JSON store's live state is in its memory), so every change goes through it. Without a
 * daemon, reads open the store read-only (no claim, so they work beside another writer) and writes
 * claim it for this process.
 */
export async function openAdmin(
  config: ResolvedConfig,
  mode: 'read' | 'write',
  out: Output,
  onProgress?: ProgressFn,
): Promise<AdminHandle> {
  const daemon = await findDaemon(config);
  if (daemon) {
    const token = await loadAdminToken(config, { env: out.io.env });
    if (token) {
      const { RemoteAdmin } = await import('../client.js');
      const admin = new RemoteAdmin({ baseUrl: daemon.api, token: token.token, storeUrl: config.store.display });
      out.note(`via daemon at ${daemon.api}`);
      return { admin, via: daemon.api, close: async () => undefined };
    }
    if (mode === 'write') {
      throw new CLIError(
        'E_ADMIN_TOKEN',
        `a chatmem daemon (pid ${daemon.pid}, ${daemon.api}) serves ${config.store.display}, so changes must go through it, ` +
          `but no admin token was found: set CHATMEM_ADMIN_TOKEN or run as the user that started the daemon`,
      );
    }
    out.note(`a daemon serves this store at ${daemon.api} but no admin token was found; reading the store directly`);
  }
  const ctx = await openContext(config, { readOnly: mode === 'read', role: 'cli' });
  if (mode === 'write' && config.store.file) {
    // This process now owns the file store, as a starting daemon would: finish what a killed
    // operation left (temp files, audit outcomes). Shared stores leave this to daemon starts.
    try {
      const recovered = await ctx.ops.recover();
      for (const i of recovered.interrupted) {
        out.warn(`operation ${i.entry.action} (op ${i.entry.op}, started ${i.entry.time}) had not finished: backup ${i.backup ?? 'missing'}, change ${i.applied === null ? 'unknown' : i.applied ? 'applied' : 'not applied'}`);
      }
    } catch (err) {
      await ctx.close();
      throw err;
    }
  }
  return { admin: new LocalAdmin(ctx.ops, onProgress), via: 'local', close: () => ctx.close() };
}

/** Runs `fn` with an admin opened for it, and always closes the admin (releasing the store claim). */
export async function withAdmin<T>(
  config: ResolvedConfig,
  mode: 'read' | 'write',
  out: Output,
  fn: (admin: Admin) => Promise<T>,
  onProgress?: ProgressFn,
): Promise<T> {
  const handle = await openAdmin(config, mode, out, onProgress);
  try {
    return await fn(handle.admin);
  } finally {
    await handle.close();
  }
}
