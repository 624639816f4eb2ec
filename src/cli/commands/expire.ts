import { str, flag, type Command } from '../command.js';
import { usage } from '../errors.js';

/** `chatmem expire`: the users inactive for `users.inactiveAfter` (or `--inactive-after`), listed or removed. */
export const expire: Command = {
  name: 'expire',
  summary: 'Remove users with no update for users.inactiveAfter: list them (--dry-run), ask, back up, delete (or forget)',
  args: '[--dry-run] [--inactive-after D] [--mode delete|forget] [--yes]',
  positionals: { min: 0, max: 0 },
  confirms: true,
  options: {
    'dry-run': { type: 'boolean', help: 'list who would go; change nothing' },
    'inactive-after': { type: 'string', value: 'D', help: 'a duration such as 180d (default: users.inactiveAfter in the config)' },
    mode: { type: 'string', value: 'M', help: 'delete (backup first; the default, or users.expireMode) or forget' },
  },
  description: 'In delete mode the inactive users are backed up (verified) before the delete, as `chatmem delete` does; in forget mode they are forgotten everywhere (see `chatmem forget`).',
  async run(ctx) {
    const { out, config } = ctx;
    const inactiveAfter = str(ctx.values, 'inactive-after') ?? config.users.inactiveAfter;
    if (inactiveAfter === null) throw usage('expire needs --inactive-after D or users.inactiveAfter in chatmem.config.json');
    const mode = str(ctx.values, 'mode') ?? config.users.expireMode;
    if (mode !== 'delete' && mode !== 'forget') throw usage(`--mode is delete or forget, got ${JSON.stringify(mode)}`);
    const policy = { inactiveAfter, mode } as const;
    const preview = await ctx.read((a) => a.expireUsers(policy, { dryRun: true }));
    if (flag(ctx.values, 'dry-run') || preview.users.length === 0) {
      if (out.json) out.data(preview);
      else {
        out.out(`${preview.users.length} user${preview.users.length === 1 ? '' : 's'} with no update since ${preview.cutoff} (${inactiveAfter})${flag(ctx.values, 'dry-run') ? ' would go' : ''}:`);
        for (const u of preview.users) out.out(`  ${u.user_id}  last update ${u.updated_at}`);
      }
      return;
    }
    if (!out.json) for (const u of preview.users) out.say(`  ${u.user_id}  last update ${u.updated_at}`);
    const what = `${preview.users.length} inactive user${preview.users.length === 1 ? '' : 's'}`;
    await ctx.prompt.confirm(mode === 'forget' ? `Forget ${what} everywhere (no backup)?` : `Delete ${what} (backup first)?`, `expire ${what}`);
    const result = await ctx.write('expire', (a) => a.expireUsers(policy), { hooks: true, progress: 'backup' });
    if (out.json) {
      out.data(result);
      return;
    }
    if (result.backup) out.out(`Backup: ${result.backup}`);
    out.out(`${mode === 'forget' ? 'Forgot' : 'Deleted'} ${result.expired} inactive user${result.expired === 1 ? '' : 's'}`);
  },
};
