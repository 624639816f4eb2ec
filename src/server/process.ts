import { spawn } from 'node:child_process';
import { closeSync, openSync, promises as fsp, constants as fsc } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ResolvedConfig } from '../config.js';
import { ChatmemError, errnoCode } from '../errors.js';
import { ensurePrivateDir, FILE_MODE } from '../fs-util.js';
import { isProcessAlive } from '../store/owner.js';
import { adminTokenFile, fetchHealth, findDaemon, loadAdminToken, logFile, pidFile, readDaemonInfo } from './daemon-info.js';
import { rotateIfLarge } from './log-rotate.js';

export interface StartOptions {
  host?: string;
  port?: number;
  /** Readiness timeout (default 15 s). */
  timeoutMs?: number;
  /** Script to run instead of the CLI (`dist/cli/bin.js`); it gets `serve` as its first argument. */
  bin?: string;
  /** Extra arguments after `serve`. */
  args?: string[];
  /** Environment of the daemon (default process.env); the resolved config is passed on top of it. */
  env?: NodeJS.ProcessEnv;
  /** Lines for the operator (the generated admin token); default stderr. */
  log?: (line: string) => void;
}

export interface StartResult {
  pid: number;
  api: string;
  logFile: string;
  /** Set when this start generated the admin token (it has been printed through `log`). */
  adminTokenFile: string | null;
}

export interface StopResult {
  stopped: boolean;
  pid: number | null;
  /** Why nothing was stopped. */
  reason?: 'not-running';
}

export interface DaemonStatus {
  /** A live process is named by the pid file (or the store's owner file). */
  running: boolean;
  pid: number | null;
  api: string | null;
  store: string | null;
  startedAt: string | null;
  /** Seconds since the daemon started. */
  uptime: number | null;
  version: string | null;
  /** The daemon answered its health check. False with `running` means the process lives but does not answer. */
  healthy: boolean;
  pidFile: string;
  logFile: string;
}

const DEFAULT_BIN = fileURLToPath(new URL('../cli/bin.js', import.meta.url));

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The last lines of the daemon log, for error messages. */
async function logTail(file: string, lines = 20): Promise<string> {
  try {
    const fh = await fsp.open(file, 'r');
    try {
      const { size } = await fh.stat();
      const len = Math.min(size, 16 * 1024);
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, size - len);
      return buf.toString('utf8').split('\n').slice(-lines - 1).join('\n').trim();
    } finally {
      await fh.close();
    }
  } catch {
    return '';
  }
}

/** The config, as environment variables, so the child resolves exactly the same settings whatever the CLI's flags are. */
function configEnv(config: ResolvedConfig, opts: StartOptions): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    // Absolute for file stores: the flag may have been relative to a directory the child does not share.
    CHATMEM_STORE: config.store.file ? config.store.display : config.storeUrl,
    CHATMEM_BACKUP_DIR: config.backupDir,
    CHATMEM_AUDIT_LOG: config.auditLog,
    CHATMEM_DATA_DIR: config.dataDir,
    CHATMEM_HISTORY_CAP: String(config.historyCap),
    CHATMEM_HOST: opts.host ?? config.server.host,
    CHATMEM_PORT: String(opts.port ?? config.server.port),
    CHATMEM_BODY_LIMIT: String(config.server.bodyLimit),
    CHATMEM_BACKUP_EVERY: config.backupEvery ?? '',
    CHATMEM_LEGACY_TIMEZONE: config.legacyTimezone,
  };
  if (config.configFile) env.CHATMEM_CONFIG = config.configFile;
  if (config.hooks.beforeWrite) env.CHATMEM_HOOK_BEFORE_WRITE = config.hooks.beforeWrite;
  if (config.hooks.afterWrite) env.CHATMEM_HOOK_AFTER_WRITE = config.hooks.afterWrite;
  return env;
}

/**
 * Starts the daemon in the background: `node <bin> serve`, detached, output appended to the log file
 * (mode 0600), and waits until its health check answers for this store.
 *
 * The admin token is created here, not in the child, so it is shown on this terminal and never lands
 * in the log file.
 *
 * @throws ChatmemError `E_DAEMON_RUNNING` if a daemon already serves the store; `E_DAEMON_START` with
 *   the log's tail if the daemon exits or does not answer within the timeout (it is then stopped).
 */
export async function startDaemon(config: ResolvedConfig, opts: StartOptions = {}): Promise<StartResult> {
  const say = opts.log ?? ((line: string) => void process.stderr.write(line + '\n'));
  const existing = await findDaemon(config);
  if (existing) {
    throw new ChatmemError('E_DAEMON_RUNNING', `a chatmem daemon already serves ${config.store.display} (pid ${existing.pid}, ${existing.api})`, {
      details: existing,
    });
  }
  const env = { ...(opts.env ?? process.env), ...configEnv(config, opts) };
  const token = await loadAdminToken(config, { create: true, env });
  if (token?.created) {
    say(`chatmem: generated an admin token and saved it to ${adminTokenFile(config)} (mode 0600). It is shown only this once:`);
    say(`  ${token.token}`);
  }

  await ensurePrivateDir(config.dataDir);
  const log = logFile(config);
  rotateIfLarge(log, config.server.log);
  env.CHATMEM_LOG_FILE = log;
  const fd = openSync(log, fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT, FILE_MODE);
  let pid: number;
  try {
    // An existing log keeps its mode; tighten it, since it names users.
    await fsp.chmod(log, FILE_MODE);
    const child = spawn(process.execPath, [opts.bin ?? DEFAULT_BIN, 'serve', ...(opts.args ?? [])], {
      cwd: config.cwd,
      env,
      detached: true,
      stdio: ['ignore', fd, fd],
    });
    if (child.pid === undefined) {
      const err = await new Promise<Error>((resolve) => child.once('error', resolve));
      throw new ChatmemError('E_DAEMON_START', `cannot start ${process.execPath}: ${err.message}`, { cause: err });
    }
    pid = child.pid;
    child.unref();
  } finally {
    closeSync(fd);
  }

  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  while (Date.now() < deadline) {
    if (!isProcessAlive(pid)) {
      const tail = await logTail(log);
      throw new ChatmemError('E_DAEMON_START', `the daemon exited during start-up. Last lines of ${log}:\n${tail}`, { details: { pid, logFile: log } });
    }
    const info = await readDaemonInfo(config);
    if (info && info.pid === pid) {
      const health = await fetchHealth(info.api, 1000);
      if (health && health.store === config.store.display) return { pid, api: info.api, logFile: log, adminTokenFile: token?.created ? adminTokenFile(config) : null };
    }
    await sleep(100);
  }
  // Half-started daemons confuse the next start: stop it, then report.
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    // already gone
  }
  const tail = await logTail(log);
  throw new ChatmemError(
    'E_DAEMON_START',
    `the daemon (pid ${pid}) did not answer within ${Math.round((opts.timeoutMs ?? 15_000) / 1000)} s and was stopped. Last lines of ${log}:\n${tail}`,
    { details: { pid, logFile: log } },
  );
}

/**
 * Stops the daemon of this config gracefully (SIGTERM: it finishes in-flight requests, flushes and
 * exits) and waits for it to exit. Only a process that answers the health check with its own pid is
 * signalled, so a stale pid file never kills an unrelated process that reused the pid.
 *
 * @throws ChatmemError `E_DAEMON_STOP` when the process does not answer as a daemon or does not exit in time.
 */
export async function stopDaemon(config: ResolvedConfig, opts: { timeoutMs?: number } = {}): Promise<StopResult> {
  const info = await readDaemonInfo(config);
  const found = info ?? (await findDaemon(config).then((d) => (d ? { pid: d.pid, api: d.api } : null)));
  if (!found) return { stopped: false, pid: null, reason: 'not-running' };
  const health = await fetchHealth(found.api);
  if (!health || health.pid !== found.pid) {
    throw new ChatmemError(
      'E_DAEMON_STOP',
      `process ${found.pid} (from ${pidFile(config)}) is alive but does not answer as a chatmem daemon at ${found.api}; ` +
        `not signalling it. If it is a hung daemon, stop it with: kill ${found.pid}`,
      { details: { pid: found.pid, api: found.api } },
    );
  }
  try {
    process.kill(found.pid, 'SIGTERM');
  } catch (err) {
    if (errnoCode(err) === 'ESRCH') return { stopped: true, pid: found.pid };
    throw new ChatmemError('E_DAEMON_STOP', `cannot signal pid ${found.pid}: ${(err as Error).message}`, { cause: err });
  }
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isProcessAlive(found.pid)) return { stopped: true, pid: found.pid };
    await sleep(50);
  }
  throw new ChatmemError(
    'E_DAEMON_STOP',
    `the daemon (pid ${found.pid}) got SIGTERM but has not exited after ${Math.round(timeoutMs / 1000)} s; it may be finishing a long ` +
      `operation (see ${logFile(config)}). Wait, or force it with: kill -9 ${found.pid} (interrupted operations are reported at the next start)`,
    { details: { pid: found.pid } },
  );
}

/** Whether a daemon runs for this config, and its facts. */
export async function daemonStatus(config: ResolvedConfig): Promise<DaemonStatus> {
  const base = { pidFile: pidFile(config), logFile: logFile(config) };
  const info = await readDaemonInfo(config);
  const found = info ?? (await findDaemon(config).then((d) => (d ? { pid: d.pid, api: d.api, store: config.store.display, startedAt: null } : null)));
  if (!found) return { running: false, pid: null, api: null, store: null, startedAt: null, uptime: null, version: null, healthy: false, ...base };
  const health = await fetchHealth(found.api);
  const healthy = health !== null && health.pid === found.pid;
  const startedAt = found.startedAt ?? null;
  const uptime = healthy && typeof health.uptime === 'number' ? health.uptime : startedAt ? Math.round((Date.now() - Date.parse(startedAt)) / 1000) : null;
  return {
    running: true,
    pid: found.pid,
    api: found.api,
    store: healthy ? health.store : found.store,
    startedAt,
    uptime,
    version: healthy ? (health.version ?? null) : null,
    healthy,
    ...base,
  };
}
