import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { parseDuration } from './duration.js';
import { ConfigError, errnoCode } from './errors.js';
import { parseInterval } from './server/scheduler.js';
import { didYouMeanText } from './suggest.js';
import { DEFAULT_STORE_URL, parseStoreUrl, type ParsedStoreUrl } from './store/url.js';
import type { RetentionPolicy } from './backup/retention.js';
import { resolveHttpLimits, type HttpLimits } from './server/limits.js';
import { DEFAULT_LOG_ROTATION, type LogRotation } from './server/log-rotate.js';
import { offsiteFromEnv, parseOffsiteUrl, type OffsiteConfig } from './offsite/target.js';

export const CONFIG_FILE = 'chatmem.config.json';

/** Settings after merging flags, `CHATMEM_*` environment and chatmem.config.json, in that order. */
export interface ResolvedConfig {
  cwd: string;
  store: ParsedStoreUrl;
  storeUrl: string;
  /** Where the store URL came from, to explain the choice to the operator. */
  storeSource: 'flag' | 'env' | 'config' | 'default' | 'daemon';
  backupDir: string;
  auditLog: string;
  /** Pid, log and token files of the daemon. */
  dataDir: string;
  /**
   * The data dir of the default layout (`data/`, or CHATMEM_DATA_DIR / `dataDir`), whatever the
   * store: where `chatmem start` remembers the store of the daemon it started.
   */
  homeDir: string;
  historyCap: number;
  hooks: { beforeWrite?: string; afterWrite?: string };
  retention: RetentionPolicy;
  backupEvery: string | null;
  /** Expiry of inactive users (`users.inactiveAfter`, null: never; `users.expireMode`, default delete). */
  users: { inactiveAfter: string | null; expireMode: 'delete' | 'forget' };
  /** `limits`: timeouts and header/URL limits of the daemon's HTTP server (server.headersTimeout, ...). */
  /** `logSample`: one request line per this many successful data-plane requests (1: every request). */
  server: { host: string; port: number; bodyLimit: number; limits: HttpLimits; log: LogRotation; logSample: number };
  /** IANA time zone of the dates in the names of legacy (seed) backups; `UTC` by default. */
  legacyTimezone: string;
  /** The config file that was read, if any. */
  configFile: string | null;
  /** Off-site copies of verified backups (S3-compatible storage), or null when none is configured. */
  offsite: OffsiteSettings | null;
}

/** Where off-site copies go; the credentials stay in the environment they came from until a target is opened. */
export interface OffsiteSettings {
  /** `s3://BUCKET/PREFIX`. */
  url: string;
  source: 'flag' | 'env' | 'config';
  recipients: string[];
  identityFile?: string;
  /** The full target config, credentials from AWS_* / CHATMEM_S3_ENDPOINT (a function: never serialised). */
  target: () => OffsiteConfig;
}

export interface ConfigOverrides {
  store?: string;
  /** Where `store` comes from (default `flag`); `daemon`: the remembered store of `chatmem start`. */
  storeSource?: 'flag' | 'daemon';
  backupDir?: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  configFile?: string;
  /** `--offsite s3://BUCKET/PREFIX`. */
  offsite?: string;
}

const count = (what: string) =>
  z.number().int().min(-1).optional().describe(`Keep the newest backup of each of the N newest ${what} (-1: all, 0: off)`);
const window = (what: string) =>
  z
    .string()
    .superRefine(checkWith((v) => parseDuration(v)))
    .optional()
    .describe(`Keep ${what} within this duration of the newest backup (y, m = months, d, h, min, s)`);

/** A zod refinement that reports the parser's own message (it names the unit that is wrong). */
function checkWith(parse: (v: string) => unknown): (v: string, ctx: z.RefinementCtx) => void {
  return (v, ctx) => {
    try {
      parse(v);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
    }
  };
}

function tryParse(fn: () => unknown): boolean {
  try {
    fn();
    return true;
  } catch {
    return false;
  }
}

/** A valid IANA time zone name, as `Intl` knows it. */
export function isTimeZone(name: string): boolean {
  return tryParse(() => new Intl.DateTimeFormat('en-US', { timeZone: name }));
}

const retentionSchema = z
  .strictObject({
    last: z.number().int().min(-1).optional().describe('Keep the N newest backups (-1: all)'),
    hourly: count('hours'),
    daily: count('days'),
    weekly: count('ISO weeks'),
    monthly: count('months'),
    yearly: count('years'),
    within: window('every backup'),
    withinHourly: window('the newest backup of each hour'),
    withinDaily: window('the newest backup of each day'),
    withinWeekly: window('the newest backup of each ISO week'),
    withinMonthly: window('the newest backup of each month'),
    withinYearly: window('the newest backup of each year'),
  })
  .describe('Retention policy, with the semantics of restic forget');

/** The schema of chatmem.config.json; docs/chatmem.config.schema.json is generated from it. */
export const configFileSchema = z
  .strictObject({
    $schema: z.string().optional().describe('JSON schema for editors, e.g. ./docs/chatmem.config.schema.json'),
    store: z.string().min(1).optional().describe('Store URL: sqlite:PATH, json:PATH or postgres://USER@HOST:PORT/DB'),
    backupDir: z.string().min(1).optional().describe('Backup directory (default: backups/ beside a file store)'),
    auditLog: z.string().min(1).optional().describe('Audit log file (default: audit.log beside a file store)'),
    dataDir: z.string().min(1).optional().describe("Directory of the daemon's pid, log and admin token files"),
    historyCap: z.number().int().min(1).optional().describe('Messages kept per user (default 50)'),
    legacyTimezone: z
      .string()
      .refine(isTimeZone, { message: 'expected an IANA time zone name such as UTC or Asia/Jakarta' })
      .optional()
      .describe("Time zone of the dates in the names of the seed's backups (default UTC), e.g. Asia/Jakarta"),
    hooks: z
      .strictObject({
        beforeWrite: z.string().optional().describe('Shell command run before a command changes the store (not when a daemon serves it)'),
        afterWrite: z.string().optional().describe('Shell command run after it, even when it failed'),
      })
      .optional(),
    retention: retentionSchema.optional().describe('Same as backup.retention (older spelling)'),
    backup: z
      .strictObject({
        every: z
          .string()
          .superRefine(checkWith(parseInterval))
          .optional()
          .describe('Scheduled backups: an interval such as 30min, 1h, 1d, or off (units d, h, min, s)'),
        retention: retentionSchema.optional(),
      })
      .optional(),
    offsite: z
      .string()
      .superRefine(checkWith(parseOffsiteUrl))
      .optional()
      .describe('Off-site copies of every verified backup: s3://BUCKET/PREFIX (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; endpoint CHATMEM_S3_ENDPOINT)'),
    offsiteRecipients: z
      .array(z.string().regex(/^age1[0-9a-z]+$/, 'expected an age X25519 recipient (age1…)'))
      .optional()
      .describe('Encrypt off-site copies to these age recipients (age1…); local backups stay plain'),
    offsiteIdentity: z.string().min(1).optional().describe('age identity file that reads encrypted off-site copies back (needed to restore them)'),
    users: z
      .strictObject({
        inactiveAfter: z
          .string()
          .superRefine(checkWith((v) => parseDuration(v)))
          .optional()
          .describe('Remove users with no update for this long, e.g. 180d (y, m = months, d, h, min, s); the daemon checks daily. Off by default'),
        expireMode: z
          .enum(['delete', 'forget'])
          .optional()
          .describe('delete (default): the guarded delete, a verified backup first; forget: forget them everywhere, backups included'),
      })
      .optional(),
    server: z
      .strictObject({
        host: z.string().min(1).optional().describe('Address to listen on (default 127.0.0.1)'),
        port: z.number().int().min(0).max(65535).optional().describe('Port to listen on'),
        bodyLimit: z.number().int().min(1).optional().describe('Largest request body in bytes (default 1 MiB)'),
        headersTimeout: z.number().int().min(1).max(3_600_000).optional().describe('ms from a request\'s first byte until its headers are in (default 10000)'),
        requestTimeout: z.number().int().min(1).max(3_600_000).optional().describe('ms from a request\'s first byte until its body is in (default 30000)'),
        keepAliveTimeout: z.number().int().min(1).max(3_600_000).optional().describe('ms a kept-alive socket may idle between requests (default 5000)'),
        connectionTimeout: z.number().int().min(1).max(3_600_000).optional().describe('ms a new connection may stay silent (default 10000)'),
        maxUrlLength: z.number().int().min(1).max(3_600_000).optional().describe('Longest request target in bytes; longer gets 414'),
        maxHeaderSize: z.number().int().min(1).max(3_600_000).optional().describe('Largest request line plus headers in bytes; larger gets 431'),
        logMaxBytes: z.number().int().min(4096).optional().describe('chatmem start: rotate the daemon log at this size (default 10 MiB)'),
        logKeep: z.number().int().min(1).max(100).optional().describe('chatmem start: rotated log files kept (default 3)'),
        logSample: z
          .number()
          .int()
          .min(1)
          .max(1_000_000)
          .optional()
          .describe('Log one in N successful data-plane requests (default 1: every request); errors and admin requests are always logged'),
      })
      .optional(),
  })
  .describe('chatmem configuration (chatmem.config.json)');

type FileConfig = z.infer<typeof configFileSchema>;

/** The JSON schema of chatmem.config.json, as committed in docs/chatmem.config.schema.json. */
export function configJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(configFileSchema, { io: 'input' }) as Record<string, unknown>;
}

function unwrapOptional(schema: z.ZodType): z.ZodType {
  return schema instanceof z.ZodOptional ? (schema.unwrap() as z.ZodType) : schema;
}

/** The keys the object schema at `keyPath` knows, for "did you mean". */
function knownKeys(keyPath: PropertyKey[]): string[] {
  let schema: z.ZodType = configFileSchema;
  for (const k of keyPath) {
    const inner = unwrapOptional(schema);
    if (!(inner instanceof z.ZodObject)) return [];
    const next = (inner.shape as Record<string, z.ZodType | undefined>)[String(k)];
    if (!next) return [];
    schema = next;
  }
  const inner = unwrapOptional(schema);
  return inner instanceof z.ZodObject ? Object.keys(inner.shape as object) : [];
}

function keyPathText(keyPath: PropertyKey[]): string {
  return keyPath.map(String).join('.');
}

/** One message per issue: the key path, what was expected, and for an unknown key the likely intended one. */
function describeIssues(file: string, issues: z.core.$ZodIssue[]): string {
  const parts = issues.map((issue) => {
    if (issue.code === 'unrecognized_keys') {
      return issue.keys
        .map((k) => `unknown key ${JSON.stringify(keyPathText([...issue.path, k]))}${didYouMeanText(k, knownKeys(issue.path))}`)
        .join('; ');
    }
    const where = issue.path.length > 0 ? JSON.stringify(keyPathText(issue.path)) : 'the top level';
    return `${where}: ${issue.message.replace(/^Invalid input: /, '')}`;
  });
  return `invalid config ${file}: ${parts.join('; ')}`;
}

async function readConfigFile(file: string, required: boolean): Promise<FileConfig | null> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' && !required) return null;
    throw new ConfigError('E_CONFIG', `cannot read config ${file}: ${(err as Error).message}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('E_CONFIG', `invalid config ${file}: ${(err as Error).message}`, { cause: err, details: { file } });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError('E_CONFIG', `invalid config ${file}: the top level must be an object`, { details: { file } });
  }
  const result = configFileSchema.safeParse(parsed);
  if (!result.success) {
    const issues = result.error.issues;
    throw new ConfigError('E_CONFIG', describeIssues(file, issues), {
      cause: result.error,
      details: {
        file,
        issues: issues.map((i) => ({ path: keyPathText(i.path), code: i.code, message: i.message })),
        unknownKeys: issues.flatMap((i) => (i.code === 'unrecognized_keys' ? i.keys.map((k) => keyPathText([...i.path, k])) : [])),
      },
    });
  }
  return result.data;
}

/**
 * An integer setting from an environment variable (named in the error, with the setting it
 * overrides), else the config file's value (already checked by the schema), else `fallback`.
 */
function intSetting(env: NodeJS.ProcessEnv, name: string, setting: string, fileValue: number | undefined, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fileValue ?? fallback;
  const n = Number(raw);
  if (!/^\s*\d+\s*$/.test(raw) || !Number.isSafeInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `${min}..${max}`;
    throw new ConfigError('E_CONFIG', `environment variable ${name} (${setting}) must be an integer ${range}, got ${JSON.stringify(raw)}`, {
      details: { env: name, value: raw },
    });
  }
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
  if (overrides.store) [storeUrl, storeSource] = [overrides.store, overrides.storeSource ?? 'flag'];
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
  const homeDir = path.resolve(cwd, env.CHATMEM_DATA_DIR ?? file.dataDir ?? 'data');

  const historyCap = intSetting(env, 'CHATMEM_HISTORY_CAP', 'historyCap', file.historyCap, 50, 1);
  const port = intSetting(env, 'CHATMEM_PORT', 'server.port', file.server?.port, 8737, 0, 65535);
  const bodyLimit = intSetting(env, 'CHATMEM_BODY_LIMIT', 'server.bodyLimit', file.server?.bodyLimit, 1024 * 1024, 1);
  const legacyTimezone = env.CHATMEM_LEGACY_TIMEZONE || file.legacyTimezone || 'UTC';
  if (!isTimeZone(legacyTimezone)) {
    throw new ConfigError('E_CONFIG', `environment variable CHATMEM_LEGACY_TIMEZONE (legacyTimezone) must be an IANA time zone name such as UTC or Asia/Jakarta, got ${JSON.stringify(legacyTimezone)}`);
  }

  let offsite: OffsiteSettings | null = null;
  const offsiteUrl = overrides.offsite ?? env.CHATMEM_OFFSITE ?? file.offsite;
  if (offsiteUrl) {
    parseOffsiteUrl(offsiteUrl);
    const identity = env.CHATMEM_OFFSITE_IDENTITY ?? file.offsiteIdentity;
    const extra = { recipients: file.offsiteRecipients ?? [], ...(identity ? { identityFile: path.resolve(cwd, identity) } : {}) };
    offsite = {
      url: offsiteUrl,
      source: overrides.offsite ? 'flag' : env.CHATMEM_OFFSITE ? 'env' : 'config',
      ...extra,
      target: () => offsiteFromEnv(offsiteUrl, env, extra),
    };
  }

  return {
    cwd,
    store,
    storeUrl,
    storeSource,
    backupDir,
    auditLog,
    dataDir,
    homeDir,
    historyCap,
    hooks: {
      beforeWrite: env.CHATMEM_HOOK_BEFORE_WRITE ?? file.hooks?.beforeWrite,
      afterWrite: env.CHATMEM_HOOK_AFTER_WRITE ?? file.hooks?.afterWrite,
    },
    retention: file.backup?.retention ?? file.retention ?? {},
    backupEvery: env.CHATMEM_BACKUP_EVERY ?? file.backup?.every ?? null,
    users: { inactiveAfter: file.users?.inactiveAfter ?? null, expireMode: file.users?.expireMode ?? 'delete' },
    server: {
      host: env.CHATMEM_HOST ?? file.server?.host ?? '127.0.0.1',
      port,
      bodyLimit,
      limits: resolveHttpLimits(file.server ?? {}),
      log: { maxBytes: file.server?.logMaxBytes ?? DEFAULT_LOG_ROTATION.maxBytes, keep: file.server?.logKeep ?? DEFAULT_LOG_ROTATION.keep },
      logSample: file.server?.logSample ?? 1,
    },
    legacyTimezone,
    configFile: explicit !== undefined || Object.keys(file).length > 0 ? configFile : null,
    offsite,
  };
}
