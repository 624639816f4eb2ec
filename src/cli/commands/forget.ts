import type { Command } from '../command.js';

/** `chatmem forget USER...`: the one operation that destroys without a backup, so the operator types each id. */
export const forget: Command = {
  name: 'forget',
  summary: 'Forget users everywhere: store, every backup, daemon log; audit ids become keyed hashes. No backup',
  args: 'USER... [--yes]',
  positionals: { min: 1, max: Infinity },
  confirms: true,
  description:
    'Removes the users from the store (leaving no trace in its files), rewrites every backup that holds them ' +
    '(verified; a per-user backup of only them is deleted), drops the daemon log lines naming them, and ' +
    'replaces their ids in the audit log by a keyed hash. It cannot be undone: no backup is taken, by design. ' +
    'Type each user id to confirm (--yes skips the question).',
  async run(ctx) {
    const { out } = ctx;
    const ids = [...new Set(ctx.positionals)];
    if (!ctx.json || (!ctx.yes && ctx.prompt.interactive)) {
      out.say(`This forgets ${ids.length === 1 ? 'one user' : `${ids.length} users`} in ${ctx.config.store.display} and in every backup. It cannot be undone.`);
    }
    for (const id of ids) await ctx.prompt.typeExactly(`Type the user id to forget (${id}):`, id, `forget ${id}`);
    const result = await ctx.write('forget', (a) => a.forgetUsers(ids), { hooks: true, progress: 'forget' });
    if (out.json) {
      out.data({ ...result, store: ctx.config.store.display });
      return;
    }
    out.out(`Forgot ${ids.length === 1 ? ids[0] : `${ids.length} users`}: ${result.deleted} removed from ${ctx.config.store.display}`);
    for (const b of result.backupsRewritten) out.out(`Rewritten backup: ${b}`);
    for (const f of result.filesDeleted) out.out(`Deleted file: ${f}`);
    for (const f of result.logsRedacted) out.out(`Redacted log: ${f}`);
    out.out(`Audit log: ${result.auditEntriesRedacted} entries now name ${Object.values(result.hashes).join(', ')} instead (audit op ${result.auditOp})`);
  },
};
