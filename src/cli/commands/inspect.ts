import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { errnoCode } from '../../errors.js';
import { stringifyJson } from '../../json-safe.js';
import type { MemoryRecord } from '../../record.js';
import type { UserSummary } from '../../store/types.js';
import { intOption, str, type Command } from '../command.js';
import { CLIError, usage } from '../errors.js';
import { clip, columnWidths, formatBytes, formatCount, formatTime, table, type Output } from '../output.js';

const SUMMARY_HEADER = ['USER ID', 'NAME', 'PRODUCT', 'CREATED', 'MESSAGES'];

function summaryRow(u: UserSummary): string[] {
  return [clip(u.user_id, 40), clip(u.name, 24), clip(u.product, 28), formatTime(u.created_at), String(u.messages)];
}

/** The user table, numbered when `numbered` (the menu's pick list). */
export function userTable(out: Output, users: UserSummary[], numbered = false): string[] {
  const rows = users.map((u, i) => (numbered ? [`${i + 1})`, ...summaryRow(u)] : summaryRow(u)));
  const header = numbered ? ['#', ...SUMMARY_HEADER] : SUMMARY_HEADER;
  return table(header, rows, { right: numbered ? [0, 5] : [4], paint: out.c.bold });
}

export const users: Command = {
  name: 'users',
  summary: 'List users: id, name, product, created, messages (the seed\'s list)',
  args: '[--search Q] [--limit N]',
  options: {
    search: { type: 'string', value: 'Q', help: 'only users whose id, name, address, product, summary or chat text contains Q (1-2 characters: ids starting with Q)' },
    limit: { type: 'string', value: 'N', help: 'at most N users (default: all; 100 with --search)' },
  },
  async run(ctx) {
    const { out } = ctx;
    const q = str(ctx.values, 'search');
    const limit = intOption(ctx.values, 'limit', { min: 1 });
    if (q !== undefined) {
      if (q.trim() === '') throw usage('--search needs a non-empty query');
      const found = await ctx.read((a) => a.searchUsers(q, { limit: limit ?? 100 }));
      if (out.json) out.data({ users: found, count: found.length });
      else if (found.length === 0) out.out(`No users match ${JSON.stringify(q)}.`);
      else {
        userTable(out, found).forEach((l) => out.out(l));
        out.out(`${formatCount(found.length)} user${found.length === 1 ? '' : 's'} match ${JSON.stringify(q)}`);
        if (found.length === (limit ?? 100)) out.note(`showing the first ${found.length}; use --limit for more`);
      }
      return;
    }
    await ctx.read(async (admin) => {
      // Page through the store so a large one is never held in memory whole.
      let cursor: string | null = null;
      let shown = 0;
      let widths: number[] | null = null;
      if (out.json) out.io.stdout.write('{\n  "users": [');
      do {
        const pageSize = Math.min(1000, limit !== undefined ? limit - shown : 1000);
        const page = await admin.listUsers({ cursor, limit: pageSize });
        if (out.json) {
          out.io.stdout.write(page.items.map((u, i) => `${shown + i === 0 ? '\n' : ',\n'}    ${JSON.stringify(u)}`).join(''));
        } else if (page.items.length > 0) {
          const rows = page.items.map(summaryRow);
          // Widths come from the first page, so later pages line up under its header.
          widths ??= columnWidths(SUMMARY_HEADER, rows);
          const lines = table(SUMMARY_HEADER, rows, { right: [4], paint: out.c.bold, widths });
          (shown === 0 ? lines : lines.slice(1)).forEach((l) => out.out(l));
        }
        shown += page.items.length;
        cursor = page.next;
        await out.drain();
      } while (cursor !== null && (limit === undefined || shown < limit));
      if (out.json) out.io.stdout.write(`${shown > 0 ? '\n  ' : ''}],\n  "count": ${shown}\n}\n`);
      else if (shown === 0) out.out('No users.');
      else out.out(`${formatCount(shown)} user${shown === 1 ? '' : 's'}${cursor !== null ? ' (more with a higher --limit)' : ''}`);
    });
  },
};

function value(v: unknown): string {
  if (v === null || v === undefined || v === '') return '-';
  return typeof v === 'string' ? v : stringifyJson(v);
}

/** The facts an operator checks before deleting a user: who, what product, where, how much chat. */
export function userDetails(r: MemoryRecord): [string, string][] {
  return [
    ['User', r.user_id],
    ['Name', value(r.name)],
    ['Product', value(r.product)],
    ['Address', value(r.address)],
    ['Messages', String(r.history.length)],
    ['Created', formatTime(r.created_at)],
    ['Updated', formatTime(r.updated_at)],
  ];
}

export function keyValueLines(pairs: [string, string][], indent = ''): string[] {
  const w = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${indent}${k.padEnd(w)}  ${v.replace(/\n/g, ' ')}`);
}

const KNOWN = new Set([
  'user_id', 'session_token', 'name', 'gender', 'is_company', 'product', 'serial', 'address',
  'summary_context', 'history', 'last_answer', 'flags', 'slots', 'created_at', 'updated_at',
]);

export const show: Command = {
  name: 'show',
  summary: "Show one user's record and recent chat",
  args: 'USER [--history N]',
  positionals: { min: 1, max: 1 },
  options: {
    history: { type: 'string', value: 'N', help: 'show the last N messages (default 10; with --json: all)' },
  },
  async run(ctx) {
    const { out } = ctx;
    const id = ctx.positionals[0] ?? '';
    const n = intOption(ctx.values, 'history');
    const record = await ctx.read((a) => a.getUser(id));
    if (!record) throw new CLIError('E_UNKNOWN_USER', `unknown user: ${JSON.stringify(id)}`, { details: { missing: [id] } });
    if (out.json) {
      const shown = n === undefined ? record : { ...record, history: n === 0 ? [] : record.history.slice(-n) };
      out.data({ user: shown, messages: record.history.length });
      return;
    }
    const pairs: [string, string][] = [
      ...userDetails(record).slice(0, 2),
      ['Gender', value(record.gender)],
      ['Company', value(record.is_company)],
      ['Product', value(record.product)],
      ['Serial', value(record.serial)],
      ['Address', value(record.address)],
      ['Created', formatTime(record.created_at)],
      ['Updated', formatTime(record.updated_at)],
      ['Messages', String(record.history.length)],
      ['Flags', Object.keys(record.flags).length ? Object.entries(record.flags).map(([k, v]) => `${k}=${value(v)}`).join(', ') : '-'],
      ['Slots', Object.keys(record.slots).length ? Object.entries(record.slots).map(([k, v]) => `${k}=${value(v)}`).join(', ') : '-'],
      ['Last answer', value(record.last_answer)],
    ];
    for (const [k, v] of Object.entries(record)) if (!KNOWN.has(k)) pairs.push([k, value(v)]);
    keyValueLines(pairs).forEach((l) => out.out(l));
    if (record.summary_context.length > 0) {
      out.out(out.c.bold('Summary'));
      record.summary_context.forEach((s) => out.out(`  - ${s}`));
    }
    const count = n ?? 10;
    const history = count === 0 ? [] : record.history.slice(-count);
    if (history.length > 0) {
      out.out(out.c.bold(history.length < record.history.length ? `History (last ${history.length} of ${record.history.length})` : 'History'));
      for (const h of history) out.out(`  ${formatTime(h.ts)}  ${h.role.padEnd(4)}  ${h.text.replace(/\n/g, ' ')}`);
    }
  },
};

/** The nearest existing directory at or above `dir`: a backup dir not yet created still has a disk. */
async function existingAncestor(dir: string): Promise<string> {
  for (let d = dir; ; d = path.dirname(d)) {
    try {
      await fsp.access(d);
      return d;
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT' || path.dirname(d) === d) return d;
    }
  }
}

async function fileBytes(file: string | undefined): Promise<number | null> {
  if (!file) return null;
  let total = 0;
  let found = false;
  // SQLite keeps recent commits in its -wal file until a checkpoint.
  for (const f of [file, `${file}-wal`]) {
    try {
      total += (await fsp.stat(f)).size;
      found = true;
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
  }
  return found ? total : null;
}

export const stats: Command = {
  name: 'stats',
  summary: 'Users, messages, store size, last update, backups, free disk',
  args: '',
  async run(ctx) {
    const { out, config } = ctx;
    const [s, backups] = await ctx.read(async (a) => [await a.stats(), await a.listBackups()] as const);
    const disk = await fsp.statfs(await existingAncestor(config.backupDir));
    const doc = {
      store: config.store.display,
      users: s.users,
      messages: s.messages,
      bytes: s.bytes,
      fileBytes: await fileBytes(config.store.file),
      lastUpdate: s.lastUpdate,
      backups: {
        dir: config.backupDir,
        count: backups.length,
        bytes: backups.reduce((sum, b) => sum + b.size, 0),
        newest: backups[0]?.id ?? null,
      },
      disk: { free: disk.bavail * disk.bsize, total: disk.blocks * disk.bsize },
    };
    if (out.json) {
      out.data(doc);
      return;
    }
    keyValueLines([
      ['Store', doc.store],
      ['Users', formatCount(doc.users)],
      ['Messages', formatCount(doc.messages)],
      ['Size', `${formatBytes(doc.bytes)} of records${doc.fileBytes !== null ? `, ${formatBytes(doc.fileBytes)} on disk` : ''}`],
      ['Last update', formatTime(doc.lastUpdate)],
      ['Backups', `${formatCount(doc.backups.count)} (${formatBytes(doc.backups.bytes)}) in ${doc.backups.dir}`],
      ['Newest', doc.backups.newest ?? '-'],
      ['Free disk', `${formatBytes(doc.disk.free)} of ${formatBytes(doc.disk.total)}`],
    ]).forEach((l) => out.out(l));
    if (doc.disk.free < doc.bytes * 2) out.warn(`free disk in ${doc.backups.dir} is less than twice the store size: a full backup may not fit`);
  },
};
