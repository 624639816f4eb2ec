import { AUDIT_ACTIONS } from '../../ops/audit.js';
import { intOption, parseSince, str, type Command } from '../command.js';
import { clip, formatCount, table } from '../output.js';

export const audit: Command = {
  name: 'audit',
  summary: 'The audit log: who did what to whose memory, and whether it finished',
  args: '[--user U] [--since DATE] [--action A] [--limit N]',
  options: {
    user: { type: 'string', value: 'U', help: 'entries about this user, including clears and full restores whose backup holds U' },
    since: { type: 'string', value: 'DATE', help: 'entries at or after DATE (2025-11-25, ISO time, or 7d / 12h / 30min back from now; m = months)' },
    action: { type: 'string', value: 'A', help: `one action: ${AUDIT_ACTIONS.map((a) => a.name).join(', ')} (or the stored name, e.g. delete-users)` },
    limit: { type: 'string', value: 'N', help: 'the newest N entries (default 100)' },
  },
  async run(ctx) {
    const { out } = ctx;
    const since = str(ctx.values, 'since');
    const user = str(ctx.values, 'user');
    const action = str(ctx.values, 'action');
    const limit = intOption(ctx.values, 'limit', { min: 1 }) ?? 100;
    const filter = { ...(since !== undefined ? { since: parseSince(since) } : {}), ...(user !== undefined ? { user } : {}), ...(action !== undefined ? { action } : {}) };
    // One more than asked tells whether older entries were left out.
    const entries = await ctx.read((a) => a.readAudit({ ...filter, limit: limit + 1 }), { allowMissingStore: true });
    const more = entries.length > limit;
    const shown = more ? entries.slice(1) : entries;
    if (out.json) {
      out.data({ entries: shown, more });
      return;
    }
    if (shown.length === 0) {
      out.out('No audit entries.');
      return;
    }
    const rows = shown.map((e) => [
      e.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
      e.action,
      e.outcome,
      e.userIds ? clip(e.userIds.join(','), 30) : e.foundInBackup !== undefined && user !== undefined ? clip(`${user} (in backup)`, 30) : '-',
      e.backup ?? '-',
      `${e.actor.name}${e.actor.kind === 'api' ? (e.actor.osUser ? ` (api, ${e.actor.osUser})` : ' (api)') : ''}`,
      e.error ? `${e.error.code}: ${clip(e.error.message, 60)}` : e.durationMs !== undefined ? `${e.durationMs} ms` : '',
    ]);
    table(['TIME (UTC)', 'ACTION', 'OUTCOME', 'USERS', 'BACKUP', 'ACTOR', ''], rows, { paint: out.c.bold }).forEach((l) => out.out(l));
    if (more) out.note(`showing the newest ${formatCount(limit)}; use --limit or --since for more`);
  },
};
