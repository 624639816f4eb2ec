import type { MemoryRecord } from '../../record.js';
import { flag, type Command, type CommandContext } from '../command.js';
import { CLIError, usage } from '../errors.js';
import { formatCount } from '../output.js';
import { keyValueLines, userDetails } from './inspect.js';

function plural(n: number, word: string): string {
  return `${formatCount(n)} ${word}${n === 1 ? '' : 's'}`;
}

/**
 * An operation that committed but could not write its audit outcome succeeded: its warnings go to
 * stderr (exit 0) and, with --json, into the document.
 */
export function warningsOf(ctx: CommandContext, result: { warnings?: { code: string; message: string }[] }): { warnings?: { code: string; message: string }[] } {
  for (const w of result.warnings ?? []) ctx.out.warn(`${w.message} [${w.code}]`);
  return result.warnings?.length ? { warnings: result.warnings } : {};
}

/** Shows details only to someone who can read them: a human run, or a question about to be asked. */
function showsDetails(ctx: CommandContext): boolean {
  return !ctx.json || (!ctx.yes && ctx.prompt.interactive);
}

/** Looks the users up first, so an unknown id fails (exit 3) before any question or hook. */
async function lookUp(ctx: CommandContext, ids: string[]): Promise<MemoryRecord[]> {
  const records = await ctx.read((a) => Promise.all(ids.map((id) => a.getUser(id))));
  const missing = ids.filter((_, i) => !records[i]);
  if (missing.length > 0) {
    throw new CLIError('E_UNKNOWN_USER', `unknown user${missing.length > 1 ? 's' : ''}: ${missing.map((m) => JSON.stringify(m)).join(', ')}`, {
      details: { missing },
    });
  }
  return records.filter((r): r is MemoryRecord => r !== null);
}

/** The delete flow, shared by `chatmem delete` and the menu: details, y/N, backup, delete. */
export async function deleteFlow(ctx: CommandContext, rawIds: string[], fullBackup: boolean): Promise<void> {
  const { out } = ctx;
  const ids = [...new Set(rawIds)];
  const records = await lookUp(ctx, ids);
  if (showsDetails(ctx)) {
    for (const r of records) {
      keyValueLines(userDetails(r), '  ').forEach((l) => out.say(l));
      out.say();
    }
  }
  const what = ids.length === 1 ? `user ${ids[0]}` : plural(ids.length, 'user');
  await ctx.prompt.confirm(`Delete ${what}?`, `delete ${what}`);
  const result = await ctx.write('delete', (a) => a.deleteUsers(ids, { fullBackup }), { hooks: true, progress: 'backup' });
  if (out.json) {
    out.data({ deleted: result.deleted, userIds: result.userIds, backup: result.backup, backupFile: result.backupFile, fullBackup, auditOp: result.auditOp, store: ctx.config.store.display, ...warningsOf(ctx, result) });
    return;
  }
  warningsOf(ctx, result);
  out.out(`Backup: ${result.backupFile}`);
  out.out(`Deleted ${plural(result.deleted, 'user')} from ${ctx.config.store.display}`);
}

export const del: Command = {
  name: 'delete',
  summary: "Delete users: show them, ask y/n, back up, delete",
  args: 'USER... [--full-backup]',
  positionals: { min: 1, max: Infinity },
  confirms: true,
  options: {
    'full-backup': { type: 'boolean', help: 'back up the whole store, not only the users deleted' },
  },
  description: 'The backup is written and verified before anything is deleted; no flag skips it.',
  async run(ctx) {
    await deleteFlow(ctx, ctx.positionals, flag(ctx.values, 'full-backup'));
  },
};

/** The clear flow, shared by `chatmem clear` and the menu: count, type YES, full backup, clear. */
export async function clearFlow(ctx: CommandContext): Promise<void> {
  const { out, config } = ctx;
  const { users } = await ctx.read((a) => a.stats());
  if (users === 0) {
    if (out.json) out.data({ deleted: 0, backup: null, backupFile: null });
    else out.out('The store is already empty; nothing to clear.');
    return;
  }
  if (showsDetails(ctx)) out.say(`This will delete all ${plural(users, 'user')} from ${config.store.display}. A full backup is written first.`);
  await ctx.prompt.typeYes('Type YES to continue:', `clear all ${plural(users, 'user')}`);
  const result = await ctx.write('clear', (a) => a.clearAll(), { hooks: true, progress: 'backup' });
  if (out.json) {
    out.data({ deleted: result.deleted, backup: result.backup, backupFile: result.backupFile, auditOp: result.auditOp, ...warningsOf(ctx, result) });
    return;
  }
  warningsOf(ctx, result);
  out.out(`Backup: ${result.backupFile}`);
  out.out(`Cleared ${plural(result.deleted, 'user')}`);
}

export const clear: Command = {
  name: 'clear',
  summary: 'Delete every user: show how many, ask for YES, back up everything, clear',
  args: '',
  positionals: { min: 0, max: Infinity },
  confirms: true,
  description: 'Type YES (exactly, case-sensitive) to confirm. A full, verified backup is written first; no flag skips it.',
  async run(ctx) {
    if (ctx.positionals.length > 0) throw usage('clear takes no arguments; to delete some users use `chatmem delete USER...`');
    await clearFlow(ctx);
  },
};
