import type { ResolvedConfig } from '../config.js';
import type { Admin } from '../admin/types.js';
import { parseDuration, subtractDuration } from '../duration.js';
import { usage } from './errors.js';
import type { Output } from './output.js';
import type { Prompter } from './prompt.js';

/** One option of a command, as node:util parseArgs takes it plus its help line. */
export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** Placeholder in help, e.g. `N`. */
  value?: string;
  help: string;
}

export type OptionValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** What a command gets to run with. */
export interface CommandContext {
  out: Output;
  config: ResolvedConfig;
  prompt: Prompter;
  values: OptionValues;
  positionals: string[];
  json: boolean;
  yes: boolean;
  /**
   * Runs `fn` against an admin for reading (the daemon when one serves the store, else a read-only
   * open). A store file that does not exist is `E_STORE_NOT_FOUND` unless `allowMissingStore`.
   */
  read<T>(fn: (admin: Admin) => Promise<T>, options?: { progress?: string; allowMissingStore?: boolean }): Promise<T>;
  /**
   * Runs `fn` against an admin that may change things (the daemon, else the store claimed by this
   * process), with a progress bar named `progress`. With `hooks`, the configured hooks run around it
   * when the store is local; not when a daemon serves it. Only commands that may create a store set
   * `allowMissingStore`.
   */
  write<T>(action: string, fn: (admin: Admin) => Promise<T>, options: { hooks: boolean; progress?: string; allowMissingStore?: boolean }): Promise<T>;
  /** Resolves a path the operator typed against the working directory of the run. */
  resolvePath(p: string): string;
  /** A backup id as typed: an id, or a path inside the backup directory (see backupIdFromArg). */
  backupId(raw: string): string;
}

/** A subcommand of `chatmem`. */
export interface Command {
  name: string;
  /** One line for the command list. */
  summary: string;
  /** Argument synopsis after the command name, e.g. `USER... [--full-backup]`. */
  args: string;
  /** More help, shown by `chatmem CMD --help`. */
  description?: string;
  options?: Record<string, OptionSpec>;
  /** Bounds on positional arguments. */
  positionals?: { min: number; max: number };
  /** Whether `--help` output should list `--yes` as meaningful. */
  confirms?: boolean;
  run(ctx: CommandContext): Promise<number | void>;
}

export function str(values: OptionValues, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

export function strs(values: OptionValues, name: string): string[] {
  const v = values[name];
  if (Array.isArray(v)) return v.filter((x): x is string => typeof x === 'string');
  return typeof v === 'string' ? [v] : [];
}

export function flag(values: OptionValues, name: string): boolean {
  return values[name] === true;
}

/** An integer option; `-1` is allowed only where `allowUnlimited` says so (retention counts). */
export function intOption(values: OptionValues, name: string, options: { min?: number; allowUnlimited?: boolean } = {}): number | undefined {
  const raw = str(values, name);
  if (raw === undefined) return undefined;
  const n = Number(raw);
  const min = options.min ?? 0;
  if (!/^-?\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || (n < min && !(options.allowUnlimited && n === -1))) {
    throw usage(`--${name} must be an integer${min > 0 ? ` of at least ${min}` : ' of 0 or more'}${options.allowUnlimited ? ' (or -1 for unlimited)' : ''}, got ${JSON.stringify(raw)}`);
  }
  return n;
}

/** `--since`: an ISO date or time, or a duration back from now (`7d`, `12h`, `30min`, `1m2d`; `m` is months). */
export function parseSince(raw: string, now = new Date()): Date {
  if (/^\d+[a-z]/i.test(raw.trim())) return new Date(Math.max(-8.64e15, subtractDuration(now, parseDuration(raw, { what: '--since', code: 'E_USAGE' }))));
  const ms = Date.parse(raw);
  if (Number.isNaN(ms)) throw usage(`--since must be a date (2025-11-25, 2025-11-25T14:00:00Z) or a duration (7d, 12h, 30min), got ${JSON.stringify(raw)}`);
  return new Date(ms);
}
