import { type Command, type CommandContext } from '../command.js';
import { usage } from '../errors.js';
import { formatCount } from '../output.js';
import { cancelled } from '../prompt.js';
import { userTable } from './inspect.js';
import { clearFlow, deleteFlow } from './remove.js';

const PICK_LIST = 50;

async function pickUser(ctx: CommandContext): Promise<string | null> {
  const { out } = ctx;
  const [page, total] = await ctx.read(async (a) => [await a.listUsers({ limit: PICK_LIST }), (await a.stats()).users] as const);
  if (page.items.length === 0) return null;
  out.say();
  userTable(out, page.items, true).forEach((l) => out.say(l));
  if (total > page.items.length) out.say(`… and ${formatCount(total - page.items.length)} more: type a user id (\`chatmem users --search\` finds one)`);
  const answer = (await ctx.prompt.ask(`Which user? (number or user id, empty to cancel): `))?.trim();
  if (!answer) throw cancelled();
  const n = /^\d+$/.test(answer) ? Number(answer) : NaN;
  // A number within the list picks from it; anything else (a long phone-number id too) is an id.
  if (Number.isInteger(n) && n >= 1 && n <= page.items.length) return page.items[n - 1]?.user_id ?? null;
  return answer;
}

/** The seed's interactive menu (bin/clear_memory.sh): 1 delete a user, 2 clear all, 3 cancel. */
export async function menuFlow(ctx: CommandContext): Promise<number | void> {
  const { out, config } = ctx;
  const { users } = await ctx.read((a) => a.stats());
  out.say(out.e.bold('chatmem: clear memory'));
  out.say(`Store: ${config.store.display} (${formatCount(users)} user${users === 1 ? '' : 's'})`);
  out.say();
  out.say('  1) Delete a user');
  out.say('  2) Clear all memory');
  out.say('  3) Cancel');
  out.say();
  const choice = (await ctx.prompt.ask('Choose [1-3]: '))?.trim();
  switch (choice) {
    case '1': {
      const id = await pickUser(ctx);
      if (id === null) {
        out.out('No users in memory.');
        return;
      }
      await deleteFlow(ctx, [id], false);
      return;
    }
    case '2':
      await clearFlow(ctx);
      return;
    case '3':
    case undefined:
    case '':
      out.say('Cancelled.');
      return;
    default:
      throw usage(`invalid choice ${JSON.stringify(choice)}: choose 1, 2 or 3`);
  }
}

export const menu: Command = {
  name: 'menu',
  summary: 'The interactive menu (what `chatmem` alone opens in a terminal)',
  args: '',
  confirms: true,
  async run(ctx) {
    if (!ctx.prompt.interactive) throw usage('the menu needs a terminal; use `chatmem delete USER` or `chatmem clear` with --yes');
    return menuFlow(ctx);
  },
};
