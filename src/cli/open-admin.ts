import { finishStoreTemps, type LeftoverReport } from '../backup/integrity.js';
import type { ResolvedConfig } from '../config.js';
import { openContext } from '../context.js';
import { LocalAdmin } from '../admin/local.js';
import type { Admin, ProgressFn } from '../admin/types.js';
import type { Operations } from '../ops/operations.js';
import { currentOsActor } from '../ops/audit.js';
import { findDaemon, loadAdminToken } from '../server/daemon-info.js';
import { CLIError } from './errors.js';
import type { Output } from './output.js';
import { assertStoreExists, storeExists } from './store-check.js';

/** An {@link Admin} opened for one command, and how to let go of it. */
export interface AdminHandle {
  admin: Admin;
  /** 'local', or the daemon's base URL. */
  via: string;
  close(): Promise<void>;
}

export interface OpenAdminOptions {
  /**
   * Go on when the store's file does not exist (a read then sees an empty store, a write creates
   * it). Only commands that may create a store (import, restore) or do not need one (backups,
   * verify, audit) set it; every other command refuses with `E_STORE_NOT_FOUND`.
   */
  allowMissingStore?: boolean;
  /** An admin already opened for this command (by {@link daemonAdmin}), used instead of opening one. */
  handle?: AdminHandle;
}

/**
 * The daemon serving the configured store as an admin, or null when none does. A daemon owns the
 * store (a JSON store's live state is in its memory), so every change goes through it.
 *
 * @throws CLIError `E_ADMIN_TOKEN` for `write` when a daemon serves the store but no admin token is found.
 */
export async function daemonAdmin(config: ResolvedConfig, mode: 'read' | 'write', out: Output): Promise<AdminHandle | null> {
  const daemon = await findDaemon(config);
  if (!daemon) return null;
  const token = await loadAdminToken(config, { env: out.io.env });
  if (token) {
    const { RemoteAdmin } = await import('../admin/remote.js');
    const admin = new RemoteAdmin({ baseUrl: daemon.api, token: token.token, storeUrl: config.store.display, osUser: currentOsActor().name });
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
  return null;
}

/**
 * Opens the admin a command runs against: a daemon serving the same store is preferred (see
 * {@link daemonAdmin}). Without a daemon, reads open the store read-only (no claim, so they work
 * beside another writer) and writes claim it for this process. A store file that does not exist is
 * refused unless `allowMissingStore`.
 */
export async function openAdmin(
  config: ResolvedConfig,
  mode: 'read' | 'write',
  out: Output,
  onProgress?: ProgressFn,
  options: OpenAdminOptions = {},
): Promise<AdminHandle> {
  if (options.handle) return options.handle;
  const daemon = await daemonAdmin(config, mode, out);
  if (daemon) return daemon;
  if (!options.allowMissingStore) await assertStoreExists(config);
  else if (mode === 'write' && !(await storeExists(config))) out.note(`note: ${config.store.display} does not exist yet; this command creates it`);
  const ctx = await openContext(config, {
    readOnly: mode === 'read',
    role: 'cli',
    tolerateBrokenStore: true,
    offsiteLog: (level, message) => (level === 'warn' ? out.warn(`off-site: ${message}`) : out.note(`off-site: ${message}`)),
  });
  const leftovers = await finishLeftoversFor(config, ctx.ops, out);
  if (mode === 'write' && config.store.file) {
    // This process now owns the file store, as a starting daemon would: finish what a killed
    // operation left (temp files, audit outcomes). Shared stores leave this to daemon starts.
    try {
      const recovered = await ctx.ops.recover(leftovers ? { leftovers } : {});
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

/**
 * What a killed chatmem (CLI or daemon) left behind is finished by whichever starts next: without this a
 * CLI-only site kept its temp files until a daemon ever started. Files of a live writer are left alone.
 */
async function finishLeftoversFor(config: ResolvedConfig, ops: Operations, out: Output): Promise<LeftoverReport | null> {
  try {
    const r = await ops.finishLeftovers();
    if (config.store.file) r.removedTemp.push(...(await finishStoreTemps(config.store.file)));
    const parts = [
      r.removedTemp.length ? `removed ${r.removedTemp.length} temp file(s)` : '',
      r.removedOrphans.length ? `removed ${r.removedOrphans.length} manifest(s) without backup` : '',
      r.completed.length ? `completed ${r.completed.join(', ')} (verified)` : '',
      r.removedIncomplete.length ? `removed ${r.removedIncomplete.join(', ')} (written by a killed process, did not verify)` : '',
    ].filter(Boolean);
    if (parts.length) out.note(`left by an interrupted chatmem: ${parts.join('; ')}`);
    return r;
  } catch (err) {
    // Clean-up is a courtesy: it must never stand between the operator and a read or a restore.
    out.warn(`could not finish files left by an interrupted chatmem: ${(err as Error).message}`);
    return null;
  }
}

/** Runs `fn` with an admin opened for it, and always closes the admin (releasing the store claim). */
export async function withAdmin<T>(
  config: ResolvedConfig,
  mode: 'read' | 'write',
  out: Output,
  fn: (admin: Admin) => Promise<T>,
  onProgress?: ProgressFn,
  options: OpenAdminOptions = {},
): Promise<T> {
  const handle = await openAdmin(config, mode, out, onProgress, options);
  try {
    return await fn(handle.admin);
  } finally {
    await handle.close();
  }
}
