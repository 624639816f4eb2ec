import { existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import type { DiffResult } from '../../backup/diff.js';
import type { BackupInfo } from '../../ops/operations.js';
import { flag, str, type Command } from '../command.js';
import { CLIError, EXIT, usage } from '../errors.js';
import { clip, formatAge, formatBytes, formatCount, formatTime, table, type Output } from '../output.js';
import { prettyJson } from '../../json-safe.js';
import { keyValueLines } from './inspect.js';
import { didYouMeanText } from '../../suggest.js';

const LIST_LIMIT = 20;

function siblings(dir: string): string[] {
  try {
    return readdirSync(path.dirname(dir));
  } catch {
    return [];
  }
}

function listed(ids: string[], limit = LIST_LIMIT): string {
  const head = ids.slice(0, limit).join(', ');
  return ids.length > limit ? `${head}, … and ${formatCount(ids.length - limit)} more` : head;
}

/**
 * A diff as lines: counts, then the ids (at most 20 per list) and, for changed users, which fields
 * differ. `labels` names the three lists for the context (a diff, or what a restore will do).
 */
export function diffLines(out: { c: Output['c'] }, diff: DiffResult, labels: { added: string; removed: string; changed: string }): string[] {
  const lines: string[] = [];
  if (diff.added.length) lines.push(`${out.c.green(`+ ${formatCount(diff.added.length)}`)} ${labels.added}: ${listed(diff.added)}`);
  if (diff.removed.length) lines.push(`${out.c.red(`- ${formatCount(diff.removed.length)}`)} ${labels.removed}: ${listed(diff.removed)}`);
  if (diff.changed.length) {
    lines.push(`${out.c.yellow(`~ ${formatCount(diff.changed.length)}`)} ${labels.changed}:`);
    for (const ch of diff.changed.slice(0, LIST_LIMIT)) {
      const fields = ch.fields.map((f) => {
        if (f === 'history' && ch.history) return `history ${ch.history.from}→${ch.history.to}`;
        if (f === 'flags' && ch.flags) {
          const parts = [...ch.flags.added.map((k) => `+${k}`), ...ch.flags.removed.map((k) => `-${k}`), ...ch.flags.changed.map((k) => `~${k}`)];
          return parts.length ? `flags (${parts.join(' ')})` : 'flags';
        }
        return f;
      });
      lines.push(`    ${clip(ch.user_id, 40)}  ${fields.join(', ')}`);
    }
    if (diff.changed.length > LIST_LIMIT) lines.push(`    … and ${formatCount(diff.changed.length - LIST_LIMIT)} more`);
  }
  lines.push(`  ${formatCount(diff.unchanged)} unchanged`);
  return lines;
}

export function isEmptyDiff(diff: DiffResult): boolean {
  return diff.added.length === 0 && diff.removed.length === 0 && diff.changed.length === 0;
}

export const backup: Command = {
  name: 'backup',
  summary: 'Write a verified full backup of the store',
  args: '[--gzip]',
  options: { gzip: { type: 'boolean', help: 'compress it (memory_backup_….json.gz)' } },
  async run(ctx) {
    const { out } = ctx;
    const r = await ctx.write('backup', (a) => a.createBackup({ gzip: flag(ctx.values, 'gzip') }), { hooks: false, progress: 'backup' });
    if (out.json) {
      out.data({ backup: r.id, file: r.file, users: r.manifest.users, bytes: r.manifest.bytes, sha256: r.manifest.sha256, gzip: r.manifest.gzip, auditOp: r.auditOp });
      return;
    }
    out.out(`Backup: ${r.file}`);
    out.out(`${formatCount(r.manifest.users)} users, ${formatBytes(r.manifest.bytes)}, sha256 ${r.manifest.sha256.slice(0, 16)}…, verified`);
  },
};

function backupRow(b: BackupInfo): string[] {
  const scope = b.scope === 'full' ? 'full' : Array.isArray(b.scope) ? `${b.scope.length} user${b.scope.length === 1 ? '' : 's'}` : b.kind;
  const state = b.problem ? `${b.state}: ${b.problem.code}` : b.gzip ? `${b.state}, gzip` : b.state;
  return [b.id, formatTime(b.createdAt), formatAge(b.ageSeconds), b.reason, scope, b.users === null ? '-' : String(b.users), formatBytes(b.size), state];
}

export const backups: Command = {
  name: 'backups',
  summary: 'List backups, newest first; `backups show ID` shows one',
  args: '[show ID [--user U]]',
  positionals: { min: 0, max: 2 },
  options: { user: { type: 'string', value: 'U', help: 'with `show`: print this user\'s record from the backup' } },
  async run(ctx) {
    const { out, config } = ctx;
    const [sub, rawId] = ctx.positionals;
    const id = rawId === undefined ? undefined : ctx.backupId(rawId);
    if (sub === undefined) {
      if (str(ctx.values, 'user') !== undefined) throw usage('--user goes with `chatmem backups show ID`');
      const list = await ctx.read((a) => a.listBackups(), { allowMissingStore: true });
      if (out.json) out.data({ dir: config.backupDir, backups: list });
      else if (list.length === 0) {
        out.out(`No backups in ${config.backupDir}.`);
        // A mistyped --backup-dir would otherwise look like a directory that was emptied.
        if (!existsSync(config.backupDir)) out.note(`note: ${config.backupDir} does not exist${didYouMeanText(path.basename(config.backupDir), siblings(config.backupDir))}`);
      }
      else {
        // WHERE only when off-site storage is configured and answered: local, offsite or both.
        const where = list.some((b) => b.location !== undefined);
        const header = ['ID', 'CREATED (UTC)', 'AGE', 'REASON', 'SCOPE', 'USERS', 'SIZE', 'STATE', ...(where ? ['WHERE'] : [])];
        table(header, list.map((b) => [...backupRow(b), ...(where ? [b.location ?? 'local'] : [])]), { right: [5, 6], paint: out.c.bold }).forEach((l) => out.out(l));
        out.out(`${formatCount(list.length)} backup${list.length === 1 ? '' : 's'}, ${formatBytes(list.reduce((s, b) => s + b.size, 0))} in ${config.backupDir}`);
        const bad = list.filter((b) => b.problem);
        // Damaged and refused entries stay listed (so they are seen) but are never used; say so once.
        if (bad.length) out.warn(`${bad.length} entr${bad.length === 1 ? 'y is' : 'ies are'} damaged or refused and will not be restored: ${bad.map((b) => `${b.id} (${b.problem?.message ?? b.state})`).join('; ')}`);
      }
      return;
    }
    if (sub !== 'show' || id === undefined) throw usage(sub === 'show' ? 'usage: chatmem backups show ID' : `unknown backups subcommand ${JSON.stringify(sub)}; did you mean \`chatmem backups show ${sub}\`?`);
    const user = str(ctx.values, 'user');
    const info = await ctx.read((a) => a.inspectBackup(id, user !== undefined ? { user } : {}), { allowMissingStore: true });
    const v = info.verification;
    if (!v.ok && out.json) {
      out.data(info);
      return EXIT.FAILED;
    }
    if (v.ok && user !== undefined && !info.record) throw new CLIError('E_UNKNOWN_USER', `user ${JSON.stringify(user)} is not in backup ${info.backup.id}`);
    if (out.json) {
      out.data(info);
      return;
    }
    const b = info.backup;
    const m = info.manifest;
    keyValueLines([
      ['Backup', b.id],
      ['File', b.file],
      ['Created', formatTime(b.createdAt)],
      ['Reason', b.reason],
      ['Scope', b.scope === 'full' ? 'full store' : Array.isArray(b.scope) ? b.scope.join(', ') : b.kind],
      ['Users', info.users >= 0 ? formatCount(info.users) : b.users === null ? '-' : formatCount(b.users)],
      ['Size', formatBytes(b.size)],
      ['State', b.state === 'verified' ? `verified at ${formatTime(m?.verifiedAt)} (sha256 ${m?.sha256.slice(0, 16) ?? '?'}…)` : b.state === 'legacy' ? 'legacy (seed file, no checksum)' : b.state],
      ['Checked', v.ok ? (v.legacy ? 'parsed, no checksum: unverified legacy backup' : `ok: ${formatCount(v.users ?? 0)} users, checksum matches`) : out.c.red(`FAILED ${v.error?.code ?? ''}`)],
      ...(m ? ([['Source', m.source], ['Audit op', m.auditOp ?? '-']] as [string, string][]) : []),
    ]).forEach((l) => out.out(l));
    if (!v.ok) throw new CLIError(v.error?.code === 'E_BACKUP_NOT_REGULAR' || v.error?.code === 'E_BACKUP_MANIFEST' ? v.error.code : 'E_BACKUP_VERIFY', `backup ${b.id} failed verification: ${v.error?.message ?? 'unknown'}`);
    if (info.record) {
      out.out(out.c.bold(`User ${info.record.user_id}`));
      out.out(prettyJson(info.record));
    } else if (info.sample.length > 0) {
      out.out(out.c.bold(info.sample.length < info.users ? `First ${info.sample.length} users` : 'Users'));
      table(['USER ID', 'NAME', 'MESSAGES'], info.sample.map((s) => [clip(s.user_id, 40), clip(s.name, 24), String(s.messages)]), { right: [2] }).forEach((l) => out.out(`  ${l}`));
    }
  },
};

export const verify: Command = {
  name: 'verify',
  summary: 'Check backups: checksum and count (chatmem backups), parse (legacy files)',
  args: '[ID]',
  positionals: { min: 0, max: 1 },
  async run(ctx) {
    const { out } = ctx;
    const id = ctx.positionals[0] === undefined ? undefined : ctx.backupId(ctx.positionals[0]);
    const results = await ctx.read((a) => a.verifyBackups(id), { allowMissingStore: true });
    const bad = results.filter((r) => !r.ok);
    if (out.json) out.data({ ok: bad.length === 0, results });
    else if (results.length === 0) out.out(`No backups in ${ctx.config.backupDir}.`);
    else {
      for (const r of results) {
        const what = r.ok ? out.c.green('ok') : out.c.red('FAILED');
        const detail = r.ok ? `${r.users ?? '?'} users${r.legacy ? ', legacy: parsed, no checksum' : ''}` : `${r.error?.code ?? ''} ${r.error?.message ?? ''}`;
        out.out(`${what.padEnd(6)}  ${r.id}  ${detail}`);
      }
      out.out(bad.length === 0 ? `${results.length} verified` : `${bad.length} of ${results.length} failed`);
    }
    // --json promises one document: the failures are in it, the exit code says the rest.
    if (bad.length > 0 && out.json) return EXIT.FAILED;
    if (bad.length > 0) {
      throw new CLIError('E_BACKUP_VERIFY', `${bad.length} backup${bad.length === 1 ? '' : 's'} failed verification: ${bad.map((b) => b.id).join(', ')}`);
    }
  },
};

export const diff: Command = {
  name: 'diff',
  summary: 'Users added, removed and changed from backup A to B (default: the current store)',
  args: 'A [B]',
  positionals: { min: 1, max: 2 },
  options: { user: { type: 'string', multiple: true, value: 'U', help: 'compare only these users (repeatable)' } },
  description: 'A and B are backup ids; `current` names the store.',
  async run(ctx) {
    const { out } = ctx;
    const [a, b] = [ctx.backupId(ctx.positionals[0] ?? ''), ctx.positionals[1] === undefined || ctx.positionals[1] === 'current' ? 'current' : ctx.backupId(ctx.positionals[1])];
    const userList = ctx.values.user;
    const usersOpt = Array.isArray(userList) ? userList.filter((u): u is string => typeof u === 'string') : undefined;
    const d = await ctx.read((admin) => admin.diff(a, b, usersOpt ? { users: usersOpt } : {}), { progress: 'diff' });
    if (out.json) {
      out.data({ a, b, ...d });
      return;
    }
    out.out(`${a} → ${b}`);
    diffLines(out, d, { added: `added in ${b}`, removed: `missing from ${b}`, changed: 'changed' }).forEach((l) => out.out(l));
  },
};
