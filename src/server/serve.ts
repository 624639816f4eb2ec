import { isIP } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { ResolvedConfig } from '../config.js';
import { openContext, type Context } from '../context.js';
import { ChatmemError, ConfigError, errnoCode } from '../errors.js';
import { finishStoreTemps } from '../backup/integrity.js';
import { isEmptyPolicy } from '../backup/retention.js';
import { currentOsActor } from '../ops/audit.js';
import { VERSION } from '../version.js';
import { buildApp, isLoopbackHost } from './app.js';

export { isLoopbackHost };
import { adminTokenFile, fetchHealth, loadAdminToken, readDaemonInfo, removeDaemonInfo, writeDaemonInfo } from './daemon-info.js';
import { Metrics } from './metrics.js';
import { startLogRotation } from './log-rotate.js';
import { adminTokensFile } from './admin-tokens.js';
import { BackupScheduler, ExpireScheduler, parseInterval } from './scheduler.js';

export interface ServeOptions {
  /** Overrides `config.server.host` (the `--host` flag). */
  host?: string;
  /** Overrides `config.server.port` (the `--port` flag); 0 picks a free port. */
  port?: number;
  /** Called once the server accepts connections; without it, a start banner goes to `log`. */
  onListening?(url: string): void;
  /** Lines for the operator (start banner, the generated admin token, shutdown); default stderr. */
  log?: (line: string) => void;
  /** Structured request logs (pino): true (default) writes JSON lines to stdout, false disables, an object is pino options. */
  logger?: boolean | object;
  /** Close gracefully on SIGTERM and SIGINT, then exit (default true; tests that serve in-process turn it off). */
  handleSignals?: boolean;
  /** Environment for CHATMEM_API_TOKEN and CHATMEM_ADMIN_TOKEN (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Leader election for scheduled backups when several daemons share a store (PostgreSQL). */
  tryLeader?: () => Promise<boolean>;
}

export interface RunningServer {
  url: string;
  /** Stops accepting, finishes in-flight requests, stops the scheduler, closes (flushes) the store, removes the pid file. */
  close(): Promise<void>;
}

/** A URL a local client can connect to for a server bound to `host`. */
function connectUrl(host: string, port: number): string {
  const h = host.replace(/^\[|\]$/g, '');
  if (h === '0.0.0.0' || h === '') return `http://127.0.0.1:${port}`;
  if (h === '::') return `http://[::1]:${port}`;
  return isIP(h) === 6 ? `http://[${h}]:${port}` : `http://${h}:${port}`;
}

/**
 * Runs the daemon in this process: claims the store, recovers interrupted operations, serves the
 * HTTP API, runs scheduled backups, and publishes its pid file. Resolves once listening.
 *
 * @throws ConfigError `E_CONFIG` for a non-loopback bind without `CHATMEM_API_TOKEN`, a bad backup interval or policy, a short token.
 * @throws ChatmemError `E_DAEMON_RUNNING` when another daemon already publishes its pid file in the data dir.
 * @throws StoreError `E_STORE_LOCKED` when another process holds the store.
 */
export async function serve(config: ResolvedConfig, opts: ServeOptions = {}): Promise<RunningServer> {
  const env = opts.env ?? process.env;
  const say = opts.log ?? ((line: string) => void process.stderr.write(line + '\n'));
  const host = opts.host ?? config.server.host;
  const port = opts.port ?? config.server.port;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError('E_CONFIG', `port must be 0..65535, got ${String(port)}`);

  // Every refusal that needs no store comes first, so a misconfigured start touches nothing.
  const apiToken = env.CHATMEM_API_TOKEN || null;
  if (!isLoopbackHost(host) && apiToken === null) {
    throw new ConfigError(
      'E_CONFIG',
      `refusing to listen on ${host}: that address is reachable from other machines, and without CHATMEM_API_TOKEN anyone there could read ` +
        `and change every user's memory. Set CHATMEM_API_TOKEN (data-plane bearer token), or bind 127.0.0.1.`,
    );
  }
  const everyMs = parseInterval(config.backupEvery ?? '');
  if (everyMs !== null) isEmptyPolicy(config.retention);

  const running = await readDaemonInfo(config);
  if (running && running.pid !== process.pid) {
    const health = await fetchHealth(running.api);
    if (health && health.pid === running.pid) {
      throw new ChatmemError(
        'E_DAEMON_RUNNING',
        `a chatmem daemon (pid ${running.pid}, ${running.api}) already runs with data dir ${config.dataDir}, serving ${running.store}; stop it first (chatmem stop)`,
        { details: { pid: running.pid, api: running.api, store: running.store } },
      );
    }
  }

  const token = await loadAdminToken(config, { create: true, env });
  if (!token) throw new ConfigError('E_CONFIG', 'no admin token');
  if (token.created) {
    say(`chatmem: generated an admin token and saved it to ${adminTokenFile(config)} (mode 0600). It is shown only this once:`);
    say(`  ${token.token}`);
  }

  // The owner file records the API URL so the CLI can find this daemon. With port 0 the URL is known only
  // after listen(); the claim must come first (a second daemon must fail before it binds a port), so the
  // owner file then goes without it and the CLI finds the daemon through the pid file instead.
  const plannedUrl = port === 0 ? undefined : connectUrl(host, port);
  const osUser = currentOsActor();
  const actor = { ...osUser, name: `${osUser.name} (daemon)` };
  // The uploader logs through the app's logger, which exists only once the context is open.
  let offsiteLog: (level: 'info' | 'warn', message: string) => void = () => undefined;
  const ctx: Context = await openContext(config, { role: 'daemon', api: plannedUrl, actor, offsiteLog: (level, message) => offsiteLog(level, message) });
  let scheduler: BackupScheduler | null = null;
  let expiry: ExpireScheduler | null = null;
  let app: Awaited<ReturnType<typeof buildApp>> | null = null;
  try {
    const metrics = new Metrics();
    app = await buildApp({
      ctx,
      adminToken: token.token,
      apiToken,
      bodyLimit: config.server.bodyLimit,
      limits: config.server.limits,
      adminTokensFile: adminTokensFile(config),
      logger: opts.logger ?? true,
      logSample: config.server.logSample,
      metrics,
    });
    const log = app.log;
    // `chatmem start` points stdout and stderr at this file and names it here, so the daemon caps it.
    const stopRotation = env.CHATMEM_LOG_FILE
      ? startLogRotation(env.CHATMEM_LOG_FILE, config.server.log, (err) => log.error({ err: { message: (err as Error).message } }, 'cannot rotate the log'))
      : () => undefined;

    const recovered = await ctx.ops.recover();
    if (recovered.removedTemp.length > 0) log.warn({ files: recovered.removedTemp }, 'removed temp files left by an interrupted backup');
    const left = recovered.leftovers;
    if (config.store.file) {
      const storeTemps = await finishStoreTemps(config.store.file);
      if (storeTemps.length > 0) log.warn({ files: storeTemps }, 'removed store temp files left by an interrupted write');
    }
    if (left.removedOrphans.length > 0) log.warn({ files: left.removedOrphans }, 'removed backup manifests whose backup file is gone');
    if (left.completed.length > 0) log.warn({ files: left.completed }, 'completed backups an interrupted writer had not marked verified (they verified)');
    if (left.removedIncomplete.length > 0) log.warn({ files: left.removedIncomplete }, 'removed backups an interrupted writer left that did not verify');
    for (const i of recovered.interrupted) {
      const what = `interrupted operation ${i.entry.action} (op ${i.entry.op}, started ${i.entry.time})`;
      const line = `${what}: backup ${i.backup ?? 'missing'}, change ${i.applied === null ? 'unknown' : i.applied ? 'applied' : 'not applied'}`;
      log.warn({ op: i.entry.op, action: i.entry.action, backup: i.backup, applied: i.applied }, 'interrupted operation found at start');
      say(`chatmem: ${line}`);
    }

    offsiteLog = (level, message) => (level === 'warn' ? log.warn({ offsite: ctx.offsite?.display }, message) : log.info({ offsite: ctx.offsite?.display }, message));
    if (ctx.offsite) {
      // What an earlier process left un-uploaded (killed, stopped mid-retry, CLI gave up) goes now, in the background.
      const offsite = ctx.offsite;
      void ctx.ops
        .listBackups()
        .then((local) => offsite.syncMissing(local))
        .then(
          (r) => r.queued.length > 0 && log.info({ queued: r.queued }, 'off-site: uploading backups that have no off-site copy yet'),
          (err: unknown) => log.warn({ err: { code: (err as { code?: string }).code, message: (err as Error).message } }, 'off-site: cannot compare with the off-site copies at start'),
        );
    }

    if (everyMs !== null) {
      scheduler = new BackupScheduler({
        ops: ctx.ops,
        everyMs,
        retention: config.retention,
        metrics,
        log,
        // Several daemons on one PostgreSQL elect one scheduler through the store's leader lock.
        tryLeader: opts.tryLeader ?? (() => ctx.store.isLeader()),
        actor: { ...osUser, name: `${osUser.name} (scheduler)` },
      });
    }

    if (config.users.inactiveAfter !== null) {
      expiry = new ExpireScheduler({
        ops: ctx.ops,
        policy: { inactiveAfter: config.users.inactiveAfter, mode: config.users.expireMode },
        log,
        tryLeader: opts.tryLeader ?? (() => ctx.store.isLeader()),
        actor: { ...osUser, name: `${osUser.name} (scheduler)` },
      });
    }

    try {
      await app.listen({ host, port });
    } catch (err) {
      if (errnoCode(err) === 'EADDRINUSE') {
        throw new ChatmemError('E_PORT_IN_USE', `${host}:${port} is already in use (another chatmem daemon, or another program); choose another with --port`, { cause: err });
      }
      throw err;
    }
    const address = app.server.address() as AddressInfo;
    const url = connectUrl(host, address.port);
    await writeDaemonInfo(config, { pid: process.pid, api: url, store: config.store.display, startedAt: new Date().toISOString() });
    await scheduler?.start();
    expiry?.start();

    log.info({ url, store: config.store.display, version: VERSION, pid: process.pid, dataAuth: apiToken !== null }, 'chatmem listening');
    // A caller that announces the URL itself gets no second banner.
    if (opts.onListening) opts.onListening(url);
    else say(`chatmem ${VERSION} serving ${config.store.display} on ${url} (pid ${process.pid})`);

    const started = app;
    let closing: Promise<void> | null = null;
    const close = (): Promise<void> => {
      closing ??= (async () => {
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
        try {
          stopRotation();
          await scheduler?.stop();
          await expiry?.stop();
          await started.close();
        } finally {
          try {
            await ctx.close();
          } finally {
            await removeDaemonInfo(config);
          }
        }
        started.log.info({}, 'chatmem stopped');
      })();
      return closing;
    };
    const onSignal = (signal: NodeJS.Signals) => {
      say(`chatmem: ${signal} received; finishing in-flight requests, then exiting`);
      close().then(
        () => process.exit(0),
        (err: unknown) => {
          say(`chatmem: error while stopping: ${(err as Error).message}`);
          process.exit(1);
        },
      );
    };
    if (opts.handleSignals ?? true) {
      process.once('SIGTERM', onSignal);
      process.once('SIGINT', onSignal);
    }
    return { url, close };
  } catch (err) {
    await scheduler?.stop().catch(() => undefined);
    await expiry?.stop().catch(() => undefined);
    await app?.close().catch(() => undefined);
    await ctx.close().catch(() => undefined);
    throw err;
  }
}
