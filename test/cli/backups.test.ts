import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { sandbox, type Sandbox } from './helpers.js';

const JOKO = '628161973069';

interface BackupRow {
  id: string;
  reason: string;
  users: number | null;
  state: string;
  createdAt: string | null;
}

describe('backup commands', () => {
  let sb: Sandbox;
  beforeEach(async () => {
    sb = await sandbox('sqlite');
  });
  afterEach(async () => {
    await sb.cleanup();
  });

  it('backup writes a verified backup; backups lists it; verify checks it; show inspects it', async () => {
    const b = await sb.json<{ backup: string; file: string; users: number; sha256: string }>(['backup']);
    expect(b.code).toBe(0);
    expect(b.doc.users).toBe(200);
    const gz = await sb.json<{ backup: string; file: string; gzip: boolean }>(['backup', '--gzip']);
    expect(gz.doc.file).toMatch(/\.json\.gz$/);

    const list = await sb.json<{ backups: BackupRow[] }>(['backups']);
    expect(list.doc.backups.map((x) => x.id).sort()).toEqual([b.doc.backup, gz.doc.backup].sort());
    expect(list.doc.backups.every((x) => x.state === 'verified' && x.reason === 'manual' && x.users === 200)).toBe(true);
    const human = await sb.run(['backups']);
    expect(human.stdout).toMatch(/^ID\s+CREATED \(UTC\)\s+AGE\s+REASON\s+SCOPE\s+USERS\s+SIZE\s+STATE$/m);
    expect(human.stdout).toContain('2 backups');

    const v = await sb.json<{ ok: boolean; results: { id: string; ok: boolean }[] }>(['verify']);
    expect(v.code).toBe(0);
    expect(v.doc.results).toHaveLength(2);

    const one = await sb.json<{ backup: { id: string }; record: { name: string } }>(['backups', 'show', b.doc.backup, '--user', JOKO]);
    expect(one.doc.record.name).toBe('Joko Santoso');
    const humanShow = await sb.run(['backups', 'show', b.doc.backup]);
    expect(humanShow.stdout).toContain('Reason    manual');
    expect(humanShow.stdout).toContain('First 20 users');

    // Damage one byte: verify must fail with exit 1 and name the backup.
    const text = await fsp.readFile(b.doc.file, 'utf8');
    await fsp.writeFile(b.doc.file, text.replace('Joko Santoso', 'Joko Santosa'));
    const bad = await sb.run(['verify']);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain('FAILED');
    expect(bad.stderr).toContain(`E_BACKUP_VERIFY`);
    expect(bad.stderr).toContain(b.doc.backup);
  });

  it('unknown or invalid backup ids: 3 and 2', async () => {
    const missing = await sb.run(['verify', 'memory_backup_20200101_000000']);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain('E_BACKUP_NOT_FOUND');
    const invalid = await sb.run(['backups', 'show', '../etc/passwd']);
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toContain('E_BACKUP_ID');
  });

  it('diff compares a backup with the current store, or two backups', async () => {
    const a = await sb.json<{ backup: string }>(['backup']);
    await sb.run(['delete', JOKO, '--yes']);
    const d = await sb.json<{ added: string[]; removed: string[]; changed: unknown[]; unchanged: number }>(['diff', a.doc.backup]);
    expect(d.code).toBe(0);
    expect(d.doc).toMatchObject({ added: [], removed: [JOKO], changed: [], unchanged: 199 });
    const b = await sb.json<{ backup: string }>(['backup']);
    const ab = await sb.json<{ removed: string[] }>(['diff', a.doc.backup, b.doc.backup]);
    expect(ab.doc.removed).toEqual([JOKO]);
    const human = await sb.run(['diff', a.doc.backup]);
    expect(human.stdout).toContain(`- 1 missing from current: ${JOKO}`);
    expect(human.stdout).toContain('199 unchanged');
  });

  it('restore of a delete backup brings the user back and keeps everyone else', async () => {
    const del = await sb.json<{ backup: string }>(['delete', JOKO, '--yes']);
    const refused = await sb.run(['restore', del.doc.backup]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('E_CONFIRM_REQUIRED');
    const dry = await sb.run(['restore', del.doc.backup, '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain(`+ 1 restored (not in the store now): ${JOKO}`);
    expect((await sb.run(['show', JOKO])).code).toBe(3);

    const no = await sb.run(['restore', del.doc.backup], { isTTY: true, input: ['n'] });
    expect(no.code).toBe(2);
    expect((await sb.run(['show', JOKO])).code).toBe(3);

    const r = await sb.json<{ written: number; removed: number; backup: string }>(['restore', del.doc.backup, '--yes']);
    expect(r.code).toBe(0);
    expect(r.doc).toMatchObject({ written: 1, removed: 0 });
    expect((await sb.json<{ users: number }>(['stats'])).doc.users).toBe(200);
    expect((await sb.run(['show', JOKO])).code).toBe(0);
  });

  it('restore of a full backup replaces the store (after backing it up), --merge keeps newer users', async () => {
    const full = await sb.json<{ backup: string }>(['backup']);
    await sb.run(['delete', JOKO, '628001869793', '--yes']);
    const merged = await sb.json<{ written: number; removed: number }>(['restore', full.doc.backup, '--merge', '--yes']);
    expect(merged.code).toBe(0);
    expect((await sb.json<{ users: number }>(['stats'])).doc.users).toBe(200);

    await sb.run(['clear', '--yes']);
    const plan = await sb.run(['restore', full.doc.backup], { isTTY: true, input: ['y'] });
    expect(plan.code).toBe(0);
    expect(plan.stderr).toContain('+ 200 restored');
    expect(plan.stderr).toContain(`Restore ${full.doc.backup}? [y/N]`);
    expect(plan.stdout).toMatch(/^Backup: /m);
    expect((await sb.json<{ users: number }>(['stats'])).doc.users).toBe(200);
    const nothing = await sb.run(['restore', full.doc.backup, '--yes']);
    expect(nothing.stdout).toContain('Nothing to restore');
  });

  it('prune: an empty policy is refused; a policy shows keep and remove, asks, then removes', async () => {
    for (let i = 0; i < 3; i++) expect((await sb.run(['backup'])).code).toBe(0);
    const empty = await sb.run(['prune']);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toContain('E_RETENTION_POLICY');

    const dry = await sb.run(['prune', '--keep-last', '1', '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/keep\s+full\s+memory_backup_\S+\s+last backup/);
    expect(dry.stdout.match(/^remove/gm)).toHaveLength(2);
    expect(await sb.backupFiles()).toHaveLength(3);

    const refused = await sb.run(['prune', '--keep-last', '1']);
    expect(refused.code).toBe(2);
    const no = await sb.run(['prune', '--keep-last', '1'], { isTTY: true, input: ['n'] });
    expect(no.code).toBe(2);
    expect(no.stderr).toContain('Remove 2 backups? [y/N]');
    expect(await sb.backupFiles()).toHaveLength(3);

    await fsp.writeFile(path.join(sb.dir, 'chatmem.config.json'), JSON.stringify({ backup: { retention: { last: 2 } } }));
    const fromConfig = await sb.json<{ removed: string[]; keep: unknown[] }>(['prune', '--yes']);
    expect(fromConfig.code).toBe(0);
    expect(fromConfig.doc.removed).toHaveLength(1);
    expect(await sb.backupFiles()).toHaveLength(2);

    const nothing = await sb.run(['prune', '--keep-last', '5']);
    expect(nothing.code).toBe(0);
    expect(nothing.stdout).toContain('Nothing to remove');
    const unlimited = await sb.run(['prune', '--keep-daily', '-1', '--dry-run']);
    expect(unlimited.code).toBe(0);
  });

  it('audit lists what happened, filtered by user and time', async () => {
    await sb.run(['delete', JOKO, '--yes']);
    await sb.run(['backup']);
    const all = await sb.json<{ entries: { action: string; outcome: string; userIds?: string[] }[] }>(['audit']);
    expect(all.code).toBe(0);
    expect(all.doc.entries.map((e) => `${e.action}:${e.outcome}`)).toEqual(expect.arrayContaining(['delete-users:started', 'delete-users:done', 'backup:done']));
    const mine = await sb.json<{ entries: { action: string }[] }>(['audit', '--user', JOKO]);
    expect(mine.doc.entries.every((e) => e.action === 'delete-users')).toBe(true);
    expect(mine.doc.entries).toHaveLength(2);
    const future = await sb.json<{ entries: unknown[] }>(['audit', '--since', '2999-01-01']);
    expect(future.doc.entries).toEqual([]);
    const recent = await sb.json<{ entries: unknown[] }>(['audit', '--since', '1h']);
    expect(recent.doc.entries.length).toBeGreaterThan(0);
    const human = await sb.run(['audit', '--user', JOKO]);
    expect(human.stdout).toMatch(/delete-users\s+done\s+628161973069\s+memory_backup_/);
  });
});
