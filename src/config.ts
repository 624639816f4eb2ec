import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { ConfigError, errnoCode } from './errors.js';
import { DEFAULT_STORE_URL, parseStoreUrl, type ParsedStoreUrl } from './store/url.js';
import type { RetentionPolicy } from './backup/retention.js';
import { resolveHttpLimits, type HttpLimits } from './server/limits.js';
import { DEFAULT_LOG_ROTATION, type LogRotation } from './server/log-rotate.js';

export const CONFIG_FILE = 'chatmem.config.json';

/** Settings after merging flags, `CHATMEM_*` environment and chatmem.config.json, in that order. */
export interface ResolvedConfig {
  cwd: string;
  store: ParsedStoreUrl;
  storeUrl: string;
  /** Where the store URL came from, to explain the choice to the operator. */
  storeSource: 'flag' | 'env' | 'config' | 'default';
  backupDir: string;
  auditLog: string;
  /** Pid, log and token files of the daemon. */
  dataDir: string;
  historyCap: number;
  hooks: { beforeWrite?: string; afterWrite?: string };
  retention: RetentionPolicy;
  backupEvery: string | null;
  /** `limits`: timeouts and header/URL limits of the daemon's HTTP server (server.headersTimeout, ...). */
  server: { host: string; port: number; bodyLimit: number; limits: HttpLimits; log: LogRotation };
  /** The config file that was read, if any. */
  configFile: string | null;
}

export interface ConfigOverrides {
  store?: string;
  backupDir?: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  configFile?: string;
}

interface FileConfig {
  store?: string;
  backupDir?: string;
  auditLog?: string;
  dataDir?: string;
  historyCap?: number;
  hooks?: { beforeWrite?: string; afterWrite?: string };
  retention?: RetentionPolicy;
  backup?: { every?: string; retention?: RetentionPolicy };
  server?: { host?: string; port?: number; bodyLimit?: number; logMaxBytes?: number; logKeep?: number } & Partial<Record<keyof HttpLimits, number>>;
}

async function readConfigFile(file: string, required: boolean): Promise<FileConfig | null> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' && !required) return null;
    throw new ConfigError('E_CONFIG', `cannot read config ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('top level must be an object');
    return parsed as FileConfig;
  } catch (err) {
    throw new ConfigError('E_CONFIG', `invalid config ${file}: ${(err as Error).message}`, { cause: err });
  }
}

function intFrom(value: unknown, name: string, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isInteger(n)) throw new ConfigError('E_CONFIG', `${name} must be an integer, got ${JSON.stringify(value)}`);
  return n;
}

/** Resolves the configuration: flags, then `CHATMEM_*` env, then chatmem.config.json, then defaults. */
export async function resolveConfig(overrides: ConfigOverrides = {}): Promise<ResolvedConfig> {
  const cwd = overrides.cwd ?? process.cwd();
  const env = overrides.env ?? process.env;
  const explicit = overrides.configFile ?? env.CHATMEM_CONFIG;
  const configFile = path.resolve(cwd, explicit ?? CONFIG_FILE);
  const file = (await readConfigFile(configFile, explicit !== undefined)) ?? {};

  let storeUrl: string;
  let storeSource: ResolvedConfig['storeSource'];
  if (overrides.store) [storeUrl, storeSource] = [overrides.store, 'flag'];
  else if (env.CHATMEM_STORE) [storeUrl, storeSource] = [env.CHATMEM_STORE, 'env'];
  else if (file.store) [storeUrl, storeSource] = [file.store, 'config'];
  else [storeUrl, storeSource] = [DEFAULT_STORE_URL, 'default'];
  const store = parseStoreUrl(storeUrl, cwd);

  // Backups and the audit log live beside a file store, as the seed kept backups/ beside memory.json.
  const storeDir = store.file ? path.dirname(store.file) : path.resolve(cwd, 'data/storage');
  const backupDir = path.resolve(cwd, overrides.backupDir ?? env.CHATMEM_BACKUP_DIR ?? file.backupDir ?? path.join(storeDir, 'backups'));
  const auditLog = path.resolve(cwd, env.CHATMEM_AUDIT_LOG ?? file.auditLog ?? path.join(storeDir, 'audit.log'));
  // The default layout is data/storage/memory.db with pid, log and token in data/; any other store keeps them beside it.
  const defaultDataDir = path.basename(storeDir) === 'storage' ? path.dirname(storeDir) : storeDir;
  const dataDir = path.resolve(cwd, env.CHATMEM_DATA_DIR ?? file.dataDir ?? defaultDataDir);

  const historyCap = intFrom(env.CHATMEM_HISTORY_CAP ?? file.historyCap, 'historyCap', 50);
  if (historyCap < 1) throw new ConfigError('E_CONFIG', `historyCap must be at least 1, got ${historyCap}`);
  const port = intFrom(env.CHATMEM_PORT ?? file.server?.port, 'server.port', 8737);
  if (port < 0 || port > 65535) throw new ConfigError('E_CONFIG', `server.port must be 0..65535, got ${port}`);
  const bodyLimit = intFrom(env.CHATMEM_BODY_LIMIT ?? file.server?.bodyLimit, 'server.bodyLimit', 1024 * 1024);
  const log = {
    maxBytes: intFrom(file.server?.logMaxBytes, 'server.logMaxBytes', DEFAULT_LOG_ROTATION.maxBytes),
    keep: intFrom(file.server?.logKeep, 'server.logKeep', DEFAULT_LOG_ROTATION.keep),
  };
  if (log.maxBytes < 4096 || log.keep < 1 || log.keep > 100) throw new ConfigError('E_CONFIG', 'server.logMaxBytes must be at least 4096 and server.logKeep from 1 to 100');

  return {
    cwd,
    store,
    storeUrl,
    storeSource,
    backupDir,
    auditLog,
    dataDir,
    historyCap,
    hooks: {
      beforeWrite: env.CHATMEM_HOOK_BEFORE_WRITE ?? file.hooks?.beforeWrite,
      afterWrite: env.CHATMEM_HOOK_AFTER_WRITE ?? file.hooks?.afterWrite,
    },
    retention: file.backup?.retention ?? file.retention ?? {},
    backupEvery: env.CHATMEM_BACKUP_EVERY ?? file.backup?.every ?? null,
    server: { host: env.CHATMEM_HOST ?? file.server?.host ?? '127.0.0.1', port, bodyLimit, limits: resolveHttpLimits(file.server ?? {}), log },
    configFile: explicit !== undefined || Object.keys(file).length > 0 ? configFile : null,
  };
}
