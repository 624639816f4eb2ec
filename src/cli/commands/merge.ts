import type { Command } from '../command.js';
import { usage } from '../errors.js';

/** `chatmem merge FROM INTO`: two ids of one person (WhatsApp's `…@lid` and the phone number) become INTO. */
export const merge: Command = {
  name: 'merge',
  summary: 'Merge two ids of one person: ask y/n, back up both, INTO takes FROM in, FROM is removed',
  args: 'FROM INTO',
  positionals: { min: 2, max: 2 },
  confirms: true,
  description:
    'Histories are merged by time (the history cap keeps the newest), flags and slots merge with INTO winning, ' +
    "INTO's empty fields (name, gender, product, serial, address, …) are filled from FROM. One per-user backup " +
    'holding both is written and verified first; the change is one transaction.',
  async run(ctx) {
    const [from, into] = ctx.positionals as [string, string];
    if (from === into) throw usage('FROM and INTO are the same user');
    await ctx.prompt.confirm(`Merge ${from} into ${into} (${from} is removed)?`, `merge ${from} into ${into}`);
    const result = await ctx.write('merge', (a) => a.mergeUsers(from, into), { hooks: true, progress: 'backup' });
    if (ctx.out.json) {
      ctx.out.data(result);
      return;
    }
    ctx.out.out(`Backup: ${result.backupFile}`);
    ctx.out.out(`Merged ${from} into ${into}: ${result.record.history.length} messages`);
  },
};
