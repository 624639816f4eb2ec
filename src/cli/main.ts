import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { resolveConfig, type ConfigOverrides, type ResolvedConfig } from '../config.js';
import { seedHint } from '../context.js';
import { isChatmemError } from '../errors.js';
import type { Admin } from '../admin/types.js';
import { didYouMean } from '../suggest.js';
import { VERSION } from '../version.js';
import { daemonAdmin, withAdmin, type OpenAdminOptions } from './open-admin.js';
import { backupIdFromArg } from './backup-arg.js';
import { withRememberedStore } from './daemon-memo.js';
import { redactSecrets } from '../store/url.js';
import type { Command, CommandContext, OptionSpec, OptionValues } from './command.js';
import { audit } from './commands/audit.js';
import { backup, backups, diff, verify } from './commands/backups.js';
import { serve, start, status, stop } from './commands/daemon.js';
import { show, stats, users } from './commands/inspect.js';
import { menu, menuFlow } from './commands/menu.js';
import { clear, del } from './commands/remove.js';
import { forget } from './commands/forget.js';
import { expire } from './commands/expire.js';
import { merge } from './commands/merge.js';
import { prune, restore } from './commands/restore.js';
import { exportCmd, importCmd } from './commands/transfer.js';
import { token } from './commands/token.js';
import { offsite } from './commands/offsite.js';
import { CLIError, codeOf, EXIT, exitCodeFor, usage } from './errors.js';
import { withHooks } from './hooks.js';
import { Output, type CliIo } from './output.js';
import { Prompter } from './prompt.js';

export type { CliIo } from './output.js';
export { CLIError, EXIT } from './errors.js';

const COMMANDS: Command[] = [users, show, stats, del, clear, forget, expire, merge, backup, backups, verify, diff, restore, prune, audit, importCmd, exportCmd, menu, serve, start, stop, status, token, offsite];

const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  store: { type: 'string', value: 'URL', help: 'store: sqlite:PATH, json:PATH or postgres://… (env CHATMEM_STORE)' },
  'backup-dir': { type: 'string', value: 'DIR', help: 'backup directory (env CHATMEM_BACKUP_DIR)' },
  config: { type: 'string', value: 'FILE', help: 'config file (default ./chatmem.config.json; env CHATMEM_CONFIG)' },
  offsite: { type: 'string', value: 'URL', help: 'off-site copies of backups: s3://BUCKET/PREFIX (env CHATMEM_OFFSITE)' },
  json: { type: 'boolean', help: 'print one JSON document on stdout' },
  yes: { type: 'boolean', short: 'y', help: 'answer the confirmation question with yes (the backup still happens)' },
  debug: { type: 'boolean', help: 'print stack traces with errors' },
  help: { type: 'boolean', short: 'h', help: 'show help' },
  version: { type: 'boolean', short: 'V', help: 'print the version' },
};
const GLOBAL_WITH_VALUE = new Set(['--store', '--backup-dir', '--config', '--offsite']);

const EXIT_CODES_HELP = `Exit codes:
  0  ok
  1  failed
  2  usage error, invalid input, or refused (no confirmation without a terminal, cancelled, empty policy)
  3  not found (unknown user, backup, file or store; \`status\`: no daemon running)`;

function optionLines(options: Record<string, OptionSpec>): string[] {
  const entries = Object.entries(options).map(([name, o]) => [`${o.short ? `-${o.short}, ` : '    '}--${name}${o.value ? ` ${o.value}` : ''}`, o.help] as const);
  const w = Math.max(...entries.map(([l]) => l.length));
  return entries.map(([l, h]) => `  ${l.padEnd(w)}  ${h}`);
}

function mainHelp(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    `chatmem ${VERSION}: the chatbot's memory store, with safe operator tools.`,
    'Every destructive command writes a verified backup first; no flag skips it. (forget is the exception: it exists to leave nothing behind.)',
    '',
    'Usage: chatmem [COMMAND] [ARGS] [OPTIONS]',
    '       chatmem            (in a terminal: the menu: delete a user, clear all, cancel)',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`),
    '',
    'Options for every command:',
    ...optionLines(GLOBAL_OPTIONS),
    '',
    EXIT_CODES_HELP,
    '',
    'Settings: flags, then CHATMEM_* environment, then chatmem.config.json, then defaults.',
    'hooks.beforeWrite / hooks.afterWrite in the config run around every command that changes the store.',
    'Run `chatmem COMMAND --help` for a command\'s options.',
  ].join('\n');
}

function commandHelp(cmd: Command): string {
  const lines = [`Usage: chatmem ${cmd.name}${cmd.args ? ` ${cmd.args}` : ''}`, '', cmd.summary + '.'];
  if (cmd.description) lines.push('', cmd.description);
  if (cmd.options && Object.keys(cmd.options).length > 0) lines.push('', 'Options:', ...optionLines(cmd.options));
  lines.push('', 'Options for every command:', ...optionLines(GLOBAL_OPTIONS));
  if (cmd.confirms) lines.push('', 'Without a terminal it refuses (exit 2) unless --yes is given.');
  lines.push('', EXIT_CODES_HELP);
  return lines.join('\n');
}

/** Splits off the command name: the first argument that is neither an option nor a global option's value. */
function splitCommand(args: string[]): { name: string | null; rest: string[] } {
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    if (a === '--') break;
    if (a.startsWith('-')) {
      if (GLOBAL_WITH_VALUE.has(a)) i++;
      continue;
    }
    return { name: a, rest: [...args.slice(0, i), ...args.slice(i + 1)] };
  }
  return { name: null, rest: args };
}

function parse(cmd: Command | null, args: string[]): { values: OptionValues; positionals: string[] } {
  const specs = { ...GLOBAL_OPTIONS, ...(cmd?.options ?? {}) };
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const [name, o] of Object.entries(specs)) options[name] = { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) };
  // parseArgs takes `--keep-daily -1` for two options; a negative number is a value here.
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    const next = args[i + 1];
    if (a.startsWith('--') && options[a.slice(2)]?.type === 'string' && next !== undefined && /^-\d+$/.test(next)) {
      joined.push(`${a}=${next}`);
      i++;
    } else joined.push(a);
  }
  try {
    const { values, positionals } = parseArgs({ args: joined, options, allowPositionals: true, strict: true });
    return { values: values as OptionValues, positionals };
  } catch (err) {
    const where = cmd ? `chatmem ${cmd.name} --help` : 'chatmem --help';
    const message = (err as Error).message.replace(/\. To specify a positional argument.*$/s, '').replace(/\s*\n\s*/g, ' ');
    throw usage(`${message} (see \`${where}\`)`);
  }
}

function completeIo(io: Partial<CliIo>): CliIo {
  return {
    stdout: io.stdout ?? process.stdout,
    stderr: io.stderr ?? process.stderr,
    stdin: io.stdin ?? process.stdin,
    isTTY: io.isTTY ?? (process.stdin.isTTY === true && process.stderr.isTTY === true),
    env: io.env ?? process.env,
    cwd: io.cwd ?? process.cwd(),
  };
}

function reportError(out: Output, err: unknown, debug: boolean): void {
  const code = codeOf(err);
  // One line, whatever the message carries: scripts and log scrapers read errors line by line.
  // redactSecrets: a store URL quoted by any layer loses its password here at the latest.
  const message = redactSecrets((err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ').replace(`${code}: `, ''));
  if (out.json) out.data({ error: { code, message, ...(isChatmemError(err) && err.details ? { details: err.details } : {}) } });
  if (code === 'E_CANCELLED') out.say(`chatmem: cancelled (${code}); nothing was changed`);
  else out.say(`chatmem: ${out.e.red('error')} ${code}: ${message}`);
  if (debug) {
    for (let e: unknown = err; e instanceof Error; e = e.cause) out.say(out.e.dim(redactSecrets(e.stack ?? String(e))));
  } else if (!isChatmemError(err)) {
    // Not one of ours: a bug rather than a condition; the stack is what would find it.
    out.say(out.e.dim('(run with --debug for the stack trace)'));
  }
}

/**
 * Runs the `chatmem` command line with `rawArgs` (without node and the script) and returns the
 * exit code; `io` replaces the process's streams, environment and working directory.
 */
export async function runMain(rawArgs: string[], ioOverrides: Partial<CliIo> = {}): Promise<number> {
  const io = completeIo(ioOverrides);
  const { name, rest } = splitCommand(rawArgs);
  const beforeDashes = rawArgs.indexOf('--') === -1 ? rawArgs : rawArgs.slice(0, rawArgs.indexOf('--'));
  // Known before parsing, so even a usage error is reported the way the caller asked.
  const json = beforeDashes.includes('--json');
  const debug = beforeDashes.includes('--debug');
  const out = new Output(io, { json });
  const deferred: CLIError[] = [];
  let prompt: Prompter | null = null;
  try {
    const cmd = name === null ? null : (COMMANDS.find((c) => c.name === name) ?? null);
    if (name !== null && cmd === null) {
      if (name === 'help') {
        const target = COMMANDS.find((c) => c.name === rest.find((a) => !a.startsWith('-')));
        io.stdout.write((target ? commandHelp(target) : mainHelp()) + '\n');
        return EXIT.OK;
      }
      const guess = didYouMean(name, [...COMMANDS.map((c) => c.name), 'help']);
      throw usage(`unknown command ${JSON.stringify(name)}${guess ? ` (did you mean \`chatmem ${guess}\`?)` : ''} (see \`chatmem --help\`)`);
    }
    const { values, positionals } = parse(cmd, rest);
    if (values.version === true && !cmd) {
      io.stdout.write(`chatmem ${VERSION}\n`);
      return EXIT.OK;
    }
    if (values.help === true) {
      io.stdout.write((cmd ? commandHelp(cmd) : mainHelp()) + '\n');
      return EXIT.OK;
    }
    if (!cmd && positionals.length === 0 && !io.isTTY) {
      io.stderr.write(mainHelp() + '\n');
      throw usage('no command given (the menu needs a terminal)');
    }
    const bounds = cmd?.positionals ?? { min: 0, max: 0 };
    if (cmd && (positionals.length < bounds.min || positionals.length > bounds.max)) {
      throw usage(`usage: chatmem ${cmd.name} ${cmd.args}`.trimEnd());
    }

    const overrides: ConfigOverrides = {
      ...(typeof values.store === 'string' ? { store: values.store } : {}),
      ...(typeof values['backup-dir'] === 'string' ? { backupDir: values['backup-dir'] } : {}),
      ...(typeof values.config === 'string' ? { configFile: values.config } : {}),
      ...(typeof values.offsite === 'string' ? { offsite: values.offsite } : {}),
      cwd: io.cwd,
      env: io.env,
    };
    let config: ResolvedConfig = await resolveConfig(overrides);
    // `serve` runs in the foreground with what it is given; everything else follows `chatmem start`.
    if (cmd?.name !== 'serve') config = await withRememberedStore(config, overrides, out);
    const hint = seedHint(config);
    if (hint) out.note(hint);
    const yes = values.yes === true;
    prompt = new Prompter(out, { yes });
    const withProgress = <T>(mode: 'read' | 'write', fn: (admin: Admin) => Promise<T>, label: string | undefined, options: OpenAdminOptions = {}): Promise<T> => {
      const bar = label ? out.progress(label) : null;
      return withAdmin(config, mode, out, fn, bar ? (done, total) => bar.update(done, total) : undefined, options).finally(() => bar?.end());
    };
    const ctx: CommandContext = {
      out,
      config,
      prompt,
      values,
      positionals,
      json,
      yes,
      read: (fn, options = {}) => withProgress('read', fn, options.progress, { allowMissingStore: options.allowMissingStore }),
      write: async (action, fn, options) => {
        const open = { allowMissingStore: options.allowMissingStore };
        if (!options.hooks || (!config.hooks.beforeWrite && !config.hooks.afterWrite)) return withProgress('write', fn, options.progress, open);
        // The hooks stop and restart whatever else writes the store; a daemon carries the change out
        // itself while it serves, and a stop hook could kill it mid-operation.
        const daemon = await daemonAdmin(config, 'write', out);
        if (daemon) {
          out.note(`note: not running the hooks (hooks.beforeWrite / hooks.afterWrite): the daemon at ${daemon.via} serves the store and makes the change itself, so nothing has to be stopped`);
          return withProgress('write', fn, options.progress, { ...open, handle: daemon });
        }
        return withHooks(config, out, action, () => withProgress('write', fn, options.progress, open), (err) => deferred.push(err));
      },
      resolvePath: (p) => path.resolve(io.cwd, p),
      backupId: (raw) => backupIdFromArg(raw, config.backupDir, io.cwd),
    };
    const code = cmd ? await cmd.run(ctx) : await menuFlow(ctx);
    for (const err of deferred) reportError(new Output(io, { json: false }), err, debug);
    return deferred.length > 0 ? exitCodeFor(deferred[0]) : (code ?? EXIT.OK);
  } catch (err) {
    reportError(out, err, debug);
    return exitCodeFor(err);
  } finally {
    prompt?.close();
  }
}
