import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import type { ResolvedConfig } from '../config.js';
import { errnoCode } from '../errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../fs-util.js';
import { isProcessAlive, readOwner } from '../store/owner.js';

/** What a running daemon publishes in `<dataDir>/chatmem.pid` (JSON). */
export interface DaemonInfo {
  pid: number;
  api: string;
  store: string;
  startedAt: string;
  logFile?: string;
}

export function pidFile(config: ResolvedConfig): string {
  return path.join(config.dataDir, 'chatmem.pid');
}

export function logFile(config: ResolvedConfig): string {
  return path.join(config.dataDir, 'chatmem.log');
}

export function adminTokenFile(config: ResolvedConfig): string {
  return path.join(config.dataDir, 'admin-token');
}

export async function writeDaemonInfo(config: ResolvedConfig, info: DaemonInfo): Promise<void> {
  await ensurePrivateDir(config.dataDir);
  await writeFileAtomic(pidFile(config), JSON.stringify(info) + '\n');
}

export async function readDaemonInfo(config: ResolvedConfig): Promise<DaemonInfo | null> {
  try {
    const info = JSON.parse(await fsp.readFile(pidFile(config), 'utf8')) as DaemonInfo;
    return isProcessAlive(info.pid) ? info : null;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || err instanceof SyntaxError) return null;
    throw err;
  }
}

/**
 * The admin token: `CHATMEM_ADMIN_TOKEN`, else the 0600 file under the data dir. With `create`,
 * a missing file gets a fresh random token (returned with `created: true` so it is printed once).
 */
export async function loadAdminToken(config: ResolvedConfig, options: { create?: boolean; env?: NodeJS.ProcessEnv } = {}): Promise<{ token: string; created: boolean } | null> {
  const env = options.env ?? process.env;
  if (env.CHATMEM_ADMIN_TOKEN) return { token: env.CHATMEM_ADMIN_TOKEN, created: false };
  const file = adminTokenFile(config);
  try {
    const token = (await fsp.readFile(file, 'utf8')).trim();
    if (token) return { token, created: false };
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  if (!options.create) return null;
  await ensurePrivateDir(config.dataDir);
  const token = randomBytes(32).toString('base64url');
  await writeFileAtomic(file, token + '\n');
  return { token, created: true };
}

/** What `GET /healthz` answers. */
export interface HealthInfo {
  ok: boolean;
  store: string;
  kind?: string;
  version?: string;
  pid?: number;
  uptime?: number;
}

/** The daemon's health answer, or null when it does not answer in time (or not with JSON). */
export async function fetchHealth(api: string, timeoutMs = 2000): Promise<HealthInfo | null> {
  try {
    const res = await fetch(`${api}/healthz`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) return null;
    return (await res.json()) as HealthInfo;
  } catch {
    return null;
  }
}

async function healthy(api: string, store: string | null): Promise<boolean> {
  const body = await fetchHealth(api);
  return body !== null && (store === null || body.store === store);
}

/**
 * A daemon serving the configured store, found through the store's owner file (file stores) or the
 * pid file (any store), and confirmed by a health check that names the same store.
 */
export async function findDaemon(config: ResolvedConfig): Promise<{ api: string; pid: number } | null> {
  if (config.store.file) {
    const owner = await readOwner(config.store.file);
    if (owner?.role === 'daemon' && owner.api && (await healthy(owner.api, config.store.display))) return { api: owner.api, pid: owner.pid };
  }
  const info = await readDaemonInfo(config);
  if (info && info.store === config.store.display && (await healthy(info.api, config.store.display))) return { api: info.api, pid: info.pid };
  return null;
}

/** Removes the pid file if it still describes process `pid` (a newer daemon's file is left alone). */
export async function removeDaemonInfo(config: ResolvedConfig, pid: number = process.pid): Promise<void> {
  try {
    const info = JSON.parse(await fsp.readFile(pidFile(config), 'utf8')) as Partial<DaemonInfo>;
    if (info.pid !== pid) return;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return;
    if (!(err instanceof SyntaxError)) throw err;
  }
  await fsp.rm(pidFile(config), { force: true });
}

/** What `chatmem start` remembers about the daemon it started (`<homeDir>/chatmem.daemon.json`, 0600). */
export interface DaemonMemo {
  pid: number;
  api: string;
  /** The store URL as the daemon resolved it (absolute for file stores). */
  storeUrl: string;
  /** Printable store (no password). */
  store: string;
  backupDir: string;
  startedAt: string;
}

export function daemonMemoFile(config: ResolvedConfig): string {
  return path.join(config.homeDir, 'chatmem.daemon.json');
}

/**
 * Records the store of a daemon started by `chatmem start`, so later commands without `--store`
 * act on it. The file is 0600: a PostgreSQL URL in it may carry a password.
 */
export async function writeDaemonMemo(config: ResolvedConfig, memo: DaemonMemo): Promise<void> {
  await ensurePrivateDir(config.homeDir);
  await writeFileAtomic(daemonMemoFile(config), JSON.stringify(memo) + '\n');
}

/** The remembered daemon, or null when there is none (or the file is not one chatmem wrote). */
export async function readDaemonMemo(config: ResolvedConfig): Promise<(DaemonMemo & { running: boolean }) | null> {
  let memo: Partial<DaemonMemo>;
  try {
    memo = JSON.parse(await fsp.readFile(daemonMemoFile(config), 'utf8')) as Partial<DaemonMemo>;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || err instanceof SyntaxError) return null;
    throw err;
  }
  if (typeof memo.storeUrl !== 'string' || typeof memo.pid !== 'number' || typeof memo.api !== 'string') return null;
  const full = memo as DaemonMemo;
  return { ...full, running: isProcessAlive(full.pid) };
}

/** Forgets the remembered daemon (after `chatmem stop`). */
export async function removeDaemonMemo(config: ResolvedConfig): Promise<void> {
  await fsp.rm(daemonMemoFile(config), { force: true });
}
