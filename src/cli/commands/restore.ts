import * as path from 'node:path';
import { isEmptyPolicy, type RetentionPolicy } from '../../backup/retention.js';
import { flag, intOption, str, strs, type Command, type CommandContext, type OptionSpec } from '../command.js';
import { CLIError, usage } from '../errors.js';
import { formatCount, table } from '../output.js';
import { diffLines, isEmptyDiff } from './backups.js';
import { warningsOf } from './remove.js';

/** Where a line goes: a dry run's plan is its result (stdout); otherwise it is shown before a question (stderr). */
function sinkFor(ctx: CommandContext, dryRun: boolean): (line: string) => void {
  return dryRun ? (l) => ctx.out.out(l) : (l) => ctx.out.say(l);
}

export const restore: Command = {
  name: 'restore',
  summary: 'Restore a backup: show the diff, ask y/n, back up what it overwrites, restore',
  args: 'ID [--user U ...] [--merge] [--dry-run]',
  positionals: { min: 1, max: 1 },
  confirms: true,
  description:
    'A backup of the whole store replaces the store (users not in it are removed) unless --merge is given.\n' +
    'A backup of some users (a delete\'s backup, the seed\'s per-user file) restores those users and keeps the others,\n' +
    'as the seed\'s `current[uid] = backup[uid]` did, unless --replace is given.',
  options: {
    user: { type: 'string', multiple: true, value: 'U', help: 'restore only this user (repeatable); others are left alone' },
    merge: { type: 'boolean', help: 'keep users that are not in the backup' },
    replace: { type: 'boolean', help: 'make the store exactly the backup, even one holding only some users' },
    'dry-run': { type: 'boolean', help: 'show what would change, change nothing' },
  },
  async run(ctx) {
    const { out, config } = ctx;
    const id = ctx.backupId(ctx.positionals[0] ?? '');
    let users = strs(ctx.values, 'user');
    if (flag(ctx.values, 'merge') && flag(ctx.values, 'replace')) throw usage('--merge and --replace exclude each other');
    const dryRun = flag(ctx.values, 'dry-run');
    let mode: 'merge' | 'replace' = flag(ctx.values, 'merge') ? 'merge' : 'replace';
    const info = (await ctx.read((a) => a.listBackups(), { allowMissingStore: true })).find((b) => b.id === id.replace(/\.json(\.gz)?$/, ''));
    // No manifest, so no checksum: the operator is told so in the question and must accept it.
    const legacy = info?.state === 'legacy';
    if (!flag(ctx.values, 'replace') && mode === 'replace' && users.length === 0) {
      // Replacing the store with a backup of one deleted user would delete everyone else.
      if (info && (Array.isArray(info.scope) || info.kind === 'user')) {
        // Its own user list restores just them, and backs up just them first.
        if (Array.isArray(info.scope)) users = info.scope;
        else mode = 'merge';
        if (!out.json) out.note(`${info.id} holds only some users: restoring them and keeping the others (--replace to make the store exactly the backup)`);
      }
    }
    const options = { ...(users.length ? { users } : {}), mode, wholeStore: flag(ctx.values, 'replace') } as const;
    const plan = await ctx.read((a) => a.restore(id, { ...options, dryRun: true }), { progress: 'diff', allowMissingStore: true });
    const d = plan.diff;
    // Said on stderr even with --json: the operator must know the file is moved, whatever format they read.
    if (plan.brokenStore) {
      out.say(`The store ${plan.brokenStore.file} cannot be read (${plan.brokenStore.code}). It will be kept aside under a new name (not deleted), and a new store written from ${id}.`);
    }
    if (isEmptyDiff(d) && !plan.brokenStore) {
      if (out.json) out.data({ dryRun, backup: id, mode, users: users.length ? users : null, diff: d, written: 0, removed: 0, changed: false });
      else out.out(`Nothing to restore: ${users.length ? 'these users already match' : 'the store already matches'} ${id}.`);
      return;
    }
    const scope = users.length ? `users ${users.join(', ')}` : mode === 'merge' ? 'merge: users not in the backup are kept' : 'replace: the store becomes exactly the backup';
    if (!out.json || (!dryRun && !ctx.yes && ctx.prompt.interactive)) {
      const sink = sinkFor(ctx, dryRun && !out.json);
      sink(`Restore ${id} into ${config.store.display} (${scope}):`);
      diffLines(dryRun ? out : { c: out.e }, d, { added: 'restored (not in the store now)', removed: 'removed (not in the backup)', changed: 'overwritten' }).forEach(sink);
    }
    if (dryRun) {
      if (out.json) out.data({ dryRun: true, backup: id, mode, users: users.length ? users : null, diff: d });
      else out.note('dry run: nothing was changed');
      return;
    }
    await ctx.prompt.confirm(legacy ? `Restore ${id} (unverified legacy backup: no manifest, no checksum)?` : `Restore ${id}?`, `restore ${id}`);
    const r = await ctx.write('restore', (a) => a.restore(id, { ...options, allowUnverified: legacy }), { hooks: true, progress: 'restore', allowMissingStore: true });
    const backupFile = r.backup ? path.join(config.backupDir, `${r.backup}.json`) : null;
    if (out.json) {
      out.data({ dryRun: false, restored: id, mode, users: users.length ? users : null, diff: r.diff, backup: r.backup ?? null, backupFile, written: r.written, removed: r.removed, auditOp: r.auditOp, brokenStoreKeptAt: r.brokenStoreKeptAt ?? null, ...warningsOf(ctx, r) });
      return;
    }
    warningsOf(ctx, r);
    if (backupFile) out.out(`Backup: ${backupFile}`);
    else out.out('Backup: none (the restore overwrote nothing)');
    if (r.brokenStoreKeptAt) out.out(`The unreadable store was kept aside as ${r.brokenStoreKeptAt}`);
    out.out(`Restored ${id}: ${formatCount(r.written)} users written, ${formatCount(r.removed)} removed`);
  },
};

const COUNT_FLAGS = [
  ['last', 'last', 'the N newest backups'],
  ['hourly', 'hourly', 'the newest backup of each of the N newest hours'],
  ['daily', 'daily', 'the newest backup of each of the N newest days'],
  ['weekly', 'weekly', 'the newest backup of each of the N newest ISO weeks'],
  ['monthly', 'monthly', 'the newest backup of each of the N newest months'],
  ['yearly', 'yearly', 'the newest backup of each of the N newest years'],
] as const;
const WITHIN_FLAGS = [
  ['within', 'within', 'every backup within DURATION of the newest'],
  ['within-hourly', 'withinHourly', 'the newest of each hour within DURATION'],
  ['within-daily', 'withinDaily', 'the newest of each day within DURATION'],
  ['within-weekly', 'withinWeekly', 'the newest of each ISO week within DURATION'],
  ['within-monthly', 'withinMonthly', 'the newest of each month within DURATION'],
  ['within-yearly', 'withinYearly', 'the newest of each year within DURATION'],
] as const;

const pruneOptions: Record<string, OptionSpec> = { 'dry-run': { type: 'boolean', help: 'show what would be removed, remove nothing' } };
for (const [f, , help] of COUNT_FLAGS) pruneOptions[`keep-${f}`] = { type: 'string', value: 'N', help: `keep ${help} (-1: no limit)` };
for (const [f, , help] of WITHIN_FLAGS) pruneOptions[`keep-${f}`] = { type: 'string', value: 'DURATION', help: `keep ${help} (e.g. 7d, 1y2m, 36h; m = months, min = minutes)` };

function policyFromFlags(ctx: CommandContext): RetentionPolicy | null {
  const policy: RetentionPolicy = {};
  let any = false;
  for (const [f, key] of COUNT_FLAGS) {
    const n = intOption(ctx.values, `keep-${f}`, { allowUnlimited: true });
    if (n !== undefined) {
      policy[key] = n;
      any = true;
    }
  }
  for (const [f, key] of WITHIN_FLAGS) {
    const v = str(ctx.values, `keep-${f}`);
    if (v !== undefined) {
      policy[key] = v;
      any = true;
    }
  }
  return any ? policy : null;
}

const GROUP_LABEL = { full: 'full', user: 'per-user' } as const;

export const prune: Command = {
  name: 'prune',
  summary: 'Remove old backups by a retention policy (restic-style): show keep/remove, ask y/n',
  args: '[--keep-last N] [--keep-daily N] … [--keep-within DURATION] … [--dry-run]',
  confirms: true,
  options: pruneOptions,
  description:
    'Without --keep-* flags the policy comes from backup.retention in chatmem.config.json. An empty policy is refused.\n' +
    'Rules apply to full backups and to per-user backups separately, so small backups never push full ones out.\n' +
    'The newest full backup and legacy files without a date are always kept.',
  async run(ctx) {
    const { out, config } = ctx;
    const dryRun = flag(ctx.values, 'dry-run');
    const policy = policyFromFlags(ctx) ?? config.retention;
    if (isEmptyPolicy(policy)) {
      throw new CLIError('E_RETENTION_POLICY', 'no retention policy: pass --keep-* flags (e.g. --keep-daily 7) or set backup.retention in chatmem.config.json; prune never removes backups without one');
    }
    const plan = await ctx.read((a) => a.prune(policy, { dryRun: true }));
    const planDoc = { policy, keep: plan.keep, remove: plan.remove, damaged: plan.damaged };
    if (plan.remove.length === 0) {
      if (out.json) out.data({ dryRun, ...planDoc, removed: [] });
      else out.out(`Nothing to remove: all ${formatCount(plan.keep.length)} backups are kept.`);
      return;
    }
    if (!out.json || (!dryRun && !ctx.yes && ctx.prompt.interactive)) {
      const sink = sinkFor(ctx, dryRun && !out.json);
      const paint = dryRun ? out.c : out.e;
      // Rules count within each group, so the rows read group by group.
      const rows = (['full', 'user'] as const).flatMap((g) => [
        ...plan.keep.filter((k) => k.group === g).map((k) => [paint.green('keep'), GROUP_LABEL[g], k.id, k.reasons.join(', ')]),
        ...plan.remove.filter((r) => r.group === g).map((r) => [paint.red('remove'), GROUP_LABEL[g], r.id, '']),
      ]);
      table(['', 'GROUP', 'BACKUP', 'REASONS'], rows).forEach(sink);
      sink(`${formatCount(plan.keep.length)} kept, ${formatCount(plan.remove.length)} to remove`);
    }
    if (dryRun) {
      if (out.json) out.data({ dryRun: true, ...planDoc, removed: [] });
      else out.note('dry run: nothing was removed');
      return;
    }
    const what = `${formatCount(plan.remove.length)} backup${plan.remove.length === 1 ? '' : 's'}`;
    await ctx.prompt.confirm(`Remove ${what}?`, `remove ${what}`);
    // Only what the operator saw: a backup made since the plan was shown must not widen the removal.
    const r = await ctx.write('prune', (a) => a.prune(policy, { only: plan.remove.map((x) => x.id) }), { hooks: false });
    if (out.json) {
      out.data({ dryRun: false, policy, keep: r.keep, remove: r.remove, removed: r.removed });
      return;
    }
    out.out(`Removed ${formatCount(r.removed.length)} backup${r.removed.length === 1 ? '' : 's'}: ${r.removed.join(', ') || '-'}`);
  },
};
