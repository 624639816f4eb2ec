import { readDaemonMemo, removeDaemonMemo, writeDaemonMemo } from '../../server/daemon-info.js';
import { formatAge } from '../output.js';
import { intOption, str, type Command, type CommandContext } from '../command.js';
import { EXIT } from '../errors.js';
import { keyValueLines } from './inspect.js';

const listenOptions = {
  host: { type: 'string', value: 'H', help: 'address to listen on (default: server.host, 127.0.0.1)' },
  port: { type: 'string', value: 'P', help: 'port (default: server.port, 8737; 0 picks a free one)' },
} as const;

function listenArgs(ctx: CommandContext): { host?: string; port?: number } {
  const host = str(ctx.values, 'host');
  const port = intOption(ctx.values, 'port');
  return { ...(host !== undefined ? { host } : {}), ...(port !== undefined ? { port } : {}) };
}

export const serve: Command = {
  name: 'serve',
  summary: 'Run the daemon in the foreground (Ctrl-C stops it)',
  args: '[--host H] [--port P]',
  options: listenOptions,
  description: 'Request logs (JSON lines) go to stdout; messages for the operator to stderr.',
  async run(ctx) {
    const { out, config } = ctx;
    // Loaded on demand: Fastify is heavy and most commands never serve.
    const mod = await import('../../server/serve.js');
    // Signals are handled here rather than by serve(), so the command returns and its exit code stands.
    const server = await mod.serve(config, {
      ...listenArgs(ctx),
      env: out.io.env,
      log: (line) => out.say(line),
      handleSignals: false,
      onListening: (url) => out.say(`chatmem: serving ${config.store.display} at ${url} (Ctrl-C stops)`),
    });
    await new Promise<void>((resolve) => {
      const stop = (): void => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        resolve();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    out.say('chatmem: stopping');
    await server.close();
  },
};

export const start: Command = {
  name: 'start',
  summary: 'Start the daemon in the background',
  args: '[--host H] [--port P]',
  options: listenOptions,
  async run(ctx) {
    const { out } = ctx;
    const { config } = ctx;
    const { startDaemon } = await import('../../server/process.js');
    const r = await startDaemon(config, { ...listenArgs(ctx), env: out.io.env, log: (line) => out.say(line) });
    // Later commands without --store act on this daemon's store (src/cli/daemon-memo.ts).
    await writeDaemonMemo(config, {
      pid: r.pid,
      api: r.api,
      storeUrl: config.store.file ? config.store.display : config.storeUrl,
      store: config.store.display,
      backupDir: config.backupDir,
      startedAt: new Date().toISOString(),
    });
    if (out.json) out.data({ ...r, store: config.store.display });
    else out.out(`Started the chatmem daemon (pid ${r.pid}) at ${r.api} for ${config.store.display}; log: ${r.logFile}`);
  },
};

export const stop: Command = {
  name: 'stop',
  summary: 'Stop the background daemon',
  args: '',
  async run(ctx) {
    const { out } = ctx;
    const { stopDaemon } = await import('../../server/process.js');
    const r = await stopDaemon(ctx.config);
    const memo = await readDaemonMemo(ctx.config);
    if (memo && (memo.pid === r.pid || !memo.running)) await removeDaemonMemo(ctx.config);
    if (out.json) out.data(r);
    else out.out(r.stopped ? `Stopped the chatmem daemon (pid ${r.pid ?? '?'})` : `No chatmem daemon is running for ${ctx.config.store.display}.`);
  },
};

export const status: Command = {
  name: 'status',
  summary: 'Whether a daemon serves this store (exit 3 when none does)',
  args: '',
  async run(ctx) {
    const { out, config } = ctx;
    const { daemonStatus } = await import('../../server/process.js');
    const s = await daemonStatus(config);
    if (out.json) out.data(s);
    else if (!s.running) out.out(`No chatmem daemon is running for ${config.store.display}.`);
    else {
      keyValueLines([
        ['Daemon', `${s.healthy ? out.c.green('running') : out.c.red('not answering')} (pid ${s.pid ?? '?'})`],
        ['API', s.api ?? '-'],
        ['Store', s.store ?? '-'],
        ['Version', s.version ?? '-'],
        ['Uptime', formatAge(s.uptime)],
        ['Log', s.logFile],
      ]).forEach((l) => out.out(l));
    }
    // As `systemctl status`: 3 when not running, which scripts can test for; 1 when it runs but does not answer.
    return !s.running ? EXIT.NOT_FOUND : s.healthy ? EXIT.OK : EXIT.FAILED;
  },
};
